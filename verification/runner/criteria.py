"""Success criteria, in exactly the JSON shape the marketplace stores for a job."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

TIME_METRICS = ("wall_time", "latency", "cpu_time")
MEASURED_METRICS = (*TIME_METRICS, "peak_memory", "throughput")
STATISTICS = ("median", "mean", "p90", "p95", "p99")
KINDS = ("speedup", "absolute", "no_worse")
CORRECTNESS_MODES = ("exact", "numeric", "scorer")
REPORTED_PREFIX = "reported:"

# A per-run percentile needs this many requests per run to exist meaningfully: 2 / (1 - q).
PERCENTILE_QUANTILES = {"p90": 0.90, "p95": 0.95, "p99": 0.99}

# What the sandbox observes a run attempt (see sandbox.py), and what a job may do about each: "fail"
# the verification (the default: a company does not pay for code that probes its verifier) or only
# "report" it (a benchmark that legitimately tries the network and tolerates the refusal).
SANDBOX_CATEGORIES = ("network", "leftover_processes")
SANDBOX_ACTIONS = ("fail", "report")


class CriteriaError(ValueError):
    """The criteria are malformed or cannot be tested with this package. ``field`` names the part of
    the criteria document at fault where one part is (e.g. ``sandbox_policy.network``)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Criterion:
    metric: str
    statistic: str
    kind: str
    threshold: float
    tolerance: float = 0.0

    @property
    def self_reported(self) -> bool:
        return self.metric.startswith(REPORTED_PREFIX)

    @property
    def reported_name(self) -> str:
        return self.metric[len(REPORTED_PREFIX) :]

    @property
    def label(self) -> str:
        if self.kind == "speedup":
            return f"{self.metric} {self.statistic} speedup >= {self.threshold:g}x"
        if self.kind == "absolute":
            return f"{self.metric} {self.statistic} vs {self.threshold:g}"
        return f"{self.metric} {self.statistic} no worse than baseline (+{self.tolerance:.0%})"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "metric": self.metric,
            "statistic": self.statistic,
            "kind": self.kind,
            "threshold": self.threshold,
        }
        if self.kind == "no_worse":
            data["tolerance"] = self.tolerance
        return data


@dataclass(frozen=True)
class Correctness:
    mode: str
    rtol: float = 1e-5
    atol: float = 1e-8
    min_score_ratio: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        if self.mode == "numeric":
            return {"mode": "numeric", "rtol": self.rtol, "atol": self.atol}
        if self.mode == "scorer":
            return {"mode": "scorer", "min_score_ratio": self.min_score_ratio}
        return {"mode": "exact"}


@dataclass(frozen=True)
class Tier:
    speedup: float
    fraction: float


def default_sandbox_policy() -> dict[str, str]:
    return dict.fromkeys(SANDBOX_CATEGORIES, "fail")


def parse_sandbox_policy(raw: Any) -> dict[str, str]:
    """Every category's action, ``fail`` where the document names none."""
    if raw is None:
        return default_sandbox_policy()
    if not isinstance(raw, dict):
        raise CriteriaError(
            f"sandbox_policy must be an object mapping categories ({', '.join(SANDBOX_CATEGORIES)}) "
            f"to one of {', '.join(SANDBOX_ACTIONS)}",
            field="sandbox_policy",
        )
    for category, action in raw.items():
        if category not in SANDBOX_CATEGORIES:
            raise CriteriaError(
                f"sandbox_policy: unknown category {str(category)[:40]!r}, "
                f"the categories are {', '.join(SANDBOX_CATEGORIES)}",
                field="sandbox_policy",
            )
        if action not in SANDBOX_ACTIONS:
            raise CriteriaError(
                f"sandbox_policy.{category} must be one of {', '.join(SANDBOX_ACTIONS)}",
                field=f"sandbox_policy.{category}",
            )
    return {category: raw.get(category, "fail") for category in SANDBOX_CATEGORIES}


