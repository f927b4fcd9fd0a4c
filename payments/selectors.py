"""Reads of the payments app."""

from __future__ import annotations

from dataclasses import dataclass

from accounts.models import User
from accounts.selectors import user_is_org_member
from common.errors import NotFound

from .ledger import FEE_TRANSACTION_KIND, EscrowTotals, ledger_balances, totals_from_balances
from .models import Escrow, LedgerAccount, LedgerEntry, ReconciliationIssue


@dataclass(frozen=True)
class LedgerLine:
    transaction_id: int
    kind: str
    idempotency_key: str
    account: str
    amount: int
    provider_object_id: str
    created_at: str


@dataclass(frozen=True)
class EscrowSummary:
    id: int
    reference: str
    state: str
    currency: str
    amount: int
    fee: int
    funded: int
    released: int
    paid: int
    reversed_from_engineer: int
    refunded: int
    fee_kept: int
    held: int
    dispute_loss: int
    processing_fee_withheld: int
    frozen: bool
    frozen_reason: str
    operator_frozen: bool
    funding_deadline: str
    funding_failure_reason: str
    released_bps: int
    open_issues: int
    ledger_lines: tuple[LedgerLine, ...]


def escrow_get(*, escrow_id: int) -> Escrow:
    escrow = Escrow.objects.filter(pk=escrow_id).first()
    if escrow is None:
        raise NotFound("No such escrow.", code="escrow_not_found")
    return escrow


def escrow_visible_to(*, user: User, escrow: Escrow) -> bool:
    if not user.is_authenticated:
        return False
    return bool(
        user.is_staff
        or escrow.payee_id == user.pk
        or user_is_org_member(user=user, organization_id=escrow.payer_organization_id)
    )


def escrow_get_for_user(*, user: User, escrow_id: int) -> Escrow:
    """The escrow if `user` may see it; otherwise not found (its existence is not revealed)."""
    escrow = Escrow.objects.filter(pk=escrow_id).first()
    if escrow is None or not escrow_visible_to(user=user, escrow=escrow):
        raise NotFound("No such escrow.", code="escrow_not_found")
    return escrow


def escrow_totals(*, escrow_id: int) -> EscrowTotals:
    return totals_from_balances(ledger_balances(escrow_id=escrow_id))


def escrow_summary(escrow_id: int) -> EscrowSummary:
    escrow = escrow_get(escrow_id=escrow_id)
    totals = escrow_totals(escrow_id=escrow.pk)
    # Stripe's fees are the platform's own expense, not the company's or the engineer's business.
    entries = (
        LedgerEntry.objects.filter(escrow_id=escrow.pk)
        .exclude(transaction__kind=FEE_TRANSACTION_KIND)
        .select_related("transaction")
        .order_by("id")
    )
    lines = tuple(
        LedgerLine(
            transaction_id=entry.transaction_id,
            kind=entry.transaction.kind,
            idempotency_key=entry.transaction.idempotency_key,
            account=entry.account,
            amount=entry.amount,
            provider_object_id=entry.transaction.provider_object_id,
            created_at=entry.created_at.isoformat(),
        )
        for entry in entries
    )
    return EscrowSummary(
        id=escrow.pk,
        reference=escrow.reference,
        state=escrow.status,
        currency=escrow.currency,
        amount=escrow.amount,
        fee=escrow.fee,
        funded=totals.funded,
        released=totals.released,
        paid=totals.paid,
        reversed_from_engineer=-sum(
            line.amount
            for line in lines
            if line.account == LedgerAccount.ENGINEER_PAID and line.kind in ("transfer_reversal", "dispute_reversal")
        ),
        refunded=totals.refunded,
        fee_kept=totals.fee_kept,
        held=totals.held,
        dispute_loss=totals.dispute_loss,
        processing_fee_withheld=totals.fees_recovered,
        frozen=escrow.frozen,
        frozen_reason=escrow.frozen_reason,
        operator_frozen=escrow.operator_frozen,
        funding_deadline=escrow.funding_deadline.isoformat(),
        funding_failure_reason=escrow.funding_failure_reason,
        released_bps=escrow.released_bps,
        open_issues=ReconciliationIssue.objects.filter(escrow=escrow, resolved_at__isnull=True).count(),
        ledger_lines=lines,
    )


def reconciliation_issues_open():
    return ReconciliationIssue.objects.filter(resolved_at__isnull=True)


def escrows_frozen():
    return Escrow.objects.filter(frozen=True)
