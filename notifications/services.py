"""Outbound webhooks: endpoints, the event outbox and deliveries.

Events are written by `event_emit` inside the transaction of the change they report, and delivered after it
commits. A delivery attempt claims its row with a lease (so two runs of the task never send twice), posts
outside any transaction, then records the attempt and decides: done, retry later, give up, or disable the
endpoint after three days of failures.
"""

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

import structlog
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from accounts.models import Membership, Organization, User
from common.errors import IllegalTransition, NotPermitted, ValidationFailed
from common.services import audit_record

from . import selectors
from .addresses import AddressRefused, url_validate
from .event_types import ALL_EVENTS, EVENT_TYPES
from .models import Delivery, DeliveryAttempt, OutboundEvent, WebhookEndpoint
from .signing import SIGNATURE_HEADER, secret_generate, signature_header
from .transport import webhook_post

log = structlog.get_logger(__name__)

MAX_EVENT_TYPES = 50
# A claimed attempt that has not recorded its outcome by then (its worker died) may be tried again.
ATTEMPT_LEASE_SECONDS = 120
# Celery may start a countdown retry a moment before the time this side computed.
DUE_TOLERANCE_SECONDS = 2

VERB_ENDPOINT_CREATED = "webhook_endpoint_created"
VERB_ENDPOINT_UPDATED = "webhook_endpoint_updated"
VERB_ENDPOINT_DELETED = "webhook_endpoint_deleted"
VERB_SECRET_ROTATED = "webhook_endpoint_secret_rotated"
VERB_ENDPOINT_DISABLED = "webhook_endpoint_disabled"
VERB_DELIVERY_REDELIVERED = "webhook_delivery_redelivered"


@dataclass(frozen=True)
class Recipient:
    """Who an event is for: an organization or one user (an engineer)."""

    organization_id: int | None = None
    user_id: int | None = None

    def viewer(self) -> User | None:
        """The user whose view of the API the event's data shows: the engineer, or an owner or admin of the
        organization (those who manage its endpoints)."""
        if self.user_id is not None:
            return User.objects.filter(pk=self.user_id, is_active=True).first()
        membership = (
            Membership.objects.filter(
                organization_id=self.organization_id, role__in=Membership.ADMIN_ROLES, user__is_active=True
            )
            .select_related("user")
            .order_by("id")
            .first()
        )
        return membership.user if membership else None


@dataclass(frozen=True)
class IssuedEndpoint:
    endpoint: WebhookEndpoint
    secret: str


@dataclass(frozen=True)
class AttemptOutcome:
    """What the task does next: nothing (None) or try again in `retry_in_seconds`."""

    retry_in_seconds: int | None = None


def _validation_error(exc: AddressRefused) -> ValidationFailed:
    return ValidationFailed(exc.reason, code=exc.code, fields={"url": [exc.reason]})


def _event_types_clean(event_types: Iterable[str]) -> list[str]:
    cleaned = list(dict.fromkeys(event_types))
    unknown = [name for name in cleaned if name != ALL_EVENTS and name not in EVENT_TYPES]
    if not cleaned or unknown or len(cleaned) > MAX_EVENT_TYPES:
        raise ValidationFailed(
            "Name the event types to receive, or `*` for all.",
            code="webhook_event_types_invalid",
            fields={"event_types": [f"unknown: {', '.join(unknown)}" if unknown else "one or more event types"]},
        )
    return [ALL_EVENTS] if ALL_EVENTS in cleaned else cleaned


