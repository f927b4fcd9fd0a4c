"""An operator's money actions on an escrow: hold (freeze) and release the hold, refund what is still held.

Each needs the payments operator role, a note (kept in the audit record with the operator), locks the escrow row
and schedules provider calls on commit. The operator's hold (`operator_frozen`) is kept apart from the chargeback
freeze (`frozen`, set and lifted only by Stripe's dispute): unfreezing one never lifts the other.
Retrying a blocked operation is `operations.operation_retry`; refunding an inquiry is `disputes`.
"""

from __future__ import annotations

from django.db import transaction

from accounts.operators import PAYMENTS_OPERATOR, operator_role_require
from common.services import audit_record

from ..models import Escrow, ProviderOperation
from .escrows import RefundResult, remainder_refund_locked
from .support import _enqueue, _lock, _operator_note_require


def escrow_freeze(*, escrow_id: int, actor, note: str) -> Escrow:
    """Hold the escrow: nothing is released, refunded or transferred from it until an operator unfreezes it."""
    operator_role_require(user=actor, role=PAYMENTS_OPERATOR)
    note = _operator_note_require(note)
    with transaction.atomic():
        escrow = _lock(escrow_id)
        if escrow.operator_frozen:
            return escrow
        escrow.operator_frozen, escrow.operator_frozen_reason = True, note[:255]
        escrow.save(update_fields=["operator_frozen", "operator_frozen_reason", "updated_at"])
        audit_record(actor=actor, verb="escrow_operator_frozen", obj=escrow, data={"note": note})
    return escrow


def escrow_unfreeze(*, escrow_id: int, actor, note: str) -> Escrow:
    """Lift the operator's hold (a chargeback freeze stays until Stripe settles the dispute); pending transfers go."""
    operator_role_require(user=actor, role=PAYMENTS_OPERATOR)
    note = _operator_note_require(note)
    with transaction.atomic():
        escrow = _lock(escrow_id)
        if not escrow.operator_frozen:
            return escrow
        escrow.operator_frozen, escrow.operator_frozen_reason = False, ""
        escrow.save(update_fields=["operator_frozen", "operator_frozen_reason", "updated_at"])
        audit_record(
            actor=actor,
            verb="escrow_operator_unfrozen",
            obj=escrow,
            data={"note": note, "chargeback_freeze_remains": escrow.frozen},
        )
        if not escrow.frozen:
            pending = escrow.operations.filter(status=ProviderOperation.Status.PENDING).values_list("pk", flat=True)
            for op_id in pending:
                _enqueue("payment_operation_execute", op_id)
    return escrow


def escrow_refund_remainder_by_operator(*, escrow_id: int, actor, note: str) -> RefundResult:
    """Refund everything still held to the company, for an operator (not while the escrow is frozen)."""
    operator_role_require(user=actor, role=PAYMENTS_OPERATOR)
    note = _operator_note_require(note)
    with transaction.atomic():
        escrow = _lock(escrow_id)
        return remainder_refund_locked(
            escrow, actor=actor, note=note, reason=f"refunded by an operator: {note}", refuse_when_empty=True
        )
