"""The Stripe provider: the only module that imports `stripe`.

One `StripeClient` per provider instance (no module-level global state), API version pinned from settings,
`max_network_retries` set, every SDK error mapped to a domain error. Engineers are Accounts v1 with
controller properties (Express dashboard, the platform collects fees and bears losses), asking only for the
`transfers` capability: separate charges and transfers.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import stripe

from common.errors import RetryableError

from ..errors import (
    AccountAccessRevoked,
    FundingFailed,
    IdempotencyConflict,
    ProviderObjectMissing,
    ProviderRejected,
    WebhookNotConfigured,
    WebhookRejected,
)
from .base import (
    BalanceTransaction,
    CheckoutSession,
    ConnectedAccountInfo,
    Customer,
    Dispute,
    FeeDetail,
    Funding,
    OnboardingLink,
    PaymentProvider,
    Payout,
    ProviderBalance,
    ProviderEvent,
    Refund,
    Transfer,
    TransferReversal,
    event_from_body,
)

T = TypeVar("T")

# A secret (sk_) or restricted (rk_) key names its mode in its prefix (https://docs.stripe.com/keys).
_KEY_MODES = {"sk_live_": True, "rk_live_": True, "sk_test_": False, "rk_test_": False}

logger = logging.getLogger(__name__)


def secret_key_livemode(secret_key: str) -> bool | None:
    """True for a live key, False for a test key, None when the prefix is not one Stripe issues."""
    return next((live for prefix, live in _KEY_MODES.items() if secret_key.startswith(prefix)), None)


def _get(obj: Any, key: str, default: Any = None) -> Any:
    try:
        value = obj[key]
    except (KeyError, TypeError, AttributeError):
        return default
    return default if value is None else value


def _id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return _get(value, "id")


def _metadata(obj: Any) -> dict[str, str]:
    meta = _get(obj, "metadata") or {}
    plain = meta.to_dict() if hasattr(meta, "to_dict") else dict(meta)
    return {str(k): str(v) for k, v in plain.items()}


def _call(fn: Callable[[], T]) -> T:
    """Map the SDK's errors onto the domain error family."""
    try:
        return fn()
    except stripe.CardError as exc:
        raise FundingFailed(exc.user_message or str(exc), code="card_declined") from exc
    except stripe.RateLimitError as exc:
        raise RetryableError(
            "Stripe is rate limiting requests; try again shortly.", code="provider_rate_limited"
        ) from exc
    except stripe.APIConnectionError as exc:
        raise RetryableError("Could not reach Stripe (network error or timeout).", code="provider_unreachable") from exc
    except stripe.IdempotencyError as exc:
        raise IdempotencyConflict(exc.user_message or str(exc)) from exc
    except stripe.AuthenticationError as exc:
        # 401: the key was rotated or revoked. The operation itself is sound: it waits, retryable, for the new key.
        logger.error("stripe_authentication_failed: check STRIPE_SECRET_KEY (rotated or revoked?)")
        raise RetryableError(
            "Stripe refused the platform's API key; the operation will be retried once the key is fixed.",
            code="provider_authentication_failed",
        ) from exc
    except stripe.InvalidRequestError as exc:
        if (exc.http_status or 0) >= 500:
            raise RetryableError("Stripe failed temporarily.", code="provider_unavailable") from exc
        if exc.code == "resource_missing":
            raise ProviderObjectMissing(exc.user_message or str(exc)) from exc
        if exc.http_status == 409:
            raise RetryableError("Stripe reported a conflicting concurrent request.", code="provider_conflict") from exc
        raise ProviderRejected(exc.user_message or str(exc), code=exc.code or "provider_rejected") from exc
    except stripe.StripeError as exc:
        if (exc.http_status or 0) >= 500 or exc.http_status in (409, 429):
            raise RetryableError("Stripe failed temporarily.", code="provider_unavailable") from exc
        raise ProviderRejected(
            exc.user_message or str(exc), code=getattr(exc, "code", None) or "provider_rejected"
        ) from exc


def _funding(pi: Any) -> Funding:
    error = _get(pi, "last_payment_error")
    return Funding(
        id=pi["id"],
        status=_get(pi, "status", ""),
        amount=int(_get(pi, "amount", 0)),
        currency=str(_get(pi, "currency", "")).upper(),
        client_secret=_get(pi, "client_secret"),
        charge_id=_id(_get(pi, "latest_charge")),
        failure_message=_get(error, "message") if error else None,
        transfer_group=_get(pi, "transfer_group"),
        livemode=bool(_get(pi, "livemode", False)),
        metadata=_metadata(pi),
    )