def _owner_for(actor: User, organization_id: int | None) -> dict:
    if actor.account_type == User.AccountType.ENGINEER:
        if organization_id is not None:
            raise ValidationFailed(
                "Engineers register endpoints for themselves.",
                code="validation_failed",
                fields={"organization": ["not for engineers"]},
            )
        return {"user": actor}
    if actor.account_type != User.AccountType.COMPANY:
        raise NotPermitted("Only companies and engineers register webhook endpoints.")
    administered = list(
        Membership.objects.filter(user=actor, role__in=Membership.ADMIN_ROLES).values_list("organization_id", flat=True)
    )
    if not administered:
        raise NotPermitted("Only the organization's owners and admins manage its webhook endpoints.")
    if organization_id is None:
        if len(administered) != 1:
            raise ValidationFailed(
                "Name the organization the endpoint is for.",
                code="organization_required",
                fields={"organization": ["required"]},
            )
        organization_id = administered[0]
    if organization_id not in administered:
        raise NotPermitted("Only the organization's owners and admins manage its webhook endpoints.")
    return {"organization": Organization.objects.get(pk=organization_id)}


def endpoint_create(
    *, actor: User, url: str, event_types: Iterable[str], description: str = "", organization_id: int | None = None
) -> IssuedEndpoint:
    owner = _owner_for(actor, organization_id)
    cleaned_types = _event_types_clean(event_types)
    try:
        url_validate(url)  # resolves the host: before the transaction, which holds no lock meanwhile
    except AddressRefused as exc:
        raise _validation_error(exc) from None
    with transaction.atomic():
        if WebhookEndpoint.objects.filter(**owner).count() >= settings.WEBHOOKS_MAX_ENDPOINTS_PER_OWNER:
            raise IllegalTransition(
                f"At most {settings.WEBHOOKS_MAX_ENDPOINTS_PER_OWNER} webhook endpoints per owner.",
                code="webhook_endpoint_limit",
            )
        secret = secret_generate()
        endpoint = WebhookEndpoint.objects.create(
            url=url, description=description, event_types=cleaned_types, secret=secret, **owner
        )
        audit_record(actor=actor, verb=VERB_ENDPOINT_CREATED, obj=endpoint, to_state="enabled")
    return IssuedEndpoint(endpoint=endpoint, secret=secret)


def _lock_manageable(actor: User, endpoint_id: int) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
    if not selectors.endpoint_manageable_by(user=actor, endpoint=endpoint):
        raise NotPermitted("Only the endpoint's owner can change it.")
    return endpoint


