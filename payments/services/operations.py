"""Executing the marked provider operations (transfers, refunds, reversals) and recording their outcomes once;
an operator's retry of a blocked operation."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from accounts.operators import PAYMENTS_OPERATOR, operator_role_require
from common.errors import DomainError, IllegalTransition, NotFound, RetryableError
from common.services import audit_record

from .. import signals
from ..errors import AccountAccessRevoked
from ..ledger import A, ledger_post
from ..models import ConnectedAccount, Escrow, LedgerEntry, ProviderOperation
from ..providers.base import Refund, Transfer, TransferReversal
from ..providers.factory import payment_provider
from .support import (
    PAYEE_DISCONNECTED_REASON,
    _enqueue,
    _lock,
    _operator_note_require,
    _payee_wait_reason,
    _signal_kwargs,
    _transfer_group,
)

OP = ProviderOperation
# Refunds Stripe still holds (or is still making); a failed or canceled one gave the money back.
LIVE_REFUND_STATUSES = ("succeeded", "pending", "requires_action")
# Ledger kinds that take money back from the engineer's paid balance, per transfer.
REVERSAL_LEDGER_KINDS = ("transfer_reversal", "dispute_reversal")

logger = logging.getLogger(__name__)


def _operation_failure_record(op_id: int, exc: DomainError, *, blocked: bool) -> None:
    updates = {
        "attempts": F("attempts") + 1,
        "last_error": f"{exc.code}: {exc.message}"[:2000],
        "updated_at": timezone.now(),
    }
    if blocked:
        updates["status"] = ProviderOperation.Status.BLOCKED
    ProviderOperation.objects.filter(pk=op_id).exclude(status=ProviderOperation.Status.SUCCEEDED).update(**updates)


def payment_operation_execute(*, operation_id: int) -> ProviderOperation:
    """Make the marked transfer or refund at the provider with its idempotency key and record the outcome.

    Safe to run any number of times, concurrently or after a crash: the key makes the provider answer with
    the same object, and recording is idempotent.
    """
    op = ProviderOperation.objects.select_related("escrow").get(pk=operation_id)
    if op.status in (OP.Status.SUCCEEDED, OP.Status.BLOCKED, OP.Status.SUPERSEDED):
        return op
    escrow = op.escrow
    if op.retry_of_id is not None and _retry_found_recorded(op):
        return ProviderOperation.objects.get(pk=op.pk)
    provider = payment_provider()
    metadata = {"escrow_id": str(escrow.pk), "reference": escrow.reference, "operation_key": op.idempotency_key}
    if op.kind == OP.Kind.REVERSAL:

        def reverse() -> TransferReversal:
            found = None
            if op.attempts:  # a retry: the transfer embeds its reversals, with our key in their metadata
                transfer = provider.transfer_get(transfer_id=op.reversed_transfer_id)
                found = next(
                    (r for r in transfer.reversals if r.metadata.get("operation_key") == op.idempotency_key), None
                )
            return found or provider.transfer_reverse(
                transfer_id=op.reversed_transfer_id,
                amount=op.amount,
                idempotency_key=op.idempotency_key,
                metadata=metadata,
            )

        return _operation_call(op, reverse, lambda made: operation_reversal_record(operation_id=op.pk, reversal=made))
    if op.kind == ProviderOperation.Kind.TRANSFER:
        if escrow.on_hold:
            return op  # paid once the chargeback is settled or the operator's hold lifted (payouts_retry_payable)
        account = ConnectedAccount.objects.filter(user_id=escrow.payee_id).first()
        if account is None or not account.payable:
            ProviderOperation.objects.filter(pk=op.pk, status=ProviderOperation.Status.PENDING).update(
                status=ProviderOperation.Status.AWAITING_PAYEE,
                last_error=_payee_wait_reason(escrow.payee_id),
                updated_at=timezone.now(),
            )
            op.refresh_from_db()
            return op

        def transfer() -> Transfer:
            found = None
            if op.attempts:  # a retry: look before creating, in case the provider's idempotency key expired
                found = next(
                    (
                        t
                        for t in provider.transfers_list(transfer_group=_transfer_group(escrow))
                        if t.metadata.get("operation_key") == op.idempotency_key
                    ),
                    None,
                )
            return found or provider.transfer_create(
                amount=op.amount,
                currency=op.currency,
                destination=account.provider_account_id,
                source_transaction=escrow.charge_id or None,
                transfer_group=_transfer_group(escrow),
                metadata=metadata,
                idempotency_key=op.idempotency_key,
            )

        return _operation_call(op, transfer, lambda made: operation_transfer_record(operation_id=op.pk, transfer=made))

    refunded_intent = op.payment_intent_id or escrow.payment_intent_id

    def refund() -> Refund:
        found = None
        if op.attempts:
            found = next(
                (
                    r
                    for r in provider.refunds_list(payment_intent_id=refunded_intent)
                    if r.metadata.get("operation_key") == op.idempotency_key
                ),
                None,
            )
        return found or provider.refund_create(
            payment_intent_id=refunded_intent,
            amount=op.amount,
            metadata=metadata,
            idempotency_key=op.idempotency_key,
        )

    return _operation_call(op, refund, lambda made: operation_refund_record(operation_id=op.pk, refund=made))


def _operation_call(op: ProviderOperation, call, record) -> ProviderOperation:
    """Call the provider once for `op`; retryable failures re-raise for the queue, others block the operation."""
    try:
        outcome = call()
    except AccountAccessRevoked as exc:
        # The engineer's account disconnected between the check and the call: the transfer waits for them.
        _operation_failure_record(op.pk, exc, blocked=False)
        ProviderOperation.objects.filter(pk=op.pk, status=ProviderOperation.Status.PENDING).update(
            status=ProviderOperation.Status.AWAITING_PAYEE, last_error=PAYEE_DISCONNECTED_REASON
        )
        return ProviderOperation.objects.get(pk=op.pk)
    except RetryableError as exc:
        _operation_failure_record(op.pk, exc, blocked=False)
        raise
    except DomainError as exc:
        _operation_failure_record(op.pk, exc, blocked=True)
        logger.error("%s %s blocked: %s", op.kind, op.idempotency_key, exc.message)
        return ProviderOperation.objects.get(pk=op.pk)
    return record(outcome)


def _operation_lock(operation_id: int) -> tuple[ProviderOperation, Escrow]:
    """Lock an operation and its escrow in the order every writer uses: the escrow first."""
    escrow = _lock(ProviderOperation.objects.values_list("escrow_id", flat=True).get(pk=operation_id))
    return ProviderOperation.objects.select_for_update().get(pk=operation_id), escrow


def operation_transfer_record(*, operation_id: int, transfer: Transfer) -> ProviderOperation:
    with transaction.atomic():
        op, escrow = _operation_lock(operation_id)
        if op.status == ProviderOperation.Status.SUCCEEDED:
            return op
        op.status = ProviderOperation.Status.SUCCEEDED
        op.provider_object_id = transfer.id
        op.save(update_fields=["status", "provider_object_id", "updated_at"])
        ledger_post(
            escrow=escrow,
            idempotency_key=f"transfer:{op.idempotency_key}",
            kind="transfer",
            lines=[(A.ENGINEER_PAYABLE, -op.amount), (A.ENGINEER_PAID, op.amount)],
            provider_object_id=transfer.id,
            provider_ids={"transfer": transfer.id, "destination": transfer.destination},
        )
        audit_record(
            actor=None, verb="escrow_transfer_made", obj=escrow, data={"transfer": transfer.id, "amount": op.amount}
        )
    return op


def operation_refund_record(*, operation_id: int, refund: Refund) -> ProviderOperation:
    with transaction.atomic():
        op, escrow = _operation_lock(operation_id)
        if op.kind == ProviderOperation.Kind.DUPLICATE_REFUND:
            if not op.provider_object_id:
                op.status = ProviderOperation.Status.SUCCEEDED
                op.provider_object_id = refund.id
                op.save(update_fields=["status", "provider_object_id", "updated_at"])
                audit_record(
                    actor=None,
                    verb="escrow_duplicate_payment_refunded",
                    obj=escrow,
                    data={"refund": refund.id, "payment_intent": op.payment_intent_id, "amount": op.amount},
                )
            return op
        if not op.provider_object_id:
            op.status = ProviderOperation.Status.SUCCEEDED
            op.provider_object_id = refund.id
            op.save(update_fields=["status", "provider_object_id", "updated_at"])
            ledger_post(
                escrow=escrow,
                # `refund:<escrow>` for the first refund; an operator's retry books under its own key.
                idempotency_key=op.idempotency_key,
                kind="refund",
                lines=[(A.HELD, -op.amount), (A.REFUNDS, op.amount)],
                provider_object_id=refund.id,
                provider_ids={"refund": refund.id, "payment_intent": escrow.payment_intent_id or ""},
            )
            audit_record(
                actor=None, verb="escrow_refund_made", obj=escrow, data={"refund": refund.id, "amount": op.amount}
            )
            _enqueue("escrow_fees_book", escrow.pk)  # a refund fee, where Stripe charges one (services/fees.py)
        if refund.status in ("failed", "canceled"):
            _, created = ledger_post(
                escrow=escrow,
                idempotency_key=f"refund_failed:{refund.id}",
                kind="refund_failed",
                lines=[(A.REFUNDS, -op.amount), (A.HELD, op.amount)],
                provider_object_id=refund.id,
                memo=refund.failure_reason or refund.status,
            )
            if created:
                op.status = ProviderOperation.Status.BLOCKED
                op.last_error = f"refund {refund.status}: {refund.failure_reason or ''}"
                op.save(update_fields=["status", "last_error", "updated_at"])
                escrow.status_reason = f"refund {refund.status}; the money is held again"[:255]
                escrow.save(update_fields=["status_reason", "updated_at"])
                audit_record(actor=None, verb="escrow_refund_failed", obj=escrow, data={"refund": refund.id})
    return op


def transfer_sync(*, transfer: Transfer) -> None:
    """A transfer's current state: record it if our operation did not yet, book reversals once."""
    op = (
        ProviderOperation.objects.filter(
            Q(provider_object_id=transfer.id) | Q(idempotency_key=transfer.metadata.get("operation_key", "-"))
        )
        .filter(kind=ProviderOperation.Kind.TRANSFER)
        .first()
    )
    if op is None:
        return
    if op.status != ProviderOperation.Status.SUCCEEDED:
        operation_transfer_record(operation_id=op.pk, transfer=transfer)
    with transaction.atomic():
        escrow = _lock(op.escrow_id)
        booked = -(
            LedgerEntry.objects.filter(
                transaction__kind__in=REVERSAL_LEDGER_KINDS,
                transaction__provider_object_id=transfer.id,
                account=A.ENGINEER_PAID,
            ).aggregate(total=Sum("amount"))["total"]
            or 0
        )
        # Our own reversals still being made are booked by their operation when it records them.
        in_flight = (
            ProviderOperation.objects.filter(
                kind=OP.Kind.REVERSAL,
                reversed_transfer_id=transfer.id,
                status__in=(OP.Status.PENDING, OP.Status.BLOCKED),
            ).aggregate(total=Sum("amount"))["total"]
            or 0
        )
        missing = transfer.amount_reversed - booked - in_flight
        if missing > 0:
            ledger_post(
                escrow=escrow,
                idempotency_key=f"transfer_reversal:{transfer.id}:{transfer.amount_reversed}",
                kind="transfer_reversal",
                lines=[(A.ENGINEER_PAID, -missing), (A.HELD, missing)],
                provider_object_id=transfer.id,
            )
            audit_record(
                actor=None,
                verb="escrow_transfer_reversed",
                obj=escrow,
                data={"transfer": transfer.id, "amount": missing},
            )


