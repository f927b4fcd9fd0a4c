"""Every Celery task, run twice: the second run changes nothing."""

from datetime import timedelta

import pytest
from django.utils import timezone

from payments import services, tasks
from payments.models import Escrow, ProviderOperation, ReconciliationIssue, WebhookEvent

from .conftest import funded_escrow, open_escrow

pytestmark = pytest.mark.django_db


def test_escrows_expire_unfunded_twice(parties, settle, offline_world):
    admin, org, engineer = parties
    due, fresh = open_escrow(org, engineer), open_escrow(org, engineer)
    Escrow.objects.filter(pk=due.pk).update(funding_deadline=timezone.now() - timedelta(minutes=1))
    assert settle(tasks.escrows_expire_unfunded) == 1
    assert settle(tasks.escrows_expire_unfunded) == 0
    assert (
        Escrow.objects.get(pk=due.pk).status == "cancelled"
        and Escrow.objects.get(pk=fresh.pk).status == "pending_funding"
    )


def test_payment_operation_execute_twice_makes_one_transfer(parties, settle, stripe_world):
    admin, org, engineer = parties
    settle(stripe_world.onboard, engineer)
    escrow = funded_escrow(stripe_world, settle, org, engineer, admin)
    with stripe_world.fake.lock:
        stripe_world.fake.inject("timeout", count=3, path="/v1/transfers")  # first attempt fails after SDK retries
    # inside the test transaction the on-commit hook does not run: the tasks below are the worker's attempts
    result = services.escrow_release(escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r")
    op = ProviderOperation.objects.get(idempotency_key=result.operation_key)
    assert op.status == "pending"
    from common.errors import RetryableError

    with pytest.raises(RetryableError):
        tasks.payment_operation_execute(op.pk)
    tasks.payment_operation_execute(op.pk)
    tasks.payment_operation_execute(op.pk)
    op.refresh_from_db()
    assert op.status == "succeeded" and stripe_world.fake.count("transfer") == 1


def test_a_rotated_key_leaves_the_transfer_pending_and_retryable(parties, settle, stripe_world, caplog):
    """401 (a rotated or revoked key) is not the operation's fault: it stays pending, then succeeds once."""
    admin, org, engineer = parties
    settle(stripe_world.onboard, engineer)
    escrow = funded_escrow(stripe_world, settle, org, engineer, admin)
    with stripe_world.fake.lock:
        stripe_world.fake.inject("401", count=2, path="/v1/transfers")
    result = services.escrow_release(escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r")
    op = ProviderOperation.objects.get(idempotency_key=result.operation_key)
    from common.errors import RetryableError

    for _ in range(2):
        with pytest.raises(RetryableError) as refused:
            tasks.payment_operation_execute(op.pk)
        assert refused.value.code == "provider_authentication_failed"
        op.refresh_from_db()
        assert op.status == "pending", op.last_error
    assert "STRIPE_SECRET_KEY" in caplog.text
    tasks.payment_operation_execute(op.pk)  # the key is fixed
    tasks.payment_operation_execute(op.pk)
    op.refresh_from_db()
    assert op.status == "succeeded" and stripe_world.fake.count("transfer") == 1


def test_payouts_retry_payable_twice(parties, settle, stripe_world):
    admin, org, engineer = parties
    escrow = funded_escrow(stripe_world, settle, org, engineer, admin)
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r")
    settle(services.engineer_onboarding_start, user=engineer, country="US")
    # the account.updated webhook is lost: the beat task pays once the account is known to be payable
    stripe_world.fake.account_activate(engineer.connected_account.provider_account_id)
    settle(services.engineer_onboarding_refresh, user=engineer)
    ProviderOperation.objects.update(status="awaiting_payee")
    settle(tasks.payouts_retry_payable)
    settle(tasks.payouts_retry_payable)
    assert ProviderOperation.objects.get().status == "succeeded"
    assert stripe_world.fake.count("transfer") == 1


def test_payouts_retry_picks_up_stuck_pending_operations(parties, settle, offline_world):
    admin, org, engineer = parties
    settle(offline_world.onboard, engineer)
    escrow = funded_escrow(offline_world, settle, org, engineer, admin)
    services.escrow_release(
        escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r"
    )  # no commit hooks run
    ProviderOperation.objects.update(updated_at=timezone.now() - timedelta(minutes=5))
    assert tasks.payouts_retry_payable() == 1
    assert tasks.payouts_retry_payable() == 0
    assert ProviderOperation.objects.get().status == "succeeded"


def test_payments_reconcile_twice_records_a_discrepancy_once(parties, settle, stripe_world):
    admin, org, engineer = parties
    settle(stripe_world.onboard, engineer)
    escrow = funded_escrow(stripe_world, settle, org, engineer, admin)
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=5000, reason="t", verification_run_id="r")
    settle(tasks.payments_reconcile)
    assert not ReconciliationIssue.objects.exists()
    # someone reverses part of the transfer in the dashboard and the webhook never arrives
    transfer_id = ProviderOperation.objects.get().provider_object_id
    stripe_world.fake_client.v1.transfers.reversals.create(transfer_id, {"amount": 1000})
    settle(tasks.payments_reconcile)
    settle(tasks.payments_reconcile)
    issue = ReconciliationIssue.objects.get()
    assert (issue.kind, issue.expected, issue.actual, issue.resolved_at) == ("transfers", 100_000, 99_000, None)
    settle(stripe_world.deliver)  # the webhook finally arrives and is booked
    settle(tasks.payments_reconcile)
    issue.refresh_from_db()
    assert issue.resolved_at is not None


def test_reconcile_catches_a_lost_funding_webhook(parties, settle, offline_world):
    admin, org, engineer = parties
    escrow = open_escrow(org, engineer)
    pi = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin).payment_intent_id
    offline_world.provider.funding_simulate(payment_intent_id=pi, outcome="succeed")  # events dropped
    settle(tasks.payments_reconcile)
    settle(tasks.payments_reconcile)
    assert Escrow.objects.get(pk=escrow.pk).status == "funded"


