"""The offline provider's HTML pages show a payment or a payout account only to whoever it belongs to."""

import hashlib

import pytest

from payments import services
from payments.models import ConnectedAccount, Escrow, OfflineIdempotencyKey, OfflineObject
from tests.factories import CompanyAdminFactory, CompanyMemberFactory, EngineerFactory, StaffFactory

from .conftest import open_escrow

pytestmark = pytest.mark.django_db


@pytest.fixture
def checkout(parties, settle, offline_world):
    admin, organization, engineer = parties
    escrow = open_escrow(organization, engineer, amount=314_159, fee=31_415)
    payment_intent_id = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin).payment_intent_id
    return escrow, f"/payments/offline/checkout/{payment_intent_id}/"


def test_checkout_page_is_not_found_for_anyone_outside_the_paying_organization(client, parties, checkout):
    _, _, payee = parties
    escrow, url = checkout
    for outsider in (CompanyAdminFactory(), EngineerFactory(), payee):
        client.force_login(outsider)
        page = client.get(url)
        assert page.status_code == 404, outsider
        assert b"345574" not in page.content and escrow.reference.encode() not in page.content
        assert client.post(url, {"outcome": "succeed"}).status_code == 404
    assert Escrow.objects.get(pk=escrow.pk).status == Escrow.Status.PENDING_FUNDING


def test_checkout_page_shows_the_payment_to_payer_members_and_operators(client, parties, checkout):
    admin, organization, _ = parties
    _, url = checkout
    for viewer in (admin, CompanyMemberFactory(organization=organization), StaffFactory()):
        client.force_login(viewer)
        page = client.get(url)
        assert page.status_code == 200, viewer
        assert b"345574 USD" in page.content


def test_a_plain_member_sees_the_checkout_but_cannot_pay(client, parties, checkout, settle):
    _, organization, _ = parties
    escrow, url = checkout
    client.force_login(CompanyMemberFactory(organization=organization))
    assert settle(client.post, url, {"outcome": "succeed"}).status_code == 403
    assert Escrow.objects.get(pk=escrow.pk).status == Escrow.Status.PENDING_FUNDING


def test_onboarding_page_is_not_found_for_other_users(client, offline_world):
    engineer = EngineerFactory()
    account_id = services.engineer_onboarding_start(user=engineer, country="US").account_id
    url = f"/payments/offline/onboarding/{account_id}/"
    for outsider in (EngineerFactory(), CompanyAdminFactory()):
        client.force_login(outsider)
        page = client.get(url)
        assert page.status_code == 404, outsider
        assert b"transfers" not in page.content
        assert client.post(url).status_code == 404
    assert ConnectedAccount.objects.get(user=engineer).transfers_active is False
    for viewer in (engineer, StaffFactory()):
        client.force_login(viewer)
        assert client.get(url).status_code == 200


def test_offline_ids_are_random_while_idempotency_keys_still_replay(offline_world):
    provider = offline_world.provider

    def fund():
        return provider.funding_create(
            amount=1000, currency="USD", transfer_group="escrow:1", metadata={}, idempotency_key="fund:1"
        ).id

    def onboard():
        return provider.account_create(
            email="e@example.test", country="US", service_agreement="full", metadata={}, idempotency_key="account:1"
        ).id

    first_payment, first_account = fund(), onboard()
    assert (fund(), onboard()) == (first_payment, first_account)  # a replayed key finds the same object
    for minted, prefix, key in ((first_payment, "pi_off_", "fund:1"), (first_account, "acct_off_", "account:1")):
        assert minted.startswith(prefix)
        assert minted != prefix + hashlib.sha256(key.encode()).hexdigest()[:24]
        assert len(minted) - len(prefix) >= 22  # at least 128 random bits
    OfflineIdempotencyKey.objects.all().delete()
    OfflineObject.objects.all().delete()
    assert fund() != first_payment and onboard() != first_account
