"""The one payment-provider interface. Implementations return these frozen dataclasses, never SDK objects,
and raise only common.errors / payments.errors (RetryableError for anything worth trying again)."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.parsers import JsonTooDeep, json_loads_bounded

from ..errors import NotSupported, WebhookRejected


@dataclass(frozen=True)
class Funding:
    """A PaymentIntent on the platform account."""

    id: str
    status: str  # requires_payment_method, requires_confirmation, requires_action, processing, succeeded, canceled
    amount: int
    currency: str
    client_secret: str | None
    charge_id: str | None
    failure_message: str | None
    transfer_group: str | None
    livemode: bool
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


@dataclass(frozen=True)
class Customer:
    """The paying organization at the provider (receipts, saved payment methods, the dashboard)."""

    id: str
    email: str | None


@dataclass(frozen=True)
class CheckoutSession:
    """A hosted payment page. Stripe creates its own PaymentIntent when the payer confirms (API 2022-08-01+)."""

    id: str
    url: str | None
    status: str  # open, complete, expired
    payment_status: str  # paid, unpaid, no_payment_required
    payment_intent_id: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TransferReversal:
    id: str
    transfer_id: str
    amount: int
    currency: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Transfer:
    id: str
    amount: int
    currency: str
    destination: str
    amount_reversed: int
    transfer_group: str | None
    source_transaction: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)
    # The reversals Stripe embeds in the transfer (its most recent ten), with our metadata.
    reversals: tuple[TransferReversal, ...] = ()


@dataclass(frozen=True)
class Refund:
    id: str
    amount: int
    currency: str
    status: str  # pending, requires_action, succeeded, failed, canceled
    payment_intent_id: str | None
    charge_id: str | None
    failure_reason: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConnectedAccountInfo:
    id: str
    transfers_active: bool
    details_submitted: bool
    payouts_enabled: bool
    requirements_due: tuple[str, ...] = ()
    country: str = ""
    service_agreement: str = ""


@dataclass(frozen=True)
class OnboardingLink:
    """A single-use, short-lived link into the provider's hosted onboarding (never stored)."""

    url: str
    expires_at: int | None


@dataclass(frozen=True)
class Payout:
    """A payout from a connected account's balance to its bank (the engineer's side of the money)."""

    id: str
    account_id: str
    status: str  # paid, pending, in_transit, canceled, failed
    amount: int
    currency: str
    failure_code: str | None
    failure_message: str | None


@dataclass(frozen=True)
class FeeDetail:
    amount: int
    currency: str
    type: str  # stripe_fee, application_fee, tax (and, with some pricing plans, others)
    description: str


@dataclass(frozen=True)
class BalanceTransaction:
    """How one charge, refund, transfer or dispute moved the platform's provider balance: the gross `amount`
    (negative when money left), the provider's `fee` (negative when a fee was returned), `net` = amount - fee,
    in the balance's (settlement) `currency`. `status` is pending until `available_on` (a Unix time)."""

    id: str
    type: str  # charge, payment, refund, transfer, adjustment (disputes), stripe_fee, ...
    amount: int
    fee: int
    net: int
    currency: str
    status: str  # pending, available
    available_on: int | None
    source_id: str | None
    fee_details: tuple[FeeDetail, ...] = ()
    exchange_rate: float | None = None


@dataclass(frozen=True)
class ProviderBalance:
    """The platform's balance at the provider, per currency (minor units)."""

    available: Mapping[str, int]
    pending: Mapping[str, int]


@dataclass(frozen=True)
class Dispute:
    id: str
    status: str  # warning_needs_response, warning_under_review, warning_closed, needs_response, under_review, won, lost
    amount: int
    currency: str
    charge_id: str | None
    payment_intent_id: str | None
    # Funds withdrawn (with the dispute fee) and, if won, reinstated: zero, one or two.
    balance_transactions: tuple[BalanceTransaction, ...] = ()
    # Stripe: "If true, it's still possible to refund the disputed payment" (true during most inquiries).
    is_charge_refundable: bool = False

    @property
    def open(self) -> bool:
        return self.status in {"warning_needs_response", "warning_under_review", "needs_response", "under_review"}

    @property
    def inquiry(self) -> bool:
        """An inquiry (pre-dispute, `warning_*`): no money has been withdrawn yet."""
        return self.status.startswith("warning_")