def _checkout(cs: Any) -> CheckoutSession:
    return CheckoutSession(
        id=cs["id"],
        url=_get(cs, "url"),
        status=_get(cs, "status", ""),
        payment_status=_get(cs, "payment_status", ""),
        payment_intent_id=_id(_get(cs, "payment_intent")),
        metadata=_metadata(cs),
    )


def _reversal(rev: Any, transfer_id: str = "") -> TransferReversal:
    return TransferReversal(
        id=rev["id"],
        transfer_id=_id(_get(rev, "transfer")) or transfer_id,
        amount=int(_get(rev, "amount", 0)),
        currency=str(_get(rev, "currency", "")).upper(),
        metadata=_metadata(rev),
    )


def _transfer(tr: Any) -> Transfer:
    return Transfer(
        id=tr["id"],
        amount=int(_get(tr, "amount", 0)),
        currency=str(_get(tr, "currency", "")).upper(),
        destination=_id(_get(tr, "destination")) or "",
        amount_reversed=int(_get(tr, "amount_reversed", 0)),
        transfer_group=_get(tr, "transfer_group"),
        source_transaction=_id(_get(tr, "source_transaction")),
        metadata=_metadata(tr),
        reversals=tuple(_reversal(rev, tr["id"]) for rev in (_get(_get(tr, "reversals") or {}, "data") or ())),
    )


def _refund(re: Any) -> Refund:
    return Refund(
        id=re["id"],
        amount=int(_get(re, "amount", 0)),
        currency=str(_get(re, "currency", "")).upper(),
        status=_get(re, "status", ""),
        payment_intent_id=_id(_get(re, "payment_intent")),
        charge_id=_id(_get(re, "charge")),
        failure_reason=_get(re, "failure_reason"),
        metadata=_metadata(re),
    )


def _account(acct: Any) -> ConnectedAccountInfo:
    capabilities = _get(acct, "capabilities") or {}
    requirements = _get(acct, "requirements") or {}
    return ConnectedAccountInfo(
        id=acct["id"],
        transfers_active=_get(capabilities, "transfers") == "active",
        details_submitted=bool(_get(acct, "details_submitted", False)),
        payouts_enabled=bool(_get(acct, "payouts_enabled", False)),
        requirements_due=tuple(_get(requirements, "currently_due") or ()),
        country=str(_get(acct, "country", "")).upper(),
        service_agreement=str(_get(_get(acct, "tos_acceptance") or {}, "service_agreement", "")),
    )


def _payout(po: Any, account_id: str) -> Payout:
    return Payout(
        id=po["id"],
        account_id=account_id,
        status=_get(po, "status", ""),
        amount=int(_get(po, "amount", 0)),
        currency=str(_get(po, "currency", "")).upper(),
        failure_code=_get(po, "failure_code"),
        failure_message=_get(po, "failure_message"),
    )


def _balance_transaction(txn: Any) -> BalanceTransaction | None:
    """An expanded balance transaction; None when Stripe has not made it yet (or it came back unexpanded)."""
    if txn is None or isinstance(txn, str):
        return None
    return BalanceTransaction(
        id=txn["id"],
        type=str(_get(txn, "type", "")),
        amount=int(_get(txn, "amount", 0)),
        fee=int(_get(txn, "fee", 0)),
        net=int(_get(txn, "net", 0)),
        currency=str(_get(txn, "currency", "")).upper(),
        status=str(_get(txn, "status", "")),
        available_on=_get(txn, "available_on"),
        source_id=_id(_get(txn, "source")),
        fee_details=tuple(
            FeeDetail(
                amount=int(_get(detail, "amount", 0)),
                currency=str(_get(detail, "currency", "")).upper(),
                type=str(_get(detail, "type", "")),
                description=str(_get(detail, "description", "")),
            )
            for detail in _get(txn, "fee_details") or ()
        ),
        exchange_rate=_get(txn, "exchange_rate"),
    )


def _dispute(dp: Any) -> Dispute:
    return Dispute(
        id=dp["id"],
        status=_get(dp, "status", ""),
        amount=int(_get(dp, "amount", 0)),
        currency=str(_get(dp, "currency", "")).upper(),
        charge_id=_id(_get(dp, "charge")),
        payment_intent_id=_id(_get(dp, "payment_intent")),
        # Stripe always includes a dispute's balance transactions as full objects.
        balance_transactions=tuple(
            bt for bt in (_balance_transaction(txn) for txn in _get(dp, "balance_transactions") or ()) if bt
        ),
        is_charge_refundable=bool(_get(dp, "is_charge_refundable", False)),
    )


