"""Calibration: an A/A run (the baseline against itself) that tells a company, before it posts a job,
how noisy its benchmark is on this hardware and the smallest speedup the runner can verify.

The smallest verifiable speedup is the factor by which a candidate's true median must beat a
criterion's bar for the runner's own sequential decision (``stats.run_sequential`` with the looks of
``stats.plan_looks(budget, alpha)``: sign tests per look, no PASS before ``MIN_PASS_PAIRS`` pairs) to
PASS with probability ``power`` within the budget. That decision sees only the signs of the per-pair
margins, so for independent pairs its PASS probability depends on one number, the probability ``q``
that a pair beats the bar. ``pass_share_needed`` finds the smallest ``q`` giving ``power`` by running
the decision itself on simulated sign sequences (fixed seed, common random numbers: the figure is
deterministic); the A/A noise turns ``q`` into a factor: with the margins spread normally with the
A/A's robust standard deviation ``s`` (``margin_noise``), a candidate beats the bar in a share ``q`` of its pairs when its
median is ``exp(s * z_q)`` beyond it. The robust spread (1.4826 x the median absolute deviation), not
the sample standard deviation, because a sign test counts a far pair as one pair below the bar like
any other: on bench/verification_decision.py's machine models (drift, 3% far runs) the sample
deviation is 1.3-8.5x the robust one and its figure PASSes 98-100% of the time instead of 90%."""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from . import stats
from .archive import materialize
from .criteria import SANDBOX_CATEGORIES, Criteria, Criterion
from .decision import summarise
from .manifest import load_manifest
from .report import Report
from .session import DEFAULT_BUDGET_PAIRS, ProgressCallback, run_verification

DEFAULT_POWER = 0.9
# Where a run's report entry holds each per-run metric.
RUN_FIGURES = {
    "wall_time": "wall_seconds",
    "cpu_time": "cpu_seconds",
    "peak_memory": "peak_memory_bytes",
    "throughput": "throughput",
}
# Simulated verifications behind ``pass_share_needed``: the PASS rate it aims at carries a standard
# error of about 0.5 points at 90%; one search takes about 0.2 s of CPU (40 pairs), once per process.
SIMULATED_TRIALS = 4000
SIMULATION_SEED = 20261204
SHARE_PRECISION = 1e-4
# Below this many A/A values (pair ratios, or runs for absolute criteria) the median absolute deviation
# is too rough to rely on alone: the larger of it and the sample standard deviation is used (the
# cautious side).
MIN_ROBUST_VALUES = 5


@dataclass(frozen=True)
class CalibrationResult:
    pairs: int
    criteria: list[dict[str, Any]]
    report: Report
    # What the baseline itself attempted in its sandbox, per category: [{category, runs, events,
    # job_action}]. ``job_action`` "fail" means a candidate that keeps this behaviour will FAIL.
    sandbox_violations: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "criteria": self.criteria, "sandbox_violations": self.sandbox_violations}