def endpoint_update(
    *,
    actor: User,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    event_types: Iterable[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
) -> WebhookEndpoint:
    """Change what and where an endpoint receives; `enabled=True` turns a disabled endpoint back on."""
    cleaned_types = _event_types_clean(event_types) if event_types is not None else None
    if url is not None:
        try:
            url_validate(url)
        except AddressRefused as exc:
            raise _validation_error(exc) from None
    with transaction.atomic():
        endpoint = _lock_manageable(actor, endpoint.pk)
        before = "enabled" if endpoint.enabled else "disabled"
        changed = []
        for name, value in (("url", url), ("event_types", cleaned_types), ("description", description)):
            if value is not None and getattr(endpoint, name) != value:
                setattr(endpoint, name, value)
                changed.append(name)
        if enabled is not None and enabled != endpoint.enabled:
            endpoint.enabled = enabled
            endpoint.disabled_at = None if enabled else timezone.now()
            endpoint.disabled_reason = "" if enabled else "disabled by its owner"
            endpoint.disabled_notified_at = None
            endpoint.failing_since = None
            changed.append("enabled")
        endpoint.save()
        audit_record(
            actor=actor,
            verb=VERB_ENDPOINT_UPDATED,
            obj=endpoint,
            from_state=before,
            to_state="enabled" if endpoint.enabled else "disabled",
            data={"fields": changed},
        )
    return endpoint


@transaction.atomic
def endpoint_delete(*, actor: User, endpoint: WebhookEndpoint) -> None:
    endpoint = _lock_manageable(actor, endpoint.pk)
    audit_record(
        actor=actor, verb=VERB_ENDPOINT_DELETED, obj=endpoint, from_state="enabled" if endpoint.enabled else "disabled"
    )
    endpoint.delete()


@transaction.atomic
def endpoint_secret_rotate(*, actor: User, endpoint: WebhookEndpoint) -> IssuedEndpoint:
    """A new secret signs from now on; the current one keeps signing too until the overlap ends."""
    endpoint = _lock_manageable(actor, endpoint.pk)
    secret = secret_generate()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = timezone.now() + timedelta(hours=settings.WEBHOOKS_SECRET_OVERLAP_HOURS)
    endpoint.secret = secret
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at", "updated_at"])
    audit_record(
        actor=actor,
        verb=VERB_SECRET_ROTATED,
        obj=endpoint,
        data={"previous_secret_expires_at": endpoint.previous_secret_expires_at.isoformat()},
    )
    return IssuedEndpoint(endpoint=endpoint, secret=secret)


def _json_safe(data: dict) -> dict:
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def event_emit(
    *, event_type: str, recipients: Iterable[Recipient], render: Callable[[User], dict | None]
) -> list[OutboundEvent]:
    """Write the event, for each recipient with an endpoint that wants it, in the caller's transaction.

    `render(viewer)` returns the object as the API shows it to that recipient's viewer (None: they may not see
    it); it runs only for recipients who have an endpoint, so a change nobody listens to costs one query each.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type}")
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("event_emit runs inside the transaction of the change it reports")
    written = []
    for recipient in dict.fromkeys(recipients):
        endpoints = selectors.endpoints_subscribed(
            organization_id=recipient.organization_id, user_id=recipient.user_id, event_type=event_type
        )
        viewer = recipient.viewer() if endpoints else None
        data = render(viewer) if viewer is not None else None
        if data is None:
            continue
        event = OutboundEvent.objects.create(
            type=event_type,
            api_version=settings.WEBHOOKS_API_VERSION,
            organization_id=recipient.organization_id,
            user_id=recipient.user_id,
            data=_json_safe(data),
        )
        now = timezone.now()
        retry_until = now + timedelta(hours=settings.WEBHOOKS_RETRY_WINDOW_HOURS)
        for endpoint in endpoints:
            delivery = Delivery.objects.create(
                event=event, endpoint=endpoint, next_attempt_at=now, retry_until=retry_until
            )
            _enqueue_on_commit(delivery.pk)
        written.append(event)
    return written


def _enqueue_on_commit(delivery_id: int) -> None:
    def send() -> None:
        from .tasks import delivery_send

        try:
            delivery_send.delay(delivery_id)
        except Exception:  # the broker is down: the due-deliveries sweep sends it later
            log.warning("webhook_delivery_enqueue_failed", delivery_id=delivery_id)

    transaction.on_commit(send)


def event_body(event: OutboundEvent) -> bytes:
    payload = {
        "id": event.public_id,
        "type": event.type,
        "created": event.created_at.isoformat().replace("+00:00", "Z"),
        "api_version": event.api_version,
        "data": event.data,
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def endpoint_signing_secrets(endpoint: WebhookEndpoint, *, now) -> list[str]:
    secrets_signing = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now:
        secrets_signing.append(endpoint.previous_secret)
    return secrets_signing


def retry_countdown(attempt_number: int, *, rng: random.Random | None = None) -> int:
    """Exponential backoff with equal jitter: half the doubling interval fixed, half random."""
    ceiling = min(
        settings.WEBHOOKS_RETRY_BASE_SECONDS * 2 ** max(attempt_number - 1, 0), settings.WEBHOOKS_RETRY_MAX_SECONDS
    )
    return max(1, int(ceiling / 2 + (rng or random).uniform(0, ceiling / 2)))


def _claim(delivery_id: int):
    """Lease the delivery for one attempt, or None when it is not due (done, in flight elsewhere, not yet time)."""
    now = timezone.now()
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update().select_related("event", "endpoint").filter(pk=delivery_id).first()
        )
        if delivery is None or delivery.status != Delivery.Status.PENDING:
            return None
        if delivery.next_attempt_at and delivery.next_attempt_at > now + timedelta(seconds=DUE_TOLERANCE_SECONDS):
            return None
        if not delivery.endpoint.enabled:
            delivery.status = Delivery.Status.CANCELLED
            delivery.next_attempt_at = None
            delivery.save(update_fields=["status", "next_attempt_at", "updated_at"])
            return None
        delivery.attempt_count += 1
        delivery.next_attempt_at = now + timedelta(seconds=ATTEMPT_LEASE_SECONDS)
        delivery.save(update_fields=["attempt_count", "next_attempt_at", "updated_at"])
    return delivery


def delivery_attempt(*, delivery_id: int) -> AttemptOutcome:
    """Send the delivery once if it is due; safe to call twice (a second call finds it claimed or done)."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return AttemptOutcome()
    endpoint, event = delivery.endpoint, delivery.event
    started_at = timezone.now()
    timestamp = int(started_at.timestamp())
    body = event_body(event)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Speedproof-Webhooks/1.0",
        SIGNATURE_HEADER: signature_header(
            secrets_signing=endpoint_signing_secrets(endpoint, now=started_at), timestamp=timestamp, body=body
        ),
        "Speedproof-Event-Id": event.public_id,
        "Speedproof-Event-Type": event.type,
        "Idempotency-Key": event.public_id,
    }
    result = webhook_post(url=endpoint.url, body=body, headers=headers)
    log.info(
        "webhook_delivery_attempt",
        delivery_id=delivery.pk,
        endpoint_id=endpoint.pk,
        event_type=event.type,
        attempt=delivery.attempt_count,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
        error=result.error,
    )
    return _attempt_record(delivery_id=delivery.pk, number=delivery.attempt_count, started_at=started_at, result=result)


