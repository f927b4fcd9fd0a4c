"""Deliveries to a real receiver on 127.0.0.1: signatures, retries, redelivery, disabling, safety."""

import json
import time
from datetime import timedelta

import pytest
from celery.exceptions import Retry
from django.core import mail
from django.utils import timezone

from notifications import services
from notifications.models import Delivery, OutboundEvent, WebhookEndpoint
from notifications.services import Recipient, event_emit
from notifications.signing import signature_verify
from notifications.tasks import delivery_send
from tests.factories import CompanyAdminFactory, EngineerFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("local_webhooks")]


@pytest.fixture(autouse=True)
def production_backoff(settings):
    """The production retry base, whatever the environment says (the e2e tests shorten it)."""
    settings.WEBHOOKS_RETRY_BASE_SECONDS = 30


@pytest.fixture
def engineer():
    return EngineerFactory()


@pytest.fixture
def endpoint(engineer, receiver):
    return services.endpoint_create(actor=engineer, url=receiver.url, event_types=["*"]).endpoint


def _emit(engineer, django_capture_on_commit_callbacks, data=None) -> Delivery:
    with django_capture_on_commit_callbacks(execute=True):
        event_emit(
            event_type="bid.placed",
            recipients=[Recipient(user_id=engineer.pk)],
            render=lambda viewer: data or {"id": 7, "engineer": {"id": viewer.pk}},
        )
    return Delivery.objects.get()


def _signature_ok(request, secret) -> bool:
    return signature_verify(
        header=request.headers["Speedproof-Signature"], body=request.body, secret=secret, now=int(time.time())
    )


def _make_due(delivery: Delivery) -> None:
    """What the countdown's passing does: the delivery is due again."""
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))


def test_an_event_arrives_signed_and_in_the_documented_shape(
    engineer, endpoint, receiver, queued, django_capture_on_commit_callbacks
):
    delivery = _emit(engineer, django_capture_on_commit_callbacks)
    assert queued == [delivery.pk]  # queued after commit
    delivery_send(delivery.pk)
    [request] = receiver.requests
    assert _signature_ok(request, endpoint.secret)
    assert not _signature_ok(request, "whsec_wrong")
    payload = json.loads(request.body)
    event = OutboundEvent.objects.get()
    assert payload == {
        "id": event.public_id,
        "type": "bid.placed",
        "created": payload["created"],
        "api_version": "v1",
        "data": {"id": 7, "engineer": {"id": engineer.pk}},
    }
    assert request.headers["Idempotency-Key"] == event.public_id == request.headers["Speedproof-Event-Id"]
    assert request.headers["Content-Type"] == "application/json"
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SUCCEEDED
    [attempt] = delivery.attempts.all()
    assert (attempt.status_code, attempt.succeeded, attempt.response_excerpt) == (200, True, "ok")
    assert attempt.latency_ms >= 0


def test_the_task_run_twice_delivers_once(engineer, endpoint, receiver, queued, django_capture_on_commit_callbacks):
    delivery = _emit(engineer, django_capture_on_commit_callbacks)
    delivery_send(delivery.pk)
    delivery_send(delivery.pk)
    assert len(receiver.requests) == 1
    assert delivery.attempts.count() == 1


def test_a_claimed_delivery_is_not_sent_by_a_second_run_meanwhile(
    engineer, endpoint, receiver, queued, django_capture_on_commit_callbacks
):
    delivery = _emit(engineer, django_capture_on_commit_callbacks)
    claimed = services._claim(delivery.pk)  # a first worker has it in flight
    assert claimed is not None
    assert services.delivery_attempt(delivery_id=delivery.pk).retry_in_seconds is None
    assert receiver.requests == []


