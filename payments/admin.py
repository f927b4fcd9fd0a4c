from django.contrib import admin

from .models import ConnectedAccount, Escrow, LedgerEntry, LedgerTransaction, ProviderOperation, ReconciliationIssue, WebhookEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Escrow)
class EscrowAdmin(ReadOnlyAdmin):
    list_display = ("id", "reference", "status", "frozen", "currency", "amount", "fee", "released_bps", "funding_deadline")
    list_filter = ("status", "frozen")
    search_fields = ("reference", "payment_intent_id", "charge_id", "dispute_id")


@admin.register(ProviderOperation)
class ProviderOperationAdmin(ReadOnlyAdmin):
    list_display = ("id", "escrow", "kind", "idempotency_key", "amount", "status", "attempts", "provider_object_id")
    list_filter = ("kind", "status")
    search_fields = ("idempotency_key", "provider_object_id")


class LedgerEntryInline(admin.TabularInline):
    model = LedgerEntry
    extra = 0
    can_delete = False
    readonly_fields = ("account", "amount", "created_at")
    fields = readonly_fields


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ("id", "escrow", "kind", "idempotency_key", "provider_object_id", "created_at")
    list_filter = ("kind",)
    search_fields = ("idempotency_key", "provider_object_id")
    inlines = [LedgerEntryInline]


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "type", "source", "status", "attempts", "object_id", "received_at")
    list_filter = ("status", "source", "type")
    search_fields = ("event_id", "object_id")


@admin.register(ReconciliationIssue)
class ReconciliationIssueAdmin(ReadOnlyAdmin):
    list_display = ("id", "escrow", "kind", "expected", "actual", "resolved_at", "created_at")
    list_filter = ("kind",)


@admin.register(ConnectedAccount)
class ConnectedAccountAdmin(ReadOnlyAdmin):
    list_display = ("provider_account_id", "user", "transfers_active", "details_submitted")
