"""Operators' view of verification: runs (a readable report, their errors and live progress) and signing keys.

Runs change only through `verification.services`. The actions go through a confirmation page with a note
and call services that check the operator's role: running the watchdog re-runs verifications (support may),
retiring a signing key holds back every payout its host's results would release (payments operator).
"""

import json

from django.contrib import admin
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from accounts.operators import PAYMENTS_OPERATOR, SUPPORT, operator_has_role
from common.admin import ReadOnlyModelAdmin, confirm_with_note

from . import selectors, services
from .models import SigningKey, VerificationRun


class RunStateFilter(admin.SimpleListFilter):
    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request, model_admin):
        return (("active", "Queued or running"), ("errored", "Errored or infrastructure failures"))

    def queryset(self, request, queryset):
        if self.value() in ("active", "errored"):
            return queryset & selectors.verification_runs_filter(state=self.value())
        return queryset


@admin.register(VerificationRun)
class VerificationRunAdmin(ReadOnlyModelAdmin):
    list_display = (
        "id",
        "kind_label",
        "subject",
        "hardware_class",
        "status",
        "decision",
        "payout_fraction_bps",
        "speedup_estimate",
        "infrastructure_failures",
        "dispatch_count",
        "heartbeat_at",
        "created_at",
    )
    list_filter = (RunStateFilter, "status", "kind", "hardware_class", "decision", "created_at")
    search_fields = ("=id", "subject", "reason")
    list_select_related = ("package", "candidate", "hidden_inputs")
    readonly_fields = ("kind_label", "report_panel", "report_raw", "plot_links")
    field_displays = {
        "kind": "kind_label",
        "report": "report_panel",
        "plot_png": "plot_links",
        "plot_svg": "plot_links",
    }
    hidden_fields = ("token_hash", "certificate", "progress", "error_log")
    actions = ("run_watchdog",)

    def get_fields(self, request, obj=None):
        fields = [name for name in super().get_fields(request, obj) if name not in self.hidden_fields]
        return [*fields, "progress", "error_log", "report_raw"]

    def has_rerun_permission(self, request) -> bool:
        return operator_has_role(user=request.user, role=SUPPORT)

    @admin.display(description="Kind", ordering="kind")
    def kind_label(self, run: VerificationRun) -> str:
        if run.kind == VerificationRun.Kind.CALIBRATION:
            return mark_safe('<strong class="calibration-label">Calibration</strong> (A/A, baseline against itself)')
        return run.get_kind_display()

    @admin.display(description="Report")
    def report_panel(self, run: VerificationRun) -> str:
        return render_to_string(
            "admin/verification/report_panel.html",
            {
                "run": run,
                "summary": selectors.verification_report_summary(run=run),
                "certificate": selectors.verification_certificate_status(run=run),
            },
        )

    @admin.display(description="Report as recorded (JSON, logs withheld)")
    def report_raw(self, run: VerificationRun) -> str:
        raw = selectors.verification_report_for_operators(run=run)
        if raw is None:
            return "—"
        return format_html(
            "<details><summary>Show the raw report</summary><pre>{}</pre></details>", json.dumps(raw, indent=2)
        )

    @admin.display(description="Plot")
    def plot_links(self, run: VerificationRun) -> str:
        if not run.plot_png_id:
            return "—"
        png = reverse("admin:verification_verificationrun_plot", args=[run.pk, "png"])
        svg = reverse("admin:verification_verificationrun_plot", args=[run.pk, "svg"])
        return format_html(
            '<a href="{}"><img class="run-plot" src="{}" alt="Plot of run {}" style="max-width:900px"></a>'
            '<br><a href="{}">SVG</a>',
            png,
            png,
            run.pk,
            svg,
        )

    def get_urls(self):
        from django.urls import path

        from .admin_views import run_plot

        own = [
            path(
                "<int:run_id>/plot.<str:fmt>",
                self.admin_site.admin_view(run_plot),
                name="verification_verificationrun_plot",
            )
        ]
        return own + super().get_urls()

    @confirm_with_note(
        description="Requeue silent or overrunning runs now (the watchdog)",
        permissions=["rerun"],
        consequence="Runs whose host went silent or overran are requeued (the third failure ends a run).",
    )
    def run_watchdog(self, request, queryset, *, note: str) -> str:
        handled = services.verification_watchdog_by_operator(actor=request.user)
        return f"Watchdog handled {len(handled)} run(s)."


@admin.register(SigningKey)
class SigningKeyAdmin(ReadOnlyModelAdmin):
    list_display = ("key_id", "active", "created_at", "retired_at")
    list_filter = ("active",)
    search_fields = ("key_id",)
    actions = ("retire",)

    def has_retire_permission(self, request) -> bool:
        return operator_has_role(user=request.user, role=PAYMENTS_OPERATOR)

    @confirm_with_note(
        description="Retire the selected keys (old certificates stay verifiable)",
        permissions=["retire"],
        consequence="New results signed by these keys are refused, and with them the payouts they would release.",
    )
    def retire(self, request, queryset, *, note: str) -> str:
        keys = list(queryset.values_list("key_id", flat=True))
        for key_id in keys:
            services.signing_key_retire(actor=request.user, key_id=key_id)
        return f"Retired {len(keys)} key(s)."