@dataclass(frozen=True)
class EvidenceFile:
    """A document for a dispute's evidence; Stripe takes PDF, JPEG or PNG (purpose `dispute_evidence`)."""

    filename: str
    content: bytes
    field: str  # the evidence field it fills: service_documentation, uncategorized_file, ...


@dataclass(frozen=True)
class ProviderEvent:
    """A verified webhook event, as stored: we act on the re-fetched object, never on this snapshot."""

    id: str
    type: str
    livemode: bool
    object_type: str
    object_id: str
    account: str
    payload: Mapping[str, Any]


class PaymentProvider(abc.ABC):
    name: str

    # Funding: a PaymentIntent for amount + fee on the platform account.
    @abc.abstractmethod
    def funding_create(
        self,
        *,
        amount: int,
        currency: str,
        transfer_group: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
        customer_id: str | None = None,
        receipt_email: str | None = None,
    ) -> Funding: ...

    # The paying organization, created once per organization (deterministic idempotency key).
    @abc.abstractmethod
    def customer_create(
        self, *, email: str, name: str, metadata: Mapping[str, str], idempotency_key: str
    ) -> Customer: ...

    # A hosted checkout page (mode payment) for the same amount, transfer group and metadata as the funding.
    @abc.abstractmethod
    def checkout_create(
        self,
        *,
        amount: int,
        currency: str,
        description: str,
        customer_id: str,
        receipt_email: str | None,
        transfer_group: str,
        metadata: Mapping[str, str],
        success_url: str,
        cancel_url: str,
        idempotency_key: str,
    ) -> CheckoutSession: ...

    @abc.abstractmethod
    def checkout_get(self, *, session_id: str) -> CheckoutSession: ...

    @abc.abstractmethod
    def checkout_expire(self, *, session_id: str, idempotency_key: str) -> CheckoutSession: ...

    @abc.abstractmethod
    def funding_get(self, *, payment_intent_id: str) -> Funding: ...

    @abc.abstractmethod
    def funding_cancel(self, *, payment_intent_id: str, idempotency_key: str) -> Funding: ...

    def funding_confirm_url(self, *, payment_intent_id: str) -> str | None:
        """Where a person confirms a payment without Stripe.js (only the offline provider has one)."""
        return None

    def funding_simulate(self, *, payment_intent_id: str, outcome: str) -> list[ProviderEvent]:
        """Play the payer's side (offline provider only): succeed, decline, dispute, dispute_won, dispute_lost."""
        raise NotSupported("This payment provider has no simulated checkout.")

    def account_simulate_onboarding(self, *, account_id: str) -> list[ProviderEvent]:
        """Complete an engineer's onboarding (offline provider only)."""
        raise NotSupported("This payment provider has no simulated onboarding.")

    def account_simulate(self, *, account_id: str, outcome: str) -> list[ProviderEvent]:
        """Play the connected account's side (offline provider only): requirements_due, payout_failed, deauthorize."""
        raise NotSupported("This payment provider has no simulated payout accounts.")

    # Transfers to connected accounts (separate charges and transfers).
    @abc.abstractmethod
    def transfer_create(
        self,
        *,
        amount: int,
        currency: str,
        destination: str,
        source_transaction: str | None,
        transfer_group: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> Transfer: ...

    @abc.abstractmethod
    def transfer_get(self, *, transfer_id: str) -> Transfer: ...

    @abc.abstractmethod
    def transfer_reverse(
        self, *, transfer_id: str, amount: int, idempotency_key: str, metadata: Mapping[str, str] | None = None
    ) -> TransferReversal: ...

    @abc.abstractmethod
    def transfers_list(self, *, transfer_group: str) -> list[Transfer]: ...

    # Refunds of the funding charge.
    @abc.abstractmethod
    def refund_create(
        self, *, payment_intent_id: str, amount: int, metadata: Mapping[str, str], idempotency_key: str
    ) -> Refund: ...

    @abc.abstractmethod
    def refund_get(self, *, refund_id: str) -> Refund: ...

    @abc.abstractmethod
    def refunds_list(self, *, payment_intent_id: str) -> list[Refund]: ...

    # Engineers' connected accounts.
    @abc.abstractmethod
    def account_create(
        self,
        *,
        email: str,
        country: str,
        service_agreement: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> ConnectedAccountInfo:
        """`country` is ISO 3166-1 alpha-2; `service_agreement` is `full` or `recipient` (cross-border)."""

    @abc.abstractmethod
    def account_get(self, *, account_id: str) -> ConnectedAccountInfo:
        """The account's current state; AccountAccessRevoked once it has deauthorized the platform."""

    @abc.abstractmethod
    def account_link_create(self, *, account_id: str, refresh_url: str, return_url: str) -> OnboardingLink:
        """A fresh hosted-onboarding link that collects whatever the account currently owes (first onboarding, or
        requirements that appeared later)."""

    @abc.abstractmethod
    def account_login_link_create(self, *, account_id: str) -> OnboardingLink:
        """A single-use link into the engineer's dashboard (onboarded accounts only)."""

    @abc.abstractmethod
    def payout_get(self, *, account_id: str, payout_id: str) -> Payout: ...

    # Balance transactions: re-fetched with the object they belong to; None while the provider has not made it yet.
    @abc.abstractmethod
    def charge_balance_transaction(self, *, charge_id: str) -> BalanceTransaction | None: ...

    @abc.abstractmethod
    def refund_balance_transaction(self, *, refund_id: str) -> BalanceTransaction | None: ...

    @abc.abstractmethod
    def transfer_balance_transaction(self, *, transfer_id: str) -> BalanceTransaction | None: ...

    @abc.abstractmethod
    def balance_get(self) -> ProviderBalance: ...

    @abc.abstractmethod
    def platform_fee_balance_transactions(self, *, created_gte: int, limit: int) -> list[BalanceTransaction]:
        """Fees the provider bills the platform separately (type `stripe_fee`: Connect account and payout fees),
        created at or after `created_gte` (Unix time), newest first, at most `limit`."""

    # Disputes and webhooks.
    @abc.abstractmethod
    def dispute_get(self, *, dispute_id: str) -> Dispute:
        """The dispute with its balance transactions (withdrawal with the dispute fee, reinstatement if won)."""

    @abc.abstractmethod
    def dispute_evidence_submit(
        self, *, dispute_id: str, text: str, files: list[EvidenceFile], idempotency_key: str
    ) -> Dispute:
        """Upload `files` (purpose dispute_evidence), set them and `text` (uncategorized_text) as the dispute's
        evidence and submit it to the bank. Submitting is final at Stripe."""

    @abc.abstractmethod
    def webhook_parse(self, *, payload: bytes, signature: str | None, connect: bool) -> ProviderEvent:
        """Verify the signature on the raw body (tolerance from settings) and parse; WebhookRejected otherwise."""


def event_from_body(payload: bytes, *, what: str) -> ProviderEvent:
    """Parse a webhook body whose signature the provider has verified; `what` names the event in the refusal."""
    try:
        data = json_loads_bounded(payload)
    except JsonTooDeep as exc:
        raise WebhookRejected(str(exc), code="json_too_deep") from exc
    except ValueError as exc:
        raise WebhookRejected("The webhook body is not JSON.", code="malformed_webhook") from exc
    if not isinstance(data, dict) or data.get("object") != "event" or not data.get("id"):
        raise WebhookRejected(f"The webhook body is not {what}.", code="malformed_webhook")
    return event_from_payload(data)


def event_from_payload(data: Mapping[str, Any]) -> ProviderEvent:
    obj = (data.get("data") or {}).get("object") or {}
    return ProviderEvent(
        id=str(data.get("id") or ""),
        type=str(data.get("type") or ""),
        livemode=bool(data.get("livemode")),
        object_type=str(obj.get("object") or ""),
        object_id=str(obj.get("id") or ""),
        account=str(data.get("account") or ""),
        payload=data,
    )
