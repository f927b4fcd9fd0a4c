"""Chargebacks beyond the freeze: the engineer's share reversed after a lost dispute (LOST_DISPUTE_POLICY), an inquiry
refunded instead of contested, and the verification certificate submitted as evidence; all through the official SDK
against the fake."""

import pytest

from accounts.operators import SUPPORT
from common.errors import Conflict, IllegalTransition, NotPermitted
from common.models import AuditEvent
from payments import selectors, services, signals
from payments.models import Escrow, LedgerTransaction, ProviderOperation, ReconciliationIssue

from .conftest import funded_escrow, inquiry, operator

OP = ProviderOperation
S = Escrow.Status


@pytest.fixture
def reversed_payouts():
    log = []

    def receiver(sender, **kwargs):
        kwargs.pop("signal", None)
        log.append(kwargs)

    signals.payout_reversed.connect(receiver)
    yield log
    signals.payout_reversed.disconnect(receiver)


def paid_then_disputed(world, settle, parties, *, fraction_bps=10_000):
    admin, org, engineer = parties
    settle(world.onboard, engineer)
    escrow = funded_escrow(world, settle, org, engineer, admin)
    settle(
        services.escrow_release, escrow_id=escrow.pk, fraction_bps=fraction_bps, reason="pass", verification_run_id="r"
    )
    dispute = world.fake.dispute_open(escrow.charge_id)
    settle(world.deliver)
    assert Escrow.objects.get(pk=escrow.pk).frozen
    return escrow, dispute


@pytest.mark.django_db
def test_lost_dispute_after_payout_reverses_the_engineers_share_once(
    stripe_world, settle, parties, api_client_for, reversed_payouts
):
    world = stripe_world
    escrow, dispute = paid_then_disputed(world, settle, parties)
    world.fake.dispute_close(dispute["id"], "lost")
    closed = world.fake.events[-1]
    settle(world.deliver)
    settle(world.post_event, closed)  # Stripe delivers the same event again
    settle(world.deliver)

    reversal = OP.objects.get(escrow=escrow, kind=OP.Kind.REVERSAL)
    transfer = OP.objects.get(escrow=escrow, kind=OP.Kind.TRANSFER)
    assert (reversal.status, reversal.amount) == (OP.Status.SUCCEEDED, 200_000)
    assert reversal.idempotency_key == f"reverse:{dispute['id']}:{transfer.pk}"
    services.payment_operation_execute(operation_id=reversal.pk)  # the task delivered twice: nothing more
    assert world.fake.count("transfer_reversal") == 1
    stripe_transfer = world.fake.objects[transfer.provider_object_id]
    assert (stripe_transfer["amount_reversed"], stripe_transfer["reversed"]) == (200_000, True)
    assert stripe_transfer["reversals"]["data"][0]["metadata"]["operation_key"] == reversal.idempotency_key
    summary = selectors.escrow_summary(escrow.pk)
    # The company got 220,000 back; the engineer returned their 200,000; the platform absorbs its 20,000 fee.
    assert (summary.paid, summary.reversed_from_engineer, summary.refunded, summary.dispute_loss) == (
        0,
        200_000,
        200_000,
        20_000,
    )
    assert (summary.fee_kept, summary.held, summary.frozen) == (20_000, 0, False)
    assert LedgerTransaction.objects.filter(escrow=escrow, kind="dispute_reversal").count() == 1
    assert LedgerTransaction.objects.filter(escrow=escrow, kind="transfer_reversal").count() == 0
    assert [(r["user_id"], r["amount"]) for r in reversed_payouts] == [(escrow.payee_id, 200_000)]
    seen = api_client_for(escrow.payee).get(f"/api/v1/payments/escrows/{escrow.pk}/").json()
    assert (seen["paid"], seen["reversed_from_engineer"]) == (0, 200_000)
    assert any(line["kind"] == "dispute_reversal" for line in seen["ledger_lines"])
    # Stripe's transfers (net of reversals) and refunds agree with the ledger.
    services.payments_reconcile()
    assert not ReconciliationIssue.objects.filter(escrow=escrow).exists()


