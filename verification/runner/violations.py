"""Sandbox violations: what the sandbox saw a run attempt, summed per role and category, and what the
job's ``sandbox_policy`` (criteria.py) makes of the candidate's.

The counts of attempts in a run on the hidden inputs are the candidate's to choose after reading
them (1,105 connection attempts can spell an input), so they stay in the report for the job's owner;
what the certificate signs and the engineer sees is, per category, the policy's action and the number
of runs it was seen in, plus the counts from runs on public inputs.

A category the sandbox could not observe in a run (privileged calls where the kernel refuses seccomp
user notification) is listed under ``unobserved`` with the number of such runs: absent from
``observed`` because nobody looked, which must never read as "none attempted".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .criteria import SANDBOX_CATEGORIES

SANDBOX_VIOLATION = "sandbox_violation"
# Baseline violations are listed but never decide anything: the baseline is the company's own code.
BASELINE_ACTION = "report"


class ObservedRun(Protocol):
    role: str
    public_inputs: bool
    violations: dict[str, int]
    unobserved: list[str]


def violations_refused(violations: Mapping[str, int], policy: Mapping[str, str]) -> list[str]:
    """The categories in ``violations`` that the policy fails a verification for, in a fixed order."""
    return [c for c in SANDBOX_CATEGORIES if violations.get(c) and policy.get(c, "fail") == "fail"]


def violations_summarise(records: Iterable[ObservedRun], policy: Mapping[str, str]) -> dict[str, Any]:
    """``{"policy": {...}, "observed": [{role, category, inputs, action, runs, events}, ...]}``, and
    ``"unobserved": [{role, category, inputs, runs}, ...]`` where some run could not observe a category."""
    totals: dict[tuple[str, str, str], list[int]] = {}
    blind: dict[tuple[str, str, str], int] = {}
    for record in records:
        inputs = "public" if record.public_inputs else "hidden"
        for category in record.unobserved:
            blind[(record.role, category, inputs)] = blind.get((record.role, category, inputs), 0) + 1
        for category, count in record.violations.items():
            if count:
                runs_and_events = totals.setdefault((record.role, category, inputs), [0, 0])
                runs_and_events[0] += 1
                runs_and_events[1] += count
    observed = [
        {
            "role": role,
            "category": category,
            "inputs": inputs,
            "action": policy.get(category, "fail") if role == "candidate" else BASELINE_ACTION,
            "runs": runs,
            "events": events,
        }
        for (role, category, inputs), (runs, events) in sorted(totals.items())
    ]
    summary: dict[str, Any] = {"policy": dict(policy), "observed": observed}
    if blind:
        summary["unobserved"] = [
            {"role": role, "category": category, "inputs": inputs, "runs": runs}
            for (role, category, inputs), runs in sorted(blind.items())
        ]
    return summary


def violations_public(summary: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The summary without the event counts of runs on hidden inputs (what the engineer sees and
    the certificate signs)."""
    if not isinstance(summary, Mapping):
        return None
    observed = []
    for entry in summary.get("observed") or []:
        if not isinstance(entry, Mapping):
            continue
        public = {key: entry.get(key) for key in ("role", "category", "inputs", "action", "runs")}
        if entry.get("inputs") == "public":
            public["events"] = entry.get("events")
        observed.append(public)
    view: dict[str, Any] = {"policy": dict(summary.get("policy") or {}), "observed": observed}
    unobserved = [
        {key: entry.get(key) for key in ("role", "category", "inputs", "runs")}
        for entry in summary.get("unobserved") or []
        if isinstance(entry, Mapping)
    ]
    if unobserved:  # which runs nobody watched is not the candidate's to choose: shown in full
        view["unobserved"] = unobserved
    return view
