"""An operator's retry of a blocked provider operation: look at what Stripe holds first, pay at most once."""

import pytest
from django.contrib.auth.models import Group

from accounts.operators import PAYMENTS_OPERATOR, SUPPORT
from common.errors import IllegalTransition, NotPermitted, ValidationFailed
from common.models import AuditEvent
from payments import selectors, services
from payments.models import ProviderOperation
from tests.factories import StaffFactory
from tests.races import race

from .conftest import funded_escrow

OP = ProviderOperation


def operator(role: str = PAYMENTS_OPERATOR):
    user = StaffFactory(is_superuser=False)
    user.groups.add(Group.objects.get(name=role))
    return user


def blocked_release(world, settle, parties):
    """A full release whose transfer Stripe refused: the engineer's account lost its transfers capability at Stripe
    before the platform heard of it (the refusal is not retryable, so the operation is blocked)."""
    admin, org, engineer = parties
    account = settle(world.onboard, engineer)
    escrow = funded_escrow(world, settle, org, engineer, admin)
    world.fake.account_require(account.provider_account_id, ["individual.verification.document"])
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r")
    op = OP.objects.get(escrow=escrow, kind=OP.Kind.TRANSFER)
    assert op.status == OP.Status.BLOCKED and "insufficient_capabilities_for_transfer" in op.last_error
    world.fake.account_activate(account.provider_account_id)  # the engineer fixes it; the operator retries
    return escrow, op, account


@pytest.mark.django_db
def test_an_operator_retries_a_blocked_transfer_and_it_is_paid_once(stripe_world, settle, parties):
    world = stripe_world
    escrow, op, _ = blocked_release(world, settle, parties)
    actor = operator()

    retry = settle(services.operation_retry, operation_id=op.pk, actor=actor, note="capability restored")

    retry.refresh_from_db()
    op.refresh_from_db()
    assert retry.idempotency_key == f"{op.idempotency_key}:retry-1" and retry.retry_of_id == op.pk
    assert (retry.status, op.status) == (OP.Status.SUCCEEDED, OP.Status.SUPERSEDED)
    assert world.fake.count("transfer") == 1
    assert world.fake.of_kind("transfer")[0]["metadata"]["operation_key"] == retry.idempotency_key
    with pytest.raises(IllegalTransition) as second:
        settle(services.operation_retry, operation_id=op.pk, actor=actor, note="again")
    assert second.value.code == "operation_not_retryable"
    with pytest.raises(IllegalTransition):
        settle(services.operation_retry, operation_id=retry.pk, actor=actor, note="again")
    settle(world.deliver)  # transfer.created arrives: nothing is booked twice
    assert world.fake.count("transfer") == 1
    assert selectors.escrow_summary(escrow.pk).paid == 200_000
    audit = AuditEvent.objects.get(verb="operation_retried", object_id=str(escrow.pk))
    assert audit.actor == actor and audit.data["note"] == "capability restored"
    assert audit.data["retry"] == retry.idempotency_key


@pytest.mark.django_db
def test_retry_records_a_transfer_stripe_already_holds_instead_of_paying_again(stripe_world, settle, parties):
    world = stripe_world
    escrow, op, account = blocked_release(world, settle, parties)
    # The transfer went through at Stripe after all (e.g. made by an earlier attempt whose answer was lost).
    held = world.fake_client.v1.transfers.create(
        {
            "amount": op.amount,
            "currency": "usd",
            "destination": account.provider_account_id,
            "transfer_group": f"escrow_{escrow.pk}",
            "metadata": {"operation_key": op.idempotency_key, "escrow_id": str(escrow.pk)},
        }
    )

    recorded = settle(services.operation_retry, operation_id=op.pk, actor=operator(), note="check Stripe first")

    assert (recorded.pk, recorded.status, recorded.provider_object_id) == (op.pk, OP.Status.SUCCEEDED, held["id"])
    assert world.fake.count("transfer") == 1
    assert not OP.objects.filter(retry_of=op).exists()
    settle(world.deliver)
    assert selectors.escrow_summary(escrow.pk).paid == 200_000
    assert AuditEvent.objects.filter(verb="operation_retry_found", object_id=str(escrow.pk)).count() == 1


