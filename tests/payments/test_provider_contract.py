"""One provider contract suite, run against the offline provider and the Stripe provider (through FakeStripe)."""

import dataclasses
import json
import time

import pytest

from common.errors import NotFound
from payments.errors import IdempotencyConflict, ProviderRejected, WebhookRejected
from payments.providers.base import ConnectedAccountInfo, Funding, Refund, Transfer

from .conftest import CONNECT_SECRET, WEBHOOK_SECRET, sign

pytestmark = pytest.mark.django_db


def _funding(world, key="fund:c1", amount=22_000, group="escrow_c1"):
    return world.provider.funding_create(
        amount=amount, currency="USD", transfer_group=group, metadata={"escrow_id": "c1"}, idempotency_key=key
    )


def _paid(world, **kwargs) -> Funding:
    funding = _funding(world, **kwargs)
    world.pay(funding.id)
    return world.provider.funding_get(payment_intent_id=funding.id)


def _activate(world, account_id: str) -> None:
    if world.fake is None:
        world.provider.account_simulate_onboarding(account_id=account_id)
    else:
        world.fake.account_activate(account_id)


def _payable_account(world, n=1) -> ConnectedAccountInfo:
    info = world.provider.account_create(
        email=f"eng{n}@example.test",
        country="US",
        service_agreement="full",
        metadata={"user_id": str(n)},
        idempotency_key=f"account:{n}",
    )
    _activate(world, info.id)
    return world.provider.account_get(account_id=info.id)


def test_funding_create_returns_a_frozen_dataclass_and_replays_its_key(world):
    funding = _funding(world)
    assert isinstance(funding, Funding)
    with pytest.raises(dataclasses.FrozenInstanceError):
        funding.status = "succeeded"
    assert (funding.status, funding.amount, funding.currency, funding.transfer_group) == (
        "requires_payment_method",
        22_000,
        "USD",
        "escrow_c1",
    )
    assert funding.metadata["escrow_id"] == "c1"
    again = _funding(world)
    assert again.id == funding.id
    with pytest.raises(IdempotencyConflict):
        _funding(world, amount=23_000)


def test_funding_lifecycle_succeeds_after_the_payer_confirms(world):
    funding = _paid(world)
    assert funding.succeeded and funding.charge_id
    assert world.provider.funding_get(payment_intent_id=funding.id).status == "succeeded"


def test_declined_payment_keeps_the_intent_open_with_the_providers_message(world):
    funding = _funding(world)
    world.pay(funding.id, "decline")
    current = world.provider.funding_get(payment_intent_id=funding.id)
    assert current.status == "requires_payment_method"
    assert current.failure_message == "Your card was declined."


def test_cancel_an_unpaid_intent_but_not_a_paid_one(world):
    funding = _funding(world)
    assert world.provider.funding_cancel(payment_intent_id=funding.id, idempotency_key="cancel:1").status == "canceled"
    paid = _paid(world, key="fund:c2", group="escrow_c2")
    with pytest.raises(ProviderRejected):
        world.provider.funding_cancel(payment_intent_id=paid.id, idempotency_key="cancel:2")


def test_unknown_objects_are_not_found(world):
    with pytest.raises(NotFound):
        world.provider.funding_get(payment_intent_id="pi_does_not_exist")
    with pytest.raises(NotFound):
        world.provider.transfer_get(transfer_id="tr_does_not_exist")