@pytest.mark.django_db
def test_lost_dispute_after_a_partial_release_reverses_the_engineers_share_pro_rata(stripe_world, settle, parties):
    world = stripe_world
    escrow, dispute = paid_then_disputed(world, settle, parties, fraction_bps=5_000)
    world.fake.dispute_close(dispute["id"], "lost")
    settle(world.deliver)

    # 220,000 disputed: 110,000 still held covers half; of the other 110,000 paid out (100,000 engineer, 10,000
    # fee) the engineer returns 110,000 * 100,000 / 110,000 = 100,000.
    reversal = OP.objects.get(escrow=escrow, kind=OP.Kind.REVERSAL)
    assert (reversal.amount, reversal.status) == (100_000, OP.Status.SUCCEEDED)
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.paid, summary.refunded, summary.held, summary.dispute_loss) == (0, 210_000, 0, 10_000)
    assert Escrow.objects.get(pk=escrow.pk).status == S.CLOSED


@pytest.mark.django_db
def test_a_refused_reversal_is_blocked_and_an_operator_retry_takes_it_once(stripe_world, settle, parties):
    world = stripe_world
    escrow, dispute = paid_then_disputed(world, settle, parties)
    world.fake.dispute_close(dispute["id"], "lost")
    world.fake.inject("decline", path="/v1/transfers/")  # Stripe refuses this one reversal
    settle(world.deliver)
    reversal = OP.objects.get(escrow=escrow, kind=OP.Kind.REVERSAL)
    assert reversal.status == OP.Status.BLOCKED
    assert selectors.escrow_summary(escrow.pk).dispute_loss == 220_000

    retry = settle(services.operation_retry, operation_id=reversal.pk, actor=operator(), note="balance topped up")

    retry.refresh_from_db()
    assert (retry.kind, retry.status, retry.amount) == (OP.Kind.REVERSAL, OP.Status.SUCCEEDED, 200_000)
    settle(world.deliver)  # transfer.reversed: already booked by the operation
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.paid, summary.dispute_loss, summary.held) == (0, 20_000, 0)
    assert world.fake.objects[retry.reversed_transfer_id]["amount_reversed"] == 200_000


@pytest.mark.django_db
def test_won_dispute_after_payout_reverses_nothing(stripe_world, settle, parties):
    world = stripe_world
    escrow, dispute = paid_then_disputed(world, settle, parties)
    world.fake.dispute_close(dispute["id"], "won")
    settle(world.deliver)
    assert not OP.objects.filter(escrow=escrow, kind=OP.Kind.REVERSAL).exists()
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.paid, summary.dispute_loss, summary.frozen) == (200_000, 0, False)


@pytest.mark.django_db
def test_an_inquiry_is_refunded_instead_of_contested_when_stripe_says_it_is_refundable(stripe_world, settle, parties):
    world = stripe_world
    escrow, dispute = inquiry(world, settle, parties)
    actor = operator()

    result = settle(services.escrow_inquiry_refund, escrow_id=escrow.pk, actor=actor, note="customer agreed")

    assert (result.refund_amount, result.status) == (220_000, S.REFUNDED)
    refunds = world.fake.of_kind("refund")
    assert [(r["amount"], r["status"]) for r in refunds] == [(220_000, "succeeded")]
    escrow.refresh_from_db()
    assert escrow.frozen  # until Stripe closes the inquiry
    audit = AuditEvent.objects.get(verb="escrow_inquiry_refunded", object_id=str(escrow.pk))
    assert audit.actor == actor and audit.data["note"] == "customer agreed"
    # Twice: the same refund, nothing more.
    again = settle(services.escrow_inquiry_refund, escrow_id=escrow.pk, actor=actor, note="customer agreed")
    assert again.operation_key == result.operation_key and world.fake.count("refund") == 1
    world.fake.dispute_close(dispute["id"], "warning_closed")
    settle(world.deliver)
    escrow.refresh_from_db()
    assert not escrow.frozen
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.refunded, summary.held, summary.dispute_loss) == (220_000, 0, 0)


