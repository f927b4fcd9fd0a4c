"""From measured pairs to per-criterion decisions, tiers and the overall decision."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import stats
from .criteria import PERCENTILE_QUANTILES, Criteria, Criterion, Tier
from .measure import RunRecord

PASS, FAIL, INCONCLUSIVE, ERROR = "PASS", "FAIL", "INCONCLUSIVE", "ERROR"
# A criterion or tier the run stopped before deciding, under an overall FAIL or ERROR: "INCONCLUSIVE"
# there would read as a second verdict contradicting the first.
NOT_DECIDED = "not decided"
HIGHER_IS_BETTER_METRICS = ("throughput",)
# Caching flag: repeats answered in under this fraction of first-seen latency, and markedly faster
# than the baseline's own repeats.
CACHING_RATIO = 0.5
CACHING_RELATIVE_TO_BASELINE = 0.7


@dataclass(frozen=True)
class Pair:
    index: int
    baseline: RunRecord
    candidate: RunRecord


def run_statistic(record: RunRecord, criterion: Criterion) -> float | None:
    """The run's value of the criterion's metric (a percentile or mean over the run's requests for
    per-request metrics; the run's own figure otherwise)."""
    metric = criterion.metric
    if metric == "latency":
        return summarise(list(record.latencies.values()), criterion.statistic)
    if criterion.self_reported:
        values = record.reported.get(criterion.reported_name, [])
        return summarise(values, criterion.statistic) if values else None
    value = {
        "wall_time": record.wall_seconds,
        "cpu_time": record.cpu_seconds,
        "peak_memory": record.peak_memory_bytes,
        "throughput": record.throughput,
    }[metric]
    return None if value is None else float(value)


def summarise(values: Sequence[float], statistic: str) -> float | None:
    """One run's figure of a per-request metric: its mean, median or percentile (the higher value)."""
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    if statistic == "mean":
        return float(array.mean())
    if statistic == "median":
        return float(np.median(array))
    return float(np.quantile(array, PERCENTILE_QUANTILES[statistic], method="higher"))


def higher_is_better(criterion: Criterion, reported_higher: dict[str, bool]) -> bool:
    if criterion.self_reported:
        return reported_higher.get(criterion.reported_name, False)
    return criterion.metric in HIGHER_IS_BETTER_METRICS


def margins(
    criterion: Criterion, pairs: Sequence[Pair], reported_higher: dict[str, bool], threshold: float | None = None
) -> np.ndarray:
    """Per-pair log margins, positive = better than the criterion's bar (see stats.py)."""
    bar = criterion.threshold if threshold is None else threshold
    up = higher_is_better(criterion, reported_higher)
    out: list[float] = []
    for pair in pairs:
        base = run_statistic(pair.baseline, criterion)
        cand = run_statistic(pair.candidate, criterion)
        if cand is None or cand <= 0 or (criterion.kind != "absolute" and (base is None or base <= 0)):
            raise MissingMeasurement(f"{criterion.metric} was not measured in pair {pair.index}")
        if criterion.kind == "speedup":
            ratio = math.log(cand / base) if up else math.log(base / cand)  # type: ignore[operator]
            out.append(ratio - math.log(bar))
        elif criterion.kind == "absolute":
            out.append(math.log(cand / bar) if up else math.log(bar / cand))
        else:
            allowance = math.log1p(criterion.tolerance)
            ratio = math.log(cand / base) if up else math.log(base / cand)  # type: ignore[operator]
            out.append(ratio + allowance)
    return np.asarray(out, dtype=np.float64)


def natural_log_value(criterion: Criterion, reported_higher: dict[str, bool], margin: float) -> float:
    """The log of the criterion's natural figure for a margin (inverse of ``margins``): the log
    speedup, the log of the candidate's value (absolute), the log of candidate/baseline (no_worse)."""
    up = higher_is_better(criterion, reported_higher)
    if criterion.kind == "speedup":
        return margin + math.log(criterion.threshold)
    if criterion.kind == "absolute":
        return (margin if up else -margin) + math.log(criterion.threshold)
    ratio = margin - math.log1p(criterion.tolerance)
    return ratio if up else -ratio


class MissingMeasurement(RuntimeError):
    pass


@dataclass
class CriterionState:
    criterion: Criterion
    decision: str = stats.UNDECIDED
    decided_at_pairs: int | None = None
    looks: list[dict[str, Any]] = field(default_factory=list)
    estimate: float | None = None
    interval: tuple[float, float] | None = None
    interval_confidence: float | None = None
    p_pass: float | None = None
    p_fail: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    # The confidence sequence on the median margin so far (see stats.run_sequential_with_bounds),
    # with the error each side's bound may carry: the side's alpha once a look has bounded it.
    low: float = -math.inf
    high: float = math.inf
    low_error: float | None = None
    high_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion.to_dict(),
            "label": self.criterion.label,
            "self_reported": self.criterion.self_reported,
            "decision": _final(self.decision),
            "decided_at_pairs": self.decided_at_pairs,
            "estimate": self.estimate,
            "interval": list(self.interval) if self.interval else None,
            "interval_confidence": self.interval_confidence,
            "p_value_pass": self.p_pass,
            "p_value_fail": self.p_fail,
            "looks": self.looks,
            **({"detail": self.detail} if self.detail else {}),
        }