def _attempt_record(*, delivery_id: int, number: int, started_at, result) -> AttemptOutcome:
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None:  # the endpoint was deleted meanwhile
            return AttemptOutcome()
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=delivery.endpoint_id)
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=number,
            started_at=started_at,
            status_code=result.status_code,
            latency_ms=result.latency_ms,
            response_excerpt=result.response_excerpt,
            error=result.error,
            succeeded=result.succeeded,
        )
        now = timezone.now()
        if result.succeeded:
            delivery.status = Delivery.Status.SUCCEEDED
            delivery.delivered_at = now
            delivery.next_attempt_at = None
            delivery.save(update_fields=["status", "delivered_at", "next_attempt_at", "updated_at"])
            if endpoint.failing_since is not None:
                endpoint.failing_since = None
                endpoint.save(update_fields=["failing_since", "updated_at"])
            return AttemptOutcome()
        if endpoint.failing_since is None:
            endpoint.failing_since = started_at
            endpoint.save(update_fields=["failing_since", "updated_at"])
        if endpoint.enabled and now - endpoint.failing_since >= timedelta(hours=settings.WEBHOOKS_DISABLE_AFTER_HOURS):
            _endpoint_disable_locked(endpoint, reason=AUTOMATIC_DISABLE_REASON)
        countdown = retry_countdown(number)
        if not endpoint.enabled:
            delivery.status = Delivery.Status.CANCELLED
        elif now + timedelta(seconds=countdown) > delivery.retry_until:
            delivery.status = Delivery.Status.FAILED
        else:
            delivery.next_attempt_at = now + timedelta(seconds=countdown)
            delivery.save(update_fields=["next_attempt_at", "updated_at"])
            return AttemptOutcome(retry_in_seconds=countdown)
        delivery.next_attempt_at = None
        delivery.save(update_fields=["status", "next_attempt_at", "updated_at"])
    return AttemptOutcome()


AUTOMATIC_DISABLE_REASON = "every delivery failed for three days"


def _endpoint_disable_locked(endpoint: WebhookEndpoint, *, reason: str) -> None:
    endpoint.enabled = False
    endpoint.disabled_at = timezone.now()
    endpoint.disabled_reason = reason
    endpoint.save(update_fields=["enabled", "disabled_at", "disabled_reason", "updated_at"])
    audit_record(
        actor=None,
        verb=VERB_ENDPOINT_DISABLED,
        obj=endpoint,
        from_state="enabled",
        to_state="disabled",
        data={"reason": reason},
    )
    _endpoint_disabled_notify_locked(endpoint)