def test_funding_cancel_twice(parties, settle, offline_world):
    admin, org, engineer = parties
    escrow = open_escrow(org, engineer)
    pi = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin).payment_intent_id
    services.escrow_cancel_unfunded(escrow_id=escrow.pk, reason="withdrawn")  # its on-commit hook does not run here
    tasks.escrow_funding_cancel(escrow.pk)
    tasks.escrow_funding_cancel(escrow.pk)
    assert offline_world.provider.funding_get(payment_intent_id=pi).status == "canceled"
    assert Escrow.objects.get(pk=escrow.pk).status == "cancelled"


def test_webhook_events_redrive_twice(settle, offline_world):
    event = WebhookEvent.objects.create(
        event_id="evt_lost", type="payment_intent.succeeded", object_id="pi_x", object_type="payment_intent", payload={}
    )
    WebhookEvent.objects.filter(pk=event.pk).update(received_at=timezone.now() - timedelta(minutes=10))
    assert settle(tasks.webhook_events_redrive) == 1
    assert settle(tasks.webhook_events_redrive) == 0
    event.refresh_from_db()
    assert event.status == "ignored" and event.processed_count == 1


def test_webhook_events_drain_twice_and_the_debounce(settle, offline_world):
    from django.core.cache import cache

    from payments.providers.base import event_from_payload

    def store(n):
        payload = {
            "id": f"evt_d{n}",
            "object": "event",
            "type": "customer.created",
            "livemode": False,
            "data": {"object": {"id": f"cus_{n}", "object": "customer"}},
        }
        return services.webhook_event_store(event=event_from_payload(payload), source="account")

    cache.set(services.DRAIN_KEY, 1, 10)  # a drain is already on its way: storing publishes nothing more
    for n in range(3):
        assert settle(store, n)
    assert WebhookEvent.objects.filter(status="pending").count() == 3
    assert tasks.webhook_events_drain() == 3
    assert tasks.webhook_events_drain() == 0
    assert cache.get(services.DRAIN_KEY) is None
    assert set(WebhookEvent.objects.values_list("status", "processed_count")) == {("ignored", 1)}
    assert settle(store, 3) and WebhookEvent.objects.get(event_id="evt_d3").status == "ignored"  # key gone: drained
