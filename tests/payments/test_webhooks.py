"""Stripe webhooks: signed with the SDK's helper; duplicates, shuffled order, stale, forged, unknown objects."""

import json
import random
import time

import pytest
from django.test import Client

from payments import selectors, services
from payments.models import Escrow, ProviderOperation, WebhookEvent

from .conftest import CONNECT_SECRET, WEBHOOK_SECRET, funded_escrow, open_escrow, sign

pytestmark = pytest.mark.django_db
URL = "/api/v1/payments/stripe/webhook/"
CONNECT_URL = "/api/v1/payments/stripe/connect-webhook/"


def _event(event_id="evt_1", event_type="payment_intent.succeeded", object_id="pi_unknown", livemode=False, **extra):
    return {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "livemode": livemode,
        "created": int(time.time()),
        "api_version": "2025-09-30.clover",
        "data": {"object": {"id": object_id, "object": event_type.split(".")[0]}},
        **extra,
    }


def _post(client, event, *, url=URL, secret=WEBHOOK_SECRET, timestamp=None, signature=None):
    payload = json.dumps(event)
    header = signature if signature is not None else sign(payload, secret, timestamp)
    return client.post(url, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=header)


@pytest.fixture(params=["offline", "stripe"])
def any_provider(request, settings):
    settings.PAYMENT_PROVIDER = request.param
    settings.STRIPE_SECRET_KEY = "sk_test_not_used"


def test_a_signed_event_is_stored_acknowledged_and_processed_once(client, settle, any_provider):
    response = settle(_post, client, _event())
    assert response.status_code == 200 and response.json() == {"received": True, "duplicate": False}
    duplicate = settle(_post, client, _event())
    assert duplicate.status_code == 200 and duplicate.json()["duplicate"] is True
    stored = WebhookEvent.objects.get()
    assert (stored.event_id, stored.type, stored.object_id, stored.source) == (
        "evt_1",
        "payment_intent.succeeded",
        "pi_unknown",
        "account",
    )
    # an event about an object we never created is stored and ignored, without fetching it
    assert stored.status == WebhookEvent.Status.IGNORED and stored.processed_count == 1


def test_forged_stale_and_unsigned_events_get_400_and_change_nothing(client, any_provider):
    assert _post(client, _event(), secret="whsec_forged").status_code == 400
    assert _post(client, _event(), timestamp=int(time.time()) - 301).status_code == 400
    assert _post(client, _event(), signature="").status_code == 400
    assert _post(client, _event(), signature="t=abc,v1=zz").status_code == 400
    assert _post(client, _event(), url=CONNECT_URL).status_code == 400  # the account secret is not the Connect one
    payload = json.dumps(_event())
    tampered = client.post(
        URL,
        data=payload.replace("evt_1", "evt_2"),
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(payload, WEBHOOK_SECRET),
    )
    assert tampered.status_code == 400
    assert tampered.json()["error"]["code"] == "invalid_signature"
    assert WebhookEvent.objects.count() == 0


def test_recent_timestamp_within_tolerance_is_accepted(client, settle, any_provider):
    assert settle(_post, client, _event(), timestamp=int(time.time()) - 250).status_code == 200


def test_livemode_must_match_the_configured_mode(client, settings, any_provider):
    response = _post(client, _event(livemode=True))
    assert response.status_code == 400 and response.json()["error"]["code"] == "livemode_mismatch"
    settings.STRIPE_LIVEMODE = True
    assert _post(client, _event(event_id="evt_2", livemode=False)).status_code == 400
    assert WebhookEvent.objects.count() == 0


def test_malformed_bodies_and_methods(client, any_provider):
    for body in ("not json", json.dumps({"id": "x", "object": "charge"}), json.dumps([1, 2])):
        response = client.post(
            URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=sign(body, WEBHOOK_SECRET)
        )
        assert response.status_code == 400
    assert client.get(URL).status_code == 405


def test_csrf_exempt_and_no_authentication_needed(settle, any_provider):
    client = Client(enforce_csrf_checks=True)
    assert settle(_post, client, _event()).status_code == 200
    assert (
        settle(
            _post,
            client,
            _event(event_id="evt_c", event_type="account.updated", object_id="acct_x", account="acct_x"),
            url=CONNECT_URL,
            secret=CONNECT_SECRET,
        ).status_code
        == 200
    )


def test_unknown_event_types_are_stored_and_ignored(client, settle, any_provider):
    settle(_post, client, _event(event_type="customer.subscription.created", object_id="sub_1"))
    stored = WebhookEvent.objects.get()
    assert stored.status == WebhookEvent.Status.IGNORED and stored.type == "customer.subscription.created"


def test_processing_task_twice_has_one_effect(client, settle, any_provider):
    settle(_post, client, _event())
    stored = WebhookEvent.objects.get()
    from payments import tasks

    tasks.webhook_event_process(stored.pk)
    tasks.webhook_event_process(stored.pk)
    stored.refresh_from_db()
    assert stored.processed_count == 1 and stored.attempts == 1


