"""Comparing the provider's records with the ledger (the hourly beat task): transfers and refunds, and every balance
transaction of each escrow (charge, refunds, transfers, dispute): amounts and fees. Differences become
ReconciliationIssue rows, one open row per escrow and kind; a difference that goes away resolves its row. Idempotent,
and bounded: at most `limit` escrows per run, a few provider reads each."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from common.errors import DomainError

from ..ledger import A, ledger_balances
from ..models import Escrow, LedgerEntry, ReconciliationIssue
from ..providers.factory import payment_provider
from .fees import (
    SourcedBalanceTransaction,
    escrow_balance_transactions,
    escrow_fees_booked,
    escrow_fees_record,
    platform_fees_book,
)
from .funding import escrow_funding_sync
from .support import S, _transfer_group
from .webhook_events import webhook_events_redrive

logger = logging.getLogger(__name__)


def _issue_record(escrow: Escrow, kind: str, expected: int, actual: int, detail: dict) -> None:
    open_issue = ReconciliationIssue.objects.filter(escrow=escrow, kind=kind, resolved_at__isnull=True).first()
    if expected == actual:
        if open_issue is not None:
            open_issue.resolved_at = timezone.now()
            open_issue.save(update_fields=["resolved_at", "updated_at"])
        return
    if open_issue is None:
        try:
            with transaction.atomic():
                ReconciliationIssue.objects.create(
                    escrow=escrow, kind=kind, expected=expected, actual=actual, detail=detail
                )
        except IntegrityError:
            pass
        logger.error("reconciliation: %s on escrow %s: ledger %s, provider %s", kind, escrow.pk, expected, actual)
    elif (open_issue.expected, open_issue.actual) != (expected, actual):
        open_issue.expected, open_issue.actual, open_issue.detail = expected, actual, detail
        open_issue.save(update_fields=["expected", "actual", "detail", "updated_at"])


def payments_reconcile(*, limit: int = 500) -> int:
    """Compare the provider's transfers (by transfer group) and refunds (by payment intent) with the ledger."""
    provider = payment_provider()
    checked = 0
    for escrow in Escrow.objects.filter(status=S.PENDING_FUNDING, payment_intent_id__isnull=False)[:limit]:
        try:
            escrow_funding_sync(
                escrow_id=escrow.pk, funding=provider.funding_get(payment_intent_id=escrow.payment_intent_id)
            )
        except DomainError as exc:
            logger.warning("reconcile: funding of escrow %s: %s", escrow.pk, exc.message)
    recent = timezone.now() - timedelta(days=90)
    funded = (
        Escrow.objects.exclude(status__in=[S.PENDING_FUNDING])
        .exclude(payment_intent_id=None)
        .filter(updated_at__gte=recent)
    )
    for escrow in funded.order_by("-updated_at")[:limit]:
        try:
            transfers = provider.transfers_list(transfer_group=_transfer_group(escrow))
            refunds = provider.refunds_list(payment_intent_id=escrow.payment_intent_id)
        except DomainError as exc:
            logger.warning("reconcile: escrow %s: %s", escrow.pk, exc.message)
            continue
        balances = ledger_balances(escrow_id=escrow.pk)
        paid = sum(t.amount - t.amount_reversed for t in transfers)
        refunded = sum(r.amount for r in refunds if r.status in ("succeeded", "pending", "requires_action"))
        _issue_record(escrow, "transfers", balances[A.ENGINEER_PAID], paid, {"transfers": [t.id for t in transfers]})
        _issue_record(escrow, "refunds", balances[A.REFUNDS], refunded, {"refunds": [r.id for r in refunds]})
        try:
            found = escrow_balance_transactions(escrow=escrow, provider=provider)
        except DomainError as exc:
            logger.warning("reconcile: balance transactions of escrow %s: %s", escrow.pk, exc.message)
        else:
            escrow_balance_transactions_reconcile(escrow=escrow, found=found)
        checked += 1
    try:
        platform_fees_book(limit=limit)
    except DomainError as exc:
        logger.warning("reconcile: platform fees: %s", exc.message)
    webhook_events_redrive()
    return checked