def test_transfers_need_an_active_account_replay_their_key_and_list_by_group(world):
    funding = _paid(world)
    info = world.provider.account_create(
        email="e@example.test", country="US", service_agreement="full", metadata={}, idempotency_key="account:9"
    )
    assert not info.transfers_active
    link = world.provider.account_link_create(account_id=info.id, refresh_url="http://t/r", return_url="http://t/d")
    assert link.url.startswith("http")
    kwargs = dict(
        amount=10_000,
        currency="USD",
        destination=info.id,
        source_transaction=funding.charge_id,
        transfer_group="escrow_c1",
        metadata={"operation_key": "release:c1:5000"},
        idempotency_key="release:c1:5000",
    )
    with pytest.raises(ProviderRejected):
        world.provider.transfer_create(**kwargs)
    _activate(world, info.id)
    assert world.provider.account_get(account_id=info.id).transfers_active
    first = world.provider.transfer_create(**{**kwargs, "idempotency_key": "release:c1:5000b"})
    second = world.provider.transfer_create(**{**kwargs, "idempotency_key": "release:c1:5000b"})
    assert isinstance(first, Transfer) and first.id == second.id
    assert first.metadata["operation_key"] == "release:c1:5000"
    listed = world.provider.transfers_list(transfer_group="escrow_c1")
    assert [t.id for t in listed] == [first.id]
    assert world.provider.transfers_list(transfer_group="escrow_other") == []


def test_transfers_cannot_exceed_the_source_charge(world):
    funding = _paid(world)
    account = _payable_account(world)
    base = dict(
        currency="USD",
        destination=account.id,
        source_transaction=funding.charge_id,
        transfer_group="escrow_c1",
        metadata={},
    )
    world.provider.transfer_create(amount=20_000, idempotency_key="t1", **base)
    with pytest.raises(ProviderRejected):
        world.provider.transfer_create(amount=5_000, idempotency_key="t2", **base)


def test_transfer_reversal(world):
    funding = _paid(world)
    account = _payable_account(world)
    transfer = world.provider.transfer_create(
        amount=10_000,
        currency="USD",
        destination=account.id,
        source_transaction=funding.charge_id,
        transfer_group="escrow_c1",
        metadata={},
        idempotency_key="t1",
    )
    reversal = world.provider.transfer_reverse(transfer_id=transfer.id, amount=4_000, idempotency_key="rev:1")
    assert reversal.amount == 4_000 and reversal.transfer_id == transfer.id
    assert world.provider.transfer_get(transfer_id=transfer.id).amount_reversed == 4_000
    with pytest.raises(ProviderRejected):
        world.provider.transfer_reverse(transfer_id=transfer.id, amount=7_000, idempotency_key="rev:2")


def test_refunds_replay_refuse_over_refunds_and_list_by_intent(world):
    funding = _paid(world)
    refund = world.provider.refund_create(
        payment_intent_id=funding.id,
        amount=12_000,
        metadata={"operation_key": "refund:c1"},
        idempotency_key="refund:c1",
    )
    assert isinstance(refund, Refund) and refund.status == "succeeded" and refund.amount == 12_000
    assert (
        world.provider.refund_create(
            payment_intent_id=funding.id,
            amount=12_000,
            metadata={"operation_key": "refund:c1"},
            idempotency_key="refund:c1",
        ).id
        == refund.id
    )
    with pytest.raises(ProviderRejected):
        world.provider.refund_create(
            payment_intent_id=funding.id, amount=10_001, metadata={}, idempotency_key="refund:c1b"
        )
    assert world.provider.refund_get(refund_id=refund.id).amount == 12_000
    assert [r.id for r in world.provider.refunds_list(payment_intent_id=funding.id)] == [refund.id]


def test_refund_of_an_unpaid_intent_is_rejected(world):
    funding = _funding(world)
    with pytest.raises(ProviderRejected):
        world.provider.refund_create(payment_intent_id=funding.id, amount=100, metadata={}, idempotency_key="r")


def test_disputes_are_fetched_with_their_current_status(world):
    funding = _funding(world)
    world.pay(funding.id, "dispute")
    if world.fake is None:
        from payments.models import OfflineObject

        dispute_id = OfflineObject.objects.get(object_type="dispute").object_id
    else:
        dispute_id = world.fake.of_kind("dispute")[0]["id"]
    dispute = world.provider.dispute_get(dispute_id=dispute_id)
    assert dispute.open and dispute.amount == 22_000 and dispute.payment_intent_id == funding.id