@pytest.mark.django_db
def test_an_inquiry_refund_is_refused_when_the_charge_is_not_refundable_or_it_is_a_chargeback(
    stripe_world, settle, parties
):
    world = stripe_world
    escrow, dispute = inquiry(world, settle, parties)
    world.fake.objects[dispute["id"]]["is_charge_refundable"] = False
    with pytest.raises(IllegalTransition) as refused:
        services.escrow_inquiry_refund(escrow_id=escrow.pk, actor=operator(), note="try")
    assert refused.value.code == "charge_not_refundable"
    world.fake.objects[dispute["id"]].update(status="needs_response", is_charge_refundable=True)
    with pytest.raises(IllegalTransition) as chargeback:
        services.escrow_inquiry_refund(escrow_id=escrow.pk, actor=operator(), note="try")
    assert chargeback.value.code == "dispute_not_inquiry"
    with pytest.raises(NotPermitted):
        services.escrow_inquiry_refund(escrow_id=escrow.pk, actor=operator(SUPPORT), note="try")
    assert world.fake.count("refund") == 0 and not OP.objects.filter(escrow=escrow).exists()


def contract_with_certificate(world, settle, parties):
    """A contract whose escrow is funded through the fake and disputed, with a passed, certified submission."""
    from jobs.models import Submission
    from tests.factories.jobs import awarded_contract
    from verification.models import VerificationRun

    admin, org, engineer = parties
    contract = awarded_contract(admin=admin, engineer=engineer)
    instructions = settle(services.escrow_funding_start, escrow_id=contract.escrow_id, actor=admin)
    settle(world.pay, instructions.payment_intent_id, "dispute")
    job = contract.job
    submission = Submission.objects.create(
        contract=contract, number=1, submitted_by=engineer, candidate=job.package, status=Submission.Status.PASSED
    )
    VerificationRun.objects.create(
        kind=VerificationRun.Kind.SUBMISSION,
        subject=f"submission:{submission.pk}",
        hardware_class=job.hardware_class,
        package=job.package,
        candidate=job.package,
        hidden_inputs=job.hidden_inputs,
        criteria=job.criteria,
        decision="PASS",
        payout_fraction_bps=10_000,
        report={"decision": "PASS", "runs": {"pairs": 8}, "logs": [{"role": "baseline", "stderr": "hidden stderr"}]},
        certificate={"key_id": "k-evidence-1", "signature": "c2ln", "payload": {"decision": "PASS"}},
    )
    return Escrow.objects.get(pk=contract.escrow_id)


@pytest.mark.django_db
def test_evidence_submits_the_certificate_and_report_as_files_with_a_summary(stripe_world, settle, parties):
    world = stripe_world
    escrow = contract_with_certificate(world, settle, parties)
    actor = operator()

    dispute = services.dispute_evidence_submit(escrow_id=escrow.pk, actor=actor, note="work was delivered")

    assert dispute.status == "under_review"
    stored = world.fake.objects[escrow.dispute_id]
    evidence = stored["evidence"]
    assert "k-evidence-1" in evidence["uncategorized_text"] and "PASS" in evidence["uncategorized_text"]
    certificate_pdf = world.fake.uploaded[evidence["service_documentation"]]
    report_pdf = world.fake.uploaded[evidence["uncategorized_file"]]
    assert certificate_pdf.startswith(b"%PDF") and b"k-evidence-1" in certificate_pdf
    assert report_pdf.startswith(b"%PDF") and b"hidden stderr" not in report_pdf
    assert stored["evidence_details"]["submission_count"] == 1
    audit = AuditEvent.objects.get(verb="dispute_evidence_submitted", object_id=str(escrow.pk))
    assert audit.actor == actor and audit.data["note"] == "work was delivered"
    # Submitted once: Stripe now reviews it, and a second submission is refused before reaching Stripe.
    with pytest.raises(IllegalTransition) as again:
        services.dispute_evidence_submit(escrow_id=escrow.pk, actor=actor, note="again")
    assert again.value.code == "dispute_not_awaiting_evidence"


