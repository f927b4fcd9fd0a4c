"""Stripe's fees booked from balance transactions, against both providers (Stripe through FakeStripe), and the
refund fee policy. The autouse ledger check (conftest) runs after each test, fee lines included."""

import pytest
from django.db import transaction

from payments import selectors, services, tasks
from payments.ledger import FEE_TRANSACTION_KIND, A, ledger_invariant_violations, ledger_post
from payments.models import Escrow, LedgerEntry, LedgerTransaction, OfflineObject
from tests.races import race

from . import stripe_fake
from .conftest import funded_escrow, inquiry, open_escrow, operator

pytestmark = pytest.mark.django_db
S = Escrow.Status

# 2.9% + 30 of the 220,000 charged (200,000 bid + 20,000 platform fee): the fake's and the offline model's fee.
CHARGE_FEE = (220_000 * 290 + 5_000) // 10_000 + 30


class _Rollback(Exception):
    pass


def fee_transactions(escrow):
    return list(LedgerTransaction.objects.filter(escrow=escrow, kind=FEE_TRANSACTION_KIND).order_by("id"))


def fees_booked(escrow, currency="USD") -> int:
    entries = LedgerEntry.objects.filter(escrow=escrow, account=A.STRIPE_FEES, transaction__currency=currency)
    return sum(entries.values_list("amount", flat=True))


def test_the_processing_fee_is_booked_once_on_funding(world, parties, settle):
    admin, org, engineer = parties
    escrow = funded_escrow(world, settle, org, engineer, admin)
    [txn] = fee_transactions(escrow)
    bt = world.provider.charge_balance_transaction(charge_id=escrow.charge_id)
    assert (bt.type, bt.amount, bt.fee, bt.net, bt.currency) == (
        "charge",
        220_000,
        CHARGE_FEE,
        220_000 - CHARGE_FEE,
        "USD",
    )
    assert [d.type for d in bt.fee_details] == ["stripe_fee"]
    assert bt.status == "pending" and bt.available_on > 0  # a card charge becomes available days later
    assert (txn.idempotency_key, txn.currency, txn.provider_object_id) == (f"stripe_fee:{bt.id}", "USD", bt.id)
    assert sorted(txn.entries.values_list("account", "amount")) == [
        (A.PLATFORM_CASH, -CHARGE_FEE),
        (A.STRIPE_FEES, CHARGE_FEE),
    ]
    assert txn.provider_ids["source"] == escrow.charge_id and txn.provider_ids["fee_stripe_fee"] == str(CHARGE_FEE)
    # the task, run twice, and the reconciliation sweep book nothing more
    tasks.escrow_fees_book(escrow.pk)
    tasks.escrow_fees_book(escrow.pk)
    settle(services.payments_reconcile)
    assert len(fee_transactions(escrow)) == 1
    # the escrow's own money is untouched: the fee is the platform's expense, not shown to the parties
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.funded, summary.held, summary.processing_fee_withheld) == (220_000, 220_000, 0)
    assert FEE_TRANSACTION_KIND not in {line.kind for line in summary.ledger_lines}


def test_fee_booked_once_when_the_webhook_and_the_sync_both_arrive(stripe_world, parties, settle):
    admin, org, engineer = parties
    escrow = open_escrow(org, engineer)
    pi = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin).payment_intent_id
    stripe_world.pay(pi)  # the events are stored but not processed yet
    settle(services.payments_reconcile)  # the sweep re-fetches the intent and funds the escrow
    settle(services.webhook_events_drain)  # then the webhooks are processed
    settle(stripe_world.deliver)
    escrow.refresh_from_db()
    assert escrow.status == S.FUNDED
    assert fees_booked(escrow) == CHARGE_FEE and len(fee_transactions(escrow)) == 1


def test_concurrent_bookings_of_one_fee_book_it_once(stripe_world, parties, settle, transactional_db, monkeypatch):
    monkeypatch.setattr("payments.services.funding._enqueue", lambda *args: None)
    admin, org, engineer = parties
    escrow = open_escrow(org, engineer)
    pi = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin).payment_intent_id
    stripe_world.fake_client.v1.payment_intents.confirm(pi, {"payment_method": "pm_card_visa"})
    funding = stripe_world.provider.funding_get(payment_intent_id=pi)
    services.escrow_funding_sync(escrow_id=escrow.pk, funding=funding)  # on-commit fee booking not run
    assert fee_transactions(escrow) == []
    outcomes = race(*[lambda: services.escrow_fees_book(escrow_id=escrow.pk)] * 4)
    assert outcomes == ["done"] * 4
    assert fees_booked(escrow) == CHARGE_FEE and len(fee_transactions(escrow)) == 1