def endpoint_disabled_notify(*, endpoint_id: int) -> bool:
    """Cancel what the disabled endpoint still had pending and email its owner, once (a no-op when the disable
    did it already, as it does since the notice moved into its transaction)."""
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().filter(pk=endpoint_id).first()
        if endpoint is None or endpoint.enabled or endpoint.disabled_notified_at is not None:
            return False
        _endpoint_disabled_notify_locked(endpoint)
    return True


def _endpoint_disabled_notify_locked(endpoint: WebhookEndpoint) -> None:
    """In the disable's transaction: the pending deliveries are cancelled and the owner's email is recorded in
    the outbox (sent after commit, retried by the sweep), so a crash loses neither."""
    from .emails import WEBHOOK_ENDPOINT_DISABLED, email_notify

    now = timezone.now()
    endpoint.disabled_notified_at = now
    endpoint.save(update_fields=["disabled_notified_at", "updated_at"])
    # Rows another worker holds are skipped, not waited for: that worker locks the delivery before the endpoint
    # (the opposite order) and cancels the delivery itself once it sees the endpoint disabled.
    free = Delivery.objects.select_for_update(skip_locked=True).filter(
        endpoint_id=endpoint.pk, status=Delivery.Status.PENDING
    )
    Delivery.objects.filter(pk__in=list(free.values_list("pk", flat=True))).update(
        status=Delivery.Status.CANCELLED, next_attempt_at=None, updated_at=now
    )
    disabled_at = endpoint.disabled_at or now
    email_notify(
        kind=WEBHOOK_ENDPOINT_DISABLED,
        key=f"webhook-endpoint-disabled:{endpoint.pk}:{disabled_at.isoformat()}",
        recipients=[Recipient(organization_id=endpoint.organization_id, user_id=endpoint.user_id)],
        context={
            "endpoint_id": endpoint.pk,
            "description": endpoint.description or "no description",
            "failing_days": settings.WEBHOOKS_DISABLE_AFTER_HOURS // 24,
            "disabled_at": f"{disabled_at:%Y-%m-%d %H:%M} UTC",
        },
    )


def delivery_redeliver(*, actor: User, delivery: Delivery) -> Delivery:
    """Send the event again now (and retry it for another window), whatever happened before."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
        endpoint = _lock_manageable(actor, delivery.endpoint_id)
        if not endpoint.enabled:
            raise IllegalTransition("The endpoint is disabled; enable it first.", code="webhook_endpoint_disabled")
        previous = delivery.status
        now = timezone.now()
        delivery.status = Delivery.Status.PENDING
        delivery.next_attempt_at = now
        delivery.retry_until = now + timedelta(hours=settings.WEBHOOKS_RETRY_WINDOW_HOURS)
        delivery.save(update_fields=["status", "next_attempt_at", "retry_until", "updated_at"])
        audit_record(
            actor=actor, verb=VERB_DELIVERY_REDELIVERED, obj=delivery, from_state=previous, to_state=delivery.status
        )
        _enqueue_on_commit(delivery.pk)
    return delivery


def deliveries_enqueue_overdue(*, limit: int = 500) -> int:
    """The backstop for lost countdown messages (a worker that died holding them, a broker that was down):
    queue every pending delivery overdue by more than the grace period. A delivery queued twice is sent once."""
    overdue_before = timezone.now() - timedelta(seconds=settings.WEBHOOKS_SWEEP_GRACE_SECONDS)
    due = Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=overdue_before)
    ids = list(due.order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    from .tasks import delivery_send, endpoint_disabled_notify

    for delivery_id in ids:
        delivery_send.delay(delivery_id)
    # Endpoints disabled automatically whose notice never ran (disabled before the notice joined the disable's
    # transaction, with the follow-up message lost); an endpoint its owner disabled is left alone.
    unnotified = WebhookEndpoint.objects.filter(
        enabled=False, disabled_notified_at__isnull=True, disabled_reason=AUTOMATIC_DISABLE_REASON
    )
    for endpoint_id in unnotified.values_list("pk", flat=True)[:limit]:
        endpoint_disabled_notify.delay(endpoint_id)
    return len(ids)
