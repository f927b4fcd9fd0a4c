"""Configuration that cannot silently break: key mode vs STRIPE_LIVEMODE, test events at a live Connect endpoint,
deployment-namespaced idempotency keys, and webhook endpoints without a signing secret."""

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from payments import services
from payments.models import PaymentsInstallation, WebhookEvent
from payments.providers import factory
from payments.providers import stripe as stripe_module
from payments.providers.factory import payment_provider, provider_settings_check

from .conftest import CONNECT_SECRET, WEBHOOK_SECRET, sign, stripe_provider
from .stripe_fake import FakeStripe

URL = "/api/v1/payments/stripe/webhook/"
CONNECT_URL = "/api/v1/payments/stripe/connect-webhook/"
ROOT = Path(__file__).resolve().parents[2]


def _event(event_id="evt_cfg_1", *, livemode, event_type="account.updated", object_id="acct_unknown"):
    return {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "livemode": livemode,
        "created": int(time.time()),
        "account": "acct_unknown",
        "data": {"object": {"id": object_id, "object": event_type.split(".")[0]}},
    }


def _post(client, event, *, url, secret):
    payload = json.dumps(event)
    return client.post(url, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=sign(payload, secret))


@pytest.fixture
def stripe_settings(settings, monkeypatch):
    """PAYMENT_PROVIDER=stripe built by the factory (fresh cache), its HTTP transport the offline fake."""
    fake = FakeStripe()
    build = stripe_module.stripe_provider_from_settings
    monkeypatch.setattr(factory, "_cache", {})
    monkeypatch.setattr(
        stripe_module,
        "stripe_provider_from_settings",
        lambda s, http_client=None, **kw: build(s, http_client=fake, **kw),
    )
    settings.PAYMENT_PROVIDER = "stripe"
    settings.STRIPE_SECRET_KEY = "sk_test_configuration"
    settings.STRIPE_LIVEMODE = False
    return fake


# ---- 1. live/test mode from the key's prefix ------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,livemode", [("sk_live_x1", True), ("rk_live_x1", True), ("sk_test_x1", False), ("rk_test_x1", False)]
)
def test_a_key_whose_prefix_matches_stripe_livemode_starts(settings, key, livemode):
    settings.PAYMENT_PROVIDER, settings.STRIPE_SECRET_KEY, settings.STRIPE_LIVEMODE = "stripe", key, livemode
    provider_settings_check()


@pytest.mark.parametrize(
    "key,livemode,message",
    [
        ("sk_live_x1", False, "live-mode key but STRIPE_LIVEMODE=false"),
        ("rk_live_x1", False, "live-mode key but STRIPE_LIVEMODE=false"),
        ("sk_test_x1", True, "test-mode key but STRIPE_LIVEMODE=true"),
        ("rk_test_x1", True, "test-mode key but STRIPE_LIVEMODE=true"),
        ("pk_live_x1", True, "secret or restricted key"),
        ("sk_x1", False, "secret or restricted key"),
        ("", False, "needs STRIPE_SECRET_KEY"),
    ],
)
def test_a_mismatched_or_unknown_key_refuses_to_start(settings, key, livemode, message):
    settings.PAYMENT_PROVIDER, settings.STRIPE_SECRET_KEY, settings.STRIPE_LIVEMODE = "stripe", key, livemode
    with pytest.raises(ImproperlyConfigured, match=message) as exc:
        provider_settings_check()
    assert "x1" not in str(exc.value)  # the message never repeats the key


def test_the_offline_provider_ignores_the_stripe_key(settings):
    settings.PAYMENT_PROVIDER, settings.STRIPE_SECRET_KEY, settings.STRIPE_LIVEMODE = "offline", "sk_live_x1", False
    provider_settings_check()


def test_a_bad_idempotency_prefix_refuses_to_start(settings):
    settings.PAYMENTS_IDEMPOTENCY_PREFIX = "prod env"
    with pytest.raises(ImproperlyConfigured, match="PAYMENTS_IDEMPOTENCY_PREFIX"):
        provider_settings_check()


def test_an_unknown_lost_dispute_policy_refuses_to_start(settings):
    settings.LOST_DISPUTE_POLICY = "engineer_pays_everything"
    with pytest.raises(ImproperlyConfigured, match="LOST_DISPUTE_POLICY"):
        provider_settings_check()
    settings.LOST_DISPUTE_POLICY = "platform_absorbs"
    provider_settings_check()


