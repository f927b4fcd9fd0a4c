"""Races of the delivery outbox on PostgreSQL, on threads with connections of their own."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from notifications import services
from notifications.models import Delivery, EmailNotification, WebhookEndpoint
from notifications.services import Recipient, event_emit
from tests.factories import EngineerFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("local_webhooks")]


def test_the_disabling_attempt_does_not_deadlock_with_a_worker_holding_another_delivery(receiver, queued):
    """A worker recording an attempt locks its delivery, then the endpoint; the attempt that disables the
    endpoint holds the endpoint and cancels the other deliveries. It must skip the one held, not wait for it
    (PostgreSQL would abort one of the two with "deadlock detected")."""
    engineer = EngineerFactory()
    endpoint = services.endpoint_create(actor=engineer, url=receiver.url, event_types=["*"]).endpoint
    with transaction.atomic():
        for _ in range(3):
            event_emit(event_type="bid.placed", recipients=[Recipient(user_id=engineer.pk)], render=lambda v: {})
    first, held, free = Delivery.objects.order_by("pk")
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=timezone.now() - timedelta(days=3, minutes=1))
    receiver.answer(500)

    other_holds_its_delivery, disabling_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def other_worker():
        try:
            with transaction.atomic():
                Delivery.objects.select_for_update().get(pk=held.pk)
                other_holds_its_delivery.set()
                disabling_done.wait(timeout=5)  # with the old order the disabling attempt never gets here
                endpoint_now = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
                assert not endpoint_now.enabled
        except BaseException as error:  # reported to the test below
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=other_worker)
    thread.start()
    assert other_holds_its_delivery.wait(timeout=10)
    try:
        outcome = services.delivery_attempt(delivery_id=first.pk)
    finally:
        disabling_done.set()
        thread.join(timeout=30)
    assert errors == [] and outcome.retry_in_seconds is None
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_notified_at is not None
    statuses = dict(Delivery.objects.values_list("pk", "status"))
    assert statuses[first.pk] == statuses[free.pk] == Delivery.Status.CANCELLED
    assert statuses[held.pk] == Delivery.Status.PENDING  # its own worker cancels it when it sees the endpoint
    assert services.delivery_attempt(delivery_id=held.pk).retry_in_seconds is None
    assert Delivery.objects.get(pk=held.pk).status == Delivery.Status.CANCELLED
    assert EmailNotification.objects.filter(template="webhook_endpoint_disabled", user=engineer).count() == 1


def test_the_sweep_sends_the_notice_an_automatic_disable_never_sent(receiver, monkeypatch):
    """Endpoints disabled before the notice joined the disable's transaction, whose follow-up message was lost;
    an endpoint its owner disabled gets no notice."""
    queued: list[int] = []
    monkeypatch.setattr("notifications.tasks.endpoint_disabled_notify.delay", queued.append)
    engineer = EngineerFactory()
    automatic, by_owner = (
        services.endpoint_create(actor=engineer, url=receiver.url, event_types=["*"]).endpoint for _ in range(2)
    )
    WebhookEndpoint.objects.filter(pk=automatic.pk).update(
        enabled=False, disabled_at=timezone.now(), disabled_reason=services.AUTOMATIC_DISABLE_REASON
    )
    services.endpoint_update(actor=engineer, endpoint=by_owner, enabled=False)
    services.deliveries_enqueue_overdue()
    assert queued == [automatic.pk]
    assert services.endpoint_disabled_notify(endpoint_id=automatic.pk)
    queued.clear()
    services.deliveries_enqueue_overdue()
    assert queued == []
