import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from accounts.models import Organization
from common.models import TimeStampedModel

OWNED_BY_ONE = Q(organization__isnull=False, user__isnull=True) | Q(organization__isnull=True, user__isnull=False)


class WebhookEndpoint(TimeStampedModel):
    """A URL that receives signed events for one organization or one engineer.

    The signing secret is kept because every delivery is signed with it; the API shows it only when it is
    created or rotated. During a rotation's overlap the previous secret signs too.
    """

    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.CharField(max_length=2000)
    description = models.CharField(max_length=500, blank=True)
    event_types = models.JSONField(default=list)
    secret = models.CharField(max_length=100)
    previous_secret = models.CharField(max_length=100, blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=255, blank=True)
    disabled_notified_at = models.DateTimeField(null=True, blank=True)
    # Start of the current run of failed attempts (none since the last success); three days of it disables.
    failing_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.CheckConstraint(condition=OWNED_BY_ONE, name="webhook_endpoint_one_owner")]

    def __str__(self) -> str:
        return f"Webhook endpoint {self.pk}"


class OutboundEvent(models.Model):
    """One event for one recipient, written in the transaction of the change it reports (the outbox).

    `data` is what the recipient may see of the object through the API, rendered when the change happened.
    """

    public_id = models.CharField(max_length=40, unique=True, editable=False)
    type = models.CharField(max_length=64, db_index=True)
    api_version = models.CharField(max_length=16)
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="outbound_events"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="outbound_events"
    )
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.CheckConstraint(condition=OWNED_BY_ONE, name="outbound_event_one_recipient")]

    def __str__(self) -> str:
        return f"{self.type} {self.public_id}"

    def save(self, *args, **kwargs):
        if not self.public_id:
            self.public_id = f"evt_{uuid.uuid4().hex}"
        super().save(*args, **kwargs)


class Delivery(TimeStampedModel):
    """One event to one endpoint, tried until it succeeds, its retry window closes or the endpoint goes away."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed (gave up)"
        CANCELLED = "cancelled", "Cancelled (endpoint disabled)"

    event = models.ForeignKey(OutboundEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempt_count = models.PositiveIntegerField(default=0)
    # When the next attempt may start; while an attempt is in flight, when its lease runs out.
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    retry_until = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["event", "endpoint"], name="uniq_delivery_per_endpoint")]

    def __str__(self) -> str:
        return f"Delivery {self.pk} of {self.event_id} to {self.endpoint_id}"


class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    response_excerpt = models.TextField(blank=True)
    error = models.CharField(max_length=255, blank=True)
    succeeded = models.BooleanField(default=False)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="uniq_delivery_attempt_number")]

    def __str__(self) -> str:
        return f"Attempt {self.number} of delivery {self.delivery_id}"
