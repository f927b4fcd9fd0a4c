from rest_framework import serializers

from .models import SigningKey, VerificationRun

# Fields whose text can carry hidden-input data (the candidate's own output, the baseline's expected
# values), shown only to the company that owns the hidden inputs and to operators.
REPORT_FIELDS_OWNER_ONLY = ("logs",)


def report_for_engineer(report: dict) -> dict:
    """The report without anything that could reveal hidden inputs or the baseline's outputs on them."""
    view = {key: value for key, value in report.items() if key not in REPORT_FIELDS_OWNER_ONLY}
    correctness = dict(view.get("correctness") or {})
    correctness["first_differences"] = [
        {"input_id": item.get("input_id"), "where": item.get("where")} for item in correctness.get("first_differences") or []
    ]
    view["correctness"] = correctness
    view["measurements"] = [
        {key: value for key, value in measurement.items() if key != "error"} for measurement in view.get("measurements") or []
    ]
    return view


class SigningKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = SigningKey
        fields = ["key_id", "public_key_pem", "active", "created_at", "retired_at"]


class VerificationRunSerializer(serializers.ModelSerializer):
    """What the contract's parties see: status, live progress and the signed outcome.

    The report names hidden inputs only by id and sha256; their contents never leave the host.
    """

    report = serializers.SerializerMethodField()
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

    def get_has_plot(self, run: VerificationRun) -> bool:
        return run.plot_png_id is not None
