"""Success criteria, in exactly the JSON shape the marketplace stores for a job.

The one definition of valid criteria: the marketplace validates a job's criteria with `Criteria.from_dict`
(`require_tiers=True`) and maps each of its problems to an API field error, so a job the API accepts is one
every runner accepts, and a local `speedproof check` refuses what the API would."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

TIME_METRICS = ("wall_time", "latency", "cpu_time")
MEASURED_METRICS = (*TIME_METRICS, "peak_memory", "throughput")
STATISTICS = ("median", "mean", "p90", "p95", "p99")
KINDS = ("speedup", "absolute", "no_worse")
CORRECTNESS_MODES = ("exact", "numeric", "scorer")
REPORTED_PREFIX = "reported:"
REPORTED_METRIC = re.compile(r"^reported:[a-z][a-z0-9_]{0,63}$")
MAX_CRITERIA = 10
MAX_TIERS = 10
MAX_SPEEDUP = 1000.0

# A per-run percentile needs this many requests per run to exist meaningfully: 2 / (1 - q).
PERCENTILE_QUANTILES = {"p90": 0.90, "p95": 0.95, "p99": 0.99}

# What the sandbox observes a run attempt (see sandbox.py and seccomp.py), and what a job may do about
# each: "fail" the verification (the default: a company does not pay for code that probes its verifier)
# or only "report" it (a benchmark that legitimately tries the network and tolerates the refusal).
SANDBOX_CATEGORIES = ("network", "leftover_processes", "privileged_call")
SANDBOX_ACTIONS = ("fail", "report")


class CriteriaError(ValueError):
    """The criteria are malformed or cannot be tested with this package.

    ``problems`` lists every ``(field, message)`` found, ``field`` naming the part of the criteria document at
    fault (e.g. ``criteria[0].threshold``, ``sandbox_policy.network``) or None; ``field`` is the first one's."""

    def __init__(self, message: str, *, field: str | None = None, problems=None) -> None:
        super().__init__(message)
        self.problems: tuple[tuple[str | None, str], ...] = tuple(problems or ((field, message),))
        self.field = self.problems[0][0]


class _Problems:
    """Collects every problem of a document, so that one answer names all of them."""

    def __init__(self) -> None:
        self.found: list[tuple[str | None, str]] = []

    def add(self, field: str | None, message: str) -> None:
        self.found.append((field, message))

    def raise_any(self) -> None:
        if self.found:
            summary = "; ".join(f"{field}: {message}" if field else message for field, message in self.found[:5])
            raise CriteriaError(summary, problems=self.found)


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
            return f"{self.metric} {self.statistic} {self.bound_text}"
        return f"{self.metric} {self.statistic} no worse than baseline (+{self.tolerance:.0%})"

    @property
    def bound_text(self) -> str:
        """An absolute bound as a reason reads it: which side passes, in the metric's unit. A reported
        metric's direction and unit are the manifest's, which a criterion does not know."""
        if self.self_reported:
            return f"vs {self.threshold:g}"
        if self.metric == "throughput":
            return f">= {self.threshold:g} per second"
        return f"<= {self.threshold:g} {'bytes' if self.metric == 'peak_memory' else 's'}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"metric": self.metric, "statistic": self.statistic, "kind": self.kind}
        if self.kind == "no_worse":
            data["tolerance"] = self.tolerance
        else:
            data["threshold"] = self.threshold
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
    def from_dict(cls, data: Any, *, require_tiers: bool = False) -> Criteria:
        """The one definition of valid criteria (the marketplace validates jobs with it, `require_tiers=True`).

        Raises CriteriaError listing every problem found."""
        problems = _Problems()
        if not isinstance(data, dict):
            raise CriteriaError("criteria must be a JSON object")
        raw_list = data.get("criteria")
        if not isinstance(raw_list, list) or not raw_list:
            problems.add("criteria", "at least one criterion is required")
            raw_list = []
        elif len(raw_list) > MAX_CRITERIA:
            problems.add("criteria", f"at most {MAX_CRITERIA} criteria")
        criteria = tuple(
            criterion
            for index, item in enumerate(raw_list[:MAX_CRITERIA])
            if (criterion := _parse_criterion(item, f"criteria[{index}]", problems)) is not None
        )
        correctness = _parse_correctness(data.get("correctness", {"mode": "exact"}), problems)
        speedup = next((c for c in criteria if c.kind == "speedup"), None)
        tiers = _parse_tiers(data.get("tiers", []), speedup, problems, required=require_tiers)
        try:
            policy = parse_sandbox_policy(data.get("sandbox_policy"))
        except CriteriaError as problem:
            problems.add(problem.field, str(problem))
            policy = default_sandbox_policy()
        problems.raise_any()
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


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _parse_criterion(item: Any, where: str, problems: _Problems) -> Criterion | None:
    if not isinstance(item, dict):
        problems.add(where, "must be an object")
        return None
    found = len(problems.found)
    metric, statistic, kind = item.get("metric"), item.get("statistic", "median"), item.get("kind")
    if not (metric in MEASURED_METRICS or (isinstance(metric, str) and REPORTED_METRIC.match(metric))):
        problems.add(f"{where}.metric", f"one of {', '.join(MEASURED_METRICS)} or {REPORTED_PREFIX}<name>")
    if statistic not in STATISTICS:
        problems.add(f"{where}.statistic", f"one of {', '.join(STATISTICS)}")
    if kind not in KINDS:
        problems.add(f"{where}.kind", f"one of {', '.join(KINDS)}")
    threshold, tolerance = _finite(item.get("threshold")), _finite(item.get("tolerance", 0.0))
    if kind == "speedup" and (threshold is None or not 1.0 < threshold <= MAX_SPEEDUP):
        problems.add(f"{where}.threshold", f"a speedup ratio above 1 and at most {MAX_SPEEDUP:g}")
    elif kind == "absolute" and (threshold is None or threshold <= 0):
        problems.add(f"{where}.threshold", "a positive bound")
    elif kind == "no_worse":
        threshold = 1.0  # the baseline itself; the allowance is `tolerance`
        if tolerance is None or not 0.0 <= tolerance <= 1.0:
            problems.add(f"{where}.tolerance", "a fraction between 0 and 1")
    if len(problems.found) > found:
        return None
    return Criterion(
        metric=metric,
        statistic=statistic,
        kind=kind,
        threshold=threshold,
        tolerance=tolerance if kind == "no_worse" else 0.0,
    )