@dataclass
class TierState:
    tier: Tier
    decision: str = stats.UNDECIDED
    decided_at_pairs: int | None = None
    p_pass: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "speedup": self.tier.speedup,
            "fraction": self.tier.fraction,
            "decision": _final(self.decision),
            "decided_at_pairs": self.decided_at_pairs,
            "p_value_pass": self.p_pass,
        }


def _final(decision: str) -> str:
    return INCONCLUSIVE if decision == stats.UNDECIDED else decision


class SequentialDecision:
    """Decision state across looks; ``update`` is called after every pair."""

    def __init__(
        self, criteria: Criteria, looks: Sequence[stats.Look], reported_higher: dict[str, bool], confidence: float
    ) -> None:
        self.criteria = criteria
        self.looks = list(looks)
        self.reported_higher = reported_higher
        self.confidence = confidence
        self.states = [CriterionState(c) for c in criteria.criteria]
        self.tiers = [TierState(t) for t in criteria.tiers]
        self.looks_done: list[int] = []
        # Each side's error over all looks, exact for the sign test (stats.sequential_sign_error).
        counts = [lk.pairs for lk in self.looks]
        self.pass_alpha = stats.sequential_sign_error(counts, [lk.pass_critical for lk in self.looks])
        self.fail_alpha = stats.sequential_sign_error(counts, [lk.fail_critical for lk in self.looks])

    @property
    def budget_pairs(self) -> int:
        return self.looks[-1].pairs

    def update(self, pairs: Sequence[Pair]) -> None:
        n = len(pairs)
        look = next((lk for lk in self.looks if lk.pairs == n), None)
        if look is not None:
            self._look(look, pairs)
        for state in self.states:
            # A decided criterion keeps the estimate and interval it was decided on; later pairs are
            # measured for the other criteria.
            if state.decided_at_pairs is None or state.decided_at_pairs == n:
                self._estimate(state, pairs)

    def _look(self, look: stats.Look, pairs: Sequence[Pair]) -> None:
        n = look.pairs
        self.looks_done.append(n)
        for state in self.states:
            if state.criterion.metric == "peak_memory" and state.criterion.kind == "no_worse":
                # Checked again at every look over every pair so far: a PASS on the first pairs must
                # hold for the runs measured afterwards (for the other criteria), its maximum above all.
                if state.decision != FAIL:
                    self._decide_memory(state, pairs, n)
                continue
            if state.decision != stats.UNDECIDED:
                continue
            outcome = stats.evaluate_look(margins(state.criterion, pairs, self.reported_higher), look)
            state.looks.append(
                {
                    "pairs": n,
                    "level": outcome.level,
                    "p_value_pass": outcome.p_pass,
                    "p_value_fail": outcome.p_fail,
                    "decision": outcome.decision,
                    "pairs_above_bar": outcome.above,
                    "pairs_below_bar": outcome.below,
                    "outlier_pairs": 0,  # the sign test leaves no pair out
                }
            )
            state.p_pass, state.p_fail = outcome.p_pass, outcome.p_fail
            low, high = max(state.low, outcome.low), min(state.high, outcome.high)
            if low > high:
                # Bounds of different looks cross only when the pairs drift; this look's own bounds
                # carry the same guarantee (each is one of the sequence's) and agree with its decision.
                low, high = outcome.low, outcome.high
            state.low, state.low_error = (low, self.pass_alpha) if low > -math.inf else (low, None)
            state.high, state.high_error = (high, self.fail_alpha) if high < math.inf else (high, None)
            if outcome.decision != stats.UNDECIDED:
                state.decision, state.decided_at_pairs = outcome.decision, n
        speedup = self.criteria.speedup_criterion
        if speedup is not None:
            for tier in self.tiers:
                if tier.decision != stats.UNDECIDED:
                    continue
                outcome = stats.evaluate_look(
                    margins(speedup, pairs, self.reported_higher, threshold=tier.tier.speedup), look
                )
                tier.p_pass = outcome.p_pass
                if outcome.decision != stats.UNDECIDED:
                    tier.decision, tier.decided_at_pairs = outcome.decision, n

    def _decide_memory(self, state: CriterionState, pairs: Sequence[Pair], n: int) -> None:
        """Peak memory is nearly deterministic: compare the median and the max directly, each with
        the tolerance; both must hold. ``decided_at_pairs`` is the latest look that checked it."""
        tolerance = 1.0 + state.criterion.tolerance
        base = np.asarray([p.baseline.peak_memory_bytes for p in pairs], dtype=np.float64)
        cand = np.asarray([p.candidate.peak_memory_bytes for p in pairs], dtype=np.float64)
        median_ok = np.median(cand) <= tolerance * np.median(base)
        max_ok = cand.max() <= tolerance * base.max()
        state.detail = {
            "baseline_median_bytes": float(np.median(base)),
            "candidate_median_bytes": float(np.median(cand)),
            "baseline_max_bytes": float(base.max()),
            "candidate_max_bytes": float(cand.max()),
            "median_within_tolerance": bool(median_ok),
            "max_within_tolerance": bool(max_ok),
        }
        state.looks.append({"pairs": n, "decision": PASS if median_ok and max_ok else FAIL})
        state.decision = PASS if (median_ok and max_ok) else FAIL
        state.decided_at_pairs = n

    def _estimate(self, state: CriterionState, pairs: Sequence[Pair]) -> None:
        """Estimate and interval on the criterion's natural scale: the speedup ratio, the candidate's
        value for absolute criteria, the candidate/baseline ratio for no_worse criteria.

        For tested criteria: the sample median (the statistic the decision certifies) and the
        confidence sequence of the sign test, which agrees with the decision (PASS iff the interval
        lies above the bar, FAIL iff below, INCONCLUSIVE iff it holds the bar). ``interval_confidence``
        is the coverage it is guaranteed for independent pairs: one minus each side's error, alpha for
        a side a look has bounded, 2^-n for a side that is still the sample's extreme. The median is
        clipped into the interval: the sequence keeps the tightest bound of every look, which drift
        can move past the current median."""
        c = state.criterion
        if len(pairs) < 1:
            return
        if c.metric == "peak_memory" and c.kind == "no_worse":
            values = [
                math.log(p.candidate.peak_memory_bytes / p.baseline.peak_memory_bytes)
                for p in pairs
                if p.candidate.peak_memory_bytes and p.baseline.peak_memory_bytes
            ]
            if values:
                low, high = stats.hodges_lehmann_interval(values, self.confidence)
                state.estimate = math.exp(stats.hodges_lehmann(values))
                state.interval = (math.exp(low), math.exp(high))
                state.interval_confidence = self.confidence
            return
        m = margins(c, pairs, self.reported_higher)
        n = m.size
        low, low_error = (state.low, state.low_error) if state.low_error is not None else (float(m.min()), 0.5**n)
        high, high_error = (state.high, state.high_error) if state.high_error is not None else (float(m.max()), 0.5**n)
        median = min(max(float(np.median(m)), low), high)
        ends = sorted(math.exp(natural_log_value(c, self.reported_higher, v)) for v in (low, high))
        state.estimate = math.exp(natural_log_value(c, self.reported_higher, median))
        state.interval = (ends[0], ends[1])
        state.interval_confidence = 1.0 - low_error - high_error

    def all_decided(self) -> bool:
        if any(s.decision == FAIL for s in self.states):
            return True
        if any(s.decision == stats.UNDECIDED for s in self.states):
            return False
        # Everything passed: keep measuring only while a higher tier may still be reached.
        return not any(t.decision == stats.UNDECIDED for t in self.tiers)

    def overall(self) -> str:
        if any(s.decision == FAIL for s in self.states):
            return FAIL
        if all(s.decision == PASS for s in self.states):
            return PASS
        return INCONCLUSIVE

    def tier(self) -> Tier | None:
        passed = [t.tier for t in self.tiers if t.decision == PASS]
        return max(passed, key=lambda t: t.speedup) if passed else None


