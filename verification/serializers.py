import re

from rest_framework import serializers

from .models import SigningKey, VerificationRun
from .runner.decision import summarise as run_summary
from .runner.violations import violations_public
from .selectors import report_tier_index

# Fields whose text can carry hidden-input data (the candidate's own output, the baseline's expected
# values), shown only to the company that owns the hidden inputs and to operators.
REPORT_FIELDS_OWNER_ONLY = ("logs",)
# Per-run values the candidate sets as it likes (an error's wording, a self-reported metric: any
# number): run on hidden inputs, it could write them into these.
MEASUREMENT_FIELDS_OWNER_ONLY = ("error", "reported")
# Likewise on hidden inputs: the exit status it picks, and what it tried that the sandbox blocked
# (with counts it picks). Warm-up runs see only the public inputs.
HIDDEN_RUN_FIELDS_OWNER_ONLY = ("exit_code", "blocked", "violations", "privileged_calls")
PER_REQUEST_LATENCIES = ("latencies_seconds", "repeat_latencies_seconds")
# A difference's path that names no dict keys, only positions (reports from before runners wrote
# ``position`` hold only ``where``).
POSITIONS_ONLY = re.compile(r"\$(\[\d+(,\d+)*\])*(\.shape|\.length|\.shape/dtype| keys)?")
COUNTS = re.compile(r"\d+")


def report_for_engineer(report: dict) -> dict:
    """The report without anything that could reveal hidden inputs or the baseline's outputs on them,
    including what a candidate run on them could choose to say."""
    view = {key: value for key, value in report.items() if key not in REPORT_FIELDS_OWNER_ONLY}
    hidden_inputs = (report.get("settings") or {}).get("inputs") != "public"
    view["correctness"] = _correctness_for_engineer(report.get("correctness") or {})
    view["measurements"] = [
        _measurement_for_engineer(measurement, hidden_inputs) for measurement in report.get("measurements") or []
    ]
    if "blocked_actions" in report:
        view["blocked_actions"] = _blocked_for_engineer(report["blocked_actions"] or [])
    if "sandbox_violations" in report:
        # Categories, the policy's action and how many runs: the certificate's own account of them.
        view["sandbox_violations"] = violations_public(report["sandbox_violations"])
    return view


def _correctness_for_engineer(correctness: dict) -> dict:
    view = dict(correctness)
    view["first_differences"] = [_difference_for_engineer(item) for item in correctness.get("first_differences") or []]
    scores = correctness.get("scores")
    if isinstance(scores, dict) and isinstance(scores.get("hidden"), dict):
        # The candidate's per-run scores follow from the outputs it chose; the baseline's stays.
        view["scores"] = {**scores, "hidden": {k: v for k, v in scores["hidden"].items() if k != "candidate"}}
    return view


def _difference_for_engineer(item: dict) -> dict:
    if item.get("inputs") == "public":
        # The package's inputs, which the engineer has: the values are the baseline's and its own.
        return {key: item.get(key) for key in ("inputs", "input_id", "where", "expected", "actual")}
    # Hidden (or, in older reports, unmarked): no input name (the company chose it), no values and no
    # dict keys (the baseline's output on that input), only where in the output it differs.
    position = item.get("position")
    if position is None:
        where = str(item.get("where") or "")
        position = where if POSITIONS_ONLY.fullmatch(where) else None
    return {"inputs": "hidden", "where": position}


def _measurement_for_engineer(measurement: dict, hidden_inputs: bool) -> dict:
    withheld = MEASUREMENT_FIELDS_OWNER_ONLY
    on_hidden_inputs = hidden_inputs and measurement.get("phase") != "warmup"
    if on_hidden_inputs:
        withheld += HIDDEN_RUN_FIELDS_OWNER_ONLY + PER_REQUEST_LATENCIES
    view = {key: value for key, value in measurement.items() if key not in withheld}
    if on_hidden_inputs:
        view.update(_latency_summary(measurement.get("latencies_seconds") or []))
    return view


def _latency_summary(latencies: list) -> dict:
    """A run's latencies as the criteria read them (median, p95) rather than one figure per request: a
    candidate that times its answers by the input's content would write it into the list."""
    if not latencies:
        return {"requests": 0}
    return {
        "requests": len(latencies),
        "latency_median_seconds": run_summary(latencies, "median"),
        "latency_p95_seconds": run_summary(latencies, "p95"),
    }


def _blocked_for_engineer(blocked: list) -> list:
    """Blocked actions with the counts in their text left out: how many connections a run attempted,
    or how many processes it left running, is the candidate's to choose. Entries that then read the
    same are merged."""
    merged: dict[tuple, dict] = {}
    for entry in blocked:
        if entry.get("role") == "policy":
            merged[("policy", entry.get("action"))] = entry
            continue
        action = COUNTS.sub("N", str(entry.get("action", "")))
        key = (entry.get("role"), action)
        if key in merged:
            merged[key]["runs"] = (merged[key]["runs"] or 0) + (entry.get("runs") or 0)
        else:
            merged[key] = {**entry, "action": action}
    return list(merged.values())


class SigningKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = SigningKey
        fields = ["key_id", "public_key_pem", "active", "created_at", "retired_at"]


class VerificationRunSerializer(serializers.ModelSerializer):
    """What the contract's parties see: status, live progress and the signed outcome.

    The report names hidden inputs only by id and sha256; their contents never leave the host.
    """

    report = serializers.SerializerMethodField()
    tier = serializers.SerializerMethodField(
        help_text="The payout tier the signed report reached: its position (from 0) in the job's tiers; null if none."
    )
    has_plot = serializers.SerializerMethodField()

    class Meta:
        model = VerificationRun
        fields = [
            "id",
            "kind",
            "status",
            "hardware_class",
            "budget_pairs",
            "progress",
            "decision",
            "reason",
            "tier",
            "payout_fraction_bps",
            "speedup_estimate",
            "infrastructure_failures",
            "host_id",
            "created_at",
            "started_at",
            "finished_at",
            "report",
            "certificate",
            "has_plot",
        ]

    def get_report(self, run: VerificationRun) -> dict | None:
        if run.report is None:
            return None
        if self.context.get("hidden_inputs_owner"):
            return run.report
        return report_for_engineer(run.report)

    def get_tier(self, run: VerificationRun) -> int | None:
        # Read from the report the parties also see, so the two always agree (runs recorded before the tier was
        # derived from the report's tier list stored none).
        return report_tier_index(run.report) if run.report is not None else run.tier

    def get_has_plot(self, run: VerificationRun) -> bool:
        return run.plot_png_id is not None
