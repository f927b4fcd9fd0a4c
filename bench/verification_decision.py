"""Error rates and cost of the verification runner's sequential decision, by simulation.

Run:  python bench/verification_decision.py [--trials 10000] [--seed 1]

Model of one benchmark run's time: ``true_time * exp(drift_t + noise)`` where
- noise is normal on the log scale with sigma = sqrt(log(1 + cv^2)) (log-normal with that CV);
- drift is an AR(1) machine state over the run sequence, phi = 0.95, stationary sd = cv
  (slow thermal/frequency/neighbour changes);
- 3% of runs are outliers, multiplied by a uniform factor in [1.5, 3].
The baseline's true time is 1, the candidate's 1/speedup. The criterion is "speedup >= 1.5".

Procedures, both on the same simulated machine:
- runner: the runner's own code (``verification.runner.stats``), pairs in random order within each pair,
  looks and alpha spending as configured, budget 40 pairs; counts runs = 2 x pairs (warm-up excluded);
- naive: 10 baseline runs then 10 candidate runs, PASS iff median(baseline)/median(candidate) >= 1.5.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from statistics import NormalDist

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verification.runner import stats

THRESHOLD = 1.5
CVS = (0.02, 0.05, 0.15)
SPEEDUPS = (1.4, 1.5, 1.6, 2.0)
OUTLIER_RATE = 0.03
DRIFT_PHI = 0.95
DRIFT_SD_FRACTION = 1.0
BUDGET_PAIRS = 40


def machine_log_factors(
    rng: np.random.Generator, trials: int, runs: int, cv: float, outlier_rate: float = OUTLIER_RATE
) -> np.ndarray:
    """Log multiplicative factor of every run (trials x runs): drift + noise + outliers."""
    sigma = math.sqrt(math.log1p(cv * cv))
    drift_sd = DRIFT_SD_FRACTION * cv
    innovations = rng.normal(0.0, drift_sd * math.sqrt(1 - DRIFT_PHI**2), size=(trials, runs))
    drift = np.empty((trials, runs))
    drift[:, 0] = rng.normal(0.0, drift_sd, size=trials)
    for t in range(1, runs):
        drift[:, t] = DRIFT_PHI * drift[:, t - 1] + innovations[:, t]
    noise = rng.normal(0.0, sigma, size=(trials, runs))
    outliers = rng.random((trials, runs)) < outlier_rate
    outlier_factor = np.where(outliers, np.log(rng.uniform(1.5, 3.0, size=(trials, runs))), 0.0)
    return drift + noise + outlier_factor


def simulate_runner(
    rng: np.random.Generator, trials: int, cv: float, speedup: float, looks: list[stats.Look]
) -> tuple[np.ndarray, np.ndarray]:
    pairs = looks[-1].pairs
    factors = machine_log_factors(rng, trials, 2 * pairs, cv).reshape(trials, pairs, 2)
    return stats.run_sequential(paired_margins(rng, factors, speedup), looks)


def paired_margins(rng: np.random.Generator, factors: np.ndarray, speedup: float) -> np.ndarray:
    """Margins of pairs of consecutive runs (``factors``: trials x pairs x 2), baseline first in a random
    half of the pairs."""
    baseline_first = rng.random(factors.shape[:2]) < 0.5
    log_baseline = np.where(baseline_first, factors[:, :, 0], factors[:, :, 1])
    log_candidate = np.where(baseline_first, factors[:, :, 1], factors[:, :, 0]) - math.log(speedup)
    return (log_baseline - log_candidate) - math.log(THRESHOLD)


def simulate_naive(rng: np.random.Generator, trials: int, cv: float, speedup: float) -> np.ndarray:
    factors = machine_log_factors(rng, trials, 20, cv)
    baseline = np.exp(factors[:, :10])
    candidate = np.exp(factors[:, 10:] - math.log(speedup))
    ratio = np.median(baseline, axis=1) / np.median(candidate, axis=1)
    return np.where(ratio >= THRESHOLD, 1, -1).astype(np.int8)


def outliers_known_runs(rng: np.random.Generator, trials: int, looks: list[stats.Look], speedup: float) -> float:
    """Mean runs of the runner's test on the simulated machine when an oracle removes every pair that
    holds an outlier run: the floor that any outlier rule for this test can reach."""
    spare = 2 * looks[-1].pairs  # enough clean pairs for the budget in all but a negligible share of trials
    drift_and_noise = machine_log_factors(rng, trials, 2 * spare, 0.05, outlier_rate=0.0).reshape(trials, spare, 2)
    outlier_pair = (rng.random((trials, spare, 2)) < OUTLIER_RATE).any(axis=2)
    margins = paired_margins(rng, drift_and_noise, speedup)
    clean_first = np.argsort(outlier_pair, axis=1, kind="stable")
    clean_margins = np.take_along_axis(margins, clean_first, axis=1)[:, : looks[-1].pairs]
    _, clean_pairs_used = stats.run_sequential(clean_margins, looks)
    clean_so_far = np.cumsum(~outlier_pair, axis=1)
    pairs_run = (clean_so_far < clean_pairs_used[:, None]).sum(axis=1) + 1
    return float(2 * pairs_run.mean())


def reference_figures(rng: np.random.Generator, trials: int, looks: list[stats.Look], alpha: float) -> None:
    """Where the runs go at 5% CV and a true 1.6x: the same procedure on plain normal noise (no drift, no
    outliers), and a z-test that knows the noise's scale (not implementable: the scale is unknown),
    with the same looks and spending weights, calibrated the same way."""
    sigma = math.sqrt(2 * math.log1p(0.05**2))  # sd of a pair's log ratio, two log-normal runs
    effect = math.log(1.6 / THRESHOLD)
    margins = rng.normal(effect, sigma, size=(trials, BUDGET_PAIRS))
    decision, pairs = stats.run_sequential(margins, looks)
    print(
        f"reference, true 1.6x at 5% CV: the runner on normal noise without drift or outliers: "
        f"PASS {(decision == 1).mean():.2%}, mean runs {2 * pairs.mean():.1f}"
    )
    print(
        f"reference, true 1.6x at 5% CV: the runner told which pairs hold an outlier run and left only "
        f"the others, drift kept: mean runs {outliers_known_runs(rng, trials, looks, 1.6):.1f} "
        f"(outlier pairs still cost their runs)"
    )

    counts = tuple(look.pairs for look in looks)

    def z_looks(scale: float) -> list[tuple[int, float]]:
        weights = [stats.look_weight(n) for n in counts]
        return [
            (n, NormalDist().inv_cdf(1 - min(0.5, scale * alpha * w / sum(weights)))) for n, w in zip(counts, weights)
        ]

    def z_run(data: np.ndarray, plan: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
        decided = np.zeros(data.shape[0], dtype=np.int8)
        used = np.full(data.shape[0], counts[-1])
        for n, critical in plan:
            z = data[:, :n].mean(axis=1) * math.sqrt(n)  # data in units of the known scale
            verdict = np.where(decided == 0, np.sign(z) * (np.abs(z) >= critical), 0).astype(np.int8)
            used[(decided == 0) & (verdict != 0)] = n
            decided = np.where(decided == 0, verdict, decided)
        return decided, used

    null = np.random.default_rng(stats.CALIBRATION_SEED).normal(size=(stats.CALIBRATION_TRIALS, counts[-1]))
    target = alpha - 2.0 * math.sqrt(alpha * (1.0 - alpha) / stats.CALIBRATION_TRIALS)
    low, high = 1.0, float(len(counts))
    for _ in range(14):
        middle = (low + high) / 2
        if (z_run(null, z_looks(middle))[0] > 0).mean() <= target:
            low = middle
        else:
            high = middle
    plan = z_looks(low)
    decision, pairs = z_run(margins / sigma, plan)
    at_threshold, _ = z_run(rng.normal(size=(trials, BUDGET_PAIRS)), plan)
    print(
        f"reference, true 1.6x at 5% CV: a z-test knowing the noise's scale, same looks and weights: "
        f"PASS {(decision == 1).mean():.2%}, mean runs {2 * pairs.mean():.1f} (PASS at 1.5x {(at_threshold == 1).mean():.2%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--alpha", type=float, default=stats.DEFAULT_ALPHA)
    parser.add_argument("--looks", type=str, default=",".join(map(str, stats.DEFAULT_LOOKS)))
    parser.add_argument(
        "--references",
        action="store_true",
        help="also print reference figures at 1.6x: normal noise only; the noise's scale known",
    )
    args = parser.parse_args()

    schedule = tuple(int(x) for x in args.looks.split(","))
    looks = stats.plan_looks(BUDGET_PAIRS, alpha=args.alpha, schedule=schedule)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    print(
        f"criterion: speedup >= {THRESHOLD}; trials per cell: {args.trials}; alpha per side {args.alpha}; "
        f"looks at {[look.pairs for look in looks]} pairs"
    )
    print(
        f"{'procedure':<9} {'cv':>4} {'true':>5} {'PASS':>8} {'FAIL':>8} {'INCONCL':>8} "
        f"{'mean runs':>9} {'mean pairs':>10}"
    )
    targets_met: list[str] = []
    for cv in CVS:
        for speedup in SPEEDUPS:
            decision, pairs_used = simulate_runner(rng, args.trials, cv, speedup, looks)
            rates = [(decision == v).mean() for v in (1, -1, 0)]
            mean_runs = 2 * pairs_used.mean()
            print(
                f"{'runner':<9} {cv:>4.0%} {speedup:>5.2f} {rates[0]:>8.2%} {rates[1]:>8.2%} {rates[2]:>8.2%} "
                f"{mean_runs:>9.1f} {pairs_used.mean():>10.1f}"
            )
            if cv == 0.05:
                targets_met += _check_targets(speedup, rates, mean_runs)
            naive = simulate_naive(rng, args.trials, cv, speedup)
            print(
                f"{'naive':<9} {cv:>4.0%} {speedup:>5.2f} {(naive == 1).mean():>8.2%} {(naive == -1).mean():>8.2%} "
                f"{0.0:>8.2%} {20.0:>9.1f} {'-':>10}"
            )
    print("targets at 5% CV:")
    for line in targets_met:
        print("  " + line)
    if args.references:
        reference_figures(rng, args.trials, looks, args.alpha)
    print(f"elapsed {time.perf_counter() - started:.1f} s")


def _check_targets(speedup: float, rates: list[float], mean_runs: float) -> list[str]:
    pass_rate, fail_rate, _ = rates
    lines = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT MET"

    if speedup == 1.4:
        lines.append(f"false pass at 1.4: {pass_rate:.2%} (target <= 0.5%) {verdict(pass_rate <= 0.005)}")
        lines.append(f"mean runs at 1.4: {mean_runs:.1f} (target <= 24) {verdict(mean_runs <= 24)}")
    if speedup == 1.5:
        lines.append(f"PASS rate at 1.5: {pass_rate:.2%} (target <= 5%) {verdict(pass_rate <= 0.05)}")
    if speedup == 1.6:
        lines.append(f"false fail at 1.6: {fail_rate:.2%} (target <= 0.5%) {verdict(fail_rate <= 0.005)}")
        lines.append(f"mean runs at 1.6: {mean_runs:.1f} (target <= 24) {verdict(mean_runs <= 24)}")
    if speedup == 2.0:
        lines.append(f"mean runs at 2.0: {mean_runs:.1f} (target <= 14) {verdict(mean_runs <= 14)}")
    return lines


if __name__ == "__main__":
    main()
