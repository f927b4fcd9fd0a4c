"""Payments fixtures: both providers behind one harness, eager Celery, and the ledger invariant after every test."""

from __future__ import annotations

import json

import pytest
import stripe
from django.contrib.auth.models import Group
from django.db import transaction

from accounts.operators import PAYMENTS_OPERATOR
from marketplace.celery import app as celery_app
from payments import services
from payments.ledger import ledger_invariant_violations
from payments.models import ConnectedAccount, Escrow
from payments.providers.factory import provider_override
from payments.providers.offline import OfflineProvider
from payments.providers.stripe import StripeProvider
from tests.factories import CompanyAdminFactory, EngineerFactory, StaffFactory

from .stripe_fake import FakeStripe

WEBHOOK_SECRET = "whsec_test_account"


CONNECT_SECRET = "whsec_test_connect"


@pytest.fixture(autouse=True)
def _ledger_invariant(request):
    """After every payments test that touched the database: the ledger invariant holds."""
    uses_db = request.node.get_closest_marker("django_db") is not None or any(
        name in request.fixturenames for name in ("db", "transactional_db")
    )
    if not uses_db:
        yield
        return
    request.getfixturevalue("_django_db_helper")  # set up before (so torn down after) this check
    yield
    problems = ledger_invariant_violations()
    assert not problems, "ledger invariant broken:\n" + "\n".join(problems)


@pytest.fixture(autouse=True)
def _payments_settings(settings):
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_CONNECT_WEBHOOK_SECRET = CONNECT_SECRET
    settings.STRIPE_LIVEMODE = False
    settings.PAYMENT_PROVIDER = "offline"
    settings.PUBLIC_BASE_URL = "http://testserver"


@pytest.fixture(autouse=True)
def _eager_celery():
    previous = celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager, celery_app.conf.task_eager_propagates = previous


def sign(payload: str, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)


def stripe_provider(fake: FakeStripe, *, retries: int = 2) -> StripeProvider:
    return StripeProvider(
        secret_key="sk_test_fake",
        api_version="2025-09-30.clover",
        max_network_retries=retries,
        webhook_secret=WEBHOOK_SECRET,
        connect_webhook_secret=CONNECT_SECRET,
        http_client=fake,
    )


class World:
    """One provider plus the other side of it (payer, bank, onboarding), the same calls for both providers."""

    def __init__(self, kind: str, client):
        self.kind = kind
        self.client = client
        self.fake = FakeStripe() if kind == "stripe" else None
        self.provider = (
            stripe_provider(self.fake)
            if self.fake
            else OfflineProvider(
                base_url="http://testserver", webhook_secret=WEBHOOK_SECRET, connect_webhook_secret=CONNECT_SECRET
            )
        )
        self._delivered = 0

    # The payer's side.
    def pay(self, payment_intent_id: str, outcome: str = "succeed") -> None:
        if self.fake is None:
            for event in self.provider.funding_simulate(payment_intent_id=payment_intent_id, outcome=outcome):
                services.webhook_event_store(event=event, source="offline")
            return
        card = {"succeed": "pm_card_visa", "decline": "pm_card_chargeDeclined", "dispute": "pm_card_createDispute"}[
            outcome
        ]
        try:
            self.fake_client.v1.payment_intents.confirm(payment_intent_id, {"payment_method": card})
        except stripe.CardError:
            pass
        self.deliver()

    def pay_checkout(self, session_id: str, *, processing: bool = False) -> None:
        """The payer completes the hosted Checkout page (offline: its confirm page)."""
        if self.fake is None:
            session = self.provider.checkout_get(session_id=session_id)
            for event in self.provider.funding_simulate(payment_intent_id=session.payment_intent_id, outcome="succeed"):
                services.webhook_event_store(event=event, source="offline")
            return
        self.fake.checkout_pay(session_id, processing=processing)
        self.deliver()

    @property
    def fake_client(self) -> stripe.StripeClient:
        return stripe.StripeClient("sk_test_fake", http_client=self.fake, max_network_retries=0)

    def dispute_close(self, escrow: Escrow, status: str) -> None:
        escrow = Escrow.objects.get(pk=escrow.pk)
        if self.fake is None:
            outcome = {"won": "dispute_won", "lost": "dispute_lost"}[status]
            for event in self.provider.funding_simulate(payment_intent_id=escrow.payment_intent_id, outcome=outcome):
                services.webhook_event_store(event=event, source="offline")
            return
        dispute = next(d for d in self.fake.of_kind("dispute") if d["payment_intent"] == escrow.payment_intent_id)
        self.fake.dispute_close(dispute["id"], status)
        self.deliver()

    def onboard(self, engineer) -> ConnectedAccount:
        services.engineer_onboarding_start(user=engineer, country="US")
        account = ConnectedAccount.objects.get(user=engineer)
        if self.fake is None:
            for event in self.provider.account_simulate_onboarding(account_id=account.provider_account_id):
                services.webhook_event_store(event=event, source="offline")
        else:
            self.fake.account_activate(account.provider_account_id)
            self.deliver()
        account.refresh_from_db()
        return account

    # Stripe's side: post every new event, signed, to the right endpoint.
    def deliver(self) -> list:
        responses = []
        if self.fake is None:
            return responses
        events = self.fake.events[self._delivered :]
        self._delivered = len(self.fake.events)
        for event in events:
            responses.append(self.post_event(event))
        return responses

    def post_event(self, event: dict, *, secret: str | None = None, timestamp: int | None = None):
        connect = "account" in event
        payload = json.dumps(event)
        secret = secret or (CONNECT_SECRET if connect else WEBHOOK_SECRET)
        url = "/api/v1/payments/stripe/connect-webhook/" if connect else "/api/v1/payments/stripe/webhook/"
        return self.client.post(
            url, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=sign(payload, secret, timestamp)
        )


