"""The one place that chooses the payment provider, from settings. Nothing else branches on it."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .base import PaymentProvider

_PREFIX = re.compile(r"[A-Za-z0-9._-]{1,40}")
_lock = threading.Lock()
_cache: dict[tuple, PaymentProvider] = {}
_override: list[PaymentProvider] = []


def _is_production() -> bool:
    return str(getattr(settings, "SETTINGS_MODULE", "") or "").endswith(".production")


# Who bears a chargeback lost after the engineer was paid (payments/services/disputes.py).
LOST_DISPUTE_POLICIES = ("reverse_engineer_share", "platform_absorbs")


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
    prefix = settings.PAYMENTS_IDEMPOTENCY_PREFIX
    if not _PREFIX.fullmatch(prefix):
        raise ImproperlyConfigured(
            f"PAYMENTS_IDEMPOTENCY_PREFIX must be 1-40 letters, digits, '-', '_' or '.', not {prefix!r}."
        )
    policy = settings.LOST_DISPUTE_POLICY
    if policy not in LOST_DISPUTE_POLICIES:
        raise ImproperlyConfigured(
            f"LOST_DISPUTE_POLICY must be one of {', '.join(LOST_DISPUTE_POLICIES)}, not {policy!r}."
        )
    if name == "stripe":
        _stripe_mode_check(settings.STRIPE_SECRET_KEY, settings.STRIPE_LIVEMODE)


def _stripe_mode_check(secret_key: str, livemode: bool) -> None:
    """The key's prefix says which mode Stripe will use; STRIPE_LIVEMODE must say the same (webhooks check it)."""
    if not secret_key:
        raise ImproperlyConfigured("PAYMENT_PROVIDER=stripe needs STRIPE_SECRET_KEY.")
    from .stripe import secret_key_livemode

    key_live = secret_key_livemode(secret_key)
    if key_live is None:
        raise ImproperlyConfigured(
            "STRIPE_SECRET_KEY must be a Stripe secret or restricted key (sk_live_, rk_live_, sk_test_ or rk_test_); "
            f"it starts with {secret_key[:3]!r}."
        )
    if key_live != livemode:
        key_mode, setting = ("live", "false") if key_live else ("test", "true")
        raise ImproperlyConfigured(
            f"STRIPE_SECRET_KEY is a {key_mode}-mode key but STRIPE_LIVEMODE={setting}; "
            f"set STRIPE_LIVEMODE={'true' if key_live else 'false'} or use the other key."
        )


def _build(name: str) -> PaymentProvider:
    provider_settings_check()
    if name == "stripe":
        from ..services.support import idempotency_namespace
        from .stripe import stripe_provider_from_settings

        return stripe_provider_from_settings(settings, idempotency_namespace=idempotency_namespace)
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
        settings.PAYMENTS_IDEMPOTENCY_PREFIX,
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