def test_a_balance_transaction_made_later_is_booked_by_the_sweep(stripe_world, parties, settle):
    admin, org, engineer = parties
    stripe_world.fake.balance_transactions_delayed = True
    escrow = funded_escrow(stripe_world, settle, org, engineer, admin)
    assert fee_transactions(escrow) == []
    settle(services.payments_reconcile)
    issue = escrow.reconciliation_issues.get(kind="missing_balance_transaction", resolved_at=None)
    assert (issue.expected, issue.actual, issue.detail["missing"]) == (1, 0, [f"charge:{escrow.charge_id}"])
    stripe_world.fake.balance_transactions_attach()
    settle(services.payments_reconcile)
    settle(services.payments_reconcile)
    issue.refresh_from_db()
    assert issue.resolved_at is not None
    assert fees_booked(escrow) == CHARGE_FEE and len(fee_transactions(escrow)) == 1
    assert not escrow.reconciliation_issues.filter(resolved_at=None).exists()


def test_refund_under_platform_absorbs_returns_everything_and_the_platform_keeps_the_fee(world, parties, settle):
    admin, org, engineer = parties
    escrow = funded_escrow(world, settle, org, engineer, admin)
    result = settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="verification failed")
    assert (result.refund_amount, result.status) == (220_000, S.REFUNDED)
    assert [r.amount for r in world.provider.refunds_list(payment_intent_id=escrow.payment_intent_id)] == [220_000]
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.refunded, summary.processing_fee_withheld, summary.held) == (220_000, 0, 0)
    # Stripe returns none of the processing fee and charges none for the refund: one fee, the platform's expense
    assert fees_booked(escrow) == CHARGE_FEE and len(fee_transactions(escrow)) == 1
    refund = world.provider.refunds_list(payment_intent_id=escrow.payment_intent_id)[0]
    bt = world.provider.refund_balance_transaction(refund_id=refund.id)
    assert (bt.type, bt.amount, bt.fee) == ("refund", -220_000, 0)


def test_refund_under_company_bears_keeps_the_processing_fee_back(world, parties, settle, settings):
    settings.REFUND_FEE_POLICY = "company_bears"
    admin, org, engineer = parties
    escrow = funded_escrow(world, settle, org, engineer, admin)
    result = settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="verification failed")
    assert (result.refund_amount, result.status) == (220_000 - CHARGE_FEE, S.REFUNDED)
    refunds = world.provider.refunds_list(payment_intent_id=escrow.payment_intent_id)
    assert [r.amount for r in refunds] == [220_000 - CHARGE_FEE]
    summary = selectors.escrow_summary(escrow.pk)  # what the company sees it got back, and why not all of it
    assert (summary.refunded, summary.processing_fee_withheld, summary.held) == (220_000 - CHARGE_FEE, CHARGE_FEE, 0)
    assert "refund_fee_withheld" in {line.kind for line in summary.ledger_lines}
    assert settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="again").refund_amount == (
        220_000 - CHARGE_FEE
    )
    assert selectors.escrow_summary(escrow.pk).processing_fee_withheld == CHARGE_FEE


def test_an_operators_refund_follows_the_fee_policy_too(world, parties, settle, settings):
    settings.REFUND_FEE_POLICY = "company_bears"
    admin, org, engineer = parties
    escrow = funded_escrow(world, settle, org, engineer, admin)
    result = settle(services.escrow_refund_remainder_by_operator, escrow_id=escrow.pk, actor=operator(), note="stuck")
    assert (result.refund_amount, result.status) == (220_000 - CHARGE_FEE, S.REFUNDED)
    assert selectors.escrow_summary(escrow.pk).processing_fee_withheld == CHARGE_FEE


def test_an_inquiry_refund_returns_the_whole_charge_whatever_the_fee_policy(stripe_world, parties, settle, settings):
    settings.REFUND_FEE_POLICY = "company_bears"
    escrow, _ = inquiry(stripe_world, settle, parties)
    result = settle(services.escrow_inquiry_refund, escrow_id=escrow.pk, actor=operator(), note="customer agreed")
    # Only a refund of the whole charge ends an inquiry without a chargeback.
    assert result.refund_amount == 220_000
    assert selectors.escrow_summary(escrow.pk).processing_fee_withheld == 0


def test_company_bears_after_a_partial_release_withholds_the_refunded_share(world, parties, settle, settings):
    settings.REFUND_FEE_POLICY = "company_bears"
    admin, org, engineer = parties
    settle(world.onboard, engineer)
    escrow = funded_escrow(world, settle, org, engineer, admin)
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=5000, reason="tier", verification_run_id="r")
    result = settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="tier 2 failed")
    withheld = CHARGE_FEE * 110_000 // 220_000
    assert (result.refund_amount, result.status) == (110_000 - withheld, S.CLOSED)
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.released, summary.fee_kept, summary.processing_fee_withheld) == (100_000, 10_000, withheld)