@pytest.mark.django_db
def test_evidence_needs_a_certificate_and_the_payments_operator_role(stripe_world, settle, parties):
    world = stripe_world
    admin, org, engineer = parties
    escrow = funded_escrow(world, settle, org, engineer, admin)
    with pytest.raises(IllegalTransition):
        services.dispute_evidence_submit(escrow_id=escrow.pk, actor=operator(), note="no dispute yet")
    world.fake.dispute_open(escrow.charge_id)
    settle(world.deliver)
    with pytest.raises(NotPermitted):
        services.dispute_evidence_submit(escrow_id=escrow.pk, actor=operator(SUPPORT), note="let me")
    with pytest.raises(Conflict) as missing:
        services.dispute_evidence_submit(escrow_id=escrow.pk, actor=operator(), note="not a contract")
    assert missing.value.code == "no_evidence_available"
    assert world.fake.count("file") == 0


@pytest.mark.django_db
def test_inquiry_refund_and_evidence_of_an_unknown_escrow_are_not_found():
    from common.errors import NotFound

    for call in (services.escrow_inquiry_refund, services.dispute_evidence_submit):
        with pytest.raises(NotFound):
            call(escrow_id=999_999, actor=operator(), note="which one?")


@pytest.mark.django_db
def test_lost_dispute_with_the_engineers_share_still_unpaid_holds_the_escrow_for_an_operator(
    stripe_world, settle, parties
):
    world = stripe_world
    admin, org, engineer = parties
    escrow = funded_escrow(world, settle, org, engineer, admin)  # the engineer has no payout account yet
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r")
    transfer = OP.objects.get(escrow=escrow, kind=OP.Kind.TRANSFER)
    assert transfer.status == OP.Status.AWAITING_PAYEE
    dispute = world.fake.dispute_open(escrow.charge_id)
    settle(world.deliver)
    world.fake.dispute_close(dispute["id"], "lost")
    settle(world.deliver)

    escrow.refresh_from_db()
    assert not escrow.frozen and escrow.operator_frozen and "200000" in escrow.operator_frozen_reason
    issue = ReconciliationIssue.objects.get(escrow=escrow, kind="lost_dispute_unpaid_share")
    assert (issue.expected, issue.detail["unpaid_transfers"]) == (200_000, [transfer.idempotency_key])
    assert not OP.objects.filter(escrow=escrow, kind=OP.Kind.REVERSAL).exists()
    settle(world.onboard, engineer)  # the engineer onboards: the transfer still waits for the operator
    services.payouts_retry_payable()
    assert world.fake.count("transfer") == 0


@pytest.mark.django_db
def test_the_offline_provider_plays_an_inquiry_that_an_operator_refunds(offline_world, settle, parties, client):
    world = offline_world
    admin, org, engineer = parties
    escrow = funded_escrow(world, settle, org, engineer, admin)
    client.force_login(admin)
    confirm = f"/api/v1/payments/offline/payment-intents/{escrow.payment_intent_id}/confirm/"
    assert settle(client.post, confirm, {"outcome": "inquiry"}).status_code == 200
    settle(services.webhook_events_drain)
    escrow.refresh_from_db()
    assert escrow.frozen and escrow.dispute_id

    result = settle(services.escrow_inquiry_refund, escrow_id=escrow.pk, actor=operator(), note="refund it")

    assert (result.refund_amount, result.status) == (220_000, S.REFUNDED)
    settle(client.post, confirm, {"outcome": "inquiry_closed"})
    settle(services.webhook_events_drain)
    escrow.refresh_from_db()
    assert not escrow.frozen
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.refunded, summary.held) == (220_000, 0)


@pytest.mark.django_db
def test_the_offline_provider_keeps_submitted_evidence(offline_world, settle, parties):
    from payments.models import OfflineObject

    escrow = contract_with_certificate(offline_world, settle, parties)
    dispute = services.dispute_evidence_submit(escrow_id=escrow.pk, actor=operator(), note="delivered")
    assert dispute.status == "under_review"
    evidence = OfflineObject.objects.get(object_id=escrow.dispute_id).data["evidence"]
    assert "k-evidence-1" in evidence["uncategorized_text"]
    assert evidence["service_documentation"]["filename"] == "certificate.pdf"
    assert evidence["uncategorized_file"]["size"] > 0