def caching_flag(pairs: Sequence[Pair]) -> dict[str, Any]:
    """Compare repeated requests' latency with first-seen requests sent in the same part of the run
    (repeats always come after their first occurrence, so comparing with all first-seen requests
    would mistake ordinary warm-up for caching), candidate vs baseline."""

    def run_ratio(record: RunRecord) -> float | None:
        repeats = [(pos, lat) for pos, repeat, lat in record.request_log if repeat]
        if not repeats:
            return None
        start = min(pos for pos, _ in repeats)
        controls = [lat for pos, repeat, lat in record.request_log if not repeat and pos >= start]
        if not controls:
            return None
        return float(np.median([lat for _, lat in repeats]) / np.median(controls))

    def ratio(records: list[RunRecord]) -> float | None:
        values = [v for v in (run_ratio(r) for r in records) if v is not None]
        return float(np.median(values)) if values else None

    candidate = ratio([p.candidate for p in pairs])
    baseline = ratio([p.baseline for p in pairs])
    suspected = bool(
        candidate is not None
        and candidate < CACHING_RATIO
        and (baseline is None or candidate < CACHING_RELATIVE_TO_BASELINE * baseline)
    )
    return {
        "candidate_repeat_to_first_latency": candidate,
        "baseline_repeat_to_first_latency": baseline,
        "caching_suspected": suspected,
    }


def settle_undecided(entries: list[dict[str, Any]], verdict: str) -> list[dict[str, Any]]:
    """Per-criterion (or per-tier) entries as the report shows them under the overall ``verdict``."""
    if verdict not in (FAIL, ERROR):
        return entries
    return [{**e, "decision": NOT_DECIDED} if e["decision"] == INCONCLUSIVE else e for e in entries]