def test_company_bears_withholds_nothing_when_the_fee_is_not_known_yet(stripe_world, parties, settle, settings):
    settings.REFUND_FEE_POLICY = "company_bears"
    admin, org, engineer = parties
    stripe_world.fake.balance_transactions_delayed = True
    escrow = funded_escrow(stripe_world, settle, org, engineer, admin)
    result = settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="failed")
    assert result.refund_amount == 220_000  # the platform absorbs a fee it could not read in time


def test_a_refund_fee_is_booked_where_stripe_charges_one(stripe_world, parties, settle, monkeypatch):
    monkeypatch.setitem(stripe_fake.REFUND_FEE, "usd", 50)
    admin, org, engineer = parties
    escrow = funded_escrow(stripe_world, settle, org, engineer, admin)
    settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="failed")
    assert fees_booked(escrow) == CHARGE_FEE + 50
    assert [t.provider_ids["type"] for t in fee_transactions(escrow)] == ["charge", "refund"]


def test_the_dispute_fee_is_booked_once_and_not_returned_when_won(world, parties, settle):
    admin, org, engineer = parties
    escrow = open_escrow(org, engineer)
    pi = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin).payment_intent_id
    settle(world.pay, pi, "dispute")
    escrow.refresh_from_db()
    assert escrow.frozen
    dispute_fee = 1500
    assert fees_booked(escrow) == CHARGE_FEE + dispute_fee
    dispute = world.provider.dispute_get(dispute_id=escrow.dispute_id)
    [withdrawal] = dispute.balance_transactions
    assert (withdrawal.type, withdrawal.amount, withdrawal.fee) == ("adjustment", -220_000, dispute_fee)
    settle(world.dispute_close, escrow, "won")
    settle(services.payments_reconcile)
    assert len(world.provider.dispute_get(dispute_id=escrow.dispute_id).balance_transactions) == 2
    assert fees_booked(escrow) == CHARGE_FEE + dispute_fee
    assert sorted(t.provider_ids["type"] for t in fee_transactions(escrow)) == ["adjustment", "charge"]
    assert not escrow.reconciliation_issues.filter(resolved_at=None).exists()


def test_the_dispute_fee_of_a_lost_dispute(world, parties, settle):
    admin, org, engineer = parties
    escrow = open_escrow(org, engineer)
    pi = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin).payment_intent_id
    settle(world.pay, pi, "dispute")
    settle(world.dispute_close, escrow, "lost")
    settle(world.dispute_close, escrow, "lost") if world.fake else None
    escrow.refresh_from_db()
    assert escrow.status == S.REFUNDED
    assert fees_booked(escrow) == CHARGE_FEE + 1500 and len(fee_transactions(escrow)) == 2


def test_a_fee_in_another_settlement_currency_is_booked_in_that_currency(stripe_world, parties, settle, settings):
    """Stripe converted the USD charge into the account's EUR balance: the fee is booked in EUR in a transaction of
    its own, never mixed with the escrow's USD money, and cannot be withheld from a USD refund."""
    settings.REFUND_FEE_POLICY = "company_bears"
    stripe_world.fake.settlement_currency, stripe_world.fake.exchange_rate = "eur", 0.5
    admin, org, engineer = parties
    escrow = funded_escrow(stripe_world, settle, org, engineer, admin)
    [txn] = fee_transactions(escrow)
    eur_fee = (110_000 * 150 + 5_000) // 10_000 + 25
    assert (txn.currency, fees_booked(escrow, "EUR"), fees_booked(escrow, "USD")) == ("EUR", eur_fee, 0)
    result = settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="failed")
    assert result.refund_amount == 220_000
    settle(services.payments_reconcile)
    assert not escrow.reconciliation_issues.filter(resolved_at=None).exists()


def test_the_ledger_check_refuses_bad_fee_lines(world, parties, settle):
    admin, org, engineer = parties
    escrow = funded_escrow(world, settle, org, engineer, admin)
    assert ledger_invariant_violations() == []
    with pytest.raises(_Rollback), transaction.atomic():
        ledger_post(
            escrow=escrow,
            idempotency_key="stripe_fee:bogus",
            kind=FEE_TRANSACTION_KIND,
            lines=[(A.HELD, -100), (A.STRIPE_FEES, 100)],
        )
        ledger_post(
            escrow=escrow,
            idempotency_key="fee_returned_twice",
            kind=FEE_TRANSACTION_KIND,
            lines=[(A.STRIPE_FEES, -50_000), (A.PLATFORM_CASH, 50_000)],
            currency="EUR",
        )
        ledger_post(
            escrow=escrow,
            idempotency_key="held_in_eur",
            kind="funding",
            lines=[(A.HELD, 10), (A.COMPANY_FUNDING, -10)],
            currency="EUR",
        )
        ledger_post(
            escrow=escrow,
            idempotency_key="withheld_too_much",
            kind="refund_fee_withheld",
            lines=[(A.HELD, -CHARGE_FEE - 1_000), (A.STRIPE_FEES_RECOVERED, CHARGE_FEE + 1_000)],
        )
        problems = ledger_invariant_violations()
        assert any("moves more than Stripe fees" in p for p in problems)
        assert any("Stripe fees in EUR are negative" in p for p in problems)
        assert any("escrow money in another currency" in p for p in problems)
        assert any("withheld" in p and "for fees of only" in p for p in problems)
        raise _Rollback
    assert ledger_invariant_violations() == []


