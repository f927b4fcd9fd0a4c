"""Success criteria and payout tiers: structured, validated data that the verification runner reads."""

import math
import re
from typing import Any

from common.errors import ValidationFailed
from verification.runner.criteria import CriteriaError, parse_sandbox_policy

MEASURED_METRICS = ("wall_time", "peak_memory", "latency", "throughput", "cpu_time")
REPORTED_METRIC = re.compile(r"^reported:[a-z][a-z0-9_]{0,63}$")
STATISTICS = ("median", "mean", "p90", "p95", "p99")
KINDS = ("speedup", "absolute", "no_worse")
CORRECTNESS_MODES = ("exact", "numeric", "scorer")
MAX_CRITERIA = 10
MAX_TIERS = 10


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def criteria_validate(raw: Any) -> dict:
    """Return the normalized criteria document, or raise ValidationFailed with one entry per bad field."""
    errors: dict[str, list[str]] = {}

    def error(path: str, message: str) -> None:
        errors.setdefault(path, []).append(message)

    if not isinstance(raw, dict):
        raise ValidationFailed(
            "Criteria must be an object.", code="invalid_criteria", fields={"criteria": ["not an object"]}
        )

    criteria_out: list[dict] = []
    items = raw.get("criteria")
    if not isinstance(items, list) or not items:
        error("criteria", "at least one criterion is required")
        items = []
    if len(items) > MAX_CRITERIA:
        error("criteria", f"at most {MAX_CRITERIA} criteria")
    for index, item in enumerate(items[:MAX_CRITERIA]):
        path = f"criteria[{index}]"
        if not isinstance(item, dict):
            error(path, "must be an object")
            continue
        metric, statistic, kind = item.get("metric"), item.get("statistic", "median"), item.get("kind")
        if not (metric in MEASURED_METRICS or (isinstance(metric, str) and REPORTED_METRIC.match(metric))):
            error(f"{path}.metric", f"one of {', '.join(MEASURED_METRICS)} or reported:<name>")
        if statistic not in STATISTICS:
            error(f"{path}.statistic", f"one of {', '.join(STATISTICS)}")
        if kind not in KINDS:
            error(f"{path}.kind", f"one of {', '.join(KINDS)}")
        threshold = _number(item.get("threshold"))
        tolerance = _number(item.get("tolerance", 0.0))
        normalized = {"metric": metric, "statistic": statistic, "kind": kind}
        if kind == "speedup":
            if threshold is None or not 1.0 < threshold <= 1000:
                error(f"{path}.threshold", "a speedup ratio above 1 and at most 1000")
            normalized["threshold"] = threshold
        elif kind == "absolute":
            if threshold is None or threshold <= 0:
                error(f"{path}.threshold", "a positive bound")
            normalized["threshold"] = threshold
        elif kind == "no_worse":
            if tolerance is None or not 0 <= tolerance <= 1:
                error(f"{path}.tolerance", "a fraction between 0 and 1")
            normalized["tolerance"] = tolerance
        criteria_out.append(normalized)

    correctness = raw.get("correctness", {"mode": "exact"})
    correctness_out: dict = {}
    if not isinstance(correctness, dict) or correctness.get("mode") not in CORRECTNESS_MODES:
        error("correctness.mode", f"one of {', '.join(CORRECTNESS_MODES)}")
    elif correctness["mode"] == "exact":
        correctness_out = {"mode": "exact"}
    elif correctness["mode"] == "numeric":
        rtol, atol = _number(correctness.get("rtol", 0.0)), _number(correctness.get("atol", 0.0))
        if rtol is None or rtol < 0:
            error("correctness.rtol", "a non-negative number")
        if atol is None or atol < 0:
            error("correctness.atol", "a non-negative number")
        correctness_out = {"mode": "numeric", "rtol": rtol, "atol": atol}
    else:
        ratio = _number(correctness.get("min_score_ratio"))
        if ratio is None or not 0 < ratio <= 1:
            error("correctness.min_score_ratio", "a ratio in (0, 1]")
        correctness_out = {"mode": "scorer", "min_score_ratio": ratio}

    speedup_thresholds = [c["threshold"] for c in criteria_out if c.get("kind") == "speedup" and c.get("threshold")]
    tiers = raw.get("tiers")
    tiers_out: list[dict] = []
    if not isinstance(tiers, list) or not tiers:
        error("tiers", "at least one payout tier is required")
        tiers = []
    elif len(tiers) > MAX_TIERS:
        error("tiers", f"at most {MAX_TIERS} tiers")
    elif not speedup_thresholds:
        error("tiers", "payout tiers need a speedup criterion")
    previous_speedup, previous_fraction = 0.0, 0.0
    for index, tier in enumerate(tiers[:MAX_TIERS]):
        path = f"tiers[{index}]"
        if not isinstance(tier, dict):
            error(path, "must be an object")
            continue
        speedup, fraction = _number(tier.get("speedup")), _number(tier.get("fraction"))
        if speedup is None or speedup <= previous_speedup:
            error(f"{path}.speedup", "tier speedups must increase")
        if fraction is None or not previous_fraction < fraction <= 1 or round(fraction * 10_000) != fraction * 10_000:
            error(f"{path}.fraction", "fractions must increase, stay within (0, 1] and have at most 4 decimals")
        if index == 0 and speedup_thresholds and speedup is not None and speedup < speedup_thresholds[0]:
            error(f"{path}.speedup", "the first tier cannot be below the speedup criterion's threshold")
        tiers_out.append({"speedup": speedup, "fraction": fraction})
        previous_speedup, previous_fraction = speedup or previous_speedup, fraction or previous_fraction
    if tiers_out and tiers_out[-1]["fraction"] != 1.0:
        error(f"tiers[{len(tiers_out) - 1}].fraction", "the last tier pays 100% (fraction 1.0)")

    # The runner's rule, mapped to a field error: every category a job names none for fails.
    sandbox_policy: dict[str, str] = {}
    try:
        sandbox_policy = parse_sandbox_policy(raw.get("sandbox_policy"))
    except CriteriaError as problem:
        error(problem.field or "sandbox_policy", str(problem))

    if errors:
        raise ValidationFailed(
            "The success criteria are invalid.",
            code="invalid_criteria",
            fields={f"criteria.{path}": messages for path, messages in errors.items()},
        )
    return {
        "criteria": criteria_out,
        "correctness": correctness_out,
        "tiers": tiers_out,
        "sandbox_policy": sandbox_policy,
    }


def tier_fraction_bps(fraction: float) -> int:
    return round(fraction * 10_000)
