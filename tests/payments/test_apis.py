"""Payments API and the offline checkout pages."""

import pytest

from accounts.models import User
from payments.models import ConnectedAccount, Escrow
from tests.factories import CompanyAdminFactory, CompanyMemberFactory, EngineerFactory, StaffFactory, UserFactory

from .conftest import funded_escrow, open_escrow

pytestmark = pytest.mark.django_db


def test_escrow_summary_is_visible_to_payer_members_payee_and_staff(api_client_for, parties, settle, offline_world):
    admin, org, engineer = parties
    escrow = funded_escrow(offline_world, settle, org, engineer, admin)
    url = f"/api/v1/payments/escrows/{escrow.pk}/"
    for user in (admin, CompanyMemberFactory(organization=org), engineer, StaffFactory()):
        response = api_client_for(user).get(url)
        assert response.status_code == 200, user
        body = response.json()
        assert (body["state"], body["funded"], body["held"], body["released"], body["refunded"], body["fee_kept"]) == (
            "funded",
            220_000,
            220_000,
            0,
            0,
            0,
        )
        assert body["frozen"] is False
        assert [(line["account"], line["amount"]) for line in body["ledger_lines"]] == [
            ("held", 220_000),
            ("company_funding", -220_000),
        ]
    for outsider in (CompanyAdminFactory(), EngineerFactory()):
        response = api_client_for(outsider).get(url)
        assert response.status_code == 404 and response.json()["error"]["code"] == "escrow_not_found"
    assert api_client_for().get(url).status_code == 401
    assert api_client_for(admin).get("/api/v1/payments/escrows/999999/").status_code == 404


def test_engineer_onboarding_start_and_status(api_client_for, offline_world, settle, client):
    engineer = EngineerFactory()
    api = api_client_for(engineer)
    assert api.get("/api/v1/payments/onboarding/").json() == {
        "account_id": None,
        "onboarding_url": None,
        "link_purpose": None,
        "dashboard_url": None,
        "status": None,
        "status_reason": "",
        "country": "",
        "service_agreement": "",
        "transfers_active": False,
        "details_submitted": False,
        "requirements_due": [],
        "payout_failure": None,
    }
    missing = api.post("/api/v1/payments/onboarding/")
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "country_required"
    invalid = api.post("/api/v1/payments/onboarding/", {"country": "XX"}, format="json")
    assert invalid.status_code == 400 and invalid.json()["error"]["code"] == "invalid_country"
    started = api.post("/api/v1/payments/onboarding/", {"country": "us"}, format="json").json()
    assert (started["country"], started["service_agreement"], started["link_purpose"]) == ("US", "full", "onboarding")
    assert started["account_id"].startswith("acct_") and started["onboarding_url"].endswith(
        f"/payments/offline/onboarding/{started['account_id']}/"
    )
    assert api.post("/api/v1/payments/onboarding/").json()["account_id"] == started["account_id"]
    client.force_login(engineer)
    page = client.get(f"/payments/offline/onboarding/{started['account_id']}/")
    assert page.status_code == 200 and b"Complete onboarding" in page.content
    settle(client.post, f"/payments/offline/onboarding/{started['account_id']}/")
    status = api.get("/api/v1/payments/onboarding/").json()
    assert status["transfers_active"] is True and status["details_submitted"] is True
    response = api_client_for(CompanyAdminFactory()).post("/api/v1/payments/onboarding/", {"country": "US"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "not_an_engineer"


def test_onboarding_with_stripe_returns_the_account_link(api_client_for, stripe_world):
    engineer = EngineerFactory()
    body = api_client_for(engineer).post("/api/v1/payments/onboarding/", {"country": "US"}, format="json").json()
    assert body["onboarding_url"].startswith("https://connect.stripe.com/")
    assert ConnectedAccount.objects.get(user=engineer).provider_account_id == body["account_id"]


def test_offline_confirm_action_for_payer_admins_and_staff_only(api_client_for, parties, settle, offline_world):
    from payments import services

    admin, org, engineer = parties
    escrow = open_escrow(org, engineer)
    pi = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin).payment_intent_id
    url = f"/api/v1/payments/offline/payment-intents/{pi}/confirm/"
    for user in (CompanyMemberFactory(organization=org), engineer, CompanyAdminFactory()):
        assert api_client_for(user).post(url, {"outcome": "succeed"}, format="json").status_code == 403
    assert api_client_for(admin).post(url, {"outcome": "bogus"}, format="json").status_code == 400
    declined = settle(api_client_for(admin).post, url, {"outcome": "decline"}, format="json")
    assert declined.status_code == 200
    assert Escrow.objects.get(pk=escrow.pk).funding_failure_reason == "Your card was declined."
    response = settle(api_client_for(StaffFactory()).post, url, {"outcome": "succeed"}, format="json")
    assert response.status_code == 200 and response.json()["escrow_id"] == escrow.pk
    assert Escrow.objects.get(pk=escrow.pk).status == Escrow.Status.FUNDED
    again = api_client_for(admin).post(url, {"outcome": "succeed"}, format="json")
    assert again.status_code == 409  # already paid: a conflict with the payment's state, not a provider failure
    assert again.json()["error"]["code"] == "payment_intent_unexpected_state"
    declined_late = api_client_for(admin).post(url, {"outcome": "decline"}, format="json")
    assert declined_late.status_code == 409
    assert (
        api_client_for(admin)
        .post("/api/v1/payments/offline/payment-intents/pi_nope/confirm/", {"outcome": "succeed"}, format="json")
        .status_code
        == 404
    )


def test_confirm_action_is_not_supported_by_the_stripe_provider(api_client_for, parties, settle, stripe_world):
    from payments import services

    admin, org, engineer = parties
    escrow = open_escrow(org, engineer)
    pi = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin).payment_intent_id
    response = api_client_for(admin).post(
        f"/api/v1/payments/offline/payment-intents/{pi}/confirm/", {"outcome": "succeed"}, format="json"
    )
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_supported_by_provider"


def test_offline_checkout_page(client, parties, settle, offline_world):
    from payments import services

    admin, org, engineer = parties
    escrow = open_escrow(org, engineer)
    pi = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin).payment_intent_id
    url = f"/payments/offline/checkout/{pi}/"
    assert client.get(url).status_code == 302  # log in first
    client.force_login(admin)
    page = client.get(url)
    assert page.status_code == 200
    for button in (b'value="succeed"', b'value="decline"', b'value="dispute"'):
        assert button in page.content
    response = settle(client.post, url, {"outcome": "succeed"})
    assert response.status_code == 200
    assert Escrow.objects.get(pk=escrow.pk).status == Escrow.Status.FUNDED
    client.force_login(UserFactory(account_type=User.AccountType.COMPANY))
    assert client.post(url, {"outcome": "dispute"}).status_code == 404  # not the payer: not revealed
    assert client.get("/payments/offline/checkout/pi_missing/").status_code == 404


def test_confirming_a_paid_payment_again_on_the_checkout_page_is_409(client, parties, settle, offline_world):
    from payments import services

    admin, org, engineer = parties
    escrow = open_escrow(org, engineer)
    pi = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin).payment_intent_id
    url = f"/payments/offline/checkout/{pi}/"
    client.force_login(admin)
    assert settle(client.post, url, {"outcome": "succeed"}).status_code == 200
    assert client.post(url, {"outcome": "succeed"}).status_code == 409
    assert Escrow.objects.get(pk=escrow.pk).status == Escrow.Status.FUNDED
