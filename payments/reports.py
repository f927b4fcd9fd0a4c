"""The accountant's monthly report (a selector): per contract and currency, what moved in a calendar month (UTC),
computed from the ledger only.

Columns: gross collected (funding), Stripe fees (the platform's expense, in the fee's own currency), processing
fees withheld from refunds (REFUND_FEE_POLICY=company_bears), platform fee kept, refunded to the company (refunds
and chargebacks, net of failed refunds), paid to engineers (transfers, net of reversals), dispute losses, and the
platform's net: fee kept + fees withheld - Stripe fees - dispute losses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import Sum

from common.errors import ValidationFailed

from .ledger import A
from .models import LedgerEntry

TOTAL = "TOTAL"
PLATFORM = "platform"  # fees billed to the platform that belong to no contract (Connect account and payout fees)


@dataclass(frozen=True)
class MonthReportRow:
    month: str
    reference: str  # the escrow's reference (e.g. "contract:42"), PLATFORM, or TOTAL for a currency's total row
    escrow_id: int | None
    currency: str
    gross_collected: int
    stripe_fees: int
    fees_withheld: int
    platform_fee_kept: int
    refunded: int
    paid_to_engineers: int
    dispute_loss: int

    @property
    def net(self) -> int:
        return self.platform_fee_kept + self.fees_withheld - self.stripe_fees - self.dispute_loss


AMOUNT_COLUMNS = (
    "gross_collected",
    "stripe_fees",
    "fees_withheld",
    "platform_fee_kept",
    "refunded",
    "paid_to_engineers",
    "dispute_loss",
    "net",
)


def month_parse(text: str) -> tuple[datetime, datetime]:
    """`YYYY-MM` into the month's [start, end) in UTC; 400 `invalid_month` otherwise."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", text or "")
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ValidationFailed("The month must look like 2026-11.", code="invalid_month", fields={"month": ["YYYY-MM"]})
    year, month = int(match.group(1)), int(match.group(2))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def payments_month_report(*, month: str) -> list[MonthReportRow]:
    """One row per escrow and currency with anything booked in `month` (YYYY-MM), then a TOTAL row per currency."""
    start, end = month_parse(month)
    rows = (
        LedgerEntry.objects.filter(transaction__created_at__gte=start, transaction__created_at__lt=end)
        .values("escrow_id", "escrow__reference", "transaction__currency", "account")
        .annotate(total=Sum("amount"))
    )
    sums: dict[tuple[int, str, str], dict[str, int]] = {}
    for row in rows:
        key = (row["escrow_id"], row["escrow__reference"], row["transaction__currency"])
        sums.setdefault(key, {})[row["account"]] = int(row["total"])
    report = [
        MonthReportRow(
            month=month,
            reference=reference or PLATFORM,
            escrow_id=escrow_id,
            currency=currency,
            gross_collected=-balances.get(A.COMPANY_FUNDING, 0),
            stripe_fees=balances.get(A.STRIPE_FEES, 0),
            fees_withheld=balances.get(A.STRIPE_FEES_RECOVERED, 0),
            platform_fee_kept=balances.get(A.PLATFORM_FEE, 0),
            refunded=balances.get(A.REFUNDS, 0) + balances.get(A.CHARGEBACKS, 0),
            paid_to_engineers=balances.get(A.ENGINEER_PAID, 0),
            dispute_loss=balances.get(A.DISPUTE_LOSS, 0),
        )
        for (escrow_id, reference, currency), balances in sorted(
            sums.items(), key=lambda item: (item[0][2], item[0][0] is None, item[0][0] or 0)
        )
    ]
    totals = []
    for currency in sorted({row.currency for row in report}):
        mine = [row for row in report if row.currency == currency]
        totals.append(
            MonthReportRow(
                month=month,
                reference=TOTAL,
                escrow_id=None,
                currency=currency,
                **{column: sum(getattr(row, column) for row in mine) for column in AMOUNT_COLUMNS if column != "net"},
            )
        )
    return report + totals
