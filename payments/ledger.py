"""The append-only double-entry ledger: balanced transactions in integer minor units, one per idempotency key.

Sign convention: positive amounts are debits. Money enters an escrow from `company_funding` (credited) and
sits in `held`; releases move it to `engineer_payable` (then `engineer_paid`) and `platform_fee`; refunds and
chargebacks return it to the company; a chargeback beyond what is held is a platform `dispute_loss` paid from
`platform_cash`. Under REFUND_FEE_POLICY=company_bears the processing fee kept back from a refund moves from
`held` to `stripe_fees_recovered`. Per escrow: released + refunded + fee kept + fees recovered + held = funded,
and no bucket is negative.

Stripe's own fees are platform expenses: `stripe_fees` debited, `platform_cash` credited, one transaction per
balance transaction, in that balance transaction's currency (which may differ from the escrow's when Stripe
converted the charge): a transaction never mixes currencies, so every transaction balances to zero in its own
currency, and the escrow invariant above reads only the escrow-currency money accounts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import F, Sum

from .models import Escrow, LedgerAccount, LedgerEntry, LedgerTransaction

A = LedgerAccount


def ledger_post(
    *,
    escrow: Escrow | None,
    idempotency_key: str,
    kind: str,
    lines: Iterable[tuple[str, int]],
    provider_object_id: str = "",
    provider_ids: Mapping[str, str] | None = None,
    memo: str = "",
    currency: str | None = None,
) -> tuple[LedgerTransaction, bool]:
    """Book one balanced transaction once; a second call with the same key returns the first one, unchanged.

    `currency` defaults to the escrow's; fee transactions pass their balance transaction's currency. Without an
    escrow (a platform-level fee) the currency is required."""
    if escrow is None and not currency:
        raise ValueError(f"A platform-level ledger transaction needs a currency: {idempotency_key}")
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
                currency=(currency or escrow.currency).upper(),
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


def ledger_balances(*, escrow_id: int, currency: str | None = None) -> dict[str, int]:
    """Balance per account of one escrow; with `currency`, only transactions booked in it (fee lines may be in
    another currency than the escrow's)."""
    rows = LedgerEntry.objects.filter(escrow_id=escrow_id)
    if currency:
        rows = rows.filter(transaction__currency=currency.upper())
    rows = rows.values("account").annotate(total=Sum("amount"))
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
    fees_recovered: int = 0

    @property
    def balanced(self) -> bool:
        return self.released + self.refunded + self.fee_kept + self.fees_recovered + self.held == self.funded


def totals_from_balances(balances: Mapping[str, int]) -> EscrowTotals:
    return EscrowTotals(
        funded=-balances.get(A.COMPANY_FUNDING, 0),
        released=balances.get(A.ENGINEER_PAYABLE, 0) + balances.get(A.ENGINEER_PAID, 0),
        paid=balances.get(A.ENGINEER_PAID, 0),
        refunded=balances.get(A.REFUNDS, 0) + balances.get(A.CHARGEBACKS, 0),
        fee_kept=balances.get(A.PLATFORM_FEE, 0),
        held=balances.get(A.HELD, 0),
        dispute_loss=balances.get(A.DISPUTE_LOSS, 0),
        fees_recovered=balances.get(A.STRIPE_FEES_RECOVERED, 0),
    )


FEE_TRANSACTION_KIND = "stripe_fee"


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
    rows = LedgerEntry.objects.filter(escrow__isnull=False).values("escrow_id", "account").annotate(total=Sum("amount"))
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
        A.STRIPE_FEES_RECOVERED,
    )
    for escrow_id, balances in sorted(per_escrow.items()):
        totals = totals_from_balances(balances)
        if not totals.balanced:
            problems.append(
                f"escrow {escrow_id}: released {totals.released} + refunded {totals.refunded} + fee {totals.fee_kept}"
                f" + fees recovered {totals.fees_recovered} + held {totals.held} != funded {totals.funded}"
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
    problems += _fee_violations(escrow_ids)
    return problems


ESCROW_MONEY_ACCOUNTS = frozenset(
    {
        A.COMPANY_FUNDING,
        A.HELD,
        A.ENGINEER_PAYABLE,
        A.ENGINEER_PAID,
        A.PLATFORM_FEE,
        A.REFUNDS,
        A.CHARGEBACKS,
        A.STRIPE_FEES_RECOVERED,
    }
)


def _fee_violations(escrow_ids: list[int] | None) -> list[str]:
    """Fee lines: a fee transaction moves only Stripe fees against platform funds; per escrow and currency the
    fees booked are not negative (a returned fee never exceeds the fee paid); the escrow's own money never
    moves in another currency; a processing fee withheld from a refund never exceeds the fees booked in the
    escrow's currency."""
    problems: list[str] = []
    entries = LedgerEntry.objects.all()
    if escrow_ids is not None:
        entries = entries.filter(escrow_id__in=escrow_ids)
    stray = (
        entries.filter(transaction__kind=FEE_TRANSACTION_KIND)
        .exclude(account__in=[A.STRIPE_FEES, A.PLATFORM_CASH])
        .values_list("transaction_id", flat=True)
    )
    for transaction_id in sorted(set(stray)):
        problems.append(f"fee transaction {transaction_id} moves more than Stripe fees and platform funds")
    foreign = (
        entries.filter(account__in=ESCROW_MONEY_ACCOUNTS, escrow__isnull=False)
        .exclude(transaction__currency=F("escrow__currency"))
        .values_list("transaction_id", flat=True)
    )
    for transaction_id in sorted(set(foreign)):
        problems.append(f"ledger transaction {transaction_id} moves escrow money in another currency")
    platform = (
        entries.filter(escrow__isnull=True)
        .exclude(account__in=[A.STRIPE_FEES, A.PLATFORM_CASH])
        .values_list("transaction_id", flat=True)
    )
    for transaction_id in sorted(set(platform)):
        problems.append(f"platform-level transaction {transaction_id} moves more than Stripe fees and platform funds")
    fees = (
        entries.filter(account__in=[A.STRIPE_FEES, A.STRIPE_FEES_RECOVERED], escrow__isnull=False)
        .values("escrow_id", "escrow__currency", "transaction__currency", "account")
        .annotate(total=Sum("amount"))
    )
    booked: dict[tuple[int, str], int] = {}
    recovered: dict[int, int] = {}
    for row in fees:
        if row["account"] == A.STRIPE_FEES:
            booked[(row["escrow_id"], row["transaction__currency"])] = int(row["total"])
        else:
            recovered[row["escrow_id"]] = int(row["total"])
    for (escrow_id, currency), total in sorted(booked.items()):
        if total < 0:
            problems.append(f"escrow {escrow_id}: Stripe fees in {currency} are negative ({total})")
    currencies = dict(Escrow.objects.filter(pk__in=list(recovered)).values_list("pk", "currency"))
    for escrow_id, total in sorted(recovered.items()):
        paid = booked.get((escrow_id, currencies[escrow_id]), 0)
        if total > paid:
            problems.append(f"escrow {escrow_id}: withheld {total} from a refund for fees of only {paid}")
    return problems
