"""Stripe's fees as platform expenses, read from balance transactions, and the refund fee policy.

- Each balance transaction of an escrow's charge, refunds, transfers, dispute, and of a duplicate payment's charge
  is re-fetched from the provider (no lock held), then its `fee` is booked once, under the escrow's row lock, as
  `stripe_fees` (debit) against `platform_cash` (credit), in the balance transaction's own currency, with the
  ledger key `stripe_fee:<balance transaction id>`. A returned fee (negative) books the other way.
- A balance transaction the provider has not made yet is booked later: by the next booking call for the escrow or
  by the reconciliation sweep.
- Fees Stripe bills the platform separately (Connect account and payout fees: balance transactions of type
  `stripe_fee`) belong to no contract: `platform_fees_book` books them as platform-level transactions (no escrow).
- REFUND_FEE_POLICY decides who bears the processing fee when a failed contract is refunded (payments/README.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Sum

from common.money import amount_round_down

from ..ledger import FEE_TRANSACTION_KIND, A, ledger_balances, ledger_post
from ..models import Escrow, LedgerEntry, LedgerTransaction, ProviderOperation
from ..providers.base import BalanceTransaction, Dispute, PaymentProvider
from ..providers.factory import payment_provider
from .support import _lock

logger = logging.getLogger(__name__)

PLATFORM_ABSORBS = "platform_absorbs"
COMPANY_BEARS = "company_bears"
REFUND_FEE_POLICIES = (PLATFORM_ABSORBS, COMPANY_BEARS)
FEE_WITHHELD_KIND = "refund_fee_withheld"


@dataclass(frozen=True)
class SourcedBalanceTransaction:
    """A provider object of the escrow and its balance transaction (None while the provider has not made it)."""

    source_kind: str  # charge, duplicate_charge, refund, transfer, dispute
    source_id: str
    balance_transaction: BalanceTransaction | None


def refund_fee_policy() -> str:
    policy = getattr(settings, "REFUND_FEE_POLICY", PLATFORM_ABSORBS)
    if policy not in REFUND_FEE_POLICIES:
        raise ImproperlyConfigured(f"REFUND_FEE_POLICY must be one of {', '.join(REFUND_FEE_POLICIES)}.")
    return policy


def _dispute_ids(escrow: Escrow) -> list[str]:
    ids = set(
        LedgerTransaction.objects.filter(escrow=escrow, kind="dispute_loss")
        .exclude(provider_object_id="")
        .values_list("provider_object_id", flat=True)
    )
    if escrow.dispute_id:
        ids.add(escrow.dispute_id)
    return sorted(ids)


def escrow_balance_transactions(*, escrow: Escrow, provider: PaymentProvider) -> list[SourcedBalanceTransaction]:
    """Every balance transaction of the escrow, re-fetched (provider calls: never call this holding a lock)."""
    found: list[SourcedBalanceTransaction] = []
    if escrow.charge_id:
        bt = provider.charge_balance_transaction(charge_id=escrow.charge_id)
        found.append(SourcedBalanceTransaction("charge", escrow.charge_id, bt))
    operations = escrow.operations.exclude(provider_object_id=None).exclude(provider_object_id="").order_by("id")
    for op in operations:
        if op.kind == ProviderOperation.Kind.TRANSFER:
            bt = provider.transfer_balance_transaction(transfer_id=op.provider_object_id)
            found.append(SourcedBalanceTransaction("transfer", op.provider_object_id, bt))
            continue
        if op.kind == ProviderOperation.Kind.DUPLICATE_REFUND and op.payment_intent_id:
            # The second payment's charge cost a processing fee too, and Stripe keeps it after the refund.
            charge_id = provider.funding_get(payment_intent_id=op.payment_intent_id).charge_id
            if charge_id:
                bt = provider.charge_balance_transaction(charge_id=charge_id)
                found.append(SourcedBalanceTransaction("duplicate_charge", charge_id, bt))
        bt = provider.refund_balance_transaction(refund_id=op.provider_object_id)
        found.append(SourcedBalanceTransaction("refund", op.provider_object_id, bt))
    for dispute_id in _dispute_ids(escrow):
        dispute = provider.dispute_get(dispute_id=dispute_id)
        found += [SourcedBalanceTransaction("dispute", dispute.id, bt) for bt in dispute.balance_transactions]
    return found


def _fee_key(balance_transaction_id: str) -> str:
    return f"stripe_fee:{balance_transaction_id}"


def escrow_fees_record(*, escrow_id: int, balance_transactions: list[BalanceTransaction]) -> int:
    """Book the fee of each balance transaction once (escrow row locked); returns how many were new."""
    due = {_fee_key(bt.id) for bt in balance_transactions if bt.fee}
    if not due - set(
        LedgerTransaction.objects.filter(idempotency_key__in=due).values_list("idempotency_key", flat=True)
    ):
        return 0  # all booked already: the hourly sweep takes no row lock for nothing
    booked = 0
    with transaction.atomic():
        escrow = _lock(escrow_id)
        for bt in balance_transactions:
            if not bt.fee:
                continue
            _, created = ledger_post(
                escrow=escrow,
                idempotency_key=_fee_key(bt.id),
                kind=FEE_TRANSACTION_KIND,
                lines=[(A.STRIPE_FEES, bt.fee), (A.PLATFORM_CASH, -bt.fee)],
                provider_object_id=bt.id,
                provider_ids={
                    "balance_transaction": bt.id,
                    "source": bt.source_id or "",
                    "type": bt.type,
                    **{f"fee_{detail.type}": str(detail.amount) for detail in bt.fee_details},
                },
                memo=f"Stripe fee on {bt.type} {bt.source_id or ''}".strip(),
                currency=bt.currency,
            )
            booked += created
    return booked


def escrow_fees_book(*, escrow_id: int) -> int:
    """Re-fetch the escrow's balance transactions and book the fees not booked yet. Idempotent, safe to repeat."""
    escrow = Escrow.objects.get(pk=escrow_id)
    found = escrow_balance_transactions(escrow=escrow, provider=payment_provider())
    return escrow_fees_record(
        escrow_id=escrow_id, balance_transactions=[s.balance_transaction for s in found if s.balance_transaction]
    )


