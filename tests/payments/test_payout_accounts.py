"""Engineers' payout accounts: signed refresh/return URLs, fresh links for token users, dashboard login links,
requirements that appear later, cross-border recipients, deauthorization and failed bank payouts.

Stripe is the official SDK against the offline fake transport (tests/payments/stripe_fake.py); every new webhook
is delivered twice and handled twice."""

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import stripe
from django.test import Client

from common.models import AuditEvent
from payments import services, webhooks
from payments.models import ConnectedAccount, ProviderOperation, WebhookEvent
from tests.factories import EngineerFactory

from .conftest import funded_escrow

pytestmark = pytest.mark.django_db
ONBOARDING = "/api/v1/payments/onboarding/"


def _start(api, country="US") -> dict:
    response = api.post(ONBOARDING, {"country": country}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def _path(url: str) -> str:
    return urlsplit(url).path


def _audits(verb: str, account: ConnectedAccount) -> int:
    return AuditEvent.objects.filter(verb=verb, object_id=str(account.pk)).count()


def _deliver_twice(world, settle) -> list[dict]:
    """Deliver every new event, then each one again (a duplicate delivery), then handle each stored one again."""
    events = world.fake.events[world._delivered :]
    first = settle(world.deliver)
    assert all(r.status_code == 200 and r.json()["duplicate"] is False for r in first), [r.json() for r in first]
    for event in events:
        again = settle(world.post_event, event)
        assert again.status_code == 200 and again.json()["duplicate"] is True
        stored = WebhookEvent.objects.get(event_id=event["id"])
        assert stored.status == WebhookEvent.Status.PROCESSED, (stored.type, stored.last_error)
        settle(webhooks.webhook_event_dispatch, stored)  # a redrive or a second worker acts on it again
    return events


# ---- onboarding links ----------------------------------------------------------------------------


def test_refresh_url_is_signed_needs_no_login_and_redirects_to_a_fresh_link(api_client_for, stripe_world, monkeypatch):
    engineer = EngineerFactory()
    started = _start(api_client_for(engineer))
    link = stripe_world.fake.account_links[-1]
    assert link["type"] == "account_onboarding" and link["url"] == started["onboarding_url"]
    assert _path(link["refresh_url"]).startswith("/payments/onboarding/refresh/")
    assert _path(link["return_url"]).startswith("/payments/onboarding/return/")

    browser = Client()  # Stripe's redirect arrives in a browser that has no session with us
    response = browser.get(_path(link["refresh_url"]))
    assert response.status_code == 302 and response["Location"] != started["onboarding_url"]
    assert response["Location"] == stripe_world.fake.account_links[-1]["url"]
    assert len(stripe_world.fake.account_links) == 2
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]

    assert browser.post(_path(link["refresh_url"])).status_code == 405  # Stripe redirects with GET only
    token = _path(link["refresh_url"]).rstrip("/").rsplit("/", 1)[1]
    assert browser.get(f"/payments/onboarding/refresh/{token[:-2]}xx/").status_code == 404  # tampered
    return_token = _path(link["return_url"]).rstrip("/").rsplit("/", 1)[1]
    assert browser.get(f"/payments/onboarding/refresh/{return_token}/").status_code == 404  # the other purpose
    monkeypatch.setattr("payments.services.payouts.ONBOARDING_URL_MAX_AGE", timedelta(seconds=-1))
    expired = browser.get(_path(link["refresh_url"]))
    assert expired.status_code == 403 and b"expired" in expired.content
    assert len(stripe_world.fake.account_links) == 2  # nothing was made for a refused token


def test_return_page_works_without_login_and_shows_the_refetched_state(api_client_for, stripe_world):
    engineer = EngineerFactory()
    _start(api_client_for(engineer))
    return_path = _path(stripe_world.fake.account_links[-1]["return_url"])
    browser = Client()
    page = browser.get(return_path)
    assert page.status_code == 200 and b"not finished" in page.content
    account = ConnectedAccount.objects.get(user=engineer)
    stripe_world.fake.account_activate(account.provider_account_id)  # no webhook delivered: the page re-fetches
    page = browser.get(return_path)
    assert page.status_code == 200 and b"ready" in page.content
    account.refresh_from_db()
    assert account.transfers_active and account.details_submitted