@pytest.mark.parametrize("connect", [False, True])
def test_webhook_parse_verifies_signature_and_tolerance(world, connect):
    secret = CONNECT_SECRET if connect else WEBHOOK_SECRET
    payload = json.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "type": "payment_intent.succeeded",
            "livemode": False,
            "data": {"object": {"id": "pi_1", "object": "payment_intent"}},
        }
    )
    event = world.provider.webhook_parse(payload=payload.encode(), signature=sign(payload, secret), connect=connect)
    assert (event.id, event.type, event.object_type, event.object_id) == (
        "evt_1",
        "payment_intent.succeeded",
        "payment_intent",
        "pi_1",
    )
    other = WEBHOOK_SECRET if connect else CONNECT_SECRET
    for bad in (sign(payload, other), sign(payload, secret, int(time.time()) - 301), "", "t=1,v1=deadbeef", None):
        with pytest.raises(WebhookRejected):
            world.provider.webhook_parse(payload=payload.encode(), signature=bad, connect=connect)
    with pytest.raises(WebhookRejected):
        world.provider.webhook_parse(payload=payload.encode() + b" ", signature=sign(payload, secret), connect=connect)


def _checkout(world, key="checkout:c1", customer_id=None, amount=22_000, currency="USD"):
    customer_id = (
        customer_id
        or world.provider.customer_create(
            email="pay@example.test", name="Acme", metadata={"organization_id": "1"}, idempotency_key="customer:1"
        ).id
    )
    return world.provider.checkout_create(
        amount=amount,
        currency=currency,
        description="Speedproof contract:1",
        customer_id=customer_id,
        receipt_email="pay@example.test",
        transfer_group="escrow_c1",
        metadata={"escrow_id": "c1", "reference": "contract:1"},
        success_url="http://t/done",
        cancel_url="http://t/cancel",
        idempotency_key=key,
    )


def test_customers_are_created_once_per_key(world):
    first = world.provider.customer_create(
        email="pay@example.test", name="Acme", metadata={"organization_id": "1"}, idempotency_key="customer:1"
    )
    again = world.provider.customer_create(
        email="pay@example.test", name="Acme", metadata={"organization_id": "1"}, idempotency_key="customer:1"
    )
    assert first.id == again.id and first.email == "pay@example.test"
    with pytest.raises(IdempotencyConflict):
        world.provider.customer_create(
            email="other@example.test", name="Acme", metadata={}, idempotency_key="customer:1"
        )


def test_checkout_sessions_open_replay_complete_and_expire(world):
    session = _checkout(world)
    assert (session.status, session.payment_status) == ("open", "unpaid") and session.url.startswith("http")
    assert _checkout(world).id == session.id
    assert world.provider.checkout_get(session_id=session.id).metadata["escrow_id"] == "c1"
    world.pay_checkout(session.id)
    paid = world.provider.checkout_get(session_id=session.id)
    assert (paid.status, paid.payment_status) == ("complete", "paid")
    funding = world.provider.funding_get(payment_intent_id=paid.payment_intent_id)
    assert funding.succeeded and funding.transfer_group == "escrow_c1" and funding.metadata["escrow_id"] == "c1"
    with pytest.raises(ProviderRejected):
        world.provider.checkout_expire(session_id=session.id, idempotency_key="expire:1")
    other = _checkout(world, key="checkout:c2")
    expired = world.provider.checkout_expire(session_id=other.id, idempotency_key="expire:2")
    assert (expired.status, expired.url) == ("expired", None)


def test_three_decimal_amounts_must_end_in_zero_and_charges_respect_the_limits(world):
    with pytest.raises(ProviderRejected):
        world.provider.funding_create(amount=49, currency="USD", transfer_group="g", metadata={}, idempotency_key="m")
    with pytest.raises(ProviderRejected):
        world.provider.funding_create(
            amount=100_000_000, currency="USD", transfer_group="g", metadata={}, idempotency_key="x"
        )
    with pytest.raises(ProviderRejected):
        world.provider.funding_create(
            amount=12_345, currency="KWD", transfer_group="g", metadata={}, idempotency_key="kwd:1"
        )
    assert (
        world.provider.funding_create(
            amount=12_340, currency="KWD", transfer_group="g", metadata={}, idempotency_key="kwd:2"
        ).amount
        == 12_340
    )
