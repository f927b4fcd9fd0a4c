"""Error rates and cost of the verification runner's sequential decision, by simulation.

Run:  python bench/verification_decision.py [--trials 10000] [--seed 1] [--models project,independent]
      [--min-pass-pairs N]   (default run: about 5 s on one core)

Every cell runs the runner's own code (``verification.runner.stats.run_sequential_with_bounds``),
vectorised over trials: budget 40 pairs, baseline and candidate in random order within each pair,
criterion "speedup >= 1.5", runs counted as 2 x pairs (warm-up excluded).

Two models of one run's log time, ``log(true_time) + machine``, written independently:
- project: machine = AR(1) state (phi 0.95, stationary sd = cv) + normal noise (sd = sqrt(log(1 + cv^2)))
  + 3% outlier runs x U(1.5, 3);
- independent: AR(1) state (phi 0.8) holding half the variance of sqrt(log(1 + cv^2)) and white noise
  the other half, a linear drift of 5% per 20 runs with a random sign per trial, 3% outliers x U(1.5, 3).

Rows: plain candidates (1.4x to 2x) and adversarial shapes. "at the bar" rows are shifted so that the
pooled median of their per-pair speedups, over the whole budget, is exactly 1.5x: the criterion's own
statistic sits at the threshold and PASS must stay at or below alpha (5%). Columns: PASS, FAIL and
INCONCLUSIVE shares, mean runs, the share of trials whose reported interval holds the row's pooled
median (for plain rows the true median), and the share whose interval disagrees with the decision
(must be 0). A naive procedure (10 baseline runs then 10 candidate runs, PASS iff the ratio of medians
>= 1.5) is shown for the project model's plain rows.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verification.runner import stats

THRESHOLD = 1.5
BUDGET_PAIRS = 40
OUTLIER_RATE = 0.03
PROJECT_PHI = 0.95
INDEPENDENT_PHI = 0.8
INDEPENDENT_STATE_SHARE = 0.5  # of the variance
INDEPENDENT_DRIFT_PER_20_RUNS = 0.05


def outlier_log_factors(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    outliers = rng.random(shape) < OUTLIER_RATE
    return np.where(outliers, np.log(rng.uniform(1.5, 3.0, size=shape)), 0.0)


def ar1(rng: np.random.Generator, shape: tuple[int, int], phi: float, sd: float) -> np.ndarray:
    state = np.empty(shape)
    state[:, 0] = rng.normal(0.0, sd, size=shape[0])
    innovations = rng.normal(0.0, sd * math.sqrt(1 - phi**2), size=shape)
    for t in range(1, shape[1]):
        state[:, t] = phi * state[:, t - 1] + innovations[:, t]
    return state


def project_machine(rng: np.random.Generator, trials: int, runs: int, cv: float) -> np.ndarray:
    sigma = math.sqrt(math.log1p(cv * cv))
    shape = (trials, runs)
    return ar1(rng, shape, PROJECT_PHI, cv) + rng.normal(0.0, sigma, size=shape) + outlier_log_factors(rng, shape)


def independent_machine(rng: np.random.Generator, trials: int, runs: int, cv: float) -> np.ndarray:
    sigma = math.sqrt(math.log1p(cv * cv))
    shape = (trials, runs)
    state = ar1(rng, shape, INDEPENDENT_PHI, sigma * math.sqrt(INDEPENDENT_STATE_SHARE))
    white = rng.normal(0.0, sigma * math.sqrt(1 - INDEPENDENT_STATE_SHARE), size=shape)
    slope = rng.choice([-1.0, 1.0], size=(trials, 1)) * math.log1p(INDEPENDENT_DRIFT_PER_20_RUNS) / 20
    return state + white + slope * np.arange(runs)[None, :] + outlier_log_factors(rng, shape)


MODELS: dict[str, Callable[[np.random.Generator, int, int, float], np.ndarray]] = {
    "project": project_machine,
    "independent": independent_machine,
}


@dataclass(frozen=True)
class Row:
    name: str
    # trials x pairs log speedup of each pair's candidate run (the shape), given the rng
    log_speedups: Callable[[np.random.Generator, int, int], np.ndarray]
    at_the_bar: bool = False
    cv: float = 0.05
    # False for rows beyond what any test that may stop early can hold to alpha (marked "(*)")
    counted: bool = True


def constant(speedup: float) -> Callable[[np.random.Generator, int, int], np.ndarray]:
    return lambda rng, trials, pairs: np.full((trials, pairs), math.log(speedup))


def bimodal(slow_share: float, slow: float = 1.0, fast: float = 2.5):
    return lambda rng, trials, pairs: np.where(rng.random((trials, pairs)) < slow_share, math.log(slow), math.log(fast))


def slow_tail(share: float, slowdown: float = 3.0):
    # Far slow in a share of its runs, at the bar otherwise (then shifted so the median is the bar).
    return lambda rng, trials, pairs: np.where(
        rng.random((trials, pairs)) < share, math.log(THRESHOLD / slowdown), math.log(THRESHOLD)
    )


def fast_first(runs: int, fast: float = 2.0, later: float = 1.2):
    return lambda rng, trials, pairs: (
        np.where(np.arange(pairs)[None, :] < runs, math.log(fast), math.log(later)) + np.zeros((trials, 1))
    )


def rows() -> list[Row]:
    plain = [
        Row(f"plain {s:.1f}x cv {cv:.0%}", constant(s), cv=cv)
        for cv in (0.02, 0.05, 0.15)
        for s in (1.4, 1.5, 1.6, 2.0)
    ]
    adversarial = [
        Row("bimodal 55% 1.0x / 45% 2.5x", bimodal(0.55)),
        Row("bimodal 60% 1.0x / 40% 2.5x", bimodal(0.60)),
        Row("bimodal 50/50, at the bar", bimodal(0.50), at_the_bar=True),
        Row("slow tail 5% x3, at the bar", slow_tail(0.05), at_the_bar=True),
        Row("slow tail 10% x3, at the bar", slow_tail(0.10), at_the_bar=True),
        Row("slow tail 15% x3, at the bar", slow_tail(0.15), at_the_bar=True),
        Row("fast first 4 2x, then 1.2x", fast_first(4)),
        Row("fast first 10 2x, then 1.2x", fast_first(10)),
        # At the bar over the whole budget, but the pairs a test has seen by the earliest PASS (13) have
        # a median above it: 4 (or 10) fast pairs, then pairs a little below the bar. The spread check
        # narrows this; only a later earliest PASS closes it (see the closing note of issue 11).
        Row("fast first 4 2x, at the bar (*)", fast_first(4), at_the_bar=True, counted=False),
        Row("fast first 10 2x, at the bar (*)", fast_first(10), at_the_bar=True, counted=False),
    ]
    return plain + adversarial


def margins_for(rng: np.random.Generator, model: str, row: Row, trials: int) -> tuple[np.ndarray, float]:
    """Per-pair margins (trials x budget) and the row's true median margin (pooled over the budget)."""
    pairs = BUDGET_PAIRS
    machine = MODELS[model](rng, trials, 2 * pairs, row.cv).reshape(trials, pairs, 2)
    baseline_first = rng.random((trials, pairs)) < 0.5
    log_baseline = np.where(baseline_first, machine[:, :, 0], machine[:, :, 1])
    log_candidate = np.where(baseline_first, machine[:, :, 1], machine[:, :, 0]) - row.log_speedups(rng, trials, pairs)
    margins = log_baseline - log_candidate - math.log(THRESHOLD)
    pooled_median = float(np.median(margins))
    if row.at_the_bar:
        # Shift the candidate so that the criterion's statistic, over the budget, is exactly the bar.
        return margins - pooled_median, 0.0
    return margins, pooled_median


