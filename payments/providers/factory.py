"""The one place that chooses the payment provider, from settings. Nothing else branches on it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .base import PaymentProvider

_lock = threading.Lock()
_cache: dict[tuple, PaymentProvider] = {}
_override: list[PaymentProvider] = []


def _is_production() -> bool:
    return str(getattr(settings, "SETTINGS_MODULE", "") or "").endswith(".production")


def provider_settings_check() -> None:
    """Refuse a misconfiguration at start-up (called from the app's ready())."""
    name = settings.PAYMENT_PROVIDER
    if name not in {"offline", "stripe"}:
        raise ImproperlyConfigured(f"PAYMENT_PROVIDER must be 'offline' or 'stripe', not {name!r}.")
    if name == "offline" and _is_production() and not settings.OFFLINE_PAYMENTS_ALLOWED_IN_PRODUCTION:
        raise ImproperlyConfigured(
            "The offline payment provider moves no real money and is refused in production settings; "
            "set PAYMENT_PROVIDER=stripe or, deliberately, OFFLINE_PAYMENTS_ALLOWED_IN_PRODUCTION=true."
        )
    if name == "stripe" and not settings.STRIPE_SECRET_KEY:
        raise ImproperlyConfigured("PAYMENT_PROVIDER=stripe needs STRIPE_SECRET_KEY.")


def _build(name: str) -> PaymentProvider:
    provider_settings_check()
    if name == "stripe":
        from .stripe import stripe_provider_from_settings

        return stripe_provider_from_settings(settings)
    from .offline import OfflineProvider

    return OfflineProvider(
        base_url=settings.PUBLIC_BASE_URL,
        webhook_secret=settings.STRIPE_WEBHOOK_SECRET,
        connect_webhook_secret=settings.STRIPE_CONNECT_WEBHOOK_SECRET,
        tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS,
    )


def payment_provider() -> PaymentProvider:
    if _override:
        return _override[-1]
    key = (
        settings.PAYMENT_PROVIDER,
        settings.STRIPE_SECRET_KEY,
        settings.STRIPE_API_VERSION,
        settings.STRIPE_WEBHOOK_SECRET,
        settings.STRIPE_CONNECT_WEBHOOK_SECRET,
        settings.PUBLIC_BASE_URL,
    )
    provider = _cache.get(key)
    if provider is None:
        with _lock:
            provider = _cache.get(key) or _build(settings.PAYMENT_PROVIDER)
            _cache[key] = provider
    return provider


@contextlib.contextmanager
def provider_override(provider: PaymentProvider) -> Iterator[PaymentProvider]:
    """Tests: use this provider instance (e.g. Stripe through its offline transport fake)."""
    _override.append(provider)
    try:
        yield provider
    finally:
        _override.remove(provider)