def test_a_500_is_retried_with_backoff_then_succeeds(
    engineer, endpoint, receiver, queued, django_capture_on_commit_callbacks
):
    delivery = _emit(engineer, django_capture_on_commit_callbacks)
    receiver.answer(500, b"boom")
    with pytest.raises(Retry):  # Celery's own retry: a countdown message in a worker
        delivery_send(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.PENDING
    wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
    assert 10 < wait <= 31  # base 30 s with jitter
    delivery_send(delivery.pk)  # early: not due yet, nothing sent
    assert len(receiver.requests) == 1
    _make_due(delivery)
    delivery_send(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SUCCEEDED
    attempts = list(delivery.attempts.order_by("number").values_list("number", "status_code", "response_excerpt"))
    assert attempts == [(1, 500, "boom"), (2, 200, "ok")]
    assert len(receiver.requests) == 2
    assert receiver.requests[0].body == receiver.requests[1].body
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None


def test_backoff_doubles_with_jitter_up_to_the_cap(settings):
    import random

    rng = random.Random(4)
    countdowns = [services.retry_countdown(n, rng=rng) for n in range(1, 16)]
    assert 15 <= countdowns[0] <= 30 and 30 <= countdowns[1] <= 60 and 60 <= countdowns[2] <= 120
    assert all(
        settings.WEBHOOKS_RETRY_MAX_SECONDS / 2 <= c <= settings.WEBHOOKS_RETRY_MAX_SECONDS for c in countdowns[-5:]
    )


def test_a_delivery_gives_up_when_its_three_day_window_closes(
    engineer, endpoint, receiver, queued, django_capture_on_commit_callbacks
):
    delivery = _emit(engineer, django_capture_on_commit_callbacks)
    Delivery.objects.filter(pk=delivery.pk).update(retry_until=timezone.now() + timedelta(seconds=5))
    receiver.answer(503)
    assert services.delivery_attempt(delivery_id=delivery.pk).retry_in_seconds is None
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED


def test_redirects_are_not_followed(engineer, endpoint, receiver, queued, django_capture_on_commit_callbacks):
    delivery = _emit(engineer, django_capture_on_commit_callbacks)
    receiver.answer(302, b"", {"Location": receiver.url + "/elsewhere"})
    services.delivery_attempt(delivery_id=delivery.pk)
    assert len(receiver.requests) == 1
    assert delivery.attempts.get().status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.PENDING


def test_a_large_response_is_read_only_up_to_the_cap(
    settings, engineer, endpoint, receiver, queued, django_capture_on_commit_callbacks
):
    delivery = _emit(engineer, django_capture_on_commit_callbacks)
    receiver.answer(200, b"x" * 1_000_000)
    services.delivery_attempt(delivery_id=delivery.pk)
    assert len(delivery.attempts.get().response_excerpt) == settings.WEBHOOKS_RESPONSE_MAX_BYTES


def test_the_address_is_checked_again_at_delivery(
    settings, engineer, endpoint, receiver, queued, django_capture_on_commit_callbacks
):
    delivery = _emit(engineer, django_capture_on_commit_callbacks)
    settings.WEBHOOKS_ALLOW_LOOPBACK = False  # as if the host now resolved somewhere it may not go
    services.delivery_attempt(delivery_id=delivery.pk)
    assert receiver.requests == []
    attempt = delivery.attempts.get()
    assert attempt.error == "refused: The URL's host resolves to a loopback address."
    assert attempt.status_code is None and not attempt.succeeded


def test_during_a_rotation_both_secrets_sign_then_only_the_new_one(
    engineer, endpoint, receiver, queued, django_capture_on_commit_callbacks
):
    old_secret = endpoint.secret
    new_secret = services.endpoint_secret_rotate(actor=engineer, endpoint=endpoint).secret
    delivery_send(_emit(engineer, django_capture_on_commit_callbacks).pk)
    header = receiver.requests[-1].headers["Speedproof-Signature"]
    assert header.count("v1=") == 2
    assert _signature_ok(receiver.requests[-1], old_secret) and _signature_ok(receiver.requests[-1], new_secret)

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(previous_secret_expires_at=timezone.now())
    Delivery.objects.all().delete()
    delivery_send(_emit(engineer, django_capture_on_commit_callbacks).pk)
    assert receiver.requests[-1].headers["Speedproof-Signature"].count("v1=") == 1
    assert _signature_ok(receiver.requests[-1], new_secret)
    assert not _signature_ok(receiver.requests[-1], old_secret)


def test_three_days_of_failures_disable_the_endpoint_and_email_its_owner(
    engineer, endpoint, receiver, queued, django_capture_on_commit_callbacks
):
    delivery = _emit(engineer, django_capture_on_commit_callbacks)
    other = _emit_second(engineer, django_capture_on_commit_callbacks)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=timezone.now() - timedelta(days=3, minutes=1))
    receiver.answer(500)
    from notifications.emails import email_send
    from notifications.models import EmailNotification

    # The disabling attempt records everything in its own transaction: nothing waits on a later message.
    with django_capture_on_commit_callbacks(execute=False):
        outcome = services.delivery_attempt(delivery_id=delivery.pk)
    assert outcome.retry_in_seconds is None
    [notice] = EmailNotification.objects.filter(template="webhook_endpoint_disabled", status="pending")
    assert mail.outbox == []
    email_send(notification_id=notice.pk)
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_reason
    assert set(Delivery.objects.values_list("pk", "status")) == {
        (delivery.pk, Delivery.Status.CANCELLED),
        (other.pk, Delivery.Status.CANCELLED),
    }
    [message] = mail.outbox
    assert message.to == [engineer.email]
    assert "disabled" in message.body and endpoint.secret not in message.body
    services.endpoint_disabled_notify(endpoint_id=endpoint.pk)  # twice: one email
    assert len(mail.outbox) == 1


def test_an_organization_endpoint_disabled_emails_its_owners_and_admins_through_the_outbox(
    receiver, django_capture_on_commit_callbacks
):
    from notifications.models import EmailNotification
    from tests.factories.accounts import CompanyAdminFactory as AdminOf
    from tests.factories.accounts import CompanyMemberFactory

    admin = CompanyAdminFactory()
    organization = admin.memberships.get().organization
    second_admin = AdminOf(organization=organization)
    member = CompanyMemberFactory(organization=organization)
    endpoint = services.endpoint_create(
        actor=admin, url=receiver.url, event_types=["*"], organization_id=organization.pk, description="ci hooks"
    ).endpoint
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False, disabled_at=timezone.now())

    # The notice is recorded with the endpoint's change; until the send runs, nothing is lost if a process dies.
    with django_capture_on_commit_callbacks(execute=False):
        assert services.endpoint_disabled_notify(endpoint_id=endpoint.pk)
    pending = EmailNotification.objects.filter(template="webhook_endpoint_disabled")
    assert sorted(pending.values_list("user_id", "status")) == sorted(
        [(admin.pk, "pending"), (second_admin.pk, "pending")]
    )
    assert mail.outbox == []
    from notifications.emails import email_send

    for notification in pending:
        email_send(notification_id=notification.pk)
        email_send(notification_id=notification.pk)  # twice: once
    assert sorted(message.to[0] for message in mail.outbox) == sorted([admin.email, second_admin.email])
    assert member.email not in {message.to[0] for message in mail.outbox}
    body = mail.outbox[0].body
    assert f"endpoint {endpoint.pk} (ci hooks)" in body and endpoint.secret not in body
    assert not services.endpoint_disabled_notify(endpoint_id=endpoint.pk)  # once
    assert pending.count() == 2