def refund_sync(*, refund: Refund) -> None:
    op = (
        ProviderOperation.objects.filter(
            Q(provider_object_id=refund.id) | Q(idempotency_key=refund.metadata.get("operation_key", "-"))
        )
        .filter(kind=ProviderOperation.Kind.REFUND)
        .first()
    )
    if op is not None:
        operation_refund_record(operation_id=op.pk, refund=refund)


def operation_reversal_record(*, operation_id: int, reversal: TransferReversal) -> ProviderOperation:
    """A reversal of the engineer's transfer after a lost chargeback: the money returns from the engineer to cover
    the chargeback, so the platform's dispute loss shrinks by as much (one balanced transaction)."""
    with transaction.atomic():
        op, escrow = _operation_lock(operation_id)
        if op.status == OP.Status.SUCCEEDED:
            return op
        op.status = OP.Status.SUCCEEDED
        op.provider_object_id = reversal.id
        op.last_error = ""
        op.save(update_fields=["status", "provider_object_id", "last_error", "updated_at"])
        ledger_post(
            escrow=escrow,
            idempotency_key=f"reversal:{op.idempotency_key}",
            kind="dispute_reversal",
            lines=[
                (A.ENGINEER_PAID, -op.amount),
                (A.CHARGEBACKS, op.amount),
                (A.DISPUTE_LOSS, -op.amount),
                (A.PLATFORM_CASH, op.amount),
            ],
            provider_object_id=op.reversed_transfer_id,
            provider_ids={"reversal": reversal.id, "transfer": op.reversed_transfer_id},
            memo=op.reason,
        )
        audit_record(
            actor=None,
            verb="escrow_transfer_reversed_for_chargeback",
            obj=escrow,
            data={"reversal": reversal.id, "transfer": op.reversed_transfer_id, "amount": op.amount},
        )
        signals.payout_reversed.send(
            sender=Escrow,
            **_signal_kwargs(
                escrow,
                user_id=escrow.payee_id,
                amount=op.amount,
                currency=op.currency,
                transfer_id=op.reversed_transfer_id,
                reason=op.reason,
            ),
        )
    return op