def calibrate(
    package: Path | str,
    hidden_inputs: Path | str | None,
    criteria: dict[str, Any],
    *,
    pairs: int = 12,
    budget: int = DEFAULT_BUDGET_PAIRS,
    seed: int | None = None,
    alpha: float = stats.DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
    progress: ProgressCallback | None = None,
    python_executable: str | None = None,
    runtime_paths: Sequence[Path] | None = None,
    devices: Sequence[str] = (),
    work_dir: Path | None = None,
) -> CalibrationResult:
    """A/A run: the baseline against itself for ``pairs`` pairs. For each criterion it returns the
    run-to-run variation and the smallest factor by which a candidate must beat the criterion's bar (a
    speedup threshold, the baseline for no_worse, the bound for absolute) to PASS with probability
    ``power`` within ``budget`` pairs on this machine (see the module's docstring)."""
    parsed = Criteria.from_dict(criteria)
    scratch = Path(tempfile.mkdtemp(prefix="speedproof-calibrate-", dir=work_dir))
    scratch.chmod(0o700)  # host-private: the sandbox sees only the subtrees bound into it
    try:
        package_dir = materialize(Path(package), scratch / "package", require_manifest=True)
        manifest = load_manifest(package_dir)
        # The candidate is the baseline itself, measured for exactly ``pairs`` pairs. Its sandbox
        # violations are only reported: an A/A stopped by the company's own code would leave the job
        # without a noise measurement; they are listed for the company to fix or allow instead.
        report = run_verification(
            package_dir,
            package_dir / manifest.implementation,
            hidden_inputs,
            {**criteria, "tiers": [], "sandbox_policy": dict.fromkeys(SANDBOX_CATEGORIES, "report")},
            budget=pairs,
            seed=seed,
            alpha=alpha,
            progress=progress,
            python_executable=python_executable,
            runtime_paths=runtime_paths,
            devices=devices,
            work_dir=scratch,
            stop_early=False,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results = []
    measured = [m for m in report.measurements if m["phase"] == "measure"]
    for criterion in parsed.criteria:
        values = _aa_values(measured, criterion)
        if values is None:
            results.append(
                {"metric": criterion.metric, "statistic": criterion.statistic, "error": "not measured in the A/A run"}
            )
            continue
        base, cand = values
        log_ratios = np.log(base / cand)
        log_values = np.log(np.concatenate([base, cand]))
        sd = float(np.std(log_ratios, ddof=1)) if log_ratios.size > 1 else float("nan")
        robust_sd = _robust_sd(log_ratios)
        cv = float(np.std(log_values, ddof=1))
        # An absolute margin is one run's log value against a fixed bound: the runs' own spread counts.
        # Speedup and no_worse margins are pairs' log ratios, whose spread the A/A pairs measure.
        noise = margin_noise(log_values if criterion.kind == "absolute" else log_ratios)
        detectable = (
            None
            if criterion.metric == "peak_memory" and criterion.kind == "no_worse"  # compared directly, no sign test
            else smallest_verifiable_factor(noise, budget=budget, alpha=alpha, power=power)
        )
        results.append(
            {
                "metric": criterion.metric,
                "statistic": criterion.statistic,
                "kind": criterion.kind,
                "run_to_run_cv": cv,
                "pair_log_ratio_sd": sd,
                "pair_log_ratio_robust_sd": robust_sd,
                "margin_noise_sd": noise,
                "aa_ratio_estimate": math.exp(stats.hodges_lehmann(log_ratios)),
                "aa_ratio_interval": [math.exp(v) for v in stats.hodges_lehmann_interval(log_ratios, 1 - 2 * alpha)],
                "smallest_verifiable_speedup": detectable,
                "smallest_passing_speedup_for_threshold": criterion.threshold * detectable
                if criterion.kind == "speedup" and detectable is not None
                else None,
                "pass_probability": power if detectable is not None else None,
                "pairs_beating_bar_share": pass_share_needed(budget, alpha=alpha, power=power)
                if detectable is not None
                else None,
            }
        )
    return CalibrationResult(
        pairs=len(measured) // 2,
        criteria=results,
        report=report,
        sandbox_violations=_baseline_violations(report, parsed.sandbox_policy),
    )


def _robust_sd(values: np.ndarray) -> float:
    """1.4826 x the median absolute deviation: a standard deviation that a few far runs do not inflate."""
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def margin_noise(log_values: np.ndarray) -> float:
    """The spread of a criterion's margins that the figure assumes (natural-log units): the robust
    standard deviation, or with fewer than ``MIN_ROBUST_VALUES`` values the larger of it and the
    sample standard deviation. The median absolute deviation of a few values runs low (by 12% for 8
    normal values, 18% for 5), which would promise candidates a PASS they do not get as often: it is
    scaled by ``n / (n - 0.8)``, the small-sample factor of Croux and Rousseeuw (1992), which leaves
    it within 3.5% on average from 5 values on."""
    n = log_values.size
    robust = _robust_sd(log_values) * n / (n - 0.8) if n > 1 else float("nan")
    if n >= MIN_ROBUST_VALUES:
        return robust
    return max(robust, float(np.std(log_values, ddof=1))) if n > 1 else float("nan")


def smallest_verifiable_factor(
    noise_sd: float, *, budget: int, alpha: float = stats.DEFAULT_ALPHA, power: float = DEFAULT_POWER
) -> float | None:
    """``exp(noise_sd * z_q)``, ``q = pass_share_needed(budget, alpha, power)``: the factor beyond the
    bar at which margins spread normally with ``noise_sd`` (natural-log units) are above the bar in a
    share ``q`` of the pairs, where the sequential decision PASSes with probability ``power``. None
    when no share (not even every pair beating the bar) PASSes that often within the budget; NaN when
    the noise is unknown."""
    share = pass_share_needed(budget, alpha=alpha, power=power)
    if share is None or share >= 1.0:
        return None
    if not math.isfinite(noise_sd):
        return float("nan")
    return math.exp(noise_sd * NormalDist().inv_cdf(share))


@lru_cache(maxsize=64)
def pass_share_needed(
    budget: int,
    *,
    alpha: float = stats.DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
    trials: int = SIMULATED_TRIALS,
    seed: int = SIMULATION_SEED,
) -> float | None:
    """The smallest probability ``q`` that a pair beats the bar at which the runner's sequential
    decision PASSes in at least ``power`` of ``trials`` simulated verifications of ``budget`` pairs;
    None if even ``q = 1`` does not (a budget too small for the sign test to PASS at ``alpha``).

    The decision (``stats.run_sequential``) looks only at which margins are above 0, so sign sequences
    (+1 with probability ``q``, else -1) exercise it exactly. The same uniforms serve every ``q``: each
    trial's signs only gain +1s as ``q`` grows, and a decision never loses a PASS to more pairs beating
    the bar, so the PASS rate is monotone in ``q`` and bisection finds it."""
    looks = stats.plan_looks(budget, alpha=alpha)
    uniforms = np.random.default_rng(seed).random((trials, budget))

    def pass_rate(share: float) -> float:
        decision, _ = stats.run_sequential(np.where(uniforms < share, 1.0, -1.0), looks)
        return float(np.mean(decision == 1))

    if pass_rate(1.0) < power:
        return None
    low, high = 0.5, 1.0  # below 1/2 a pair beating the bar is the exception: no PASS beyond alpha
    while high - low > SHARE_PRECISION:
        middle = 0.5 * (low + high)
        if pass_rate(middle) >= power:
            high = middle
        else:
            low = middle
    return high


def _baseline_violations(report: Report, policy: dict[str, str]) -> list[dict[str, Any]]:
    """Both roles of an A/A run are the baseline: its violations per category, over all its runs."""
    totals: dict[str, list[int]] = {}
    for entry in (report.sandbox_violations or {}).get("observed", []):
        runs_and_events = totals.setdefault(entry["category"], [0, 0])
        runs_and_events[0] += entry["runs"]
        runs_and_events[1] += entry["events"]
    return [
        {"category": category, "runs": runs, "events": events, "job_action": policy.get(category, "fail")}
        for category, (runs, events) in sorted(totals.items())
    ]


def _aa_values(measured: list[dict[str, Any]], criterion: Criterion) -> tuple[np.ndarray, np.ndarray] | None:
    """Each A/A pair's two figures of the criterion's statistic (pairs where both were measured)."""
    by_pair: dict[int, dict[str, dict[str, Any]]] = {}
    for m in measured:
        by_pair.setdefault(m["pair"], {})[m["role"]] = m
    base, cand = [], []
    for roles in by_pair.values():
        if "baseline" not in roles or "candidate" not in roles:
            continue
        b, c = _run_figure(roles["baseline"], criterion), _run_figure(roles["candidate"], criterion)
        if b and c:
            base.append(float(b))
            cand.append(float(c))
    if len(base) < 2:
        return None
    return np.asarray(base), np.asarray(cand)


def _run_figure(measurement: dict[str, Any], criterion: Criterion) -> float | None:
    """A run's figure as the decision takes it (``decision.run_statistic``), from the run's report entry."""
    if criterion.metric == "latency":
        return summarise(measurement.get("latencies_seconds") or [], criterion.statistic)
    if criterion.self_reported:
        return summarise((measurement.get("reported") or {}).get(criterion.reported_name) or [], criterion.statistic)
    return measurement.get(RUN_FIGURES[criterion.metric])
