"""Boundaries: the provider is chosen once; only the Stripe module imports stripe; payments never imports jobs."""

import ast
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from payments.providers import factory
from payments.providers.offline import OfflineProvider
from payments.providers.stripe import StripeProvider

PAYMENTS = Path(__file__).resolve().parents[2] / "payments"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_only_the_stripe_provider_imports_stripe_and_payments_never_imports_jobs_or_verification():
    importers = []
    for path in PAYMENTS.rglob("*.py"):
        imports = _imports(path)
        if any(name == "stripe" or name.startswith("stripe.") for name in imports):
            importers.append(path.relative_to(PAYMENTS).as_posix())
        forbidden = {name for name in imports if name.split(".")[0] in {"jobs", "verification"}}
        assert not forbidden, (path, forbidden)
    assert importers == ["providers/stripe.py"]


def test_the_factory_chooses_from_settings(settings):
    settings.PAYMENT_PROVIDER = "offline"
    assert isinstance(factory.payment_provider(), OfflineProvider)
    assert factory.payment_provider() is factory.payment_provider()
    settings.PAYMENT_PROVIDER = "stripe"
    settings.STRIPE_SECRET_KEY = "sk_test_123"
    settings.STRIPE_API_VERSION = "2025-09-30.clover"
    settings.STRIPE_MAX_NETWORK_RETRIES = 3
    provider = factory.payment_provider()
    assert isinstance(provider, StripeProvider)
    options = provider._client._requestor._options
    assert (options.stripe_version, options.max_network_retries) == ("2025-09-30.clover", 3)
    settings.PAYMENT_PROVIDER = "paypal"
    with pytest.raises(ImproperlyConfigured):
        factory.payment_provider()


def test_offline_provider_is_refused_in_production_unless_allowed():
    production = {"SETTINGS_MODULE": "marketplace.settings.production", "PAYMENT_PROVIDER": "offline"}
    with (
        override_settings(**production, OFFLINE_PAYMENTS_ALLOWED_IN_PRODUCTION=False),
        pytest.raises(ImproperlyConfigured, match="refused in production"),
    ):
        factory.provider_settings_check()
    with override_settings(**production, OFFLINE_PAYMENTS_ALLOWED_IN_PRODUCTION=True):
        factory.provider_settings_check()
    with override_settings(SETTINGS_MODULE="marketplace.settings.local", PAYMENT_PROVIDER="offline"):
        factory.provider_settings_check()
    with override_settings(PAYMENT_PROVIDER="stripe", STRIPE_SECRET_KEY=""), pytest.raises(ImproperlyConfigured):
        factory.provider_settings_check()


def test_services_is_a_package_split_by_concern_with_the_state_maps_in_states():
    import payments.services as services
    from payments import states
    from payments.services import escrows, funding, operations, payouts, reconciliation, webhook_events

    assert not (PAYMENTS / "services.py").exists() and (PAYMENTS / "services" / "__init__.py").exists()
    for path in (PAYMENTS / "services").glob("*.py"):
        assert len(path.read_text().splitlines()) < 600, f"{path.name} is a package waiting to happen"
    # callers keep `from payments.services import X`; each name is the defining module's object
    assert services.escrow_release is escrows.escrow_release
    assert services.escrow_funding_start is funding.escrow_funding_start
    assert services.payment_operation_execute is operations.payment_operation_execute
    assert services.engineer_onboarding_start is payouts.engineer_onboarding_start
    assert services.webhook_events_drain is webhook_events.webhook_events_drain
    assert services.payments_reconcile is reconciliation.payments_reconcile
    assert set(services.__all__) <= set(dir(services))
    # the allowed-transition maps have one home
    assert services.ESCROW_TRANSITIONS is states.ESCROW_TRANSITIONS
    for path in PAYMENTS.rglob("*.py"):
        if path.name != "states.py":
            assert "_TRANSITIONS = {" not in path.read_text(), path


def test_jobs_imports_only_the_public_surface_of_payments():
    jobs = PAYMENTS.parent / "jobs"
    internal = ("payments.services.", "payments.providers", "payments.webhooks", "payments.ledger", "payments.tasks")
    for path in jobs.rglob("*.py"):
        for name in _imports(path):
            assert not name.startswith(internal), (path, name)
