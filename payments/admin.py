from django.contrib import admin

from common.admin import ReadOnlyModelAdmin, ReadOnlyTabularInline

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


@admin.register(ReconciliationIssue)
class ReconciliationIssueAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "escrow", "kind", "expected", "actual", "resolved_at", "created_at")
    list_filter = ("kind",)


@admin.register(ConnectedAccount)
class ConnectedAccountAdmin(ReadOnlyModelAdmin):
    list_display = ("provider_account_id", "user", "status", "country", "service_agreement", "transfers_active")
    list_filter = ("status", "service_agreement")
