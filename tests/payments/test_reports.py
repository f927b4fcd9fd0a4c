"""The monthly report: per contract and currency, from the ledger only, in currency units."""

import csv
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from common.errors import ValidationFailed
from payments import services
from payments.reports import PLATFORM, TOTAL, payments_month_report

from .conftest import funded_escrow
from .test_fees import CHARGE_FEE

pytestmark = pytest.mark.django_db


@pytest.fixture
def month_with_one_released_and_one_refunded(world, parties, settle):
    admin, org, engineer = parties
    settle(world.onboard, engineer)
    released = funded_escrow(world, settle, org, engineer, admin, reference="report:released")
    settle(services.escrow_release, escrow_id=released.pk, fraction_bps=10_000, reason="pass", verification_run_id="r")
    refunded = funded_escrow(world, settle, org, engineer, admin, reference="report:refunded")
    settle(services.escrow_refund_remainder, escrow_id=refunded.pk, reason="verification failed")
    return timezone.now().strftime("%Y-%m")


def test_the_report_of_a_month_with_one_released_and_one_refunded_contract(month_with_one_released_and_one_refunded):
    rows = payments_month_report(month=month_with_one_released_and_one_refunded)
    figures = {
        row.reference: (
            row.currency,
            row.gross_collected,
            row.stripe_fees,
            row.platform_fee_kept,
            row.refunded,
            row.paid_to_engineers,
            row.net,
        )
        for row in rows
    }
    assert figures == {
        "report:released": ("USD", 220_000, CHARGE_FEE, 20_000, 0, 200_000, 20_000 - CHARGE_FEE),
        "report:refunded": ("USD", 220_000, CHARGE_FEE, 0, 220_000, 0, -CHARGE_FEE),
        TOTAL: ("USD", 440_000, 2 * CHARGE_FEE, 20_000, 220_000, 200_000, 20_000 - 2 * CHARGE_FEE),
    }
    assert [row.reference for row in rows] == ["report:released", "report:refunded", TOTAL]


def test_another_month_is_empty_and_a_bad_month_is_refused(month_with_one_released_and_one_refunded):
    assert payments_month_report(month="2001-01") == []
    for bad in ("2026-13", "2026-1", "november", ""):
        with pytest.raises(ValidationFailed) as caught:
            payments_month_report(month=bad)
        assert caught.value.code == "invalid_month"


def test_the_command_prints_currency_units(month_with_one_released_and_one_refunded):
    month = month_with_one_released_and_one_refunded
    out = io.StringIO()
    call_command("payments_report", month=month, format="csv", stdout=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    total = rows[-1]
    assert (total["reference"], total["currency"], total["gross_collected"]) == (TOTAL, "USD", "4400.00")
    assert total["stripe_fees"] == f"{2 * CHARGE_FEE // 100}.{2 * CHARGE_FEE % 100:02d}"
    assert rows[0]["net"] == f"{(20_000 - CHARGE_FEE) // 100}.{(20_000 - CHARGE_FEE) % 100:02d}"
    table = io.StringIO()
    call_command("payments_report", month=month, stdout=table)
    assert "report:released" in table.getvalue() and "2200.00" in table.getvalue()
    with pytest.raises(CommandError, match="2026-11"):
        call_command("payments_report", month="11/2026")


def test_connect_fees_appear_as_the_platforms_row(stripe_world, parties, settle):
    admin, org, engineer = parties
    funded_escrow(stripe_world, settle, org, engineer, admin, reference="report:funded")
    stripe_world.fake.platform_fee_bill(200, "Connect (2026-11): Active Account Billing")
    settle(services.payments_reconcile)
    rows = payments_month_report(month=timezone.now().strftime("%Y-%m"))
    assert [(row.reference, row.stripe_fees, row.net) for row in rows] == [
        ("report:funded", CHARGE_FEE, -CHARGE_FEE),
        (PLATFORM, 200, -200),
        (TOTAL, CHARGE_FEE + 200, -CHARGE_FEE - 200),
    ]
