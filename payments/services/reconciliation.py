"""Comparing the provider's transfers and refunds with the ledger (the hourly beat task)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from common.errors import DomainError

from ..ledger import A, ledger_balances
from ..models import Escrow, ReconciliationIssue
from ..providers.factory import payment_provider
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
        checked += 1
    webhook_events_redrive()
    return checked
