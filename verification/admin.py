"""Operators' view of verification: runs (with their errors and live progress) and signing keys.

Runs change only through `verification.services`; the one action requeues through the watchdog's path.
"""

from django.contrib import admin

from common.admin import ReadOnlyModelAdmin

from . import services
from .models import SigningKey, VerificationRun


@admin.register(VerificationRun)
class VerificationRunAdmin(ReadOnlyModelAdmin):
    list_display = (
        "id",
        "kind",
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
    list_filter = ("status", "kind", "hardware_class", "decision", "created_at")
    search_fields = ("=id", "subject", "reason")
    list_select_related = ("package", "candidate", "hidden_inputs")
    actions = ("run_watchdog",)

    def get_fields(self, request, obj=None):
        return [name for name in super().get_fields(request, obj) if name != "token_hash"]

    @admin.action(description="Requeue silent or overrunning runs now (the watchdog)")
    def run_watchdog(self, request, queryset):
        handled = services.verification_watchdog()
        self.message_user(request, f"Watchdog handled {len(handled)} run(s).")


@admin.register(SigningKey)
class SigningKeyAdmin(ReadOnlyModelAdmin):
    list_display = ("key_id", "active", "created_at", "retired_at")
    list_filter = ("active",)
    search_fields = ("key_id",)
    actions = ("retire",)

    @admin.action(description="Retire the selected keys (old certificates stay verifiable)")
    def retire(self, request, queryset):
        for key in queryset:
            services.signing_key_retire(key_id=key.key_id)
