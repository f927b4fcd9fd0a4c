"""The escrow state machine end to end, against both providers (the Stripe one through FakeStripe)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from common.errors import Conflict, IllegalTransition, NotPermitted, ValidationFailed
from common.models import AuditEvent
from payments import selectors, services, signals
from payments.errors import EscrowFrozen
from payments.models import Escrow, LedgerTransaction, ProviderOperation
from tests.factories import CompanyMemberFactory

from .conftest import funded_escrow, open_escrow

pytestmark = pytest.mark.django_db
S = Escrow.Status


@pytest.fixture
def received():
    """Every escrow signal sent, as (name, kwargs)."""
    log = []
    receivers = {}
    for name in ("escrow_funded", "escrow_funding_failed", "escrow_cancelled", "escrow_closed"):

        def receiver(sender, name=name, **kwargs):
            kwargs.pop("signal", None)
            log.append((name, kwargs))

        receivers[name] = receiver
        getattr(signals, name).connect(receiver)
    yield log
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver)


def totals(escrow):
    summary = selectors.escrow_summary(escrow.pk)
    return summary.funded, summary.released, summary.refunded, summary.fee_kept, summary.held


def test_open_is_idempotent_per_reference_and_validates(parties):
    admin, org, engineer = parties
    escrow = open_escrow(org, engineer, reference="test:1")
    assert escrow.status == S.PENDING_FUNDING
    assert abs((escrow.funding_deadline - timezone.now()) - timedelta(days=7)) < timedelta(minutes=1)
    assert open_escrow(org, engineer, reference="test:1").pk == escrow.pk
    with pytest.raises(Conflict):
        open_escrow(org, engineer, reference="test:1", amount=1)
    with pytest.raises(ValidationFailed):
        open_escrow(org, engineer, reference="test:2", amount=0)
    with pytest.raises(ValidationFailed):
        open_escrow(org, engineer, reference="test:3", currency="XXX")


def test_funding_start_is_idempotent_and_only_for_payer_admins(world, parties, settle):
    admin, org, engineer = parties
    escrow = open_escrow(org, engineer)
    first = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    second = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    assert first == second
    assert (first.provider, first.amount, first.currency) == (world.provider.name, 220_000, "USD")
    if world.kind == "stripe":
        assert first.client_secret and first.confirm_url is None
    else:
        assert first.client_secret is None and first.confirm_url.endswith(
            f"/payments/offline/checkout/{first.payment_intent_id}/"
        )
    with pytest.raises(NotPermitted):
        services.escrow_funding_start(escrow_id=escrow.pk, actor=CompanyMemberFactory(organization=org))
    with pytest.raises(NotPermitted):
        services.escrow_funding_start(escrow_id=escrow.pk, actor=engineer)


def test_payment_funds_the_escrow_and_books_the_ledger(world, parties, settle, received):
    admin, org, engineer = parties
    escrow = funded_escrow(world, settle, org, engineer, admin)
    assert totals(escrow) == (220_000, 0, 0, 0, 220_000)
    assert [name for name, _ in received] == ["escrow_funded"]
    assert received[0][1] == {"escrow_id": escrow.pk, "reference": escrow.reference}
    assert escrow.charge_id
    with pytest.raises(IllegalTransition):
        services.escrow_funding_start(escrow_id=escrow.pk, actor=admin)


def test_declined_payment_reports_the_providers_message_and_can_be_retried(world, parties, settle, received):
    admin, org, engineer = parties
    escrow = open_escrow(org, engineer)
    instructions = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    settle(world.pay, instructions.payment_intent_id, "decline")
    escrow.refresh_from_db()
    assert escrow.status == S.PENDING_FUNDING
    assert escrow.funding_failure_reason == "Your card was declined."
    assert received == [
        (
            "escrow_funding_failed",
            {"escrow_id": escrow.pk, "reference": escrow.reference, "reason": "Your card was declined."},
        )
    ]
    settle(world.pay, instructions.payment_intent_id, "succeed")
    escrow.refresh_from_db()
    assert escrow.status == S.FUNDED and escrow.funding_failure_reason == ""


def test_tiered_release_transfers_the_difference_and_keeps_fee_pro_rata(world, parties, settle, received):
    admin, org, engineer = parties
    settle(world.onboard, engineer)
    escrow = funded_escrow(world, settle, org, engineer, admin, amount=200_001, fee=20_001)
    result = settle(
        services.escrow_release, escrow_id=escrow.pk, fraction_bps=5000, reason="tier 1", verification_run_id="run-1"
    )
    assert (result.transfer_amount, result.released_amount, result.released_fee, result.status) == (
        100_000,
        100_000,
        10_000,
        S.PARTIALLY_RELEASED,
    )
    again = settle(
        services.escrow_release, escrow_id=escrow.pk, fraction_bps=5000, reason="tier 1", verification_run_id="run-1"
    )
    assert again.transfer_amount == 0 and again.operation_key is None
    result = settle(
        services.escrow_release, escrow_id=escrow.pk, fraction_bps=10_000, reason="tier 2", verification_run_id="run-2"
    )
    assert (result.transfer_amount, result.released_amount, result.released_fee, result.status) == (
        100_001,
        200_001,
        20_001,
        S.RELEASED,
    )
    ops = ProviderOperation.objects.filter(escrow=escrow).order_by("id")
    assert [(op.idempotency_key, op.amount, op.status) for op in ops] == [
        (f"release:{escrow.pk}:5000", 100_000, "succeeded"),
        (f"release:{escrow.pk}:10000", 100_001, "succeeded"),
    ]
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.funded, summary.released, summary.paid, summary.fee_kept, summary.held) == (
        220_002,
        200_001,
        200_001,
        20_001,
        0,
    )
    assert received[-1] == (
        "escrow_closed",
        {"escrow_id": escrow.pk, "reference": escrow.reference, "reason": "tier 2", "status": "released"},
    )
    transfers = world.provider.transfers_list(transfer_group=f"escrow_{escrow.pk}")
    assert sorted(t.amount for t in transfers) == [100_000, 100_001]
    assert all(t.source_transaction == escrow.charge_id for t in transfers)
    # a lower tier after a higher one changes nothing
    assert (
        settle(
            services.escrow_release, escrow_id=escrow.pk, fraction_bps=5000, reason="x", verification_run_id="r"
        ).transfer_amount
        == 0
    )


def test_refund_remainder_after_partial_release_keeps_fee_only_on_released(world, parties, settle, received):
    admin, org, engineer = parties
    settle(world.onboard, engineer)
    escrow = funded_escrow(world, settle, org, engineer, admin, amount=100_003, fee=10_007)
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=3333, reason="tier", verification_run_id="r1")
    result = settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="verification failed")
    released, fee = 100_003 * 3333 // 10_000, 10_007 * 3333 // 10_000
    assert result.refund_amount == 110_010 - released - fee
    assert result.status == S.CLOSED
    assert (
        settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="again").refund_amount
        == result.refund_amount
    )
    assert totals(escrow) == (110_010, released, 110_010 - released - fee, fee, 0)
    refunds = world.provider.refunds_list(payment_intent_id=escrow.payment_intent_id)
    assert [r.amount for r in refunds] == [result.refund_amount]
    assert received[-1][0] == "escrow_closed" and received[-1][1]["status"] == "closed"
    with pytest.raises(IllegalTransition):
        services.escrow_release(escrow_id=escrow.pk, fraction_bps=10_000, reason="late", verification_run_id="r2")


def test_full_refund_when_nothing_was_released(world, parties, settle):
    admin, org, engineer = parties
    escrow = funded_escrow(world, settle, org, engineer, admin)
    result = settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="no result")
    assert (result.refund_amount, result.status) == (220_000, S.REFUNDED)
    assert totals(escrow) == (220_000, 0, 220_000, 0, 0)


def test_release_to_an_engineer_not_yet_payable_is_paid_once_onboarded(world, parties, settle):
    admin, org, engineer = parties
    escrow = funded_escrow(world, settle, org, engineer, admin)
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r")
    op = ProviderOperation.objects.get(escrow=escrow)
    assert op.status == ProviderOperation.Status.AWAITING_PAYEE
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.released, summary.paid, summary.held) == (200_000, 0, 0)
    settle(world.onboard, engineer)
    op.refresh_from_db()
    assert op.status == ProviderOperation.Status.SUCCEEDED
    assert selectors.escrow_summary(escrow.pk).paid == 200_000


def test_illegal_moves_are_refused(world, parties, settle):
    admin, org, engineer = parties
    escrow = open_escrow(org, engineer)
    with pytest.raises(IllegalTransition):
        services.escrow_release(escrow_id=escrow.pk, fraction_bps=5000, reason="x", verification_run_id="r")
    with pytest.raises(IllegalTransition):
        services.escrow_refund_remainder(escrow_id=escrow.pk, reason="x")
    for bad in (0, 10_001, -5):
        with pytest.raises(ValidationFailed):
            services.escrow_release(escrow_id=escrow.pk, fraction_bps=bad, reason="x", verification_run_id="r")
    funded = funded_escrow(world, settle, org, engineer, admin)
    with pytest.raises(IllegalTransition):
        services.escrow_cancel_unfunded(escrow_id=funded.pk, reason="x")


def test_cancel_unfunded_and_deadline_expiry(world, parties, settle, received):
    admin, org, engineer = parties
    escrow = open_escrow(org, engineer)
    settle(services.escrow_cancel_unfunded, escrow_id=escrow.pk, reason="company withdrew")
    assert Escrow.objects.get(pk=escrow.pk).status == S.CANCELLED
    assert settle(services.escrow_cancel_unfunded, escrow_id=escrow.pk, reason="again").status == S.CANCELLED
    assert [name for name, _ in received] == ["escrow_cancelled"]
    overdue = open_escrow(org, engineer)
    instructions = settle(services.escrow_funding_start, escrow_id=overdue.pk, actor=admin)
    Escrow.objects.filter(pk=overdue.pk).update(funding_deadline=timezone.now() - timedelta(seconds=1))
    assert settle(services.escrows_expire_unfunded) == 1
    assert settle(services.escrows_expire_unfunded) == 0
    overdue.refresh_from_db()
    assert overdue.status == S.CANCELLED and overdue.status_reason == "funding_deadline_passed"
    assert received[-1][1]["reason"] == "funding_deadline_passed"
    assert world.provider.funding_get(payment_intent_id=instructions.payment_intent_id).status == "canceled"


def test_a_payment_made_before_the_deadline_sweep_funds_the_escrow(world, parties, settle):
    admin, org, engineer = parties
    escrow = open_escrow(org, engineer)
    instructions = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    world.pay(instructions.payment_intent_id)  # paid, but its events are not processed yet
    Escrow.objects.filter(pk=escrow.pk).update(funding_deadline=timezone.now() - timedelta(seconds=1))
    # The sweep re-fetches the intent before cancelling: the deadline applies only to payments not started.
    assert settle(services.escrows_expire_unfunded) == 0
    settle(services.payments_reconcile)
    escrow.refresh_from_db()
    assert escrow.status == S.FUNDED
    assert totals(escrow) == (220_000, 0, 0, 0, 220_000)


def test_chargeback_freezes_won_unfreezes(world, parties, settle):
    admin, org, engineer = parties
    settle(world.onboard, engineer)
    escrow = open_escrow(org, engineer)
    instructions = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    settle(world.pay, instructions.payment_intent_id, "dispute")
    escrow.refresh_from_db()
    assert escrow.status == S.FUNDED and escrow.frozen and escrow.dispute_id
    assert selectors.escrow_summary(escrow.pk).frozen
    with pytest.raises(EscrowFrozen):
        services.escrow_release(escrow_id=escrow.pk, fraction_bps=5000, reason="x", verification_run_id="r")
    with pytest.raises(EscrowFrozen):
        services.escrow_refund_remainder(escrow_id=escrow.pk, reason="x")
    settle(world.dispute_close, escrow, "won")
    escrow.refresh_from_db()
    assert not escrow.frozen
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r")
    assert selectors.escrow_summary(escrow.pk).paid == 200_000
    assert AuditEvent.objects.filter(verb="escrow_frozen", object_id=str(escrow.pk)).count() == 1


def test_lost_chargeback_is_booked_once_as_a_loss(world, parties, settle, received):
    admin, org, engineer = parties
    settle(world.onboard, engineer)
    escrow = open_escrow(org, engineer)
    instructions = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    settle(world.pay, instructions.payment_intent_id, "dispute")
    settle(world.dispute_close, escrow, "lost")
    settle(world.dispute_close, escrow, "lost")
    escrow.refresh_from_db()
    assert not escrow.frozen and escrow.status == S.REFUNDED
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.funded, summary.refunded, summary.held, summary.dispute_loss) == (220_000, 220_000, 0, 0)
    assert LedgerTransaction.objects.filter(kind="dispute_loss", escrow=escrow).count() == 1
    assert received[-1][0] == "escrow_closed"


def test_lost_chargeback_after_release_is_a_platform_loss(parties, settle, stripe_world, settings):
    settings.LOST_DISPUTE_POLICY = "platform_absorbs"  # the engineer's share is reversed by default (test_disputes)
    admin, org, engineer = parties
    world = stripe_world
    settle(world.onboard, engineer)
    escrow = funded_escrow(world, settle, org, engineer, admin)
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r")
    dispute = world.fake.dispute_open(escrow.charge_id)
    settle(world.deliver)
    assert Escrow.objects.get(pk=escrow.pk).frozen
    world.fake.dispute_close(dispute["id"], "lost")
    settle(world.deliver)
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.paid, summary.fee_kept, summary.dispute_loss, summary.held) == (200_000, 20_000, 220_000, 0)
    assert not summary.frozen
    assert not ProviderOperation.objects.filter(escrow=escrow, kind="reversal").exists()


def test_refund_failure_puts_the_money_back_on_hold(parties, settle, stripe_world):
    admin, org, engineer = parties
    world = stripe_world
    escrow = funded_escrow(world, settle, org, engineer, admin)
    settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="fail")
    op = ProviderOperation.objects.get(escrow=escrow, kind="refund")
    world.fake.refund_fail(op.provider_object_id)
    settle(world.deliver)
    settle(world.deliver)
    op.refresh_from_db()
    assert op.status == ProviderOperation.Status.BLOCKED
    assert totals(escrow) == (220_000, 0, 0, 0, 220_000)


def test_transfer_reversal_is_booked_back_to_held(parties, settle, stripe_world):
    admin, org, engineer = parties
    world = stripe_world
    settle(world.onboard, engineer)
    escrow = funded_escrow(world, settle, org, engineer, admin)
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=5000, reason="t1", verification_run_id="r")
    transfer_id = ProviderOperation.objects.get(escrow=escrow).provider_object_id
    world.provider.transfer_reverse(transfer_id=transfer_id, amount=30_000, idempotency_key="ops:rev:1")
    settle(world.deliver)
    settle(world.deliver)
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.paid, summary.held) == (70_000, 110_000 + 30_000)


def test_release_marks_the_transfer_and_sends_it_only_after_commit(
    parties, settle, offline_world, django_capture_on_commit_callbacks
):
    admin, org, engineer = parties
    settle(offline_world.onboard, engineer)
    escrow = funded_escrow(offline_world, settle, org, engineer, admin)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = services.escrow_release(
            escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r"
        )
        # marked and booked inside the transaction, but nothing sent to the provider yet
        assert ProviderOperation.objects.get(idempotency_key=result.operation_key).status == "pending"
        assert offline_world.provider.transfers_list(transfer_group=f"escrow_{escrow.pk}") == []
    assert len(callbacks) == 1
    callbacks[0]()
    assert ProviderOperation.objects.get(idempotency_key=result.operation_key).status == "succeeded"
    assert len(offline_world.provider.transfers_list(transfer_group=f"escrow_{escrow.pk}")) == 1
