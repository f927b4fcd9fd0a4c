"""Chargebacks beyond freezing: a lost dispute's reversals of the engineer's share, an inquiry refunded instead of
contested, and evidence submitted for an operator.

The policy for a chargeback lost after the engineer was paid (setting `LOST_DISPUTE_POLICY`):
- the disputed amount is covered first by what the platform still holds for the escrow (booked as a chargeback);
- what remains (`uncovered`) was paid out: to the engineer (`released_amount`) and to the platform as its fee
  (`released_fee`). With `reverse_engineer_share` the engineer returns their share of it, pro rata:
  `uncovered * released_amount // (released_amount + released_fee)`, rounded down to the currency's amount step and
  at most what was transferred to them and not yet reversed; the platform absorbs the rest (its fee share).
  The reversals are `reversal` operations, newest transfer first, keyed `reverse:<dispute>:<transfer operation>`.
- Part of the share released but not yet transferred (the transfer waited for the chargeback) is not reversed: the
  escrow is held for an operator (`operator_frozen`) and a `lost_dispute_unpaid_share` reconciliation issue says
  how much, so the transfer does not go out unseen when the chargeback freeze ends.
- With `platform_absorbs` nothing is reversed: the platform bears the whole loss.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Sum

from accounts.operators import PAYMENTS_OPERATOR, operator_role_require
from common.errors import Conflict, IllegalTransition
from common.money import amount_round_down
from common.services import audit_record

from .. import signals
from ..evidence import json_pdf
from ..ledger import A
from ..models import Escrow, LedgerEntry, ProviderOperation, ReconciliationIssue
from ..providers.base import Dispute, EvidenceFile
from ..providers.factory import LOST_DISPUTE_POLICIES, payment_provider
from ..selectors import escrow_get
from .escrows import remainder_refund_locked
from .support import _enqueue, _lock, _operator_note_require

logger = logging.getLogger(__name__)

OP = ProviderOperation
REVERSE_ENGINEER_SHARE, PLATFORM_ABSORBS = LOST_DISPUTE_POLICIES
# Stripe takes evidence only while the dispute (or inquiry) awaits a response.
EVIDENCE_STATUSES = ("needs_response", "warning_needs_response")


def lost_dispute_policy() -> str:
    """Checked at start-up too (providers.factory.provider_settings_check), so a typo never reaches a webhook."""
    policy = settings.LOST_DISPUTE_POLICY
    if policy not in LOST_DISPUTE_POLICIES:
        raise ImproperlyConfigured(f"LOST_DISPUTE_POLICY must be one of {', '.join(LOST_DISPUTE_POLICIES)}.")
    return policy


def _reversible_by_transfer(escrow: Escrow) -> list[tuple[ProviderOperation, int]]:
    """Each transfer made to the engineer, newest first, with what of it is not reversed (or being reversed)."""
    transfers = escrow.operations.filter(kind=OP.Kind.TRANSFER, status=OP.Status.SUCCEEDED).order_by("-id")
    out = []
    for transfer in transfers:
        booked = -(
            LedgerEntry.objects.filter(
                escrow=escrow,
                account=A.ENGINEER_PAID,
                amount__lt=0,
                transaction__provider_object_id=transfer.provider_object_id,
                transaction__kind__in=("transfer_reversal", "dispute_reversal"),
            ).aggregate(total=Sum("amount"))["total"]
            or 0
        )
        in_flight = (
            escrow.operations.filter(
                kind=OP.Kind.REVERSAL,
                reversed_transfer_id=transfer.provider_object_id,
                status__in=(OP.Status.PENDING, OP.Status.BLOCKED),
            ).aggregate(total=Sum("amount"))["total"]
            or 0
        )
        left = transfer.amount - booked - in_flight
        if left > 0:
            out.append((transfer, left))
    return out


def lost_dispute_reversals_mark(*, escrow: Escrow, dispute: Dispute, uncovered: int) -> list[ProviderOperation]:
    """Mark the reversals the policy asks for after a lost chargeback (inside the escrow's locked transaction
    that booked the loss, so they are marked once); executed on commit by the operation machinery."""
    if uncovered <= 0 or lost_dispute_policy() != REVERSE_ENGINEER_SHARE:
        return []
    released_total = escrow.released_amount + escrow.released_fee
    if released_total <= 0:
        return []
    share = amount_round_down(uncovered * escrow.released_amount // released_total, escrow.currency)
    marked = []
    for transfer, left in _reversible_by_transfer(escrow):
        if share <= 0:
            break
        amount = min(left, share)
        op, created = ProviderOperation.objects.get_or_create(
            idempotency_key=f"reverse:{dispute.id}:{transfer.pk}",
            defaults={
                "escrow": escrow,
                "kind": OP.Kind.REVERSAL,
                "amount": amount,
                "currency": escrow.currency,
                "reversed_transfer_id": transfer.provider_object_id,
                "reason": f"chargeback {dispute.id} lost: the engineer's share is reversed"[:255],
            },
        )
        share -= op.amount
        if created:
            marked.append(op)
            _enqueue("payment_operation_execute", op.pk)
    if marked:
        audit_record(
            actor=None,
            verb="escrow_reversals_marked",
            obj=escrow,
            data={"dispute": dispute.id, "reversals": {op.idempotency_key: op.amount for op in marked}},
        )
    unpaid = escrow.operations.filter(
        kind=OP.Kind.TRANSFER, status__in=(OP.Status.PENDING, OP.Status.AWAITING_PAYEE, OP.Status.BLOCKED)
    )
    if share > 0 and unpaid.exists():
        _unpaid_share_hold(escrow, dispute=dispute, share=share, unpaid=list(unpaid))
    return marked


def _unpaid_share_hold(escrow: Escrow, *, dispute: Dispute, share: int, unpaid: list[ProviderOperation]) -> None:
    """Part of the engineer's share was released but not yet transferred: nothing is reversed for it, so the escrow
    is held for an operator (the transfer would otherwise go out now that the chargeback freeze ends) and the
    difference is listed as a reconciliation issue."""
    escrow.operator_frozen = True
    escrow.operator_frozen_reason = f"chargeback {dispute.id} lost with {share} of the engineer's share unpaid"[:255]
    escrow.save(update_fields=["operator_frozen", "operator_frozen_reason", "updated_at"])
    ReconciliationIssue.objects.get_or_create(
        escrow=escrow,
        kind="lost_dispute_unpaid_share",
        resolved_at=None,
        defaults={
            "expected": share,
            "actual": 0,
            "detail": {"dispute": dispute.id, "unpaid_transfers": [op.idempotency_key for op in unpaid]},
        },
    )
    audit_record(
        actor=None,
        verb="escrow_operator_frozen",
        obj=escrow,
        data={"dispute": dispute.id, "unpaid_share": share, "note": escrow.operator_frozen_reason},
    )


def escrow_inquiry_refund(*, escrow_id: int, actor, note: str):
    """Refund what the platform still holds instead of contesting an inquiry (payments operator; audited with note).

    Allowed only while the escrow's dispute is an open inquiry (`warning_*`) and Stripe says the charge is still
    refundable (`is_charge_refundable`): a refund then ends the inquiry without a chargeback or its fee. The
    chargeback freeze stays until Stripe closes the inquiry; the refund itself is not held by it.
    """
    operator_role_require(user=actor, role=PAYMENTS_OPERATOR)
    note = _operator_note_require(note)
    escrow = escrow_get(escrow_id=escrow_id)
    if not escrow.dispute_id:
        raise IllegalTransition("This escrow has no dispute.", code="no_open_inquiry")
    # Stripe's current word on the dispute, fetched before any row is locked.
    dispute = payment_provider().dispute_get(dispute_id=escrow.dispute_id)
    if not (dispute.open and dispute.inquiry):
        raise IllegalTransition(
            f"The dispute is {dispute.status}, not an open inquiry; contest it with evidence instead.",
            code="dispute_not_inquiry",
        )
    if not dispute.is_charge_refundable:
        raise IllegalTransition("Stripe says the disputed charge cannot be refunded.", code="charge_not_refundable")
    with transaction.atomic():
        escrow = _lock(escrow_id)
        if escrow.dispute_id != dispute.id:
            raise Conflict("The escrow's dispute changed; look again.", code="dispute_changed")
        return remainder_refund_locked(
            escrow,
            actor=actor,
            note=note,
            reason=f"inquiry {dispute.id} refunded: {note}",
            verb="escrow_inquiry_refunded",
            refuse_when_empty=True,
            allow_chargeback_freeze=True,
            withhold_fee=False,
        )


def dispute_evidence_submit(*, escrow_id: int, actor, note: str) -> Dispute:
    """Submit the verification certificate and report as the dispute's evidence (payments operator; audited).

    Payments knows nothing of contracts: `signals.dispute_evidence_requested` asks whoever knows the escrow's
    reference (jobs) for a summary, the certificate and the report. They become a short `uncategorized_text`, the
    certificate as `service_documentation` and the report as `uncategorized_file` (PDFs), submitted at once.
    Submitting is final at Stripe, so the key is per dispute: a repeat replays the first submission.
    """
    operator_role_require(user=actor, role=PAYMENTS_OPERATOR)
    note = _operator_note_require(note)
    escrow = escrow_get(escrow_id=escrow_id)
    if not escrow.dispute_id:
        raise IllegalTransition("This escrow has no dispute.", code="no_open_dispute")
    provider = payment_provider()
    dispute = provider.dispute_get(dispute_id=escrow.dispute_id)
    if dispute.status not in EVIDENCE_STATUSES:
        raise IllegalTransition(
            f"The dispute is {dispute.status}; evidence can be submitted only while it awaits a response.",
            code="dispute_not_awaiting_evidence",
        )
    answers = signals.dispute_evidence_requested.send(sender=Escrow, escrow_id=escrow.pk, reference=escrow.reference)
    evidence = next((answer for _, answer in answers if isinstance(answer, dict)), None)
    if not evidence or not evidence.get("certificate"):
        raise Conflict("There is no verification certificate to submit for this escrow.", code="no_evidence_available")
    files = [
        EvidenceFile(
            "certificate.pdf", json_pdf("Verification certificate", evidence["certificate"]), "service_documentation"
        ),
        EvidenceFile("report.pdf", json_pdf("Verification report", evidence.get("report") or {}), "uncategorized_file"),
    ]
    text = str(evidence.get("summary") or "")[:20_000]
    submitted = provider.dispute_evidence_submit(
        dispute_id=dispute.id, text=text, files=files, idempotency_key=f"dispute_evidence:{dispute.id}"
    )
    with transaction.atomic():
        escrow = _lock(escrow_id)
        audit_record(
            actor=actor,
            verb="dispute_evidence_submitted",
            obj=escrow,
            data={
                "dispute": dispute.id,
                "status": submitted.status,
                "fields": ["uncategorized_text", *(f.field for f in files)],
                "note": note,
            },
        )
    return submitted