@pytest.mark.django_db
def test_retry_needs_the_payments_operator_role_and_a_note(stripe_world, settle, parties):
    escrow, op, _ = blocked_release(stripe_world, settle, parties)
    for who in (operator(SUPPORT), parties[0], parties[2]):
        with pytest.raises(NotPermitted):
            services.operation_retry(operation_id=op.pk, actor=who, note="let me")
    with pytest.raises(ValidationFailed) as missing:
        services.operation_retry(operation_id=op.pk, actor=operator(), note="  ")
    assert missing.value.code == "note_required"
    op.refresh_from_db()
    assert op.status == OP.Status.BLOCKED and not OP.objects.filter(retry_of=op).exists()
    assert stripe_world.fake.count("transfer") == 0


@pytest.mark.django_db
def test_only_blocked_operations_are_retried(world, settle, parties):
    admin, org, engineer = parties
    settle(world.onboard, engineer)
    escrow = funded_escrow(world, settle, org, engineer, admin)
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r")
    paid = OP.objects.get(escrow=escrow, kind=OP.Kind.TRANSFER)
    assert paid.status == OP.Status.SUCCEEDED
    with pytest.raises(IllegalTransition):
        services.operation_retry(operation_id=paid.pk, actor=operator(), note="why not")


@pytest.mark.django_db
def test_a_failed_refund_is_retried_under_a_fresh_key_and_booked_once(stripe_world, settle, parties):
    world = stripe_world
    admin, org, engineer = parties
    escrow = funded_escrow(world, settle, org, engineer, admin)
    settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="cancelled")
    op = OP.objects.get(escrow=escrow, kind=OP.Kind.REFUND)
    world.fake.refund_fail(op.provider_object_id)
    settle(world.deliver)
    op.refresh_from_db()
    assert op.status == OP.Status.BLOCKED and selectors.escrow_summary(escrow.pk).held == 220_000

    retry = settle(services.operation_retry, operation_id=op.pk, actor=operator(), note="card replaced")

    retry.refresh_from_db()
    assert (retry.idempotency_key, retry.status) == (f"refund:{escrow.pk}:retry-1", OP.Status.SUCCEEDED)
    settle(world.deliver)
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.refunded, summary.held) == (220_000, 0)
    assert len([r for r in world.fake.of_kind("refund") if r["status"] == "succeeded"]) == 1


@pytest.mark.django_db(transaction=True)
def test_two_operators_retrying_at_once_pay_once(stripe_world, settle, parties):
    world = stripe_world
    escrow, op, _ = blocked_release(world, settle, parties)
    first, second = operator(), operator()

    outcomes = race(
        lambda: services.operation_retry(operation_id=op.pk, actor=first, note="one"),
        lambda: services.operation_retry(operation_id=op.pk, actor=second, note="two"),
    )

    assert outcomes == ["done", "operation_not_retryable"]
    assert OP.objects.filter(retry_of=op).count() == 1
    services.payment_operation_execute(operation_id=OP.objects.get(retry_of=op).pk)
    assert world.fake.count("transfer") == 1
    assert selectors.escrow_summary(escrow.pk).paid == 200_000


@pytest.mark.django_db
def test_a_transfer_of_the_original_that_shows_up_late_is_recorded_and_the_retry_pays_nothing(
    stripe_world, settle, parties
):
    world = stripe_world
    escrow, op, account = blocked_release(world, settle, parties)
    retry = services.operation_retry(operation_id=op.pk, actor=operator(), note="retry")  # queued, not yet run
    late = world.fake_client.v1.transfers.create(
        {
            "amount": op.amount,
            "currency": "usd",
            "destination": account.provider_account_id,
            "transfer_group": f"escrow_{escrow.pk}",
            "metadata": {"operation_key": op.idempotency_key},
        }
    )

    settle(services.payment_operation_execute, operation_id=retry.pk)

    op.refresh_from_db()
    retry.refresh_from_db()
    assert (op.status, op.provider_object_id, retry.status) == (OP.Status.SUCCEEDED, late["id"], OP.Status.SUPERSEDED)
    assert world.fake.count("transfer") == 1
    settle(world.deliver)
    assert selectors.escrow_summary(escrow.pk).paid == 200_000
