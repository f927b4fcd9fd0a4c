"""Payments admin: read-only rows, plus the payments operator's money actions (retry a blocked operation, freeze
or unfreeze an escrow, refund its remainder, refund an inquiry, submit chargeback evidence).

Every action leads to a confirmation page with a required note and calls one service, which checks the role
again: the admin only hides what a role may not use. Actions come from the changelist (select rows) or from the
links on a row's page.
"""

from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html_join

from accounts.operators import PAYMENTS_OPERATOR, operator_has_role
from common.admin import ReadOnlyModelAdmin, ReadOnlyTabularInline, money_display
from common.errors import DomainError, NotPermitted

from . import selectors, services
from .models import (
    ConnectedAccount,
    Escrow,
    LedgerEntry,
    LedgerTransaction,
    ProviderOperation,
    ReconciliationIssue,
    WebhookEvent,
)
from .services.support import OPERATOR_NOTE_MAX


class OperatorNoteForm(forms.Form):
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        max_length=OPERATOR_NOTE_MAX,
        help_text="Why: kept in the audit record with your name.",
    )


@dataclass(frozen=True)
class OperatorAction:
    name: str
    title: str
    explanation: str
    run: Any  # (object id, actor, note) -> result


class OperatorActionsMixin:
    """Money actions for payments operators: a confirmation page with a required note, then one service call."""

    operator_actions: tuple[OperatorAction, ...] = ()

    def _is_payments_operator(self, request) -> bool:
        return operator_has_role(user=request.user, role=PAYMENTS_OPERATOR)

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not self._is_payments_operator(request):
            return actions
        for action in self.operator_actions:
            actions[action.name] = (self._changelist_action(action), action.name, action.title)
        return actions

    def _changelist_action(self, action: OperatorAction):
        def run(modeladmin, request, queryset):
            return self._confirm(request, action, list(queryset), changelist=True)

        return run

    def get_urls(self):
        opts = self.model._meta
        return [
            path(
                "<int:object_id>/operator/<str:action_name>/",
                self.admin_site.admin_view(self._object_action_view),
                name=f"{opts.app_label}_{opts.model_name}_operator_action",
            ),
            *super().get_urls(),
        ]

    def _object_action_view(self, request, object_id: int, action_name: str):
        action = next((a for a in self.operator_actions if a.name == action_name), None)
        if action is None:
            raise PermissionDenied
        obj = get_object_or_404(self.model, pk=object_id)
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        response = self._confirm(request, action, [obj], changelist=False)
        return response or HttpResponseRedirect(self._change_url(obj))

    def _change_url(self, obj) -> str:
        opts = self.model._meta
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])

    def _confirm(self, request, action: OperatorAction, objects: list, *, changelist: bool):
        opts = self.model._meta
        form = OperatorNoteForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            for obj in objects:
                try:
                    action.run(obj.pk, request.user, form.cleaned_data["note"])
                except NotPermitted as exc:
                    raise PermissionDenied(exc.message) from exc
                except DomainError as exc:
                    self.message_user(request, f"{obj}: {exc.message} ({exc.code})", messages.ERROR)
                else:
                    self.message_user(request, f"{obj}: {action.title.lower()}: done.", messages.SUCCESS)
            return None
        if "apply" in request.POST and not self._is_payments_operator(request):
            raise PermissionDenied
        cancel_url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        context = {
            **self.admin_site.each_context(request),
            "opts": opts,
            "title": action.title,
            "explanation": action.explanation,
            "objects": objects,
            "form": form,
            "action_name": action.name if changelist else "",
            "form_action": "" if not changelist else request.get_full_path(),
            "cancel_url": cancel_url if changelist else self._change_url(objects[0]),
        }
        return TemplateResponse(request, "admin/payments/operator_action_confirm.html", context)

    @admin.display(description="Operator actions")
    def operator_links(self, obj) -> str:
        opts = self.model._meta
        links = [
            (reverse(f"admin:{opts.app_label}_{opts.model_name}_operator_action", args=[obj.pk, a.name]), a.title)
            for a in self.operator_actions
        ]
        return format_html_join(" | ", '<a href="{}">{}</a>', links) or "—"

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and self._is_payments_operator(request):
            fields.insert(0, "operator_links")
        return fields

    def get_fields(self, request, obj=None):
        fields = list(super().get_fields(request, obj))
        if obj is not None and self._is_payments_operator(request) and "operator_links" not in fields:
            fields.insert(0, "operator_links")
        elif "operator_links" in fields and not (obj is not None and self._is_payments_operator(request)):
            fields.remove("operator_links")
        return fields