def _parse_correctness(raw: Any, problems: _Problems) -> Correctness:
    if not isinstance(raw, dict) or raw.get("mode") not in CORRECTNESS_MODES:
        problems.add("correctness.mode", f"one of {', '.join(CORRECTNESS_MODES)}")
        return Correctness(mode="exact")
    mode = raw["mode"]
    if mode == "numeric":
        rtol, atol = _finite(raw.get("rtol", 0.0)), _finite(raw.get("atol", 0.0))
        if rtol is None or rtol < 0:
            problems.add("correctness.rtol", "a non-negative number")
        if atol is None or atol < 0:
            problems.add("correctness.atol", "a non-negative number")
        return Correctness(mode=mode, rtol=rtol or 0.0, atol=atol or 0.0)
    if mode == "scorer":
        ratio = _finite(raw.get("min_score_ratio", 1.0))
        if ratio is None or not 0.0 < ratio <= 1.0:
            problems.add("correctness.min_score_ratio", "a ratio in (0, 1]")
            ratio = 1.0
        return Correctness(mode=mode, min_score_ratio=ratio)
    return Correctness(mode="exact")


def _parse_tiers(raw: Any, speedup: Criterion | None, problems: _Problems, *, required: bool) -> tuple[Tier, ...]:
    if not isinstance(raw, list):
        problems.add("tiers", "a list of payout tiers")
        return ()
    if not raw:
        if required:
            problems.add("tiers", "at least one payout tier is required")
        return ()
    if len(raw) > MAX_TIERS:
        problems.add("tiers", f"at most {MAX_TIERS} tiers")
    if speedup is None:
        problems.add("tiers", "payout tiers need a speedup criterion")
    tiers: list[Tier] = []
    previous_speedup, previous_fraction = 0.0, 0.0
    for index, item in enumerate(raw[:MAX_TIERS]):
        where = f"tiers[{index}]"
        if not isinstance(item, dict):
            problems.add(where, "must be an object")
            continue
        tier_speedup, fraction = _finite(item.get("speedup")), _finite(item.get("fraction"))
        if tier_speedup is None or tier_speedup <= previous_speedup or tier_speedup < 1.0:
            problems.add(f"{where}.speedup", "tier speedups must increase, from at least 1")
        elif index == 0 and speedup is not None and tier_speedup < speedup.threshold:
            problems.add(f"{where}.speedup", "the first tier cannot be below the speedup criterion's threshold")
        if fraction is None or not previous_fraction < fraction <= 1.0 or round(fraction * 10_000) != fraction * 10_000:
            problems.add(f"{where}.fraction", "fractions must increase, stay within (0, 1] and have at most 4 decimals")
        if tier_speedup is not None and fraction is not None:
            tiers.append(Tier(speedup=tier_speedup, fraction=fraction))
        previous_speedup, previous_fraction = tier_speedup or previous_speedup, fraction or previous_fraction
    if len(tiers) == len(raw[:MAX_TIERS]) and tiers and tiers[-1].fraction != 1.0:
        problems.add(f"tiers[{len(tiers) - 1}].fraction", "the last tier pays 100% (fraction 1.0)")
    return tuple(tiers)
