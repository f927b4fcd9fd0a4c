"""Collecting the company's money: a hosted Checkout page and a client secret, one customer per organization,
funding exactly once whichever path pays first, and slow payments left alone by the funding deadline."""

from datetime import timedelta

import pytest
from django.utils import timezone

from payments import services
from payments.ledger import A, ledger_balances
from payments.models import Escrow, LedgerTransaction, PaymentCustomer, ProviderOperation

from .conftest import funded_escrow, open_escrow

pytestmark = pytest.mark.django_db(transaction=False)


@pytest.fixture(autouse=True)
def _keys(settings):
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_fake"
    settings.CHECKOUT_SUCCESS_URL = "http://testserver/done?session_id={CHECKOUT_SESSION_ID}"
    settings.CHECKOUT_CANCEL_URL = "http://testserver/cancelled"


def test_funding_offers_a_hosted_page_and_a_client_secret(world, parties, settle):
    admin, organization, engineer = parties
    escrow = open_escrow(organization, engineer)
    instructions = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    assert instructions.amount == escrow.total and instructions.checkout_session_id
    if world.fake is None:
        # The offline page is the confirm page: the same API shape, nothing leaves the machine.
        assert instructions.checkout_url == instructions.confirm_url
        assert instructions.client_secret is None and instructions.publishable_key is None
    else:
        assert instructions.checkout_url.startswith("https://checkout.stripe.com/")
        assert instructions.client_secret.startswith(instructions.payment_intent_id)
        assert instructions.publishable_key == "pk_test_fake"
        session = world.fake.objects[instructions.checkout_session_id]
        customer = world.fake.objects[session["customer"]]
        assert (session["mode"], session["amount_total"], session["currency"]) == ("payment", escrow.total, "usd")
        assert session["success_url"].startswith("http://testserver/done")
        intent_data = world.fake.checkout_intent_data[session["id"]]
        assert intent_data["transfer_group"] == f"escrow_{escrow.pk}"
        assert intent_data["metadata"] == {"escrow_id": str(escrow.pk), "reference": escrow.reference}
        assert intent_data["receipt_email"] == admin.email
        assert (customer["email"], customer["name"]) == (admin.email, organization.name)
        assert world.fake.objects[instructions.payment_intent_id]["customer"] == customer["id"]
    again = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    assert (again.payment_intent_id, again.checkout_session_id) == (
        instructions.payment_intent_id,
        instructions.checkout_session_id,
    )


def test_one_customer_per_paying_organization(world, parties, settle):
    admin, organization, engineer = parties
    for n in range(2):
        escrow = open_escrow(organization, engineer, reference=f"test:customer-{n}")
        settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    assert PaymentCustomer.objects.filter(organization=organization).count() == 1
    if world.fake is not None:
        assert world.fake.count("customer") == 1
    # Created again after its row was lost (e.g. a crash before the insert): the idempotency key names the same one.
    customer_id = PaymentCustomer.objects.get().provider_customer_id
    PaymentCustomer.objects.all().delete()
    assert services.payment_customer_ensure(organization=organization, email=admin.email) == customer_id


def test_paying_on_the_checkout_page_funds_once_and_cancels_the_direct_intent(world, parties, settle):
    admin, organization, engineer = parties
    escrow = open_escrow(organization, engineer)
    instructions = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    settle(world.pay_checkout, instructions.checkout_session_id)
    settle(world.deliver)
    escrow.refresh_from_db()
    assert escrow.status == Escrow.Status.FUNDED
    assert LedgerTransaction.objects.filter(escrow=escrow, kind="funding").count() == 1
    assert ledger_balances(escrow_id=escrow.pk)[A.HELD] == escrow.total
    if world.fake is not None:
        # Checkout made its own intent: it now funds the escrow, and the unused direct one is cancelled.
        assert escrow.payment_intent_id != instructions.payment_intent_id
        assert world.fake.objects[instructions.payment_intent_id]["status"] == "canceled"
        # checkout.session.completed and payment_intent.succeeded both arrived; replaying them changes nothing.
        for event in list(world.fake.events):
            settle(world.post_event, event)
        assert LedgerTransaction.objects.filter(escrow=escrow, kind="funding").count() == 1


def test_paying_the_client_secret_expires_the_checkout_page(stripe_world, parties, settle):
    admin, organization, engineer = parties
    escrow = open_escrow(organization, engineer)
    instructions = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    settle(stripe_world.pay, instructions.payment_intent_id)
    escrow.refresh_from_db()
    assert escrow.status == Escrow.Status.FUNDED
    assert stripe_world.fake.objects[instructions.checkout_session_id]["status"] == "expired"
    settle(stripe_world.deliver)  # checkout.session.expired: nothing to do
    assert LedgerTransaction.objects.filter(escrow=escrow, kind="funding").count() == 1


