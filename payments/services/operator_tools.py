"""An operator's money actions on an escrow: hold (freeze) and release the hold, refund what is still held.

Each needs the payments operator role, a note (kept in the audit record with the operator), locks the escrow row
and schedules provider calls on commit. The operator's hold (`operator_frozen`) is kept apart from the chargeback
freeze (`frozen`, set and lifted only by Stripe's dispute): unfreezing one never lifts the other.
Retrying a blocked operation is `operations.operation_retry`; refunding an inquiry is `disputes`.
"""

from __future__ import annotations

from django.db import transaction

from accounts.operators import PAYMENTS_OPERATOR, operator_role_require
from common.errors import IllegalTransition
from common.services import audit_record

from .. import signals
from ..errors import EscrowFrozen
from ..ledger import A, ledger_balances
from ..models import Escrow, ProviderOperation
from .escrows import RefundResult, _refund_mark
from .support import S, _enqueue, _lock, _move, _operator_note_require, _signal_kwargs


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
        return _remainder_refund_locked(
            escrow, actor=actor, note=note, reason=f"refunded by an operator: {note}", verb="escrow_refunded"
        )


def _remainder_refund_locked(
    escrow: Escrow, *, actor, note: str, reason: str, verb: str, allow_chargeback_freeze: bool = False
) -> RefundResult:
    """The held remainder refunded once (key `refund:<escrow>`), the escrow closed; the caller holds the lock."""
    existing = ProviderOperation.objects.filter(idempotency_key=f"refund:{escrow.pk}").first()
    if existing is not None:
        return RefundResult(escrow.pk, existing.amount, existing.idempotency_key, escrow.status)
    if escrow.status in (S.PENDING_FUNDING, S.CANCELLED):
        raise IllegalTransition(
            f"Cannot refund: the escrow is {escrow.status}; cancel an unfunded escrow instead.",
            fields={"status": [escrow.status]},
        )
    held = ledger_balances(escrow_id=escrow.pk)[A.HELD]
    if held <= 0:
        raise IllegalTransition("The platform holds nothing more for this escrow.", code="nothing_held")
    if escrow.operator_frozen:
        raise EscrowFrozen("An operator holds this escrow; unfreeze it first.")
    if escrow.frozen and not allow_chargeback_freeze:
        raise EscrowFrozen("The escrow is frozen while a chargeback is open; nothing can be refunded.")
    op = _refund_mark(escrow, amount=held, reason=reason)
    escrow.status_reason = reason[:255]
    to = S.REFUNDED if escrow.released_amount == 0 and escrow.status == S.FUNDED else S.CLOSED
    _move(
        escrow,
        to,
        actor=actor,
        verb=verb,
        data={"amount": held, "reason": reason, "note": note},
        fields=["status_reason"],
    )
    signals.escrow_closed.send(sender=Escrow, **_signal_kwargs(escrow, reason=reason, status=escrow.status))
    return RefundResult(escrow.pk, held, op.idempotency_key, escrow.status)
