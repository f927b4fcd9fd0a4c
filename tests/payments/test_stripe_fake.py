"""The offline Stripe fake itself, and the Stripe provider's error mapping through it."""

import pytest
import stripe

from common.errors import RetryableError
from payments import services
from payments.errors import FundingFailed, IdempotencyConflict, ProviderObjectMissing, ProviderRejected
from payments.models import Escrow

from .conftest import open_escrow, stripe_provider
from .stripe_fake import FIXTURES, FakeStripe


@pytest.fixture
def fake():
    return FakeStripe()


@pytest.fixture
def client(fake):
    return stripe.StripeClient("sk_test_fake", http_client=fake, max_network_retries=0)


def test_objects_have_stripes_official_shapes(client, fake):
    customer = client.v1.customers.create({"email": "a@example.test"})
    assert client.v1.customers.retrieve(customer.id).email == "a@example.test"
    pi = client.v1.payment_intents.create({"amount": 1000, "currency": "usd"})
    for resource, obj in (("customer", customer), ("payment_intent", pi)):
        assert set(FIXTURES[resource]) <= set(obj.to_dict()), resource
    client.v1.payment_intents.confirm(pi.id, {"payment_method": "pm_card_visa"})
    charge = client.v1.charges.retrieve(client.v1.payment_intents.retrieve(pi.id).latest_charge)
    assert set(FIXTURES["charge"]) <= set(charge.to_dict()) and charge.amount == 1000
    assert [e["type"] for e in fake.events] == ["charge.succeeded", "payment_intent.succeeded"]
    assert set(FIXTURES["event"]) <= set(fake.events[0])


def test_idempotent_replay_and_mismatch(client, fake):
    first = client.v1.payment_intents.create({"amount": 1000, "currency": "usd"}, {"idempotency_key": "k1"})
    replay = client.v1.payment_intents.create({"amount": 1000, "currency": "usd"}, {"idempotency_key": "k1"})
    assert replay.id == first.id and fake.count("payment_intent") == 1
    assert replay.last_response.headers.get("Idempotent-Replayed") == "true"
    with pytest.raises(stripe.IdempotencyError):
        client.v1.payment_intents.create({"amount": 2000, "currency": "usd"}, {"idempotency_key": "k1"})


def test_parameters_unknown_to_the_sdk_types_are_rejected(client):
    with pytest.raises(stripe.InvalidRequestError, match="unknown parameter: bogus"):
        client.v1.transfers.create({"amount": 1, "currency": "usd", "destination": "acct_x", "bogus": 1})
    with pytest.raises(stripe.InvalidRequestError, match="automatic_payment_methods.nope"):
        client.v1.payment_intents.create(
            {"amount": 1000, "currency": "usd", "automatic_payment_methods": {"enabled": True, "nope": 1}}
        )
    with pytest.raises(stripe.InvalidRequestError, match="Missing required param: currency"):
        client.v1.payment_intents.create({"amount": 1000})
    with pytest.raises(
        stripe.InvalidRequestError, match="Missing required param: refresh_url|Missing required param: type"
    ):
        client.v1.account_links.create({"account": "acct_x"})


def test_over_refund_is_refused(client):
    pi = client.v1.payment_intents.create({"amount": 1000, "currency": "usd"})
    client.v1.payment_intents.confirm(pi.id, {"payment_method": "pm_card_visa"})
    client.v1.refunds.create({"payment_intent": pi.id, "amount": 600})
    with pytest.raises(stripe.InvalidRequestError, match="greater than unrefunded"):
        client.v1.refunds.create({"payment_intent": pi.id, "amount": 401})
    client.v1.refunds.create({"payment_intent": pi.id, "amount": 400})
    with pytest.raises(stripe.InvalidRequestError, match="already been refunded"):
        client.v1.refunds.create({"payment_intent": pi.id, "amount": 1})


@pytest.mark.parametrize(
    ("kind", "error", "code"),
    [
        ("429", RetryableError, "provider_rate_limited"),
        ("500", RetryableError, "provider_unavailable"),
        ("timeout", RetryableError, "provider_unreachable"),
        ("decline", FundingFailed, "card_declined"),
    ],
)
def test_injected_failures_map_to_domain_errors(fake, kind, error, code):
    provider = stripe_provider(fake, retries=2)
    fake.inject(kind, count=3)
    with pytest.raises(error) as caught:
        provider.funding_create(amount=1000, currency="USD", transfer_group="g", metadata={}, idempotency_key="k")
    assert caught.value.code == code
    if kind == "decline":
        assert caught.value.message == "Your card was declined."