def test_a_second_payment_for_a_funded_escrow_is_refunded_in_full(stripe_world, parties, settle):
    admin, organization, engineer = parties
    escrow = open_escrow(organization, engineer)
    instructions = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    # Both paths are paid before any webhook arrives.
    stripe_world.fake.checkout_pay(instructions.checkout_session_id)
    settle(stripe_world.pay, instructions.payment_intent_id)
    settle(stripe_world.deliver)
    escrow.refresh_from_db()
    checkout_intent = stripe_world.fake.objects[instructions.checkout_session_id]["payment_intent"]
    # The first success to arrive (here Checkout's) funds the escrow; the other payment goes back in full.
    assert escrow.status == Escrow.Status.FUNDED and escrow.payment_intent_id == checkout_intent
    assert LedgerTransaction.objects.filter(escrow=escrow, kind="funding").count() == 1
    refunds = stripe_world.fake.of_kind("refund")
    assert [(r["payment_intent"], r["amount"]) for r in refunds] == [(instructions.payment_intent_id, escrow.total)]
    op = ProviderOperation.objects.get(kind=ProviderOperation.Kind.DUPLICATE_REFUND)
    assert (op.status, op.payment_intent_id) == (ProviderOperation.Status.SUCCEEDED, instructions.payment_intent_id)
    # The escrow's own money is untouched.
    assert ledger_balances(escrow_id=escrow.pk)[A.HELD] == escrow.total
    settle(stripe_world.deliver)
    assert ProviderOperation.objects.filter(kind=ProviderOperation.Kind.DUPLICATE_REFUND).count() == 1


def test_a_processing_payment_is_not_cancelled_by_the_funding_deadline(stripe_world, parties, settle):
    admin, organization, engineer = parties
    escrow = open_escrow(organization, engineer)
    instructions = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    settle(stripe_world.pay_checkout, instructions.checkout_session_id, processing=True)
    Escrow.objects.filter(pk=escrow.pk).update(funding_deadline=timezone.now() - timedelta(minutes=1))
    assert settle(services.escrows_expire_unfunded) == 0
    escrow.refresh_from_db()
    assert escrow.status == Escrow.Status.PENDING_FUNDING
    checkout_intent = stripe_world.fake.objects[instructions.checkout_session_id]["payment_intent"]
    stripe_world.fake.payment_intent_settle(checkout_intent)
    settle(stripe_world.deliver)
    escrow.refresh_from_db()
    assert escrow.status == Escrow.Status.FUNDED and escrow.payment_intent_id == checkout_intent


def test_an_unstarted_payment_is_cancelled_by_the_deadline_with_its_checkout_page(world, parties, settle):
    admin, organization, engineer = parties
    escrow = open_escrow(organization, engineer)
    instructions = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    Escrow.objects.filter(pk=escrow.pk).update(funding_deadline=timezone.now() - timedelta(minutes=1))
    assert settle(services.escrows_expire_unfunded) == 1
    escrow.refresh_from_db()
    assert escrow.status == Escrow.Status.CANCELLED
    assert world.provider.funding_get(payment_intent_id=instructions.payment_intent_id).status == "canceled"
    if world.fake is not None:
        assert world.fake.objects[instructions.checkout_session_id]["status"] == "expired"


def test_the_fund_endpoint_returns_both_paths(client, parties, stripe_world, settle):
    from tests.factories.jobs import awarded_contract

    admin, organization, engineer = parties
    contract = awarded_contract(admin=admin, engineer=engineer)
    client.force_login(admin)
    response = settle(client.post, f"/api/v1/contracts/{contract.pk}/fund/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["checkout_url"].startswith("https://checkout.stripe.com/")
    assert body["client_secret"] and body["publishable_key"] == "pk_test_fake"


def test_kwd_amounts_end_in_zero_through_release_and_refund(world, parties, settle):
    admin, organization, engineer = parties
    world.onboard(engineer)
    escrow = funded_escrow(world, settle, organization, engineer, admin, amount=123_450, fee=12_350, currency="KWD")
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=3_333, reason="tier 1", verification_run_id="r1")
    settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="attempts exhausted")
    escrow.refresh_from_db()
    # 33.33% of 123.450 is 41.145 and of 12.350 is 4.116: both round down to the nearest ten fils.
    assert (escrow.released_amount, escrow.released_fee) == (41_140, 4_110)
    operations = {op.kind: op.amount for op in ProviderOperation.objects.filter(escrow=escrow)}
    assert operations == {"transfer": 41_140, "refund": 135_800 - 41_140 - 4_110}
    assert all(op.status == ProviderOperation.Status.SUCCEEDED for op in ProviderOperation.objects.all())
    assert all(amount % 10 == 0 for amount in operations.values())
    balances = ledger_balances(escrow_id=escrow.pk)
    assert balances[A.HELD] == 0 and balances[A.PLATFORM_FEE] == 4_110
    if world.fake is not None:
        assert all(o["amount"] % 10 == 0 for kind in ("transfer", "refund") for o in world.fake.of_kind(kind))


def test_an_escrow_that_stripe_could_not_charge_is_refused(parties):
    from common.errors import ValidationFailed

    admin, organization, engineer = parties
    with pytest.raises(ValidationFailed) as step:
        open_escrow(organization, engineer, amount=123_455, fee=12_350, currency="KWD")
    assert step.value.code == "amount_not_payable_step"
    with pytest.raises(ValidationFailed) as small:
        open_escrow(organization, engineer, amount=40, fee=4)
    assert small.value.code == "amount_below_minimum"
    with pytest.raises(ValidationFailed) as settled:
        open_escrow(organization, engineer, currency="GBP")
    assert settled.value.code == "currency_not_settled"


@pytest.mark.parametrize("path", ["/payments/checkout/done/?session_id=cs_test_x", "/payments/checkout/cancelled/"])
def test_checkout_return_pages_answer_without_login_and_show_no_payment_data(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert b"cs_test_x" not in response.content
