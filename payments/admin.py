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
        "amount_display",
        "fee_display",
        "released_bps",
        "funding_deadline",
    )
    list_filter = ("status", "frozen")
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
class ProviderOperationAdmin(ReadOnlyModelAdmin):
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
