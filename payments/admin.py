from django.contrib import admin

from common.admin import ReadOnlyModelAdmin, ReadOnlyTabularInline, money_display

from . import selectors
from .models import (
    ConnectedAccount,
    Escrow,
    LedgerEntry,
    LedgerTransaction,
    ProviderOperation,
    ReconciliationIssue,
    WebhookEvent,
)


@admin.register(Escrow)
class EscrowAdmin(ReadOnlyModelAdmin):
    list_display = (
        "id",
        "reference",
        "status",
        "frozen",
        "currency",
        "amount",
        "fee",
        "released_bps",
        "funding_deadline",
    )
    list_filter = ("status", "frozen")
    search_fields = ("reference", "payment_intent_id", "charge_id", "dispute_id")


@admin.register(ProviderOperation)
class ProviderOperationAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "escrow", "kind", "idempotency_key", "amount", "status", "attempts", "provider_object_id")
    list_filter = ("kind", "status")
    search_fields = ("idempotency_key", "provider_object_id")


class LedgerEntryInline(ReadOnlyTabularInline):
    model = LedgerEntry
    readonly_fields = ("account", "amount", "created_at")
    fields = readonly_fields


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
