"""Opening an escrow, releasing tiers of it, refunding what it still holds, and chargebacks (disputes).

Rules kept by every function here:
- the escrow row is locked (`select_for_update`) and its move checked against ESCROW_TRANSITIONS;
- a money movement is marked as a ProviderOperation and committed *before* the provider is called, with a
  deterministic idempotency key; the outcome is recorded in a second transaction; ledger idempotency keys and
  unique provider ids are the backstop. No row lock is ever held across a provider (network) call;
- signals are sent inside the transaction that changes the escrow; Celery work is enqueued on commit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Organization, User
from common.errors import Conflict, IllegalTransition, ValidationFailed
from common.money import amount_round_down, charge_amount_validate, currency_amount_step, currency_validate_settlement
from common.services import audit_record

from .. import signals
from ..errors import EscrowFrozen
from ..ledger import A, ledger_balances, ledger_post
from ..models import Escrow, ProviderOperation
from ..providers.base import Dispute
from .fees import refund_fee_withhold
from .support import FULL_BPS, S, _enqueue, _lock, _move, _payee_payable, _payee_wait_reason, _signal_kwargs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReleaseResult:
    escrow_id: int
    fraction_bps: int
    released_amount: int  # cumulative engineer amount released
    released_fee: int  # cumulative fee kept
    transfer_amount: int  # this call's new transfer (0 when nothing new: idempotent repeat)
    operation_key: str | None
    status: str


@dataclass(frozen=True)
class RefundResult:
    escrow_id: int
    refund_amount: int
    operation_key: str | None
    status: str


def escrow_open(
    *,
    payer_organization: Organization,
    payee: User,
    amount: int,
    fee: int,
    currency: str,
    reference: str,
    actor: User | None = None,
) -> Escrow:
    """Open an escrow awaiting funding (runs inside the caller's transaction, e.g. bid acceptance)."""
    if not isinstance(amount, int) or amount <= 0:
        raise ValidationFailed("The amount must be a positive integer of minor units.", fields={"amount": ["invalid"]})
    if not isinstance(fee, int) or fee < 0:
        raise ValidationFailed("The fee must be a non-negative integer of minor units.", fields={"fee": ["invalid"]})
    if not reference or len(reference) > 64:
        raise ValidationFailed("A reference of at most 64 characters is required.", fields={"reference": ["invalid"]})
    currency = currency_validate_settlement(currency)
    step = currency_amount_step(currency)
    if amount % step or fee % step:
        raise ValidationFailed(
            f"{currency} amounts and fees must be multiples of {step} minor units.",
            code="amount_not_payable_step",
            fields={"amount": [f"a multiple of {step}"]},
        )
    charge_amount_validate(amount + fee, currency)
    with transaction.atomic():
        existing = Escrow.objects.select_for_update().filter(reference=reference).first()
        if existing is None:
            try:
                with transaction.atomic():
                    escrow = Escrow.objects.create(
                        reference=reference,
                        payer_organization=payer_organization,
                        payee=payee,
                        currency=currency,
                        amount=amount,
                        fee=fee,
                        funding_deadline=timezone.now() + timedelta(days=settings.FUNDING_DEADLINE_DAYS),
                    )
            except IntegrityError:
                existing = Escrow.objects.select_for_update().get(reference=reference)
            else:
                audit_record(
                    actor=actor,
                    verb="escrow_opened",
                    obj=escrow,
                    to_state=escrow.status,
                    data={"amount": amount, "fee": fee, "currency": currency, "reference": reference},
                )
                return escrow
        same = (
            existing.payer_organization_id == payer_organization.pk
            and existing.payee_id == payee.pk
            and (existing.amount, existing.fee, existing.currency) == (amount, fee, currency)
        )
        if not same:
            raise Conflict("An escrow with this reference already exists with other terms.", code="escrow_exists")
        return existing


def escrow_release(*, escrow_id: int, fraction_bps: int, reason: str, verification_run_id: str) -> ReleaseResult:
    """Release up to `fraction_bps`/10,000 of the engineer amount (cumulative), keeping the fee pro rata.

    Idempotent: releasing a fraction already reached does nothing. Runs inside the caller's transaction if
    there is one; the transfer itself happens after commit, on the queue.
    """
    if not isinstance(fraction_bps, int) or not 0 < fraction_bps <= FULL_BPS:
        raise ValidationFailed("fraction_bps must be an integer from 1 to 10000.", fields={"fraction_bps": ["invalid"]})
    with transaction.atomic():
        escrow = _lock(escrow_id)
        if fraction_bps <= escrow.released_bps:
            return ReleaseResult(
                escrow.pk, fraction_bps, escrow.released_amount, escrow.released_fee, 0, None, escrow.status
            )
        if escrow.on_hold:
            raise EscrowFrozen(f"The escrow is frozen ({_hold_reason(escrow)}); nothing can be released.")
        if escrow.status not in (S.FUNDED, S.PARTIALLY_RELEASED):
            raise IllegalTransition(
                f"Cannot release: the escrow is {escrow.status}.", fields={"status": [escrow.status]}
            )
        # Rounded down to the currency's amount step (three-decimal currencies: multiples of 10), so every transfer
        # and the final refund are amounts Stripe accepts; the full fraction still releases exactly amount and fee.
        target_amount = amount_round_down(escrow.amount * fraction_bps // FULL_BPS, escrow.currency)
        target_fee = amount_round_down(escrow.fee * fraction_bps // FULL_BPS, escrow.currency)
        delta_amount = target_amount - escrow.released_amount
        delta_fee = target_fee - escrow.released_fee
        key = f"release:{escrow.pk}:{fraction_bps}"
        if delta_amount + delta_fee > 0:
            ledger_post(
                escrow=escrow,
                idempotency_key=key,
                kind="release",
                lines=[
                    (A.HELD, -(delta_amount + delta_fee)),
                    (A.ENGINEER_PAYABLE, delta_amount),
                    (A.PLATFORM_FEE, delta_fee),
                ],
                memo=reason,
                provider_ids={"verification_run": verification_run_id},
            )
        escrow.released_bps, escrow.released_amount, escrow.released_fee = fraction_bps, target_amount, target_fee
        to = S.RELEASED if fraction_bps == FULL_BPS else S.PARTIALLY_RELEASED
        _move(
            escrow,
            to,
            verb="escrow_released",
            data={
                "fraction_bps": fraction_bps,
                "amount": delta_amount,
                "fee": delta_fee,
                "reason": reason,
                "verification_run_id": verification_run_id,
            },
            fields=["released_bps", "released_amount", "released_fee"],
        )
        op_key = None
        if delta_amount > 0:
            payable = _payee_payable(escrow.payee_id)
            op = ProviderOperation.objects.create(
                escrow=escrow,
                kind=ProviderOperation.Kind.TRANSFER,
                idempotency_key=key,
                amount=delta_amount,
                currency=escrow.currency,
                status=ProviderOperation.Status.PENDING if payable else ProviderOperation.Status.AWAITING_PAYEE,
                last_error="" if payable else _payee_wait_reason(escrow.payee_id),
                reason=reason[:255],
                verification_run_id=verification_run_id[:128],
            )
            op_key = op.idempotency_key
            if payable:
                _enqueue("payment_operation_execute", op.pk)
        if to == S.RELEASED:
            signals.escrow_closed.send(sender=Escrow, **_signal_kwargs(escrow, reason=reason, status=escrow.status))
    return ReleaseResult(escrow.pk, fraction_bps, target_amount, target_fee, delta_amount, op_key, escrow.status)


def _hold_reason(escrow: Escrow) -> str:
    return "a chargeback is open" if escrow.frozen else "held by an operator"


def _refund_mark(escrow: Escrow, *, amount: int, reason: str) -> ProviderOperation:
    op = ProviderOperation.objects.create(
        escrow=escrow,
        kind=ProviderOperation.Kind.REFUND,
        idempotency_key=f"refund:{escrow.pk}",
        amount=amount,
        currency=escrow.currency,
        reason=reason[:255],
    )
    _enqueue("payment_operation_execute", op.pk)
    return op


def escrow_refund_remainder(*, escrow_id: int, reason: str) -> RefundResult:
    """Refund everything still held (the unreleased amount and its share of the fee). Idempotent."""
    with transaction.atomic():
        return remainder_refund_locked(_lock(escrow_id), reason=reason)


def remainder_refund_locked(
    escrow: Escrow,
    *,
    reason: str,
    verb: str = "escrow_refunded",
    actor=None,
    note: str = "",
    refuse_when_empty: bool = False,
    allow_chargeback_freeze: bool = False,
    withhold_fee: bool = True,
) -> RefundResult:
    """The held remainder refunded once (key `refund:<escrow>`), the escrow closed; the caller holds the row lock.

    Every refund of a remainder goes through here: the failed contract's, an operator's, an inquiry's. The
    processing fee is withheld per `REFUND_FEE_POLICY` unless `withhold_fee` is off (an inquiry is ended only by
    refunding the whole charge).
    """
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
        if refuse_when_empty:
            raise IllegalTransition("The platform holds nothing more for this escrow.", code="nothing_held")
        return RefundResult(escrow.pk, 0, None, escrow.status)
    if escrow.operator_frozen or (escrow.frozen and not allow_chargeback_freeze):
        raise EscrowFrozen(f"The escrow is frozen ({_hold_reason(escrow)}); nothing can be refunded.")
    # REFUND_FEE_POLICY (services/fees.py)
    fee_withheld = refund_fee_withhold(escrow=escrow, held=held) if withhold_fee else 0
    amount = held - fee_withheld
    op = _refund_mark(escrow, amount=amount, reason=reason) if amount > 0 else None
    escrow.status_reason = reason[:255]
    to = S.REFUNDED if escrow.released_amount == 0 and escrow.status == S.FUNDED else S.CLOSED
    data = {"amount": amount, "fee_withheld": fee_withheld, "reason": reason}
    _move(escrow, to, actor=actor, verb=verb, data={**data, "note": note} if note else data, fields=["status_reason"])
    signals.escrow_closed.send(sender=Escrow, **_signal_kwargs(escrow, reason=reason, status=escrow.status))
    return RefundResult(escrow.pk, amount, op.idempotency_key if op else None, escrow.status)


# ---- executing provider operations ---------------------------------------------------------------


def escrow_dispute_sync(*, escrow_id: int, dispute: Dispute) -> Escrow:
    """Freeze while a chargeback is open, unfreeze when won, book the loss once when lost."""
    with transaction.atomic():
        escrow = _lock(escrow_id)
        if dispute.open:
            if not escrow.frozen:
                escrow.frozen, escrow.dispute_id = True, dispute.id
                escrow.frozen_reason = f"chargeback {dispute.id} ({dispute.status})"[:255]
                escrow.save(update_fields=["frozen", "dispute_id", "frozen_reason", "updated_at"])
                audit_record(
                    actor=None, verb="escrow_frozen", obj=escrow, data={"dispute": dispute.id, "amount": dispute.amount}
                )
            return escrow
        if dispute.status == "lost":
            held = ledger_balances(escrow_id=escrow.pk)[A.HELD]
            from_held = min(dispute.amount, max(held, 0))
            loss = dispute.amount - from_held
            _, created = ledger_post(
                escrow=escrow,
                idempotency_key=f"dispute_loss:{dispute.id}",
                kind="dispute_loss",
                lines=[
                    (A.HELD, -from_held),
                    (A.CHARGEBACKS, from_held),
                    (A.DISPUTE_LOSS, loss),
                    (A.PLATFORM_CASH, -loss),
                ],
                provider_object_id=dispute.id,
            )
            if created:
                from .disputes import lost_dispute_reversals_mark

                audit_record(
                    actor=None,
                    verb="escrow_dispute_lost",
                    obj=escrow,
                    data={"dispute": dispute.id, "from_held": from_held, "platform_loss": loss},
                )
                lost_dispute_reversals_mark(escrow=escrow, dispute=dispute, uncovered=loss)
                if from_held == held and escrow.status in (S.FUNDED, S.PARTIALLY_RELEASED):
                    to = S.REFUNDED if escrow.released_amount == 0 else S.CLOSED
                    escrow.status_reason = f"chargeback {dispute.id} lost"
                    _move(
                        escrow,
                        to,
                        verb="escrow_closed_by_chargeback",
                        data={"dispute": dispute.id},
                        fields=["status_reason"],
                    )
                    signals.escrow_closed.send(
                        sender=Escrow, **_signal_kwargs(escrow, reason="chargeback lost", status=escrow.status)
                    )
        if escrow.frozen and escrow.dispute_id == dispute.id:
            escrow.frozen, escrow.frozen_reason = False, ""
            escrow.save(update_fields=["frozen", "frozen_reason", "updated_at"])
            audit_record(
                actor=None, verb="escrow_unfrozen", obj=escrow, data={"dispute": dispute.id, "status": dispute.status}
            )
            if not escrow.operator_frozen:
                for op_id in escrow.operations.filter(status=ProviderOperation.Status.PENDING).values_list(
                    "pk", flat=True
                ):
                    _enqueue("payment_operation_execute", op_id)
    return escrow