def test_sdk_retries_recover_from_a_single_500_and_a_lost_answer(fake):
    provider = stripe_provider(fake, retries=2)
    fake.inject("500")
    fake.inject("timeout_after")
    funding = provider.funding_create(amount=1000, currency="USD", transfer_group="g", metadata={}, idempotency_key="k")
    assert fake.count("payment_intent") == 1 and funding.amount == 1000
    with pytest.raises(ProviderObjectMissing):
        provider.refund_get(refund_id="re_missing")
    with pytest.raises(IdempotencyConflict):
        provider.funding_create(amount=999, currency="USD", transfer_group="g", metadata={}, idempotency_key="k")
    with pytest.raises(ProviderRejected):
        provider.funding_create(amount=10, currency="USD", transfer_group="g", metadata={}, idempotency_key="k2")


@pytest.mark.django_db
def test_a_decline_at_funding_start_is_reported_with_stripes_message(parties, settle, stripe_world):
    admin, org, engineer = parties
    escrow = open_escrow(org, engineer)
    stripe_world.fake.inject("decline", path="/v1/payment_intents")
    with pytest.raises(FundingFailed, match="Your card was declined."):
        settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    escrow.refresh_from_db()
    assert escrow.status == Escrow.Status.PENDING_FUNDING and escrow.funding_failure_reason == "Your card was declined."
    assert settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin).client_secret


def _paid_charge(client) -> str:
    pi = client.v1.payment_intents.create({"amount": 5000, "currency": "usd"})
    return client.v1.payment_intents.confirm(pi.id, {"payment_method": "pm_card_visa"}).latest_charge


def test_a_chargeback_makes_the_charge_unrefundable_and_an_inquiry_does_not(client, fake):
    inquired, charged_back = _paid_charge(client), _paid_charge(client)
    fake.dispute_open(inquired, inquiry=True)
    fake.dispute_open(charged_back)
    dispute = client.v1.disputes.retrieve(fake.of_kind("dispute")[0]["id"])
    assert (dispute.status, dispute.is_charge_refundable) == ("warning_needs_response", True)
    assert client.v1.refunds.create({"charge": inquired}).status == "succeeded"
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create({"charge": charged_back})
    assert refused.value.code == "charge_disputed"


def test_evidence_files_must_be_pdf_jpeg_or_png_and_a_submission_is_final(client, fake):
    import io

    dispute = fake.dispute_open(_paid_charge(client))
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.files.create({"purpose": "dispute_evidence", "file": io.BytesIO(b'{"json": true}')})
    pdf = client.v1.files.create({"purpose": "dispute_evidence", "file": io.BytesIO(b"%PDF-1.4 evidence")})
    assert fake.uploaded[pdf.id] == b"%PDF-1.4 evidence"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.disputes.update(dispute["id"], {"evidence": {"service_documentation": "file_missing"}})
    submitted = client.v1.disputes.update(
        dispute["id"], {"evidence": {"uncategorized_text": "delivered", "service_documentation": pdf.id}}
    )
    assert submitted.status == "under_review" and submitted.evidence.service_documentation == pdf.id
    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.disputes.update(dispute["id"], {"evidence": {"uncategorized_text": "more"}})
    assert again.value.code == "dispute_already_submitted"


def test_reversals_carry_metadata_and_cannot_exceed_the_transfer(client, fake):
    charge = _paid_charge(client)
    account = client.v1.accounts.create({"country": "US", "capabilities": {"transfers": {"requested": True}}})
    fake.account_activate(account.id)
    transfer = client.v1.transfers.create(
        {"amount": 3000, "currency": "usd", "destination": account.id, "source_transaction": charge}
    )
    client.v1.transfers.reversals.create(transfer.id, {"amount": 1000, "metadata": {"operation_key": "k"}})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.transfers.reversals.create(transfer.id, {"amount": 2001})
    again = client.v1.transfers.retrieve(transfer.id)
    assert (again.amount_reversed, again.reversed) == (1000, False)
    assert again.reversals.data[0].metadata["operation_key"] == "k"