def test_the_offline_fee_model_is_the_offline_providers_own(offline_world, parties, settle):
    admin, org, engineer = parties
    escrow = funded_escrow(offline_world, settle, org, engineer, admin)
    txn = OfflineObject.objects.get(object_type="balance_transaction")
    assert txn.data["fee"] == CHARGE_FEE and "offline simulation" in txn.data["fee_details"][0]["description"]
    balance = offline_world.provider.balance_get()
    assert (dict(balance.pending), dict(balance.available)) == ({"USD": 220_000 - CHARGE_FEE}, {})
    assert fees_booked(escrow) == CHARGE_FEE


def test_the_fakes_balance_moves_from_pending_to_available(stripe_world, parties, settle):
    admin, org, engineer = parties
    settle(stripe_world.onboard, engineer)
    escrow = funded_escrow(stripe_world, settle, org, engineer, admin)
    balance = stripe_world.provider.balance_get()
    assert (dict(balance.pending), dict(balance.available)) == ({"USD": 220_000 - CHARGE_FEE}, {})
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r")
    stripe_world.fake.balance_transactions_make_available()
    balance = stripe_world.provider.balance_get()
    assert (dict(balance.pending), dict(balance.available)) == ({}, {"USD": 220_000 - CHARGE_FEE - 200_000})
    transfer_id = escrow.operations.get().provider_object_id
    bt = stripe_world.provider.transfer_balance_transaction(transfer_id=transfer_id)
    assert (bt.type, bt.amount, bt.fee, bt.status) == ("transfer", -200_000, 0, "available")
    retrieved = stripe_world.fake_client.v1.balance_transactions.retrieve(bt.id)
    assert (retrieved.id, retrieved.source) == (bt.id, transfer_id)
    unexpanded = stripe_world.fake_client.v1.charges.retrieve(escrow.charge_id)
    assert isinstance(unexpanded.balance_transaction, str)


def test_connect_fees_billed_to_the_platform_are_booked_once_without_a_contract(stripe_world, parties, settle):
    admin, org, engineer = parties
    funded_escrow(stripe_world, settle, org, engineer, admin)
    bill = stripe_world.fake.platform_fee_bill(200, "Connect (2026-11): Active Account Billing")
    stripe_world.fake.platform_fee_bill(75, "Connect (2026-11): Payouts", currency="eur")
    settle(services.payments_reconcile)
    settle(services.payments_reconcile)
    assert services.platform_fees_book() == 0
    platform = LedgerTransaction.objects.filter(escrow=None).order_by("currency")
    assert [(t.kind, t.currency) for t in platform] == [("platform_stripe_fee", "EUR"), ("platform_stripe_fee", "USD")]
    usd = platform.get(currency="USD")
    assert usd.idempotency_key == f"stripe_fee:{bill['id']}"
    assert sorted(usd.entries.values_list("account", "amount")) == [(A.PLATFORM_CASH, -200), (A.STRIPE_FEES, 200)]
    assert ledger_invariant_violations() == []


def test_the_offline_provider_bills_no_connect_fees(offline_world, parties, settle):
    admin, org, engineer = parties
    funded_escrow(offline_world, settle, org, engineer, admin)
    assert settle(services.platform_fees_book) == 0
    assert not LedgerTransaction.objects.filter(escrow=None).exists()


def test_the_ledger_check_refuses_a_platform_transaction_moving_escrow_money(stripe_world, parties, settle):
    with pytest.raises(_Rollback), transaction.atomic():
        ledger_post(
            escrow=None,
            idempotency_key="platform:bogus",
            kind="platform_stripe_fee",
            lines=[(A.HELD, -100), (A.STRIPE_FEES, 100)],
            currency="USD",
        )
        assert any("platform-level transaction" in p for p in ledger_invariant_violations())
        raise _Rollback
    with pytest.raises(ValueError, match="needs a currency"):
        ledger_post(escrow=None, idempotency_key="x", kind="k", lines=[(A.STRIPE_FEES, 1), (A.PLATFORM_CASH, -1)])