@dataclass(frozen=True)
class Criteria:
    criteria: tuple[Criterion, ...]
    correctness: Correctness
    tiers: tuple[Tier, ...] = ()
    sandbox_policy: dict[str, str] = field(default_factory=default_sandbox_policy)

    @property
    def speedup_criterion(self) -> Criterion | None:
        return next((c for c in self.criteria if c.kind == "speedup"), None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Criteria:
        if not isinstance(data, dict):
            raise CriteriaError("criteria must be a JSON object")
        raw_list = data.get("criteria")
        if not isinstance(raw_list, list) or not raw_list:
            raise CriteriaError("'criteria' must be a non-empty list")
        criteria = tuple(_parse_criterion(item, i) for i, item in enumerate(raw_list))
        correctness = _parse_correctness(data.get("correctness", {"mode": "exact"}))
        tiers = _parse_tiers(data.get("tiers", []))
        if tiers and not any(c.kind == "speedup" for c in criteria):
            raise CriteriaError("tiers need a speedup criterion")
        policy = parse_sandbox_policy(data.get("sandbox_policy"))
        return cls(criteria=criteria, correctness=correctness, tiers=tiers, sandbox_policy=policy)

    def to_dict(self) -> dict[str, Any]:
        return {
            "criteria": [c.to_dict() for c in self.criteria],
            "correctness": self.correctness.to_dict(),
            "tiers": [{"speedup": t.speedup, "fraction": t.fraction} for t in self.tiers],
            "sandbox_policy": dict(self.sandbox_policy),
        }

    def check_against(self, *, mode: str, requests_per_run: int, reported: set[str], has_scorer: bool) -> None:
        """Refuse criteria this package cannot test (e.g. p99 latency with 20 requests a run)."""
        for c in self.criteria:
            if c.self_reported and c.reported_name not in reported:
                raise CriteriaError(f"{c.metric}: the manifest does not declare this reported metric")
            if c.metric == "latency" and mode != "stream":
                raise CriteriaError("latency criteria need a stream-mode package")
            per_request = c.metric == "latency" or (c.self_reported and mode == "stream")
            if c.statistic in PERCENTILE_QUANTILES:
                if not per_request:
                    raise CriteriaError(
                        f"{c.label}: a percentile needs a per-request metric "
                        "(latency, or a reported metric in stream mode)"
                    )
                needed = math.ceil(2.0 / (1.0 - PERCENTILE_QUANTILES[c.statistic]))
                if requests_per_run < needed:
                    raise CriteriaError(
                        f"{c.label}: a per-run {c.statistic} needs at least {needed} requests per run, "
                        f"the package gives {requests_per_run}"
                    )
        if self.correctness.mode == "scorer" and not has_scorer:
            raise CriteriaError("correctness mode 'scorer' needs a scorer in the package")


def _parse_criterion(item: Any, index: int) -> Criterion:
    where = f"criteria[{index}]"
    if not isinstance(item, dict):
        raise CriteriaError(f"{where} must be an object")
    metric = item.get("metric")
    if not isinstance(metric, str) or not (
        metric in MEASURED_METRICS or (metric.startswith(REPORTED_PREFIX) and len(metric) > len(REPORTED_PREFIX))
    ):
        raise CriteriaError(f"{where}.metric must be one of {MEASURED_METRICS} or 'reported:<name>'")
    statistic = item.get("statistic", "median")
    if statistic not in STATISTICS:
        raise CriteriaError(f"{where}.statistic must be one of {STATISTICS}")
    kind = item.get("kind")
    if kind not in KINDS:
        raise CriteriaError(f"{where}.kind must be one of {KINDS}")
    threshold = _number(item.get("threshold", 1.0 if kind == "no_worse" else None), f"{where}.threshold")
    tolerance = _number(item.get("tolerance", 0.0), f"{where}.tolerance")
    if threshold <= 0:
        raise CriteriaError(f"{where}.threshold must be positive")
    if kind == "speedup" and threshold < 1.0:
        raise CriteriaError(f"{where}.threshold: a speedup threshold below 1 is not a speedup")
    if not 0.0 <= tolerance < 10.0:
        raise CriteriaError(f"{where}.tolerance must be a fraction >= 0")
    return Criterion(metric=metric, statistic=statistic, kind=kind, threshold=threshold, tolerance=tolerance)


def _parse_correctness(raw: Any) -> Correctness:
    if not isinstance(raw, dict) or raw.get("mode") not in CORRECTNESS_MODES:
        raise CriteriaError(f"correctness.mode must be one of {CORRECTNESS_MODES}")
    mode = raw["mode"]
    if mode == "numeric":
        rtol = _number(raw.get("rtol", 1e-5), "correctness.rtol")
        atol = _number(raw.get("atol", 1e-8), "correctness.atol")
        if rtol < 0 or atol < 0:
            raise CriteriaError("correctness tolerances must be >= 0")
        return Correctness(mode=mode, rtol=rtol, atol=atol)
    if mode == "scorer":
        ratio = _number(raw.get("min_score_ratio", 1.0), "correctness.min_score_ratio")
        if not 0.0 < ratio <= 10.0:
            raise CriteriaError("correctness.min_score_ratio must be positive")
        return Correctness(mode=mode, min_score_ratio=ratio)
    return Correctness(mode="exact")


def _parse_tiers(raw: Any) -> tuple[Tier, ...]:
    if not isinstance(raw, list):
        raise CriteriaError("tiers must be a list")
    tiers = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise CriteriaError(f"tiers[{i}] must be an object")
        tiers.append(
            Tier(
                speedup=_number(item.get("speedup"), f"tiers[{i}].speedup"),
                fraction=_number(item.get("fraction"), f"tiers[{i}].fraction"),
            )
        )
    for previous, current in zip(tiers, tiers[1:]):
        if not (current.speedup > previous.speedup and current.fraction > previous.fraction):
            raise CriteriaError("tiers must increase in both speedup and fraction")
    if tiers:
        if abs(tiers[-1].fraction - 1.0) > 1e-12:
            raise CriteriaError("the last tier's fraction must be 1.0")
        if tiers[0].fraction <= 0 or tiers[0].speedup < 1.0:
            raise CriteriaError("tier fractions must be positive and speedups at least 1")
    return tuple(tiers)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CriteriaError(f"{where} must be a finite number")
    return float(value)
