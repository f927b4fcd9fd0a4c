"""Reconciliation against balance transactions: a planted difference is found once, and resolves when fixed."""

import pytest

from payments import services, tasks
from payments.models import Escrow, OfflineObject, ReconciliationIssue

from .conftest import funded_escrow
from .test_fees import CHARGE_FEE

pytestmark = pytest.mark.django_db


def open_issues(escrow):
    return {i.kind: (i.expected, i.actual) for i in ReconciliationIssue.objects.filter(escrow=escrow, resolved_at=None)}


def test_a_clean_escrow_has_no_issues(world, parties, settle):
    admin, org, engineer = parties
    settle(world.onboard, engineer)
    escrow = funded_escrow(world, settle, org, engineer, admin)
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=5000, reason="t", verification_run_id="r")
    settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="tier 2 failed")
    settle(tasks.payments_reconcile)
    assert open_issues(escrow) == {}


def test_a_planted_fee_difference_is_found_once_and_resolves_when_fixed(stripe_world, parties, settle):
    admin, org, engineer = parties
    escrow = funded_escrow(stripe_world, settle, org, engineer, admin)
    settle(tasks.payments_reconcile)
    assert open_issues(escrow) == {}
    txn = stripe_world.fake.balance_transaction_of(escrow.charge_id)
    txn["fee"] += 7  # Stripe's record says otherwise than our ledger
    settle(tasks.payments_reconcile)
    settle(tasks.payments_reconcile)
    assert open_issues(escrow) == {"fee_mismatch": (CHARGE_FEE, CHARGE_FEE + 7)}
    issue = ReconciliationIssue.objects.get(escrow=escrow, kind="fee_mismatch")
    assert issue.detail["balance_transactions"][0]["id"] == txn["id"]
    txn["fee"] -= 7
    settle(tasks.payments_reconcile)
    issue.refresh_from_db()
    assert issue.resolved_at is not None and open_issues(escrow) == {}
    assert ReconciliationIssue.objects.filter(escrow=escrow).count() == 1


def test_a_planted_fee_difference_offline(offline_world, parties, settle):
    admin, org, engineer = parties
    escrow = funded_escrow(offline_world, settle, org, engineer, admin)
    row = OfflineObject.objects.get(object_type="balance_transaction")
    row.data["fee"] = 0
    row.save()
    settle(tasks.payments_reconcile)
    settle(tasks.payments_reconcile)
    assert open_issues(escrow) == {"fee_mismatch": (CHARGE_FEE, 0)}


def test_planted_amount_differences(stripe_world, parties, settle):
    admin, org, engineer = parties
    settle(stripe_world.onboard, engineer)
    escrow = funded_escrow(stripe_world, settle, org, engineer, admin)
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=5000, reason="t", verification_run_id="r")
    settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="tier 2 failed")
    escrow = Escrow.objects.get(pk=escrow.pk)
    stripe_world.fake.balance_transaction_of(escrow.charge_id)["amount"] = 219_000
    transfer_id = escrow.operations.get(kind="transfer").provider_object_id
    refund_id = escrow.operations.get(kind="refund").provider_object_id
    stripe_world.fake.balance_transaction_of(transfer_id)["amount"] = -100_001
    stripe_world.fake.balance_transaction_of(refund_id)["amount"] = -109_000
    settle(tasks.payments_reconcile)
    settle(tasks.payments_reconcile)
    assert open_issues(escrow) == {
        "charge_amount_mismatch": (220_000, 219_000),
        "transfer_amount_mismatch": (100_000, 100_001),
        "refund_amount_mismatch": (110_000, 109_000),
    }


def test_reconciliation_work_is_bounded(world, parties, settle):
    admin, org, engineer = parties
    first = funded_escrow(world, settle, org, engineer, admin)
    second = funded_escrow(world, settle, org, engineer, admin)
    assert settle(services.payments_reconcile, limit=1) == 1
    assert settle(services.payments_reconcile) == 2
    assert open_issues(first) == open_issues(second) == {}


def test_one_escrow_costs_a_few_provider_reads_per_run(stripe_world, parties, settle):
    admin, org, engineer = parties
    settle(stripe_world.onboard, engineer)
    escrow = funded_escrow(stripe_world, settle, org, engineer, admin)
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=5000, reason="t", verification_run_id="r")
    settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="tier 2 failed")
    before = len(stripe_world.fake.requests)
    settle(tasks.payments_reconcile)
    paths = sorted(
        path.rsplit("/", 1)[0] if "_fake" in path else path for _, path, _ in stripe_world.fake.requests[before:]
    )
    # transfers and refunds listed, the charge, the transfer and the refund re-fetched, Connect fees listed
    assert paths == [
        "/v1/balance_transactions",
        "/v1/charges",
        "/v1/refunds",
        "/v1/refunds",
        "/v1/transfers",
        "/v1/transfers",
    ]
