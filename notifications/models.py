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


class EmailCategory(models.TextChoices):
    """What a person can switch off; each is one boolean of `NotificationPreference`."""

    BID_RECEIVED = "bid_received", "A bid arrived on your organization's job"
    BID_ACCEPTED = "bid_accepted", "Your bid was accepted"
    FUNDING_REQUIRED = "funding_required", "A contract awaits your organization's funding"
    VERIFICATION_COMPLETED = "verification_completed", "A verification finished"
    PAYMENT_RELEASED = "payment_released", "Payment released to you"
    REFUND_ISSUED = "refund_issued", "A refund to your organization"
    DISPUTES = "disputes", "A dispute was opened or resolved"
    REVIEW_WINDOW_CLOSING = "review_window_closing", "A review window closes within 24 hours"
    ORGANIZATION_INVITE = "organization_invite", "An invitation to join an organization"
    WEBHOOKS = "webhooks", "A webhook endpoint of yours was disabled after failing for days"


class NotificationPreference(TimeStampedModel):
    """Which email categories a user receives; a user without a row receives them all."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preference"
    )
    bid_received = models.BooleanField(default=True)
    bid_accepted = models.BooleanField(default=True)
    funding_required = models.BooleanField(default=True)
    verification_completed = models.BooleanField(default=True)
    payment_released = models.BooleanField(default=True)
    refund_issued = models.BooleanField(default=True)
    disputes = models.BooleanField(default=True)
    review_window_closing = models.BooleanField(default=True)
    organization_invite = models.BooleanField(default=True)
    webhooks = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"Notification preferences of {self.user_id}"

    def wants(self, category: str) -> bool:
        return bool(getattr(self, category))


class EmailNotification(TimeStampedModel):
    """One email for one user about one occurrence (`key`), written in the transaction of the change and sent
    after commit; the unique (key, user, category) row is the record that it was sent, so it is sent once.

    An email to an address with no account yet (an organization invite) has no user: `address` names the
    recipient, and (key, address, category) is unique instead. `address`, when set, is where it goes."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        SKIPPED = "skipped", "Skipped (category switched off, or no address)"

    key = models.CharField(max_length=200)
    category = models.CharField(max_length=32, choices=EmailCategory.choices)
    template = models.CharField(max_length=64)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="email_notifications",
        null=True,
        blank=True,
    )
    address = models.EmailField(blank=True)
    # Only what the email shows (titles, ids, amounts, decisions, links): never hidden inputs or secrets.
    context = models.JSONField(default=dict)
    # The one secret an email may carry, the recipient's own (an invite token): encrypted with a key derived from
    # DJANGO_SECRET_KEY while the email waits, emptied once it is sent or skipped.
    sealed_secret = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["key", "user", "category"], name="uniq_email_per_event_recipient_category"),
            models.UniqueConstraint(
                fields=["key", "address", "category"],
                condition=models.Q(user__isnull=True),
                name="uniq_email_per_event_address_category",
            ),
            models.CheckConstraint(
                condition=models.Q(user__isnull=False) | ~models.Q(address=""), name="email_notification_has_recipient"
            ),
        ]

    def __str__(self) -> str:
        return f"Email {self.template} to {self.user_id or 'an address'}"
