"""Operators' view of outbound webhook deliveries: which are failing, and what each attempt got back.

Read-only: deliveries change only through `notifications.services`. Endpoints' signing secrets are never shown.
"""

from urllib.parse import urlsplit

from django.contrib import admin

from common.admin import ReadOnlyModelAdmin, ReadOnlyTabularInline

from . import selectors
from .models import Delivery, DeliveryAttempt


class DeliveryHealthFilter(admin.SimpleListFilter):
    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request, model_admin):
        return (("failing", "Failing (gave up, or retrying after a failure)"),)

    def queryset(self, request, queryset):
        if self.value() == "failing":
            return queryset.filter(pk__in=selectors.deliveries_failing().values("pk"))
        return queryset


class DeliveryAttemptInline(ReadOnlyTabularInline):
    model = DeliveryAttempt
    fields = ("number", "started_at", "status_code", "latency_ms", "succeeded", "error")
    readonly_fields = fields
    show_change_link = False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyModelAdmin):
    list_display = ("id", "event_type", "destination", "status", "attempt_count", "next_attempt_at", "created_at")
    list_filter = (DeliveryHealthFilter, "status", "created_at")
    search_fields = ("=id", "event__public_id", "event__type")
    list_select_related = ("event", "endpoint")
    fields = ("event_type", "destination", "status", "attempt_count", "next_attempt_at", "retry_until", "delivered_at")
    readonly_fields = ("event_type", "destination")
    inlines = (DeliveryAttemptInline,)

    @admin.display(description="Event", ordering="event__type")
    def event_type(self, delivery: Delivery) -> str:
        return delivery.event.type

    @admin.display(description="To")
    def destination(self, delivery: Delivery) -> str:
        # The host only: an endpoint's path or query may carry the receiver's own secret.
        return urlsplit(delivery.endpoint.url).hostname or ""