ESCROW_ACTIONS = (
    OperatorAction(
        "escrow_freeze",
        "Freeze the escrow",
        "Nothing is released, refunded or transferred from a frozen escrow until an operator unfreezes it. "
        "A chargeback freeze is separate and stays until Stripe settles the dispute.",
        lambda pk, actor, note: services.escrow_freeze(escrow_id=pk, actor=actor, note=note),
    ),
    OperatorAction(
        "escrow_unfreeze",
        "Unfreeze the escrow",
        "Lifts the operator's hold; transfers waiting on it go out. A chargeback freeze is not lifted.",
        lambda pk, actor, note: services.escrow_unfreeze(escrow_id=pk, actor=actor, note=note),
    ),
    OperatorAction(
        "escrow_refund_remainder",
        "Refund the remainder to the company",
        "Refunds everything the platform still holds for the escrow and closes it.",
        lambda pk, actor, note: services.escrow_refund_remainder_by_operator(escrow_id=pk, actor=actor, note=note),
    ),
    OperatorAction(
        "escrow_inquiry_refund",
        "Refund instead of contesting the inquiry",
        "Only while the dispute is an inquiry that Stripe says is still refundable: refunds what is held, which "
        "avoids a chargeback and its fee.",
        lambda pk, actor, note: services.escrow_inquiry_refund(escrow_id=pk, actor=actor, note=note),
    ),
    OperatorAction(
        "dispute_evidence_submit",
        "Submit chargeback evidence",
        "Uploads the verification certificate and report and submits them, with a summary, as the dispute's "
        "evidence. Stripe accepts one submission.",
        lambda pk, actor, note: services.dispute_evidence_submit(escrow_id=pk, actor=actor, note=note),
    ),
)

OPERATION_ACTIONS = (
    OperatorAction(
        "operation_retry",
        "Retry the blocked operation",
        "First lists what Stripe already holds for it (and records that instead of paying again); otherwise a new "
        "operation with a fresh idempotency key replaces the blocked one.",
        lambda pk, actor, note: services.operation_retry(operation_id=pk, actor=actor, note=note),
    ),
)


@admin.register(Escrow)
class EscrowAdmin(OperatorActionsMixin, ReadOnlyModelAdmin):
    operator_actions = ESCROW_ACTIONS
    list_display = (
        "id",
        "reference",
        "status",
        "frozen",
        "operator_frozen",
        "amount_display",
        "fee_display",
        "released_bps",
        "funding_deadline",
    )
    list_filter = ("status", "frozen", "operator_frozen")
    search_fields = ("reference", "payment_intent_id", "charge_id", "dispute_id")
    readonly_fields = ("amount_display", "fee_display", "released_amount_display", "released_fee_display")
    field_displays = {
        "amount": "amount_display",
        "fee": "fee_display",
        "released_amount": "released_amount_display",
        "released_fee": "released_fee_display",
    }

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, escrow: Escrow) -> str:
        return money_display(escrow.amount, escrow.currency)

    @admin.display(description="Fee", ordering="fee")
    def fee_display(self, escrow: Escrow) -> str:
        return money_display(escrow.fee, escrow.currency)

    @admin.display(description="Released amount")
    def released_amount_display(self, escrow: Escrow) -> str:
        return money_display(escrow.released_amount, escrow.currency)

    @admin.display(description="Released fee")
    def released_fee_display(self, escrow: Escrow) -> str:
        return money_display(escrow.released_fee, escrow.currency)


@admin.register(ProviderOperation)
class ProviderOperationAdmin(OperatorActionsMixin, ReadOnlyModelAdmin):
    operator_actions = OPERATION_ACTIONS
    list_display = (
        "id",
        "escrow",
        "kind",
        "idempotency_key",
        "amount_display",
        "status",
        "attempts",
        "provider_object_id",
    )
    list_filter = ("kind", "status")
    search_fields = ("idempotency_key", "provider_object_id")
    readonly_fields = ("amount_display",)
    field_displays = {"amount": "amount_display"}

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, operation: ProviderOperation) -> str:
        return money_display(operation.amount, operation.currency)


class LedgerEntryInline(ReadOnlyTabularInline):
    model = LedgerEntry
    readonly_fields = ("account", "amount_display", "created_at")
    fields = readonly_fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("transaction")

    @admin.display(description="Amount")
    def amount_display(self, entry: LedgerEntry) -> str:
        return money_display(entry.amount, entry.transaction.currency)


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "escrow", "kind", "idempotency_key", "provider_object_id", "created_at")
    list_filter = ("kind",)
    search_fields = ("idempotency_key", "provider_object_id")
    inlines = [LedgerEntryInline]


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyModelAdmin):
    list_display = ("event_id", "type", "source", "status", "attempts", "object_id", "received_at")
    list_filter = ("status", "source", "type")
    search_fields = ("event_id", "object_id")


class ReconciliationOpenFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return (("open", "Open"), ("resolved", "Resolved"))

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(pk__in=selectors.reconciliation_issues_open().values("pk"))
        if self.value() == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.register(ReconciliationIssue)
class ReconciliationIssueAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "escrow", "kind", "expected_display", "actual_display", "resolved_at", "created_at")
    list_filter = (ReconciliationOpenFilter, "kind")
    list_select_related = ("escrow",)
    readonly_fields = ("expected_display", "actual_display")
    field_displays = {"expected": "expected_display", "actual": "actual_display"}

    @admin.display(description="Expected", ordering="expected")
    def expected_display(self, issue: ReconciliationIssue) -> str:
        return money_display(issue.expected, issue.escrow.currency)

    @admin.display(description="Actual", ordering="actual")
    def actual_display(self, issue: ReconciliationIssue) -> str:
        return money_display(issue.actual, issue.escrow.currency)


@admin.register(ConnectedAccount)
class ConnectedAccountAdmin(ReadOnlyModelAdmin):
    list_display = ("provider_account_id", "user", "status", "country", "service_agreement", "transfers_active")
    list_filter = ("status", "service_agreement")