def test_token_users_get_a_fresh_onboarding_url_at_any_time(api_client_for, stripe_world):
    engineer = EngineerFactory()
    api = api_client_for(engineer)  # Bearer token, no session
    first, second = _start(api), api.post(ONBOARDING, format="json").json()
    assert first["onboarding_url"] and second["onboarding_url"] and first["onboarding_url"] != second["onboarding_url"]
    assert first["account_id"] == second["account_id"] and second["link_purpose"] == "onboarding"
    assert stripe_world.fake.count("account") == 1


def test_country_comes_from_the_profile_when_it_has_one(api_client_for, offline_world, monkeypatch):
    engineer = EngineerFactory()
    monkeypatch.setattr(type(engineer.engineer_profile), "country", "IN", raising=False)
    body = api_client_for(engineer).post(ONBOARDING, format="json").json()
    assert (body["country"], body["service_agreement"]) == ("IN", "recipient")


# ---- Express dashboard and requirements that appear later ----------------------------------------


def test_onboarded_account_gets_a_login_link_and_no_onboarding_link(api_client_for, stripe_world, settle):
    engineer = EngineerFactory()
    api = api_client_for(engineer)
    assert _start(api)["dashboard_url"] is None  # Stripe makes login links only once onboarding is complete
    settle(stripe_world.onboard, engineer)
    body = api.post(ONBOARDING, format="json").json()
    assert body["onboarding_url"] is None and body["link_purpose"] is None
    assert body["dashboard_url"].startswith("https://connect.stripe.com/express/")
    assert stripe_world.fake.login_links[-1]["account"] == body["account_id"]


def test_requirements_that_appear_later_get_an_update_link(api_client_for, stripe_world, settle):
    engineer = EngineerFactory()
    api = api_client_for(engineer)
    account = settle(stripe_world.onboard, engineer)
    stripe_world.fake.account_require(account.provider_account_id, ["individual.verification.document"])
    _deliver_twice(stripe_world, settle)
    body = api.get(ONBOARDING).json()
    assert body["requirements_due"] == ["individual.verification.document"] and body["transfers_active"] is False
    body = api.post(ONBOARDING, format="json").json()
    assert body["link_purpose"] == "update" and body["onboarding_url"].startswith("https://connect.stripe.com/")
    assert body["dashboard_url"]  # the dashboard stays available meanwhile
    # Stripe refuses `account_update` links for accounts with an Express Dashboard: the update link is an
    # `account_onboarding` link, which collects whatever is outstanding.
    assert {link["type"] for link in stripe_world.fake.account_links} == {"account_onboarding"}
    with pytest.raises(stripe.InvalidRequestError, match="account_update"):
        stripe_world.fake_client.v1.account_links.create(
            {
                "account": account.provider_account_id,
                "type": "account_update",
                "refresh_url": "https://x.test/r",
                "return_url": "https://x.test/d",
            }
        )


# ---- cross-border recipients ---------------------------------------------------------------------