def _balance_amounts(entries: Any) -> dict[str, int]:
    amounts: dict[str, int] = {}
    for entry in entries or ():
        currency = str(_get(entry, "currency", "")).upper()
        amounts[currency] = amounts.get(currency, 0) + int(_get(entry, "amount", 0))
    return amounts


class _NamedBytes(io.BytesIO):
    """File content with a name, as the SDK's multipart encoder reads it (`read()` and `name`)."""

    def __init__(self, content: bytes, name: str):
        super().__init__(content)
        self.name = name


class StripeProvider(PaymentProvider):
    name = "stripe"

    def __init__(
        self,
        *,
        secret_key: str,
        api_version: str,
        max_network_retries: int,
        webhook_secret: str,
        connect_webhook_secret: str,
        webhook_tolerance: int = 300,
        http_client: stripe.HTTPClient | None = None,
        idempotency_namespace: str | Callable[[], str] = "",
    ):
        self._client = stripe.StripeClient(
            secret_key,
            stripe_version=api_version,
            max_network_retries=max_network_retries,
            http_client=http_client,
        )
        self._webhook_secret = webhook_secret
        self._connect_webhook_secret = connect_webhook_secret
        self._tolerance = webhook_tolerance
        # A callable is resolved at the first keyed request (it may read the database), then kept.
        self._namespace = idempotency_namespace

    def _opts(self, idempotency_key: str) -> dict[str, str]:
        """Request options: our deterministic key inside this deployment's namespace (see payments/README.md)."""
        if callable(self._namespace):
            self._namespace = self._namespace()
        return {"idempotency_key": f"{self._namespace}:{idempotency_key}" if self._namespace else idempotency_key}

    # Funding
    def funding_create(
        self, *, amount, currency, transfer_group, metadata, idempotency_key, customer_id=None, receipt_email=None
    ) -> Funding:
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency.lower(),
            "transfer_group": transfer_group,
            "metadata": dict(metadata),
            "automatic_payment_methods": {"enabled": True},
        }
        if customer_id:
            params["customer"] = customer_id
        if receipt_email:
            params["receipt_email"] = receipt_email
        return _funding(_call(lambda: self._client.v1.payment_intents.create(params, self._opts(idempotency_key))))

    def funding_get(self, *, payment_intent_id) -> Funding:
        return _funding(_call(lambda: self._client.v1.payment_intents.retrieve(payment_intent_id)))

    def funding_cancel(self, *, payment_intent_id, idempotency_key) -> Funding:
        return _funding(
            _call(lambda: self._client.v1.payment_intents.cancel(payment_intent_id, {}, self._opts(idempotency_key)))
        )

    # Customers and Checkout
    def customer_create(self, *, email, name, metadata, idempotency_key) -> Customer:
        params: dict[str, Any] = {"name": name, "metadata": dict(metadata)}
        if email:
            params["email"] = email
        customer = _call(lambda: self._client.v1.customers.create(params, self._opts(idempotency_key)))
        return Customer(id=customer["id"], email=_get(customer, "email"))

    def checkout_create(
        self,
        *,
        amount,
        currency,
        description,
        customer_id,
        receipt_email,
        transfer_group,
        metadata,
        success_url,
        cancel_url,
        idempotency_key,
    ) -> CheckoutSession:
        payment_intent_data: dict[str, Any] = {
            "transfer_group": transfer_group,
            "metadata": dict(metadata),
            "description": description,
        }
        if receipt_email:
            payment_intent_data["receipt_email"] = receipt_email
        params = {
            "mode": "payment",
            "customer": customer_id,
            "line_items": [
                {
                    "price_data": {
                        "currency": currency.lower(),
                        "unit_amount": amount,
                        "product_data": {"name": description},
                    },
                    "quantity": 1,
                }
            ],
            "payment_intent_data": payment_intent_data,
            "metadata": dict(metadata),
            "client_reference_id": metadata.get("reference") or transfer_group,
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
        return _checkout(_call(lambda: self._client.v1.checkout.sessions.create(params, self._opts(idempotency_key))))

    def checkout_get(self, *, session_id) -> CheckoutSession:
        return _checkout(_call(lambda: self._client.v1.checkout.sessions.retrieve(session_id)))

    def checkout_expire(self, *, session_id, idempotency_key) -> CheckoutSession:
        return _checkout(
            _call(lambda: self._client.v1.checkout.sessions.expire(session_id, {}, self._opts(idempotency_key)))
        )

    # Transfers
    def transfer_create(
        self, *, amount, currency, destination, source_transaction, transfer_group, metadata, idempotency_key
    ) -> Transfer:
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency.lower(),
            "destination": destination,
            "transfer_group": transfer_group,
            "metadata": dict(metadata),
        }
        if source_transaction:
            params["source_transaction"] = source_transaction
        return _transfer(_call(lambda: self._client.v1.transfers.create(params, self._opts(idempotency_key))))

    def transfer_get(self, *, transfer_id) -> Transfer:
        return _transfer(_call(lambda: self._client.v1.transfers.retrieve(transfer_id)))

    def transfer_reverse(self, *, transfer_id, amount, idempotency_key, metadata=None) -> TransferReversal:
        # POST /v1/transfers/{id}/reversals: partial reversals allowed up to the unreversed amount
        # (https://docs.stripe.com/api/transfer_reversals/create).
        params: dict[str, Any] = {"amount": amount, "metadata": dict(metadata or {})}
        rev = _call(
            lambda: self._client.v1.transfers.reversals.create(transfer_id, params, self._opts(idempotency_key))
        )
        return _reversal(rev, transfer_id)

    def transfers_list(self, *, transfer_group) -> list[Transfer]:
        page = _call(lambda: self._client.v1.transfers.list({"transfer_group": transfer_group, "limit": 100}))
        return [_transfer(tr) for tr in _call(lambda: list(page.auto_paging_iter()))]

    # Refunds
    def refund_create(self, *, payment_intent_id, amount, metadata, idempotency_key) -> Refund:
        params = {"payment_intent": payment_intent_id, "amount": amount, "metadata": dict(metadata)}
        return _refund(_call(lambda: self._client.v1.refunds.create(params, self._opts(idempotency_key))))

    def refund_get(self, *, refund_id) -> Refund:
        return _refund(_call(lambda: self._client.v1.refunds.retrieve(refund_id)))

    def refunds_list(self, *, payment_intent_id) -> list[Refund]:
        page = _call(lambda: self._client.v1.refunds.list({"payment_intent": payment_intent_id, "limit": 100}))
        return [_refund(re) for re in _call(lambda: list(page.auto_paging_iter()))]

    # Connected accounts
    def account_create(self, *, email, country, service_agreement, metadata, idempotency_key) -> ConnectedAccountInfo:
        # The country is always sent (Stripe defaults it to the platform's); an account in another country than the
        # platform is a cross-border recipient: tos_acceptance.service_agreement=recipient, transfers only
        # (https://docs.stripe.com/connect/service-agreement-types).
        params = {
            "email": email,
            "country": country,
            "controller": {
                "fees": {"payer": "application"},
                "losses": {"payments": "application"},
                "requirement_collection": "stripe",
                "stripe_dashboard": {"type": "express"},
            },
            "capabilities": {"transfers": {"requested": True}},
            "tos_acceptance": {"service_agreement": service_agreement},
            "metadata": dict(metadata),
        }
        return _account(_call(lambda: self._client.v1.accounts.create(params, self._opts(idempotency_key))))

    def account_get(self, *, account_id) -> ConnectedAccountInfo:
        def retrieve() -> Any:
            try:
                return self._client.v1.accounts.retrieve(account_id)
            except stripe.PermissionError as exc:
                # After account.application.deauthorized Stripe refuses the platform's key for the account (403).
                raise AccountAccessRevoked("The payout account has disconnected from the platform.") from exc

        return _account(_call(retrieve))

    def account_link_create(self, *, account_id, refresh_url, return_url) -> OnboardingLink:
        # Always `account_onboarding`: it collects whatever is outstanding, on first onboarding and when requirements
        # appear later. `account_update` links cannot be made for accounts with a Stripe-hosted (Express) Dashboard
        # (https://docs.stripe.com/api/account_links/create).
        params = {
            "account": account_id,
            "refresh_url": refresh_url,
            "return_url": return_url,
            "type": "account_onboarding",
            "collection_options": {"fields": "currently_due"},
        }
        link = _call(lambda: self._client.v1.account_links.create(params))
        return OnboardingLink(url=link["url"], expires_at=_get(link, "expires_at"))

    def account_login_link_create(self, *, account_id) -> OnboardingLink:
        link = _call(lambda: self._client.v1.accounts.login_links.create(account_id))
        return OnboardingLink(url=link["url"], expires_at=None)

    def payout_get(self, *, account_id, payout_id) -> Payout:
        po = _call(lambda: self._client.v1.payouts.retrieve(payout_id, options={"stripe_account": account_id}))
        return _payout(po, account_id)

    # Balance transactions, re-fetched with the object they belong to (expand, one request each).
    _EXPAND = {"expand": ["balance_transaction"]}

    def charge_balance_transaction(self, *, charge_id) -> BalanceTransaction | None:
        charge = _call(lambda: self._client.v1.charges.retrieve(charge_id, self._EXPAND))
        return _balance_transaction(_get(charge, "balance_transaction"))

    def refund_balance_transaction(self, *, refund_id) -> BalanceTransaction | None:
        refund = _call(lambda: self._client.v1.refunds.retrieve(refund_id, self._EXPAND))
        return _balance_transaction(_get(refund, "balance_transaction"))

    def transfer_balance_transaction(self, *, transfer_id) -> BalanceTransaction | None:
        transfer = _call(lambda: self._client.v1.transfers.retrieve(transfer_id, self._EXPAND))
        return _balance_transaction(_get(transfer, "balance_transaction"))

    def platform_fee_balance_transactions(self, *, created_gte, limit) -> list[BalanceTransaction]:
        params = {"type": "stripe_fee", "created": {"gte": created_gte}, "limit": min(limit, 100)}
        page = _call(lambda: self._client.v1.balance_transactions.list(params))

        def first() -> list[Any]:
            found = []
            for txn in page.auto_paging_iter():
                found.append(txn)
                if len(found) >= limit:
                    break
            return found

        return [bt for bt in (_balance_transaction(txn) for txn in _call(first)) if bt]

    def balance_get(self) -> ProviderBalance:
        balance = _call(lambda: self._client.v1.balance.retrieve())
        return ProviderBalance(
            available=_balance_amounts(_get(balance, "available")), pending=_balance_amounts(_get(balance, "pending"))
        )

    # Disputes and webhooks
    def dispute_get(self, *, dispute_id) -> Dispute:
        return _dispute(_call(lambda: self._client.v1.disputes.retrieve(dispute_id)))

    def dispute_evidence_submit(self, *, dispute_id, text, files, idempotency_key) -> Dispute:
        # Files go to files.stripe.com as multipart/form-data with purpose dispute_evidence (PDF, JPEG or PNG;
        # https://docs.stripe.com/api/files/create), then POST /v1/disputes/{id} sets the evidence and submits
        # (`submit` defaults to true; https://docs.stripe.com/api/disputes/update). Each upload has its own key, so
        # a retry reuses the files Stripe already has.
        evidence: dict[str, Any] = {"uncategorized_text": text}
        for document in files:
            params = {"purpose": "dispute_evidence", "file": _NamedBytes(document.content, document.filename)}
            uploaded = _call(
                lambda params=params, key=f"{idempotency_key}:file:{document.field}": self._client.v1.files.create(
                    params, self._opts(key)
                )
            )
            evidence[document.field] = uploaded["id"]
        update = {"evidence": evidence, "submit": True}
        return _dispute(_call(lambda: self._client.v1.disputes.update(dispute_id, update, self._opts(idempotency_key))))

    def webhook_parse(self, *, payload: bytes, signature: str | None, connect: bool) -> ProviderEvent:
        secret = self._connect_webhook_secret if connect else self._webhook_secret
        if not secret:
            setting = "STRIPE_CONNECT_WEBHOOK_SECRET" if connect else "STRIPE_WEBHOOK_SECRET"
            raise WebhookNotConfigured(f"This endpoint cannot verify Stripe events until {setting} is set.")
        try:
            stripe.WebhookSignature.verify_header(payload, signature, secret, self._tolerance)
        except stripe.SignatureVerificationError as exc:
            raise WebhookRejected("Invalid or stale Stripe signature.", code="invalid_signature") from exc
        # The SDK only refuses timestamps too far in the past; a captured event signed with a clock set ahead
        # would otherwise stay replayable for as long as that clock is ahead.
        timestamp = int(
            next(value for key, value in (part.split("=", 1) for part in signature.split(",")) if key == "t")
        )
        if timestamp > time.time() + self._tolerance:
            raise WebhookRejected("Stripe signature timestamp is in the future.", code="invalid_signature")
        return event_from_body(payload, what="a Stripe event")


def stripe_provider_from_settings(
    settings: Any, http_client: Any = None, idempotency_namespace: str | Callable[[], str] = ""
) -> StripeProvider:
    return StripeProvider(
        secret_key=settings.STRIPE_SECRET_KEY,
        api_version=settings.STRIPE_API_VERSION,
        max_network_retries=settings.STRIPE_MAX_NETWORK_RETRIES,
        webhook_secret=settings.STRIPE_WEBHOOK_SECRET,
        connect_webhook_secret=settings.STRIPE_CONNECT_WEBHOOK_SECRET,
        webhook_tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS,
        http_client=http_client,
        idempotency_namespace=idempotency_namespace,
    )
