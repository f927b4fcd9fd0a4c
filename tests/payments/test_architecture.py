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