def test_cross_border_account_is_created_with_the_recipient_agreement_and_can_be_paid(
    api_client_for, stripe_world, settle, parties
):
    admin, org, _ = parties
    engineer = EngineerFactory()
    body = _start(api_client_for(engineer), country="de")
    assert (body["country"], body["service_agreement"]) == ("DE", "recipient")
    created = stripe_world.fake.objects[body["account_id"]]
    assert created["country"] == "DE" and created["tos_acceptance"]["service_agreement"] == "recipient"
    assert "card_payments" not in created["capabilities"]
    create_params = next(p for m, path, p in stripe_world.fake.requests if (m, path) == ("POST", "/v1/accounts"))
    assert create_params["country"] == "DE" and create_params["tos_acceptance"] == {"service_agreement": "recipient"}
    domestic = _start(api_client_for(EngineerFactory()), country="US")
    assert domestic["service_agreement"] == "full"

    settle(stripe_world.onboard, engineer)
    escrow = funded_escrow(stripe_world, settle, org, engineer, admin)
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r")
    op = ProviderOperation.objects.get(escrow=escrow, kind=ProviderOperation.Kind.TRANSFER)
    assert op.status == ProviderOperation.Status.SUCCEEDED
    assert stripe_world.fake.objects[op.provider_object_id]["destination"] == body["account_id"]


def test_the_fake_refuses_cross_border_transfers_to_a_full_agreement_account(stripe_world):
    info = stripe_world.provider.account_create(
        email="e@example.test", country="FR", service_agreement="full", metadata={}, idempotency_key="account:fr"
    )
    stripe_world.fake.account_activate(info.id)
    with pytest.raises(stripe.InvalidRequestError, match="recipient"):
        stripe_world.fake_client.v1.transfers.create({"amount": 1000, "currency": "usd", "destination": info.id})


# ---- deauthorization and failed payouts ----------------------------------------------------------


def test_deauthorized_account_is_disconnected_and_blocks_transfers_until_reconnected(
    api_client_for, stripe_world, settle, parties
):
    admin, org, engineer = parties
    account = settle(stripe_world.onboard, engineer)
    escrow = funded_escrow(stripe_world, settle, org, engineer, admin)
    stripe_world.fake.account_deauthorize(account.provider_account_id)
    events = _deliver_twice(stripe_world, settle)
    assert [e["type"] for e in events][-1] == "account.application.deauthorized"
    account.refresh_from_db()
    assert (account.status, account.transfers_active) == ("disconnected", False)
    assert "deauthorized" in account.status_reason
    assert _audits("payout_account_disconnected", account) == 1

    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r")
    op = ProviderOperation.objects.get(escrow=escrow, kind=ProviderOperation.Kind.TRANSFER)
    assert op.status == ProviderOperation.Status.AWAITING_PAYEE
    assert op.last_error == services.PAYEE_DISCONNECTED_REASON
    settle(services.payouts_retry_payable, older_than=timedelta(0))
    assert stripe_world.fake.count("transfer") == 0
    api = api_client_for(engineer)
    status = api.get(ONBOARDING).json()
    assert status["status"] == "disconnected" and status["onboarding_url"] is None

    # Reconnecting is onboarding again: a new Stripe account, then the waiting transfer is paid.
    body = api.post(ONBOARDING, format="json").json()
    assert body["status"] == "connected" and body["account_id"] != account.provider_account_id
    assert body["link_purpose"] == "onboarding" and body["country"] == "US"
    account.refresh_from_db()
    assert account.connections == 2 and _audits("payout_account_reconnected", account) == 1
    stripe_world.fake.account_activate(account.provider_account_id)
    settle(stripe_world.deliver)
    op.refresh_from_db()
    assert op.status == ProviderOperation.Status.SUCCEEDED and op.last_error == ""
    assert stripe_world.fake.objects[op.provider_object_id]["destination"] == account.provider_account_id


def test_a_stale_deauthorization_of_an_account_still_connected_changes_nothing(stripe_world, settle, parties):
    _, _, engineer = parties
    account = settle(stripe_world.onboard, engineer)
    event = stripe_world.fake.account_deauthorize(account.provider_account_id)
    stripe_world.fake.objects[account.provider_account_id]["deauthorized"] = False  # Stripe still answers for it
    stripe_world._delivered = len(stripe_world.fake.events)
    assert settle(stripe_world.post_event, event).status_code == 200
    account.refresh_from_db()
    assert account.status == "connected" and account.transfers_active