def test_stripe_lifecycle_replayed_duplicated_and_shuffled_has_one_effect(parties, settle, stripe_world):
    """The whole lifecycle's events, delivered late, three times each, in random order: same final state."""
    admin, org, engineer = parties
    world = stripe_world
    settle(world.onboard, engineer)
    escrow = open_escrow(org, engineer)
    instructions = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    world.fake_client.v1.payment_intents.confirm(instructions.payment_intent_id, {"payment_method": "pm_card_visa"})
    events = list(world.fake.events[world._delivered :])
    world._delivered = len(world.fake.events)
    deliveries = events * 3
    random.Random(7).shuffle(deliveries)
    for event in deliveries:
        assert settle(world.post_event, event).status_code == 200
    escrow.refresh_from_db()
    assert escrow.status == Escrow.Status.FUNDED
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=5000, reason="t1", verification_run_id="r")
    settle(services.escrow_refund_remainder, escrow_id=escrow.pk, reason="done")
    later = list(world.fake.events[world._delivered :])
    world._delivered = len(world.fake.events)
    deliveries = (later + events) * 3
    random.Random(8).shuffle(deliveries)
    for event in deliveries:
        assert settle(world.post_event, event).status_code == 200
    summary = selectors.escrow_summary(escrow.pk)
    assert (summary.funded, summary.paid, summary.fee_kept, summary.refunded, summary.held) == (
        220_000,
        100_000,
        10_000,
        110_000,
        0,
    )
    assert WebhookEvent.objects.count() == len({e["id"] for e in world.fake.events})
    assert set(WebhookEvent.objects.values_list("processed_count", flat=True)) == {1}
    assert world.fake.count("transfer") == 1 and world.fake.count("refund") == 1


def test_connect_events_update_the_engineers_account(parties, settle, stripe_world):
    admin, org, engineer = parties
    world = stripe_world
    escrow = funded_escrow(world, settle, org, engineer, admin)
    settle(services.escrow_release, escrow_id=escrow.pk, fraction_bps=10_000, reason="pass", verification_run_id="r")
    assert ProviderOperation.objects.get(escrow=escrow).status == "awaiting_payee"
    settle(services.engineer_onboarding_start, user=engineer, country="US")
    account = engineer.connected_account
    world.fake.account_activate(account.provider_account_id)
    responses = settle(world.deliver)  # capability.updated, account.updated (and the funded escrow's expired page)
    assert len(responses) >= 2 and {r.status_code for r in responses} == {200}
    assert set(
        WebhookEvent.objects.filter(type__in=["account.updated", "capability.updated"]).values_list("source", flat=True)
    ) == {"connect"}
    account.refresh_from_db()
    assert account.transfers_active
    assert ProviderOperation.objects.get(escrow=escrow).status == "succeeded"


def test_events_timestamped_beyond_the_tolerance_in_the_future_are_refused(client, any_provider):
    response = _post(client, _event(), timestamp=int(time.time()) + 301)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert WebhookEvent.objects.count() == 0


def test_small_clock_skew_into_the_future_is_accepted(client, settle, any_provider):
    assert settle(_post, client, _event(), timestamp=int(time.time()) + 60).status_code == 200


def test_offline_provider_without_a_configured_secret_refuses_the_old_built_in_one(client, settings):
    settings.PAYMENT_PROVIDER = "offline"
    settings.STRIPE_WEBHOOK_SECRET = ""
    settings.STRIPE_CONNECT_WEBHOOK_SECRET = ""
    for url in (URL, CONNECT_URL):
        response = _post(client, _event(), url=url, secret="whsec_offline")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_signature"
    assert WebhookEvent.objects.count() == 0


def test_offline_secret_is_derived_per_installation(settings):
    from payments.providers.offline import offline_webhook_secret

    settings.SECRET_KEY = "installation-one-secret-key-for-tests"
    first = offline_webhook_secret(connect=False)
    assert first.startswith("whsec_") and first != "whsec_offline"
    assert offline_webhook_secret(connect=True) != first
    settings.SECRET_KEY = "installation-two-secret-key-for-tests"
    assert offline_webhook_secret(connect=False) != first


DEEP_BODIES = {
    "arrays": "[" * 1000 + "]" * 1000,
    "objects": '{"a":' * 1000 + "1" + "}" * 1000,
    "inside an event": json.dumps(_event())[:-1] + ', "extra": ' + "[" * 100_000 + "]" * 100_000 + "}",
}


@pytest.mark.parametrize("shape", DEEP_BODIES)
@pytest.mark.parametrize("url, secret", [(URL, WEBHOOK_SECRET), (CONNECT_URL, CONNECT_SECRET)])
def test_validly_signed_deeply_nested_bodies_are_400(client, any_provider, url, secret, shape):
    body = DEEP_BODIES[shape]
    response = Client(raise_request_exception=False).post(
        url, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=sign(body, secret)
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "json_too_deep"
    assert WebhookEvent.objects.count() == 0


def test_bodies_over_the_request_size_cap_are_json_413(any_provider, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    payload = json.dumps(_event(padding="x" * 4096))
    for url in (URL, CONNECT_URL):
        response = Client(raise_request_exception=False).post(
            url, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=sign(payload, WEBHOOK_SECRET)
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