# ---- an operator's retry of a blocked operation ------------------------------------------------------


def _retry_chain(op: ProviderOperation) -> tuple[ProviderOperation, list[ProviderOperation]]:
    """The first operation of `op`'s retry chain and every operation in it (the first one included)."""
    root = op
    while root.retry_of_id is not None:
        root = ProviderOperation.objects.get(pk=root.retry_of_id)
    retries = list(ProviderOperation.objects.filter(idempotency_key__startswith=f"{root.idempotency_key}:retry-"))
    return root, [root, *retries]


def _provider_holds(op: ProviderOperation, keys: set[str]) -> Transfer | Refund | TransferReversal | None:
    """What the provider already holds for any operation of the chain (our key is in each object's metadata)."""
    provider = payment_provider()
    escrow = op.escrow
    if op.kind == OP.Kind.TRANSFER:
        return next(
            (
                t
                for t in provider.transfers_list(transfer_group=_transfer_group(escrow))
                if t.metadata.get("operation_key") in keys
            ),
            None,
        )
    if op.kind == OP.Kind.REVERSAL:
        transfer = provider.transfer_get(transfer_id=op.reversed_transfer_id)
        return next((r for r in transfer.reversals if r.metadata.get("operation_key") in keys), None)
    intent = op.payment_intent_id or escrow.payment_intent_id
    return next(
        (
            r
            for r in provider.refunds_list(payment_intent_id=intent)
            if r.metadata.get("operation_key") in keys and r.status in LIVE_REFUND_STATUSES
        ),
        None,
    )