def test_failed_payout_is_recorded_once_and_shown_to_the_engineer(api_client_for, stripe_world, settle):
    engineer = EngineerFactory()
    account = settle(stripe_world.onboard, engineer)
    stripe_world.fake.payout_fail(account.provider_account_id, code="account_closed", amount=4200)
    events = _deliver_twice(stripe_world, settle)
    assert [e["type"] for e in events] == ["payout.failed"]
    # the payout was re-fetched as the connected account
    assert any(path.startswith("/v1/payouts/") for _, path, _ in stripe_world.fake.requests)
    account.refresh_from_db()
    failure = account.last_payout_failure
    assert (failure["payout"], failure["code"], failure["amount"]) == (
        events[0]["data"]["object"]["id"],
        "account_closed",
        4200,
    )
    assert _audits("payout_failed", account) == 1
    shown = api_client_for(engineer).get(ONBOARDING).json()["payout_failure"]
    assert shown["code"] == "account_closed" and shown["message"]


def test_a_paid_payout_is_recorded_once_and_clears_an_earlier_failure(api_client_for, stripe_world, settle):
    engineer = EngineerFactory()
    account = settle(stripe_world.onboard, engineer)
    stripe_world.fake.payout_fail(account.provider_account_id, amount=4200)
    _deliver_twice(stripe_world, settle)
    stripe_world.fake.payout_pay(account.provider_account_id, amount=4200)
    events = _deliver_twice(stripe_world, settle)
    assert [e["type"] for e in events] == ["payout.paid"]
    account.refresh_from_db()
    assert account.last_payout_paid["payout"] == events[0]["data"]["object"]["id"]
    assert account.last_payout_paid["amount"] == 4200 and account.last_payout_failure == {}
    assert _audits("payout_paid", account) == 1
    assert api_client_for(engineer).get(ONBOARDING).json()["payout_failure"] is None


def test_connect_events_for_accounts_we_never_created_are_stored_and_ignored(stripe_world, settle):
    info = stripe_world.provider.account_create(
        email="x@example.test", country="US", service_agreement="full", metadata={}, idempotency_key="account:x"
    )
    stripe_world.fake.payout_fail(info.id)
    stripe_world.fake.account_deauthorize(info.id)
    settle(stripe_world.deliver)
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {WebhookEvent.Status.IGNORED}


# ---- the offline provider behaves alike ----------------------------------------------------------


def test_offline_provider_simulates_the_same_account_events(api_client_for, offline_world, settle, parties):
    admin, org, engineer = parties
    account = settle(offline_world.onboard, engineer)
    provider = offline_world.provider
    assert provider.account_login_link_create(account_id=account.provider_account_id).url.startswith("http://")

    def simulate(outcome):
        for event in provider.account_simulate(account_id=account.provider_account_id, outcome=outcome):
            settle(services.webhook_event_store, event=event, source="offline")
            stored = WebhookEvent.objects.get(event_id=event.id)
            settle(webhooks.webhook_event_dispatch, stored)  # handled twice

    simulate("requirements_due")
    account.refresh_from_db()
    assert account.requirements_due and not account.transfers_active
    assert services.engineer_onboarding_start(user=engineer).link_purpose == "update"
    for event in provider.account_simulate_onboarding(account_id=account.provider_account_id):
        settle(services.webhook_event_store, event=event, source="offline")
    simulate("payout_failed")
    account.refresh_from_db()
    assert account.last_payout_failure["code"] == "account_closed" and _audits("payout_failed", account) == 1
    escrow = funded_escrow(offline_world, settle, org, engineer, admin)
    simulate("deauthorize")
    account.refresh_from_db()
    assert account.status == "disconnected" and _audits("payout_account_disconnected", account) == 1
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=5_000, reason="t1", verification_run_id="r")
    op = ProviderOperation.objects.get(escrow=escrow, kind=ProviderOperation.Kind.TRANSFER)
    assert (op.status, op.last_error) == (ProviderOperation.Status.AWAITING_PAYEE, services.PAYEE_DISCONNECTED_REASON)
