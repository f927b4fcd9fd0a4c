"""Calibration: an A/A run (the baseline against itself) that tells a company, before it posts a job,
how noisy its benchmark is on this hardware and the smallest speedup the runner can verify."""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import stats
from .archive import materialize
from .criteria import SANDBOX_CATEGORIES, Criteria, Criterion
from .manifest import load_manifest
from .report import Report
from .session import DEFAULT_BUDGET_PAIRS, ProgressCallback, run_verification


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
    power: float = 0.9,
    progress: ProgressCallback | None = None,
    python_executable: str | None = None,
    runtime_paths: Sequence[Path] | None = None,
    devices: Sequence[str] = (),
    work_dir: Path | None = None,
) -> CalibrationResult:
    """A/A run: the baseline against itself for ``pairs`` pairs. For each timing criterion it returns
    the run-to-run variation and the smallest speedup a candidate needs over a criterion's threshold
    (or over 1x) to PASS with probability ``power`` within ``budget`` pairs on this machine."""
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
    looks = stats.plan_looks(budget, alpha=alpha)
    final = looks[-1]
    z_power = _normal_quantile(power)
    for criterion in parsed.criteria:
        values = _aa_values(measured, criterion)
        if values is None:
            results.append(
                {"metric": criterion.metric, "statistic": criterion.statistic, "error": "not measured in the A/A run"}
            )
            continue
        base, cand = values
        log_ratios = np.log(base / cand)
        sd = float(np.std(log_ratios, ddof=1)) if log_ratios.size > 1 else float("nan")
        robust_sd = float(1.4826 * np.median(np.abs(log_ratios - np.median(log_ratios))))
        cv = float(np.std(np.log(np.concatenate([base, cand])), ddof=1))
        detectable = math.exp((final.t_critical + z_power) * max(sd, robust_sd) / math.sqrt(final.pairs))
        results.append(
            {
                "metric": criterion.metric,
                "statistic": criterion.statistic,
                "kind": criterion.kind,
                "run_to_run_cv": cv,
                "pair_log_ratio_sd": sd,
                "pair_log_ratio_robust_sd": robust_sd,
                "aa_ratio_estimate": math.exp(stats.hodges_lehmann(log_ratios)),
                "aa_ratio_interval": [math.exp(v) for v in stats.hodges_lehmann_interval(log_ratios, 1 - 2 * alpha)],
                "smallest_verifiable_speedup": detectable,
                "smallest_passing_speedup_for_threshold": criterion.threshold * detectable
                if criterion.kind == "speedup"
                else None,
            }
        )
    return CalibrationResult(
        pairs=len(measured) // 2,
        criteria=results,
        report=report,
        sandbox_violations=_baseline_violations(report, parsed.sandbox_policy),
    )


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
    by_pair: dict[int, dict[str, dict[str, Any]]] = {}
    for m in measured:
        by_pair.setdefault(m["pair"], {})[m["role"]] = m
    key = {
        "wall_time": "wall_seconds",
        "cpu_time": "cpu_seconds",
        "peak_memory": "peak_memory_bytes",
        "throughput": "throughput",
    }.get(criterion.metric)
    base, cand = [], []
    for roles in by_pair.values():
        if "baseline" not in roles or "candidate" not in roles:
            continue
        if key is not None:
            b, c = roles["baseline"][key], roles["candidate"][key]
        elif criterion.metric == "latency":
            b = _percentile(roles["baseline"]["latencies_seconds"], criterion.statistic)
            c = _percentile(roles["candidate"]["latencies_seconds"], criterion.statistic)
        else:
            return None
        if b and c:
            base.append(float(b))
            cand.append(float(c))
    if len(base) < 2:
        return None
    return np.asarray(base), np.asarray(cand)


def _percentile(values: list[float], statistic: str) -> float | None:
    if not values:
        return None
    if statistic == "mean":
        return float(np.mean(values))
    if statistic == "median":
        return float(np.median(values))
    return float(np.quantile(values, {"p90": 0.9, "p95": 0.95, "p99": 0.99}[statistic], method="higher"))


def _normal_quantile(p: float) -> float:
    """Inverse standard normal CDF by bisection on erf (stdlib only)."""
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