@pytest.fixture(params=["offline", "stripe"])
def world(request, client):
    w = World(request.param, client)
    with provider_override(w.provider):
        yield w


@pytest.fixture
def stripe_world(client):
    w = World("stripe", client)
    with provider_override(w.provider):
        yield w


@pytest.fixture
def offline_world(client):
    w = World("offline", client)
    with provider_override(w.provider):
        yield w


@pytest.fixture
def parties(db):
    admin = CompanyAdminFactory()
    organization = admin.memberships.first().organization
    engineer = EngineerFactory()
    return admin, organization, engineer


@pytest.fixture
def settle(django_capture_on_commit_callbacks):
    """Run a block and then every on-commit side effect it (transitively) scheduled, like a worker would."""

    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    return run


def open_escrow(organization, engineer, *, amount=200_000, fee=20_000, reference=None, currency="USD") -> Escrow:
    with transaction.atomic():
        return services.escrow_open(
            payer_organization=organization,
            payee=engineer,
            amount=amount,
            fee=fee,
            currency=currency,
            reference=reference or f"test:{Escrow.objects.count() + 1}-{engineer.pk}",
        )


def funded_escrow(world: World, settle, organization, engineer, admin, **kwargs) -> Escrow:
    escrow = open_escrow(organization, engineer, **kwargs)
    instructions = settle(services.escrow_funding_start, escrow_id=escrow.pk, actor=admin)
    settle(world.pay, instructions.payment_intent_id)
    escrow.refresh_from_db()
    assert escrow.status == Escrow.Status.FUNDED, escrow.status
    return escrow


def operator(role: str = PAYMENTS_OPERATOR):
    """An operator holding one role (not a superuser)."""
    user = StaffFactory(is_superuser=False)
    user.groups.add(Group.objects.get(name=role))
    return user


def inquiry(world, settle, parties):
    """A funded escrow whose charge the cardholder's bank asks about (an inquiry), frozen by its webhook."""
    admin, org, engineer = parties
    escrow = funded_escrow(world, settle, org, engineer, admin)
    dispute = world.fake.dispute_open(escrow.charge_id, inquiry=True)
    settle(world.deliver)
    escrow.refresh_from_db()
    assert escrow.frozen and escrow.dispute_id == dispute["id"]
    return escrow, dispute