def _gross(escrow: Escrow, *, kind: str, account: str) -> int:
    """What the ledger booked as gone out (or in) through one kind of transaction, before reversals or failures."""
    total = LedgerEntry.objects.filter(escrow=escrow, transaction__kind=kind, account=account, amount__gt=0)
    return int(sum(total.values_list("amount", flat=True)))


def escrow_balance_transactions_reconcile(*, escrow: Escrow, found: list[SourcedBalanceTransaction]) -> None:
    """Book fees the provider has made since (a balance transaction created after the charge), then compare.

    Kinds: `missing_balance_transaction` (objects without one: expected = objects, actual = with one),
    `fee_mismatch` (fees booked vs the provider's, over the balance transactions that differ), and in the escrow's
    currency `charge_amount_mismatch` (funded vs the charge's gross), `refund_amount_mismatch` and
    `transfer_amount_mismatch` (refunded / transferred vs the refunds' / transfers' gross).
    """
    present = [s.balance_transaction for s in found if s.balance_transaction]
    escrow_fees_record(escrow_id=escrow.pk, balance_transactions=present)
    missing = [f"{s.source_kind}:{s.source_id}" for s in found if s.balance_transaction is None]
    _issue_record(escrow, "missing_balance_transaction", len(found), len(present), {"missing": missing})

    booked = escrow_fees_booked(escrow_id=escrow.pk)
    provider_fees = {bt.id: bt for bt in present}
    differing = sorted(
        bt_id for bt_id in set(booked) | set(provider_fees) if booked.get(bt_id, 0) != _fee_of(provider_fees, bt_id)
    )
    _issue_record(
        escrow,
        "fee_mismatch",
        sum(booked.get(bt_id, 0) for bt_id in differing),
        sum(_fee_of(provider_fees, bt_id) for bt_id in differing),
        {
            "balance_transactions": [
                {
                    "id": bt_id,
                    "ledger": booked.get(bt_id, 0),
                    "provider": _fee_of(provider_fees, bt_id),
                    "currency": provider_fees[bt_id].currency if bt_id in provider_fees else "",
                }
                for bt_id in differing
            ]
        },
    )

    def gross(kinds: set[str]) -> tuple[int, list[str]]:
        rows = [
            s
            for s in found
            if s.source_kind in kinds and s.balance_transaction and s.balance_transaction.currency == escrow.currency
        ]
        return sum(abs(s.balance_transaction.amount) for s in rows), [s.balance_transaction.id for s in rows]

    charge_amount, charge_ids = gross({"charge"})
    if charge_ids:
        funded = -_gross_credit(escrow, kind="funding", account=A.COMPANY_FUNDING)
        _issue_record(escrow, "charge_amount_mismatch", funded, charge_amount, {"balance_transactions": charge_ids})
    refund_ids = {
        op.provider_object_id for op in escrow.operations.filter(kind="refund").exclude(provider_object_id=None)
    }
    refunded = [s for s in found if s.source_kind == "refund" and s.source_id in refund_ids]
    if refunded:
        amount = sum(
            abs(s.balance_transaction.amount)
            for s in refunded
            if s.balance_transaction and s.balance_transaction.currency == escrow.currency
        )
        _issue_record(
            escrow,
            "refund_amount_mismatch",
            _gross(escrow, kind="refund", account=A.REFUNDS),
            amount,
            {"refunds": sorted(refund_ids)},
        )
    transferred, transfer_ids = gross({"transfer"})
    if transfer_ids:
        _issue_record(
            escrow,
            "transfer_amount_mismatch",
            _gross(escrow, kind="transfer", account=A.ENGINEER_PAID),
            transferred,
            {"balance_transactions": transfer_ids},
        )


def _fee_of(balance_transactions: dict, bt_id: str) -> int:
    bt = balance_transactions.get(bt_id)
    return bt.fee if bt else 0


def _gross_credit(escrow: Escrow, *, kind: str, account: str) -> int:
    total = LedgerEntry.objects.filter(escrow=escrow, transaction__kind=kind, account=account)
    return int(sum(total.values_list("amount", flat=True)))
