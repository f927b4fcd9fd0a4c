from rest_framework import serializers

from .models import SigningKey, VerificationRun

REPORT_FIELDS_HIDDEN = ("logs",)


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
        return {key: value for key, value in run.report.items() if key not in REPORT_FIELDS_HIDDEN}

    def get_has_plot(self, run: VerificationRun) -> bool:
        return run.plot_png_id is not None