def naive(rng: np.random.Generator, trials: int, cv: float, speedup: float) -> np.ndarray:
    machine = project_machine(rng, trials, 20, cv)
    ratio = np.median(np.exp(machine[:, :10]), axis=1) / np.median(np.exp(machine[:, 10:] - math.log(speedup)), axis=1)
    return np.where(ratio >= THRESHOLD, 1, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--alpha", type=float, default=stats.DEFAULT_ALPHA)
    parser.add_argument("--looks", type=str, default=",".join(map(str, stats.DEFAULT_LOOKS)))
    parser.add_argument("--models", type=str, default=",".join(MODELS))
    parser.add_argument(
        "--min-pass-pairs",
        type=int,
        default=stats.MIN_PASS_PAIRS,
        help="the runner's earliest PASS (to measure the fast-first trade; the runner's own is the default)",
    )
    args = parser.parse_args()
    stats.MIN_PASS_PAIRS = args.min_pass_pairs

    schedule = tuple(int(x) for x in args.looks.split(","))
    looks = stats.plan_looks(BUDGET_PAIRS, alpha=args.alpha, schedule=schedule)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    print(
        f"criterion: speedup >= {THRESHOLD}; trials per cell: {args.trials}; alpha per side {args.alpha}; "
        f"looks at {[look.pairs for look in looks]} pairs; PASS from {stats.first_pass_look([lk.pairs for lk in looks])}"
    )
    header = (
        f"{'model':<11} {'row':<34} {'PASS':>7} {'FAIL':>7} {'INCONCL':>7} {'runs':>5} {'cover':>6} {'disagree':>8}"
    )
    print(header)
    results: dict[tuple[str, str], tuple[float, float, float, float]] = {}
    for model in args.models.split(","):
        for row in rows():
            margins, truth = margins_for(rng, model, row, args.trials)
            decision, pairs_used, low, high = stats.run_sequential_with_bounds(margins, looks)
            rates = [float((decision == v).mean()) for v in (1, -1, 0)]
            runs = float(2 * pairs_used.mean())
            cover = float(((low <= truth) & (truth <= high)).mean())
            disagree = float(
                (
                    ((decision == 1) & ~(low > 0))
                    | ((decision == -1) & ~(high < 0))
                    | ((decision == 0) & ((low > 0) | (high < 0)))
                ).mean()
            )
            results[model, row.name] = (*rates, runs)
            print(
                f"{model:<11} {row.name:<34} {rates[0]:>7.2%} {rates[1]:>7.2%} {rates[2]:>7.2%} {runs:>5.1f} "
                f"{cover:>6.1%} {disagree:>8.2%}"
            )
            if model == "project" and row.name.startswith("plain"):
                speedup, cv = float(row.name.split()[1][:-1]), row.cv
                naive_decision = naive(rng, args.trials, cv, speedup)
                print(
                    f"{'  naive':<11} {'10+10 runs, ratio of medians':<34} {(naive_decision == 1).mean():>7.2%} "
                    f"{(naive_decision == -1).mean():>7.2%} {0.0:>7.2%} {20.0:>5.1f}"
                )
    print("targets:")
    uncounted = {row.name for row in rows() if not row.counted}
    for line in check_targets(results, args.alpha, uncounted):
        print("  " + line)
    print(f"elapsed {time.perf_counter() - started:.1f} s")


def check_targets(
    results: dict[tuple[str, str], tuple[float, float, float, float]], alpha: float, uncounted: set[str]
) -> list[str]:
    lines = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    run_targets = {"project": 25.7, "independent": 20.0}
    for model in sorted({m for m, _ in results}):
        cell = {name: values for (m, name), values in results.items() if m == model}
        pass_14, fail_16 = cell["plain 1.4x cv 5%"][0], cell["plain 1.6x cv 5%"][1]
        lines.append(
            f"{model}: false pass at 1.4x {pass_14:.2%}, false fail at 1.6x {fail_16:.2%} (<= 0.5%) "
            f"{verdict(pass_14 <= 0.005 and fail_16 <= 0.005)}"
        )
        at_bar = {
            name: v[0]
            for name, v in cell.items()
            if name not in uncounted
            and ("1.5x" in name or "at the bar" in name or "then 1.2x" in name or "1.0x" in name)
        }
        worst = max(at_bar, key=at_bar.get)
        lines.append(
            f"{model}: worst PASS with the statistic at or below the bar {at_bar[worst]:.2%} ({worst}) (<= {alpha:.0%}) "
            f"{verdict(at_bar[worst] <= alpha)}"
        )
        runs_16, runs_2 = cell["plain 1.6x cv 5%"][3], cell["plain 2.0x cv 5%"][3]
        lines.append(
            f"{model}: mean runs at 1.6x {runs_16:.1f} (<= {run_targets[model]}) {verdict(runs_16 <= run_targets[model])}, "
            f"at 2x {runs_2:.1f} (<= 14) {verdict(runs_2 <= 14)}"
        )
        shown = ", ".join(f"{name} {v[0]:.2%}" for name, v in cell.items() if name in uncounted)
        lines.append(f"{model}: not counted (see the rows' comment in the code): PASS {shown}")
    return lines


if __name__ == "__main__":
    main()