def test_manage_py_check_refuses_a_live_key_in_a_test_mode_deployment():
    secret = "sk_live_" + "Q" * 24
    env = {**os.environ, "PAYMENT_PROVIDER": "stripe", "STRIPE_SECRET_KEY": secret, "STRIPE_LIVEMODE": "false"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "live-mode key but STRIPE_LIVEMODE=false" in result.stderr
    assert secret not in result.stderr + result.stdout


# ---- 2. test events at a live Connect endpoint ------------------------------------------------------------------


@pytest.mark.django_db
def test_test_events_at_the_live_connect_endpoint_are_acknowledged_and_ignored(client, settings, caplog):
    settings.STRIPE_LIVEMODE = True
    settings.STRIPE_SECRET_KEY = "sk_live_configuration"
    for provider_name in ("offline", "stripe"):
        settings.PAYMENT_PROVIDER = provider_name
        with caplog.at_level(logging.INFO, logger="payments.webhooks"):
            response = _post(client, _event(livemode=False), url=CONNECT_URL, secret=CONNECT_SECRET)
        assert response.status_code == 200, response.content
        assert response.json() == {"received": True, "ignored": "test_mode_event"}
        assert WebhookEvent.objects.count() == 0
        assert "evt_cfg_1" in caplog.text and CONNECT_SECRET not in caplog.text
        # the service refuses to store it as well, whoever calls it
        event = payment_provider().webhook_parse(
            payload=json.dumps(_event(livemode=False)).encode(),
            signature=sign(json.dumps(_event(livemode=False)), CONNECT_SECRET),
            connect=True,
        )
        assert services.webhook_event_store(event=event, source="connect") is False
        assert WebhookEvent.objects.count() == 0


@pytest.mark.django_db
def test_mode_mismatches_are_still_refused_where_stripe_never_sends_them(client, settings):
    settings.PAYMENT_PROVIDER = "offline"
    settings.STRIPE_LIVEMODE = True
    # the platform's own endpoint gets only its own mode's events
    response = _post(client, _event(livemode=False), url=URL, secret=WEBHOOK_SECRET)
    assert response.status_code == 400 and response.json()["error"]["code"] == "livemode_mismatch"
    # a live event never reaches a test deployment's Connect endpoint
    settings.STRIPE_LIVEMODE = False
    response = _post(client, _event(livemode=True), url=CONNECT_URL, secret=CONNECT_SECRET)
    assert response.status_code == 400 and response.json()["error"]["code"] == "livemode_mismatch"
    assert WebhookEvent.objects.count() == 0
    # a live event at the live Connect endpoint is stored as usual
    settings.STRIPE_LIVEMODE = True
    response = _post(client, _event("evt_cfg_live", livemode=True), url=CONNECT_URL, secret=CONNECT_SECRET)
    assert response.status_code == 200 and response.json()["duplicate"] is False
    assert list(WebhookEvent.objects.values_list("event_id", flat=True)) == ["evt_cfg_live"]


# ---- 3. idempotency keys namespaced per deployment --------------------------------------------------------------


@pytest.mark.django_db
def test_the_namespace_is_prefix_and_installation_id_stable_and_made_at_first_use(settings):
    first = services.idempotency_namespace()
    prefix, installation = first.split(":")
    assert prefix == "sp" and len(installation) == 16
    assert services.idempotency_namespace() == first  # deterministic for retries
    PaymentsInstallation.objects.all().delete()  # another database (or a flushed one)
    other = services.idempotency_namespace()
    assert other != first and services.idempotency_namespace() == other
    settings.PAYMENTS_IDEMPOTENCY_PREFIX = "staging"
    assert services.idempotency_namespace() == f"staging:{other.split(':')[1]}"


@pytest.mark.django_db
def test_keys_sent_to_stripe_carry_the_deployment_namespace(stripe_settings, settings):
    fake = stripe_settings
    settings.PAYMENTS_IDEMPOTENCY_PREFIX = "prod"
    provider = payment_provider()
    customer = provider.customer_create(email="", name="Org", metadata={}, idempotency_key="customer:organization:1")
    namespace = services.idempotency_namespace()
    assert namespace.startswith("prod:")
    assert list(fake.idempotency) == [f"{namespace}:customer:organization:1"]
    # a retry sends the same key and gets the same object back
    again = provider.customer_create(email="", name="Org", metadata={}, idempotency_key="customer:organization:1")
    assert again.id == customer.id and len(fake.idempotency) == 1


def test_two_deployments_sharing_a_stripe_account_never_replay_each_others_objects():
    fake = FakeStripe()
    prod, staging = stripe_provider(fake), stripe_provider(fake)
    prod._namespace, staging._namespace = "prod:aaaa", "staging:bbbb"
    params = {"amount": 5000, "currency": "USD", "transfer_group": "escrow_1", "metadata": {"escrow_id": "1"}}
    ours = prod.funding_create(**params, idempotency_key="fund:1")
    theirs = staging.funding_create(**params, idempotency_key="fund:1")
    assert ours.id != theirs.id
    assert prod.funding_create(**params, idempotency_key="fund:1").id == ours.id
    assert set(fake.idempotency) == {"prod:aaaa:fund:1", "staging:bbbb:fund:1"}


# ---- 4. no webhook secret: 503, nothing stored ------------------------------------------------------------------


@pytest.mark.django_db
def test_stripe_endpoints_without_a_secret_answer_503_and_store_nothing(client, stripe_settings, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    response = _post(client, _event(livemode=False), url=URL, secret="whsec_anything")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "webhook_secret_not_configured"
    assert set(response.json()["error"]) == {"code", "message", "fields"}
    assert "STRIPE_WEBHOOK_SECRET" in response.json()["error"]["message"]
    # the Connect endpoint has its own secret and still works
    assert _post(client, _event(livemode=False), url=CONNECT_URL, secret=CONNECT_SECRET).status_code == 200
    settings.STRIPE_WEBHOOK_SECRET, settings.STRIPE_CONNECT_WEBHOOK_SECRET = WEBHOOK_SECRET, ""
    response = _post(client, _event("evt_cfg_2", livemode=False), url=CONNECT_URL, secret="whsec_anything")
    assert response.status_code == 503
    assert "STRIPE_CONNECT_WEBHOOK_SECRET" in response.json()["error"]["message"]
    assert list(WebhookEvent.objects.values_list("event_id", flat=True)) == ["evt_cfg_1"]
