"""Executing the marked provider operations (transfers and refunds) and recording their outcomes once."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from common.errors import DomainError, RetryableError
from common.services import audit_record

from ..errors import AccountAccessRevoked
from ..ledger import A, ledger_post
from ..models import ConnectedAccount, Escrow, LedgerEntry, ProviderOperation
from ..providers.base import Refund, Transfer
from ..providers.factory import payment_provider
from .support import PAYEE_DISCONNECTED_REASON, _enqueue, _lock, _payee_wait_reason, _transfer_group

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
    if op.status in (ProviderOperation.Status.SUCCEEDED, ProviderOperation.Status.BLOCKED):
        return op
    escrow = op.escrow
    provider = payment_provider()
    metadata = {"escrow_id": str(escrow.pk), "reference": escrow.reference, "operation_key": op.idempotency_key}
    if op.kind == ProviderOperation.Kind.TRANSFER:
        if escrow.frozen:
            return op  # paid once the chargeback is settled (payouts_retry_payable)
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
                idempotency_key=f"refund:{escrow.pk}",
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
                transaction__kind="transfer_reversal",
                transaction__provider_object_id=transfer.id,
                account=A.ENGINEER_PAID,
            ).aggregate(total=Sum("amount"))["total"]
            or 0
        )
        missing = transfer.amount_reversed - booked
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
