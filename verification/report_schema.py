"""The shape a verification host's report must have before anything on the platform reads it.

The certificate check, the recorded fields, the parties' views and the plot all index into the
report; a signed report that lacks a field or holds the wrong type is refused here, field by field,
instead of failing somewhere further on. Fields the platform does not read are left open, so a newer
runner may add more.
"""

from typing import Any

from jsonschema import Draft202012Validator

NUMBER_OR_NULL = {"type": ["number", "null"]}
INTEGER_OR_NULL = {"type": ["integer", "null"]}
OBJECT = {"type": "object"}
LIST_LIMIT = 10_000

CRITERION_RESULT = {
    "type": "object",
    "required": ["label", "decision", "estimate", "interval", "p_value_pass", "p_value_fail", "self_reported"],
    "properties": {
        "label": {"type": "string", "maxLength": 500},
        "decision": {"type": "string", "maxLength": 32},
        "criterion": {"type": ["object", "null"]},
        "estimate": NUMBER_OR_NULL,
        "interval": {
            "oneOf": [{"type": "null"}, {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}]
        },
        # The coverage the interval is guaranteed for (absent from reports of earlier runner versions).
        "interval_confidence": NUMBER_OR_NULL,
        "p_value_pass": NUMBER_OR_NULL,
        "p_value_fail": NUMBER_OR_NULL,
        "self_reported": {"type": ["boolean", "null"]},
    },
}

MEASUREMENT = {
    "type": "object",
    "properties": {
        "phase": {"type": "string"},
        "latencies_seconds": {"type": "array", "items": {"type": "number"}},
        "repeat_latencies_seconds": {"type": "array", "items": {"type": "number"}},
    },
}

SANDBOX_ACTION = {"enum": ["fail", "report"]}
COUNT = {"type": "integer", "minimum": 0}

# What the parties' views and the certificate read of a run's sandbox violations (runner/violations.py).
SANDBOX_VIOLATIONS = {
    "type": "object",
    "required": ["policy", "observed"],
    "properties": {
        "policy": {"type": "object", "maxProperties": 50, "additionalProperties": SANDBOX_ACTION},
        "observed": {
            "type": "array",
            "maxItems": 200,
            "items": {
                "type": "object",
                "required": ["role", "category", "inputs", "action", "runs", "events"],
                "properties": {
                    "role": {"enum": ["baseline", "candidate"]},
                    "category": {"type": "string", "maxLength": 64},
                    "inputs": {"enum": ["public", "hidden"]},
                    "action": SANDBOX_ACTION,
                    "runs": COUNT,
                    "events": COUNT,
                },
            },
        },
        # Categories some runs could not observe (absent from reports of earlier runner versions).
        "unobserved": {
            "type": "array",
            "maxItems": 200,
            "items": {
                "type": "object",
                "required": ["role", "category", "inputs", "runs"],
                "properties": {
                    "role": {"enum": ["baseline", "candidate"]},
                    "category": {"type": "string", "maxLength": 64},
                    "inputs": {"enum": ["public", "hidden"]},
                    "runs": COUNT,
                },
            },
        },
    },
}

REPORT_SCHEMA = {
    "type": "object",
    "required": [
        "runner_version",
        "decision",
        "reason",
        "payout_fraction",
        "tier",
        "criteria_spec",
        "criteria",
        "correctness",
        "runs",
        "sha256",
        "settings",
        "timings",
        "environment",
    ],
    "properties": {
        "runner_version": {"type": "string", "maxLength": 100},
        "decision": {"enum": ["PASS", "FAIL", "INCONCLUSIVE", "ERROR"]},
        "reason": {"type": "string"},
        "reason_code": {"type": ["string", "null"], "maxLength": 64},
        "sandbox_violations": SANDBOX_VIOLATIONS,
        "payout_fraction": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "tier": {
            "type": ["object", "null"],
            "properties": {"index": {"type": ["integer", "null"], "minimum": 0, "maximum": 1000}},
        },
        "criteria_spec": {"type": ["object", "null"]},
        "criteria": {"type": "array", "maxItems": 100, "items": CRITERION_RESULT},
        "correctness": {
            "type": "object",
            "required": ["passed", "outputs_compared"],
            "properties": {
                "passed": {"type": ["boolean", "null"]},
                "outputs_compared": INTEGER_OR_NULL,
                "first_differences": {"type": ["array", "null"], "items": OBJECT},
                "scores": {"type": ["object", "null"]},
            },
        },
        "runs": {
            "type": "object",
            "required": ["pairs", "total", "looks"],
            "properties": {
                "pairs": INTEGER_OR_NULL,
                "total": INTEGER_OR_NULL,
                "looks": {"type": ["integer", "array", "null"]},
            },
        },
        "sha256": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
        "settings": OBJECT,
        "timings": {
            "type": "object",
            "required": ["finished_at"],
            "properties": {"finished_at": {"type": ["string", "null"]}},
        },
        "environment": OBJECT,
        "measurements": {"type": ["array", "null"], "maxItems": LIST_LIMIT, "items": MEASUREMENT},
        "blocked_actions": {"type": ["array", "null"], "items": OBJECT},
        "logs": {"type": ["array", "null"], "items": OBJECT},
        "calibration": {
            "type": "object",
            "properties": {
                "criteria": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "metric": {"type": "string"},
                            "smallest_verifiable_speedup": NUMBER_OR_NULL,
                        },
                    },
                },
                "sandbox_violations": {
                    "type": "array",
                    "maxItems": 50,
                    "items": {
                        "type": "object",
                        "required": ["category", "runs", "events", "job_action"],
                        "properties": {
                            "category": {"type": "string", "maxLength": 64},
                            "runs": COUNT,
                            "events": COUNT,
                            "job_action": SANDBOX_ACTION,
                        },
                    },
                },
            },
        },
    },
}

_validator = Draft202012Validator(REPORT_SCHEMA)


def report_shape_errors(report: Any) -> dict[str, list[str]]:
    """`{"report.criteria[0].estimate": ["…"]}` for every place the report breaks the schema; empty if none."""
    errors: dict[str, list[str]] = {}
    for error in sorted(_validator.iter_errors(report), key=lambda e: list(e.absolute_path)):
        path = "report" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)
        errors.setdefault(path, []).append(_message(error))
    return errors


def _message(error) -> str:
    # The schema's own words, never the offending value (a report may carry hidden-input data).
    if error.validator == "required":
        missing = next((name for name in error.validator_value if name not in (error.instance or {})), "")
        return f"missing field {missing!r}"
    if error.validator == "type":
        return f"must be of type {error.validator_value}"
    if error.validator == "enum":
        return f"must be one of {error.validator_value}"
    return f"fails the {error.validator} rule ({error.validator_value})"