PLATFORM_FEE_KIND = "platform_stripe_fee"
PLATFORM_FEE_LOOKBACK_DAYS = 40  # Connect fees are billed monthly: look back over more than one billing period


def platform_fees_book(*, lookback_days: int = PLATFORM_FEE_LOOKBACK_DAYS, limit: int = 500) -> int:
    """Book the platform-level fees Stripe billed recently (Connect account and payout fees), once each; returns
    how many were new. The expense is what left the balance (-net), in the balance transaction's currency."""
    found = payment_provider().platform_fee_balance_transactions(
        created_gte=int(time.time()) - lookback_days * 86_400, limit=limit
    )
    booked = 0
    for bt in found:
        if not bt.net:
            continue
        _, created = ledger_post(
            escrow=None,
            idempotency_key=_fee_key(bt.id),
            kind=PLATFORM_FEE_KIND,
            lines=[(A.STRIPE_FEES, -bt.net), (A.PLATFORM_CASH, bt.net)],
            provider_object_id=bt.id,
            provider_ids={"balance_transaction": bt.id, "type": bt.type},
            memo="Stripe fee billed to the platform (Connect)",
            currency=bt.currency,
        )
        booked += created
    return booked


def escrow_dispute_fees_book(*, escrow_id: int, dispute: Dispute) -> int:
    """Book the dispute fee (and a fee returned when won) from a dispute already re-fetched."""
    return escrow_fees_record(escrow_id=escrow_id, balance_transactions=list(dispute.balance_transactions))


def escrow_fees_booked(*, escrow_id: int) -> dict[str, int]:
    """Fees booked per balance transaction id (for reconciliation)."""
    rows = (
        LedgerEntry.objects.filter(escrow_id=escrow_id, account=A.STRIPE_FEES, transaction__kind=FEE_TRANSACTION_KIND)
        .values("transaction__provider_object_id")
        .annotate(total=Sum("amount"))
    )
    return {row["transaction__provider_object_id"]: int(row["total"]) for row in rows}


def refund_fee_withhold(*, escrow: Escrow, held: int) -> int:
    """Under `company_bears`, book (once) the share of the charge's processing fee that the refund of `held` keeps
    back, and return it; 0 under `platform_absorbs`. Call with the escrow row locked, before marking the refund.

    The share is pro rata to the part of the charge being refunded (all of it for a contract that failed before
    any release), rounded down to the currency's amount step, and only a fee already booked in the escrow's own
    currency can be withheld: a fee in another settlement currency, or not known yet, is absorbed by the platform.
    """
    if refund_fee_policy() != COMPANY_BEARS or held <= 0 or not escrow.charge_id:
        return 0
    fee_paid = (
        LedgerEntry.objects.filter(
            escrow=escrow,
            account=A.STRIPE_FEES,
            transaction__kind=FEE_TRANSACTION_KIND,
            transaction__currency=escrow.currency,
            transaction__provider_ids__source=escrow.charge_id,
        ).aggregate(total=Sum("amount"))["total"]
        or 0
    )
    already = ledger_balances(escrow_id=escrow.pk)[A.STRIPE_FEES_RECOVERED]
    share = amount_round_down(fee_paid * held // escrow.total, escrow.currency)
    withheld = max(0, min(share, fee_paid - already, held))
    if withheld <= 0:
        return 0
    _, created = ledger_post(
        escrow=escrow,
        idempotency_key=f"fee_withheld:{escrow.pk}",
        kind=FEE_WITHHELD_KIND,
        lines=[(A.HELD, -withheld), (A.STRIPE_FEES_RECOVERED, withheld)],
        provider_ids={"charge": escrow.charge_id},
        memo="processing fee withheld from the refund (REFUND_FEE_POLICY=company_bears)",
    )
    return withheld if created else 0  # withheld before: `held` no longer contains it