def _provider_object_record(op_id: int, found) -> ProviderOperation:
    if isinstance(found, Transfer):
        return operation_transfer_record(operation_id=op_id, transfer=found)
    if isinstance(found, TransferReversal):
        return operation_reversal_record(operation_id=op_id, reversal=found)
    return operation_refund_record(operation_id=op_id, refund=found)


def operation_retry(*, operation_id: int, actor, note: str) -> ProviderOperation:
    """Retry a blocked operation for an operator (payments operator role, a note required, audited).

    First lists what the provider already holds for the operation (transfers by transfer group, refunds by payment
    intent, reversals on their transfer): an object made under any key of the operation's retry chain is recorded
    instead of moving money again. Otherwise a new operation replaces the blocked one (which becomes `superseded`
    and is never executed again) under a fresh key, `<first key>:retry-<n>`, and runs through the normal task.
    """
    operator_role_require(user=actor, role=PAYMENTS_OPERATOR)
    note = _operator_note_require(note)
    op = ProviderOperation.objects.select_related("escrow").filter(pk=operation_id).first()
    if op is None:
        raise NotFound("No such provider operation.", code="operation_not_found")
    _retryable_check(op)
    root, chain = _retry_chain(op)
    keys = {o.idempotency_key for o in chain}
    # A network call: made before any row is locked; the operation is blocked, so nothing else executes it.
    found = _provider_holds(op, keys)
    with transaction.atomic():
        op, escrow = _operation_lock(op.pk)
        _retryable_check(op)
        data = {"operation": op.idempotency_key, "note": note}
        if found is not None:
            owner = next(o for o in chain if o.idempotency_key == found.metadata.get("operation_key"))
            recorded = _provider_object_record(owner.pk, found)
            if owner.pk != op.pk:
                ProviderOperation.objects.filter(pk=op.pk).update(
                    status=OP.Status.SUPERSEDED, last_error=f"held by the provider as {found.id}"
                )
            audit_record(
                actor=actor, verb="operation_retry_found", obj=escrow, data={**data, "provider_object": found.id}
            )
            return ProviderOperation.objects.get(pk=recorded.pk)
        attempt = len(chain)
        retry = ProviderOperation.objects.create(
            escrow=escrow,
            kind=op.kind,
            idempotency_key=f"{root.idempotency_key}:retry-{attempt}",
            amount=op.amount,
            currency=op.currency,
            reason=op.reason,
            verification_run_id=op.verification_run_id,
            payment_intent_id=op.payment_intent_id,
            reversed_transfer_id=op.reversed_transfer_id,
            retry_of=op,
        )
        op.status = OP.Status.SUPERSEDED
        op.save(update_fields=["status", "updated_at"])
        audit_record(actor=actor, verb="operation_retried", obj=escrow, data={**data, "retry": retry.idempotency_key})
        _enqueue("payment_operation_execute", retry.pk)
    return retry


def _retry_found_recorded(op: ProviderOperation) -> bool:
    """Before an operator's retry moves money: look once more for an object made under any key of its chain (an
    earlier attempt's object may show up in Stripe's lists only now) and record that instead."""
    if op.kind == OP.Kind.TRANSFER and op.escrow.on_hold:
        return False  # it waits anyway; looked at again when it runs
    _, chain = _retry_chain(op)
    found = _provider_holds(op, {o.idempotency_key for o in chain})
    if found is None:
        return False
    owner = next(o for o in chain if o.idempotency_key == found.metadata.get("operation_key"))
    _provider_object_record(owner.pk, found)
    if owner.pk != op.pk:
        ProviderOperation.objects.filter(pk=op.pk).exclude(status=OP.Status.SUCCEEDED).update(
            status=OP.Status.SUPERSEDED, last_error=f"held by the provider as {found.id}", updated_at=timezone.now()
        )
    return True


def _retryable_check(op: ProviderOperation) -> None:
    if op.status != OP.Status.BLOCKED:
        raise IllegalTransition(
            f"Only a blocked operation can be retried; this one is {op.status}.",
            code="operation_not_retryable",
            fields={"status": [op.status]},
        )