def _emit_second(engineer, django_capture_on_commit_callbacks) -> Delivery:
    with django_capture_on_commit_callbacks(execute=True):
        [event] = event_emit(
            event_type="bid.withdrawn", recipients=[Recipient(user_id=engineer.pk)], render=lambda viewer: {"id": 8}
        )
    return event.deliveries.get()


def test_a_disabled_endpoint_receives_nothing(engineer, endpoint, receiver, queued, django_capture_on_commit_callbacks):
    services.endpoint_update(actor=engineer, endpoint=endpoint, enabled=False)
    with django_capture_on_commit_callbacks(execute=True):
        written = event_emit(event_type="bid.placed", recipients=[Recipient(user_id=engineer.pk)], render=dict)
    assert written == [] and not Delivery.objects.exists()


def test_an_event_type_the_endpoint_did_not_choose_is_not_written(
    engineer, receiver, queued, django_capture_on_commit_callbacks
):
    services.endpoint_create(actor=engineer, url=receiver.url, event_types=["bid.accepted"])
    with django_capture_on_commit_callbacks(execute=True):
        event_emit(event_type="bid.placed", recipients=[Recipient(user_id=engineer.pk)], render=dict)
    assert not OutboundEvent.objects.exists()


def test_the_sweep_requeues_deliveries_whose_countdown_was_lost(
    engineer, endpoint, receiver, queued, django_capture_on_commit_callbacks
):
    delivery = _emit(engineer, django_capture_on_commit_callbacks)
    queued.clear()
    assert services.deliveries_enqueue_overdue() == 0  # due now, but its own message may still be on its way
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() - timedelta(minutes=5))
    assert services.deliveries_enqueue_overdue() == 1
    assert queued == [delivery.pk]


def test_delivery_log_and_redeliver_through_the_api(
    engineer, endpoint, receiver, queued, api_client_for, django_capture_on_commit_callbacks
):
    delivery = _emit(engineer, django_capture_on_commit_callbacks)
    delivery_send(delivery.pk)
    client = api_client_for(engineer)
    log = client.get(f"/api/v1/webhooks/endpoints/{endpoint.pk}/deliveries/").json()["results"]
    assert [(item["id"], item["status"], item["last_attempt"]["status_code"]) for item in log] == [
        (delivery.pk, "succeeded", 200)
    ]
    queued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        redelivered = client.post(f"/api/v1/webhooks/deliveries/{delivery.pk}/redeliver/")
    assert redelivered.status_code == 202 and redelivered.json()["status"] == "pending"
    assert queued == [delivery.pk]
    delivery_send(delivery.pk)
    assert len(receiver.requests) == 2
    detail = client.get(f"/api/v1/webhooks/deliveries/{delivery.pk}/").json()
    assert detail["status"] == "succeeded"
    assert [attempt["number"] for attempt in detail["attempts"]] == [1, 2]
    assert detail["data"] == {"id": 7, "engineer": {"id": engineer.pk}}
    stranger = api_client_for(CompanyAdminFactory())
    assert stranger.get(f"/api/v1/webhooks/deliveries/{delivery.pk}/").status_code == 404
    assert stranger.post(f"/api/v1/webhooks/deliveries/{delivery.pk}/redeliver/").status_code == 404
    assert stranger.get(f"/api/v1/webhooks/endpoints/{endpoint.pk}/deliveries/").status_code == 404


def test_event_emit_refuses_to_run_outside_a_transaction(engineer, endpoint):
    from django.db import connection

    # pytest-django wraps each test in a transaction; step outside it the way a caller without one would be.
    connection.in_atomic_block, previous = False, connection.in_atomic_block
    try:
        with pytest.raises(RuntimeError):
            event_emit(event_type="bid.placed", recipients=[Recipient(user_id=engineer.pk)], render=dict)
    finally:
        connection.in_atomic_block = previous
