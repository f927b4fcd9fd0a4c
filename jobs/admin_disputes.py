"""Operators' view of disputes: the list (escalated ones findable), both results side by side, and the ruling,
given on a confirmation page with a required note. Rulings and re-verifications go through
`jobs.services.disputes`, which checks the operator's role (support may ask for a re-verification; only a
payments operator rules)."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from accounts.operators import PAYMENTS_OPERATOR, SUPPORT, operator_has_role
from common.admin import ReadOnlyModelAdmin, ReadOnlyTabularInline
from common.errors import DomainError

from .models import Dispute, DisputeEvidence
from .selectors import dispute_run_side
from .services import disputes as dispute_services

SIDE_BY_SIDE_ROWS = (
    ("State", "state"),
    ("Decision", "decision"),
    ("Tier", "tier"),
    ("Payout (bps)", "payout_fraction_bps"),
    ("Speedup estimate", "speedup_estimate"),
    ("Speedup interval", "speedup_interval"),
    ("Host", "host_id"),
    ("Certificate", "certificate"),
    ("Plot", "plot"),
    ("Finished", "finished_at"),
)


def _plot_img(side: dict):
    # Operators see the plot through the admin's own view, so the page needs no API token or API URL.
    if not side.get("plot_png_url"):
        return "—"
    src = reverse("admin:verification_verificationrun_plot", args=[side["run"], "png"])
    return format_html('<img src="{}" alt="Plot of run {}" style="max-width:480px">', src, side["run"])


def side_by_side_html(dispute: Dispute):
    original = dispute_run_side(run=dispute.disputed_run, submission_id=dispute.submission_id) or {}
    rerun = dispute_run_side(run=dispute.reverification_run, submission_id=dispute.submission_id) or {}

    def cell(side: dict, key: str) -> str:
        value = side.get(key)
        if key == "certificate" and value:
            return f"{value.get('key_id') or '—'} ({'verified' if value.get('verified') else 'NOT verified'})"
        if key == "plot":
            return _plot_img(side)
        if key == "tier" and value is not None:
            # Shown as the story page counts tiers (from 1), with the index the ruling form takes.
            return f"{value + 1} (index {value})"
        if key == "speedup_interval" and isinstance(value, list | tuple):
            return "[" + ", ".join(f"{b:.3f}" if isinstance(b, int | float) else "—" for b in value) + "]"
        return "—" if value in (None, "") else str(value)

    rows = format_html_join(
        "",
        "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
        ((label, cell(original, key), cell(rerun, key)) for label, key in SIDE_BY_SIDE_ROWS),
    )
    return format_html(
        "<table><thead><tr><th></th><th>Original run {}</th><th>Re-verification {}</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        original.get("run", "—"),
        rerun.get("run", "—"),
        rows,
    )


class EscalatedFilter(admin.SimpleListFilter):
    title = "escalated"
    parameter_name = "escalated"

    def lookups(self, request, model_admin):
        return (("yes", "Escalated"), ("no", "Not escalated"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(escalated_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(escalated_at__isnull=True)
        return queryset


class DisputeEvidenceInline(ReadOnlyTabularInline):
    model = DisputeEvidence
    fields = ("side", "filename", "content_type", "artifact", "uploaded_by")


class RulingForm(forms.Form):
    ruling = forms.ChoiceField(choices=Dispute.Ruling.choices)
    tier = forms.IntegerField(
        required=False, min_value=0, help_text="For a split, or an engineer's overturn: the tier to pay (from 0)."
    )
    note = forms.CharField(widget=forms.Textarea, help_text="Required: why, in words both parties will read.")


@admin.register(Dispute)
class DisputeAdmin(ReadOnlyModelAdmin):
    list_display = (
        "id",
        "contract",
        "side",
        "status",
        "recommendation",
        "waiting_for_another_host",
        "escalated",
        "ruling",
        "created_at",
    )
    list_filter = ("status", EscalatedFilter, "recommendation", "side", "ruling", "created_at")
    search_fields = ("=id", "=contract__id", "reason")
    list_select_related = ("contract", "reverification_run")
    readonly_fields = ("side_by_side",)
    inlines = (DisputeEvidenceInline,)
    actions = ("rule", "reverify")

    @admin.display(description="Escalated", boolean=True, ordering="escalated_at")
    def escalated(self, dispute: Dispute) -> bool:
        return dispute.escalated_at is not None

    @admin.display(description="Waiting for a second host", boolean=True)
    def waiting_for_another_host(self, dispute: Dispute) -> bool:
        run = dispute.reverification_run
        return bool(run and run.waiting_for_another_host)

    @admin.display(description="Original and re-verification, side by side")
    def side_by_side(self, dispute: Dispute):
        return side_by_side_html(dispute)

    def get_urls(self):
        return [
            path("<int:dispute_id>/rule/", self.admin_site.admin_view(self.rule_view), name="jobs_dispute_rule"),
            *super().get_urls(),
        ]

    def has_rule_permission(self, request) -> bool:
        return operator_has_role(user=request.user, role=PAYMENTS_OPERATOR)

    def has_reverify_permission(self, request) -> bool:
        return operator_has_role(user=request.user, role=SUPPORT)

    @admin.action(description="Rule on the selected dispute (confirmation page)", permissions=["rule"])
    def rule(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Rule on one dispute at a time.", level=messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:jobs_dispute_rule", args=[queryset.get().pk]))

    @admin.action(
        description="Verify again on another host (the last re-verification gave no result)", permissions=["reverify"]
    )
    def reverify(self, request, queryset):
        for dispute in queryset:
            try:
                dispute_services.dispute_reverify(actor=request.user, dispute_id=dispute.pk)
            except DomainError as error:
                self.message_user(request, f"Dispute {dispute.pk}: {error.message}", level=messages.ERROR)
            else:
                self.message_user(request, f"Dispute {dispute.pk}: re-verification queued.")

    def rule_view(self, request, dispute_id: int):
        # The page offers a money action: only a payments operator sees it (the service checks the role again).
        if not self.has_rule_permission(request):
            raise PermissionDenied
        dispute = get_object_or_404(Dispute.objects.select_related("disputed_run", "reverification_run"), pk=dispute_id)
        form = RulingForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                dispute_services.dispute_rule(
                    dispute_id=dispute.pk,
                    actor=request.user,
                    ruling=form.cleaned_data["ruling"],
                    note=form.cleaned_data["note"],
                    tier=form.cleaned_data["tier"],
                )
            except DomainError as error:
                form.add_error(None, f"{error.message} ({error.code})")
            else:
                self.message_user(request, f"Dispute {dispute.pk} ruled: {form.cleaned_data['ruling']}.")
                return HttpResponseRedirect(reverse("admin:jobs_dispute_change", args=[dispute.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Rule on dispute {dispute.pk}",
            "dispute": dispute,
            "form": form,
            "side_by_side": side_by_side_html(dispute),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "jobs/admin/dispute_rule.html", context)
