"""The append-only double-entry ledger: balanced transactions in integer minor units, one per idempotency key.

Sign convention: positive amounts are debits. Money enters an escrow from `company_funding` (credited) and
sits in `held`; releases move it to `engineer_payable` (then `engineer_paid`) and `platform_fee`; refunds and
chargebacks return it to the company; a chargeback beyond what is held is a platform `dispute_loss` paid from
`platform_cash`. Per escrow: released + refunded + fee kept + held = funded, and no bucket is negative.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Sum

from .models import Escrow, LedgerAccount, LedgerEntry, LedgerTransaction

A = LedgerAccount


def ledger_post(
    *,
    escrow: Escrow,
    idempotency_key: str,
    kind: str,
    lines: Iterable[tuple[str, int]],
    provider_object_id: str = "",
    provider_ids: Mapping[str, str] | None = None,
    memo: str = "",
) -> tuple[LedgerTransaction, bool]:
    """Book one balanced transaction once; a second call with the same key returns the first one, unchanged."""
    lines = [(account, amount) for account, amount in lines if amount]
    if sum(amount for _, amount in lines) != 0:
        raise ValueError(f"Unbalanced ledger transaction {idempotency_key}: {lines}")
    existing = LedgerTransaction.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            txn = LedgerTransaction.objects.create(
                escrow=escrow,
                idempotency_key=idempotency_key,
                kind=kind,
                currency=escrow.currency,
                provider_object_id=provider_object_id or "",
                provider_ids=dict(provider_ids or {}),
                memo=memo[:255],
            )
            LedgerEntry.objects.bulk_create(
                [
                    LedgerEntry(transaction=txn, escrow=escrow, account=account, amount=amount)
                    for account, amount in lines
                ]
            )
    except IntegrityError:
        return LedgerTransaction.objects.get(idempotency_key=idempotency_key), False
    return txn, True


def ledger_balances(*, escrow_id: int) -> dict[str, int]:
    rows = LedgerEntry.objects.filter(escrow_id=escrow_id).values("account").annotate(total=Sum("amount"))
    balances = dict.fromkeys(A.values, 0)
    balances.update({row["account"]: int(row["total"]) for row in rows})
    return balances


@dataclass(frozen=True)
class EscrowTotals:
    funded: int
    released: int
    paid: int
    refunded: int
    fee_kept: int
    held: int
    dispute_loss: int

    @property
    def balanced(self) -> bool:
        return self.released + self.refunded + self.fee_kept + self.held == self.funded


def totals_from_balances(balances: Mapping[str, int]) -> EscrowTotals:
    return EscrowTotals(
        funded=-balances.get(A.COMPANY_FUNDING, 0),
        released=balances.get(A.ENGINEER_PAYABLE, 0) + balances.get(A.ENGINEER_PAID, 0),
        paid=balances.get(A.ENGINEER_PAID, 0),
        refunded=balances.get(A.REFUNDS, 0) + balances.get(A.CHARGEBACKS, 0),
        fee_kept=balances.get(A.PLATFORM_FEE, 0),
        held=balances.get(A.HELD, 0),
        dispute_loss=balances.get(A.DISPUTE_LOSS, 0),
    )


def ledger_invariant_violations(*, escrow_ids: Iterable[int] | None = None) -> list[str]:
    """Every broken rule, as readable lines; empty when the ledger is sound."""
    problems: list[str] = []
    if escrow_ids is not None:
        escrow_ids = list(escrow_ids)  # used twice below: an iterator must not run dry after the first
    unbalanced = LedgerEntry.objects.values("transaction_id").annotate(total=Sum("amount")).exclude(total=0)
    if escrow_ids is not None:
        unbalanced = unbalanced.filter(escrow_id__in=escrow_ids)
    for row in unbalanced:
        problems.append(f"ledger transaction {row['transaction_id']} does not balance ({row['total']:+d})")
    per_escrow: dict[int, dict[str, int]] = {}
    rows = LedgerEntry.objects.values("escrow_id", "account").annotate(total=Sum("amount"))
    if escrow_ids is not None:
        rows = rows.filter(escrow_id__in=escrow_ids)
    for row in rows:
        per_escrow.setdefault(row["escrow_id"], {})[row["account"]] = int(row["total"])
    nonnegative = (
        A.HELD,
        A.ENGINEER_PAYABLE,
        A.ENGINEER_PAID,
        A.PLATFORM_FEE,
        A.REFUNDS,
        A.CHARGEBACKS,
        A.DISPUTE_LOSS,
    )
    for escrow_id, balances in sorted(per_escrow.items()):
        totals = totals_from_balances(balances)
        if not totals.balanced:
            problems.append(
                f"escrow {escrow_id}: released {totals.released} + refunded {totals.refunded} + fee {totals.fee_kept}"
                f" + held {totals.held} != funded {totals.funded}"
            )
        for account in nonnegative:
            if balances.get(account, 0) < 0:
                problems.append(f"escrow {escrow_id}: {account} is negative ({balances[account]})")
        if balances.get(A.COMPANY_FUNDING, 0) > 0:
            problems.append(f"escrow {escrow_id}: funded is negative")
    escrows = Escrow.objects.filter(pk__in=list(per_escrow))
    for escrow in escrows:
        totals = totals_from_balances(per_escrow[escrow.pk])
        if totals.funded > escrow.total:
            problems.append(f"escrow {escrow.pk}: funded {totals.funded} exceeds the escrow total {escrow.total}")
        if totals.released > escrow.amount or totals.fee_kept > escrow.fee:
            problems.append(f"escrow {escrow.pk}: released more than the engineer amount or fee")
    return problems
