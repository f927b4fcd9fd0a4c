"""Stored provider events: stored once, drained in batches, acted on by re-fetched state."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from common.errors import DomainError, RetryableError

from ..errors import WebhookRejected
from ..models import WebhookEvent
from ..providers.base import ProviderEvent
from .support import STALE_CLAIM, _enqueue, _task_send

logger = logging.getLogger(__name__)


def webhook_event_ignored(*, event: ProviderEvent, source: str) -> bool:
    """Stripe sends connected accounts' test-mode events to a live platform's Connect endpoint as well as to its
    test one (https://stripe.com/docs/connect/webhooks): they are answered 200 and neither stored nor acted on.
    The account endpoint receives only its own mode's events, so a mismatch there is still refused."""
    return source == "connect" and settings.STRIPE_LIVEMODE and not event.livemode


def webhook_event_store(*, event: ProviderEvent, source: str) -> bool:
    """Store a verified event once (the unique event id settles races) and queue it; True if it was new.

    A test-mode event at a live deployment's Connect endpoint is not stored (False): see webhook_event_ignored.
    """
    if webhook_event_ignored(event=event, source=source):
        return False
    if event.livemode != settings.STRIPE_LIVEMODE and source != "offline":
        raise WebhookRejected("The event's livemode does not match this deployment.", code="livemode_mismatch")
    fields = {
        "event_id": event.id,
        "source": source,
        "type": event.type[:100],
        "livemode": event.livemode,
        "account": event.account,
        "object_type": event.object_type[:64],
        "object_id": event.object_id,
    }
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        # One statement, one round trip: the unique event id settles concurrent deliveries.
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO payments_webhookevent (event_id, source, type, livemode, account, object_type, object_id,"
                " payload, status, attempts, processed_count, last_error, received_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, 0, 0, '', now())"
                " ON CONFLICT (event_id) DO NOTHING RETURNING id",
                [*fields.values(), json.dumps(dict(event.payload)), WebhookEvent.Status.PENDING],
            )
            row = cursor.fetchone()
        if row is None:
            return False
    else:
        try:
            with transaction.atomic():
                WebhookEvent.objects.create(**fields, payload=dict(event.payload))
        except IntegrityError:
            return False
    _webhook_drain_request()
    return True


def webhook_event_process(*, event_id: int) -> str | None:
    """Claim the stored event, re-fetch its object and act on the object's current state."""
    now = timezone.now()
    claimed = (
        WebhookEvent.objects.filter(pk=event_id)
        .filter(
            Q(status=WebhookEvent.Status.PENDING)
            | Q(status=WebhookEvent.Status.PROCESSING, claimed_at__lt=now - STALE_CLAIM)
        )
        .update(status=WebhookEvent.Status.PROCESSING, claimed_at=now, attempts=F("attempts") + 1)
    )
    if not claimed:
        return None
    return _webhook_event_handle(WebhookEvent.objects.get(pk=event_id))


def _webhook_event_handle(event: WebhookEvent, *, record: bool = True) -> str:
    """Act on a claimed event; RetryableError leaves it pending for a later attempt.

    With `record=False` the caller marks the outcome itself (the drain does it once per batch).
    """
    from ..webhooks import webhook_event_dispatch

    try:
        outcome = webhook_event_dispatch(event)
    except RetryableError as exc:
        WebhookEvent.objects.filter(pk=event.pk).update(
            status=WebhookEvent.Status.PENDING, last_error=exc.message[:2000]
        )
        raise
    except DomainError as exc:
        # Retrying will not help (e.g. the provider no longer has the object): keep it for operators.
        WebhookEvent.objects.filter(pk=event.pk).update(
            status=WebhookEvent.Status.IGNORED,
            last_error=f"{exc.code}: {exc.message}"[:2000],
            processed_at=timezone.now(),
            processed_count=F("processed_count") + 1,
        )
        return WebhookEvent.Status.IGNORED
    except Exception as exc:
        give_up = event.attempts >= 5
        WebhookEvent.objects.filter(pk=event.pk).update(
            status=WebhookEvent.Status.IGNORED if give_up else WebhookEvent.Status.PENDING,
            last_error=f"{type(exc).__name__}: {exc}"[:2000],
        )
        raise
    if record:
        _webhook_events_mark([event.pk], outcome)
    return outcome


def _webhook_events_mark(ids: list[int], outcome: str) -> None:
    WebhookEvent.objects.filter(pk__in=ids, status=WebhookEvent.Status.PROCESSING).update(
        status=outcome, processed_at=timezone.now(), processed_count=F("processed_count") + 1
    )


DRAIN_KEY = "payments:webhook-drain-scheduled"
DRAIN_BATCH = 100


def _webhook_drain_request() -> None:
    """After commit, make sure one drain task is on its way (one Redis SET NX instead of a publish per event).

    The key stays set while a drain runs; the drain deletes it only when it finds nothing pending, and then
    looks once more. An event is committed *before* its request tries to set the key, so a request that finds
    the key set can count on a drain that will still look after it: no stored event is left waiting (the key
    expires, and the beat redrive is the backstop, if a drain message is ever lost).
    """

    def send() -> None:
        from django.core.cache import cache
        from kombu.exceptions import OperationalError

        from .. import tasks

        try:
            if cache.add(DRAIN_KEY, 1, timeout=10):
                tasks.webhook_events_drain.delay()
        except OperationalError:
            logger.exception("could not enqueue the webhook drain; the beat redrive will process the events")
        except Exception:  # the cache (Redis) is down: fall back to a message per event
            logger.warning("webhook drain debounce unavailable; enqueueing directly", exc_info=True)
            tasks.webhook_events_drain.delay()

    transaction.on_commit(send)


def webhook_events_drain(*, max_batches: int = 1000) -> int:
    """Process every pending stored event, in batches claimed with SKIP LOCKED (concurrent drains share out)."""
    from django.core.cache import cache

    done = 0
    failed: set[int] = set()
    released = False
    for _ in range(max_batches):
        with transaction.atomic():
            ids = list(
                WebhookEvent.objects.select_for_update(skip_locked=True)
                .filter(status=WebhookEvent.Status.PENDING)
                .exclude(pk__in=failed)
                .order_by("id")
                .values_list("pk", flat=True)[:DRAIN_BATCH]
            )
            WebhookEvent.objects.filter(pk__in=ids).update(
                status=WebhookEvent.Status.PROCESSING, claimed_at=timezone.now(), attempts=F("attempts") + 1
            )
        if not ids:
            if released:
                break
            # Nothing pending: let the next event schedule a drain, then look once more for any event whose
            # request found the key still set just before this.
            cache.delete(DRAIN_KEY)
            released = True
            continue
        released = False
        outcomes: dict[str, list[int]] = {}
        try:
            for event in WebhookEvent.objects.filter(pk__in=ids).order_by("id"):
                try:
                    outcomes.setdefault(_webhook_event_handle(event, record=False), []).append(event.pk)
                    done += 1
                except Exception:
                    logger.warning("webhook event %s failed; retrying it on its own", event.event_id, exc_info=True)
                    failed.add(event.pk)
                    _task_send(
                        "webhook_event_process", (event.pk,), countdown=min(600, 5 * 2 ** min(event.attempts, 7))
                    )
        finally:
            # One write per outcome for the whole batch. A crash before it leaves the batch claimed; the
            # redrive hands it out again after STALE_CLAIM, and handlers act on current state, so that is safe.
            for outcome, handled in outcomes.items():
                _webhook_events_mark(handled, outcome)
    return done


def webhook_events_redrive(*, older_than: timedelta = timedelta(minutes=2)) -> int:
    """Queue again events that were stored but never finished (broker down, worker killed)."""
    now = timezone.now()
    ids = list(
        WebhookEvent.objects.filter(
            Q(status=WebhookEvent.Status.PENDING, received_at__lt=now - older_than)
            | Q(status=WebhookEvent.Status.PROCESSING, claimed_at__lt=now - STALE_CLAIM)
        ).values_list("pk", flat=True)[:1000]
    )
    for event_id in ids:
        _enqueue("webhook_event_process", event_id)
    return len(ids)
