"""The offline provider: no network, deterministic, following Stripe's lifecycle.

Objects are Stripe-shaped dicts kept in our own database (payments.OfflineObject), so every process (web,
worker, the checkout page) sees the same state. Funding waits for a confirm step (`funding_simulate`, driven by
the offline confirm API and the small checkout page); the events it produces are stored and processed
through the same path as Stripe's webhooks. Ids are random, like Stripe's (an id that a page or a link carries
must not be guessable); the idempotency key is what stays deterministic, and it maps a replay to its object.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.utils.crypto import salted_hmac

from common.money import STRIPE_MAXIMUM_CHARGE, currency_amount_step, currency_minimum_charge

from ..errors import (
    AccountAccessRevoked,
    IdempotencyConflict,
    PaymentStateConflict,
    ProviderObjectMissing,
    ProviderRejected,
    WebhookRejected,
)
from ..models import OfflineIdempotencyKey, OfflineObject
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
    event_from_payload,
)

DECLINE_MESSAGE = "Your card was declined."

# The offline provider's own fee model, so that fee booking, the report and reconciliation work without Stripe.
# It is a simulation: nobody is ever charged these fees. Shaped like Stripe's standard US card pricing (2.9% + 30
# minor units per charge, nothing returned on refunds, a 1500 dispute fee on the withdrawal, none returned if won).
OFFLINE_FEE_BPS = 290
OFFLINE_FEE_FIXED = 30
OFFLINE_DISPUTE_FEE = 1500
OFFLINE_CHARGE_AVAILABLE_AFTER = 2 * 24 * 3600


def _digest(*parts: str) -> str:
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:24]


def _random_id(prefix: str) -> str:
    return f"{prefix}_off_{secrets.token_urlsafe(18)}"


def offline_webhook_secret(*, connect: bool) -> str:
    """The webhook secret of an installation that configured none: derived from SECRET_KEY, so it differs per
    installation and a secret written in the code cannot sign events for any of them."""
    purpose = "connect" if connect else "account"
    return "whsec_" + salted_hmac("speedproof.payments.offline.webhook-secret", purpose, algorithm="sha256").hexdigest()


def _amount_check(amount: int, currency: str, *, charge: bool) -> None:
    """Stripe's amount rules, so the offline provider refuses what Stripe would (docs.stripe.com/currencies)."""
    step = currency_amount_step(currency)
    if amount % step:
        raise ProviderRejected(f"Invalid amount: {currency.lower()} amounts must end in 0.", code="invalid_amount")
    if charge and amount < currency_minimum_charge(currency):
        raise ProviderRejected("Amount is below the minimum charge amount.", code="amount_too_small")
    if charge and amount > STRIPE_MAXIMUM_CHARGE:
        raise ProviderRejected("Amount must be no more than 99999999.", code="amount_too_large")


def _fingerprint(endpoint: str, params: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps([endpoint, params], sort_keys=True, default=str).encode()).hexdigest()


class OfflineProvider(PaymentProvider):
    name = "offline"

    def __init__(
        self,
        *,
        base_url: str,
        webhook_secret: str,
        connect_webhook_secret: str,
        tolerance: int = 300,
        fee_bps: int = OFFLINE_FEE_BPS,
        fee_fixed: int = OFFLINE_FEE_FIXED,
        dispute_fee: int = OFFLINE_DISPUTE_FEE,
    ):
        self._fee_bps, self._fee_fixed, self._dispute_fee = fee_bps, fee_fixed, dispute_fee
        self._base_url = base_url.rstrip("/")
        self._webhook_secret = webhook_secret or offline_webhook_secret(connect=False)
        self._connect_webhook_secret = connect_webhook_secret or webhook_secret or offline_webhook_secret(connect=True)
        self._tolerance = tolerance

    # ---- store helpers -------------------------------------------------------------------------
    def _load(self, object_id: str, object_type: str | None = None, *, lock: bool = False) -> dict:
        qs = OfflineObject.objects.select_for_update() if lock else OfflineObject.objects
        row = qs.filter(object_id=object_id).first()
        if row is None or (object_type and row.object_type != object_type):
            raise ProviderObjectMissing(f"No such {object_type or 'object'}: '{object_id}'", code="resource_missing")
        return row.data

    def _save(self, data: dict, *, group: str = "") -> dict:
        OfflineObject.objects.update_or_create(
            object_id=data["id"], defaults={"object_type": data["object"], "data": data, "group": group}
        )
        return data

    def _idempotent(self, key: str, endpoint: str, params: Mapping[str, Any], create) -> tuple[dict, bool]:
        """Create once per key; a replay returns the object, a reused key with other parameters is refused.

        Returns the object and whether this call created it.
        """
        fingerprint = _fingerprint(endpoint, params)
        existing = OfflineIdempotencyKey.objects.filter(key=key).first()
        if existing is None:
            try:
                with transaction.atomic():
                    data = create()
                    OfflineIdempotencyKey.objects.create(key=key, fingerprint=fingerprint, object_id=data["id"])
                    return data, True
            except IntegrityError:
                existing = OfflineIdempotencyKey.objects.get(key=key)
        if existing.fingerprint != fingerprint:
            raise IdempotencyConflict(
                "Keys for idempotent requests can only be used with the same parameters they were first used with."
            )
        return self._load(existing.object_id), False

    def _event(self, event_type: str, obj: dict, *, account: str = "") -> ProviderEvent:
        seq = OfflineObject.objects.filter(object_type="event", group=obj["id"]).count()
        for attempt in range(20):  # a concurrent event for the same object took this number: take the next
            payload = {
                "id": f"evt_off_{_digest(obj['id'], str(seq + attempt))}",
                "object": "event",
                "api_version": None,
                "created": int(time.time()),
                "livemode": False,
                "pending_webhooks": 0,
                "request": {"id": None, "idempotency_key": None},
                "type": event_type,
                "data": {"object": obj},
            }
            if account:
                payload["account"] = account
            try:
                with transaction.atomic():
                    OfflineObject.objects.create(
                        object_id=payload["id"], object_type="event", data=payload, group=obj["id"]
                    )
            except IntegrityError:
                continue
            return event_from_payload(payload)
        raise ProviderRejected("Could not number the event.", code="event_conflict")

    # ---- funding -------------------------------------------------------------------------------
    def funding_create(
        self, *, amount, currency, transfer_group, metadata, idempotency_key, customer_id=None, receipt_email=None
    ) -> Funding:
        params = {
            "amount": amount,
            "currency": currency.lower(),
            "transfer_group": transfer_group,
            "metadata": dict(metadata),
            "customer": customer_id,
            "receipt_email": receipt_email,
        }

        def create() -> dict:
            _amount_check(amount, currency, charge=True)
            pi_id = _random_id("pi")
            return self._save(
                {
                    "id": pi_id,
                    "object": "payment_intent",
                    "amount": amount,
                    "amount_received": 0,
                    "currency": currency.lower(),
                    "status": "requires_payment_method",
                    "client_secret": None,
                    "latest_charge": None,
                    "last_payment_error": None,
                    "transfer_group": transfer_group,
                    "metadata": dict(metadata),
                    "customer": customer_id,
                    "receipt_email": receipt_email,
                    "livemode": False,
                    "created": int(time.time()),
                },
                group=transfer_group,
            )

        pi, _ = self._idempotent(idempotency_key, "payment_intents.create", params, create)
        return self._funding(pi)

    # ---- customers and checkout ----------------------------------------------------------------
    def customer_create(self, *, email, name, metadata, idempotency_key) -> Customer:
        params = {"email": email, "name": name, "metadata": dict(metadata)}

        def create() -> dict:
            return self._save(
                {
                    "id": _random_id("cus"),
                    "object": "customer",
                    "email": email,
                    "name": name,
                    "metadata": dict(metadata),
                    "livemode": False,
                }
            )

        customer, _ = self._idempotent(idempotency_key, "customers.create", params, create)
        return Customer(id=customer["id"], email=customer.get("email"))

    def _checkout(self, cs: dict) -> CheckoutSession:
        return CheckoutSession(
            id=cs["id"],
            url=cs.get("url"),
            status=cs["status"],
            payment_status=cs["payment_status"],
            payment_intent_id=cs.get("payment_intent"),
            metadata=cs.get("metadata") or {},
        )

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
        """The offline "hosted page" is the confirm page of the transfer group's open intent (one is created when
        there is none), so a checkout and a direct confirmation can never both take the company's money."""
        params = {
            "amount": amount,
            "currency": currency.lower(),
            "customer": customer_id,
            "transfer_group": transfer_group,
            "metadata": dict(metadata),
            "success_url": success_url,
            "cancel_url": cancel_url,
        }

        def create() -> dict:
            open_intents = [
                row.data
                for row in OfflineObject.objects.filter(object_type="payment_intent", group=transfer_group)
                if row.data["status"] == "requires_payment_method" and row.data["amount"] == amount
            ]
            pi = (
                open_intents[-1]
                if open_intents
                else self._funding_raw(
                    self.funding_create(
                        amount=amount,
                        currency=currency,
                        transfer_group=transfer_group,
                        metadata=metadata,
                        idempotency_key=f"{idempotency_key}:intent",
                        customer_id=customer_id,
                        receipt_email=receipt_email,
                    ).id
                )
            )
            return self._save(
                {
                    "id": _random_id("cs"),
                    "object": "checkout.session",
                    "mode": "payment",
                    "url": self.funding_confirm_url(payment_intent_id=pi["id"]),
                    "status": "open",
                    "payment_status": "unpaid",
                    "payment_intent": pi["id"],
                    "customer": customer_id,
                    "amount_total": amount,
                    "currency": currency.lower(),
                    "metadata": dict(metadata),
                    "success_url": success_url,
                    "cancel_url": cancel_url,
                    "livemode": False,
                },
                group=pi["id"],
            )

        cs, _ = self._idempotent(idempotency_key, "checkout.sessions.create", params, create)
        return self._checkout(cs)

    def _funding_raw(self, payment_intent_id: str) -> dict:
        return self._load(payment_intent_id, "payment_intent")

    def checkout_get(self, *, session_id) -> CheckoutSession:
        return self._checkout(self._load(session_id, "checkout.session"))

    def checkout_expire(self, *, session_id, idempotency_key) -> CheckoutSession:
        with transaction.atomic():
            cs = self._load(session_id, "checkout.session", lock=True)
            if cs["status"] == "expired":
                return self._checkout(cs)
            if cs["status"] != "open":
                raise ProviderRejected(
                    f"This Checkout Session is {cs['status']}; only open sessions can be expired.",
                    code="checkout_session_unexpected_state",
                )
            cs.update(status="expired", url=None)
            self._save(cs, group=cs.get("payment_intent") or "")
        self._event("checkout.session.expired", cs)
        return self._checkout(cs)

    def _sessions_complete(self, pi: dict) -> list[tuple[str, dict]]:
        """The payer paid on the page a session points at: its open sessions are complete."""
        events = []
        for row in OfflineObject.objects.select_for_update().filter(object_type="checkout.session", group=pi["id"]):
            cs = row.data
            if cs["status"] == "open":
                cs.update(status="complete", payment_status="paid", url=None)
                self._save(cs, group=pi["id"])
                events.append(("checkout.session.completed", cs))
        return events

    def _funding(self, pi: dict) -> Funding:
        error = pi.get("last_payment_error") or None
        return Funding(
            id=pi["id"],
            status=pi["status"],
            amount=pi["amount"],
            currency=pi["currency"].upper(),
            client_secret=None,
            charge_id=pi.get("latest_charge"),
            failure_message=(error or {}).get("message"),
            transfer_group=pi.get("transfer_group"),
            livemode=False,
            metadata=pi.get("metadata") or {},
        )

    def funding_get(self, *, payment_intent_id) -> Funding:
        return self._funding(self._load(payment_intent_id, "payment_intent"))

    def funding_cancel(self, *, payment_intent_id, idempotency_key) -> Funding:
        with transaction.atomic():
            pi = self._load(payment_intent_id, "payment_intent", lock=True)
            if pi["status"] == "canceled":
                return self._funding(pi)
            if pi["status"] == "succeeded":
                raise ProviderRejected(
                    "You cannot cancel this PaymentIntent because it has a status of succeeded.",
                    code="payment_intent_unexpected_state",
                )
            pi["status"] = "canceled"
            self._save(pi, group=pi.get("transfer_group") or "")
        self._event("payment_intent.canceled", pi)
        return self._funding(pi)

    def funding_confirm_url(self, *, payment_intent_id) -> str | None:
        return f"{self._base_url}/payments/offline/checkout/{payment_intent_id}/"

    def funding_simulate(self, *, payment_intent_id: str, outcome: str) -> list[ProviderEvent]:
        events: list[ProviderEvent] = []
        with transaction.atomic():
            pi = self._load(payment_intent_id, "payment_intent", lock=True)
            if outcome in {"succeed", "dispute", "inquiry"} and pi["status"] == "requires_payment_method":
                charge_id = f"ch_off_{_digest(pi['id'])}"
                self._save(
                    {
                        "id": charge_id,
                        "object": "charge",
                        "amount": pi["amount"],
                        "amount_refunded": 0,
                        "currency": pi["currency"],
                        "payment_intent": pi["id"],
                        "paid": True,
                        "refunded": False,
                        "disputed": False,
                        "status": "succeeded",
                        "transfer_group": pi.get("transfer_group"),
                        "livemode": False,
                        "balance_transaction": self._balance_transaction_make(
                            source_id=charge_id,
                            type_="charge",
                            amount=pi["amount"],
                            currency=pi["currency"],
                            fee=self._processing_fee(pi["amount"], pi["currency"]),
                            pending_for=OFFLINE_CHARGE_AVAILABLE_AFTER,
                        ),
                    }
                )
                pi.update(
                    status="succeeded", latest_charge=charge_id, amount_received=pi["amount"], last_payment_error=None
                )
                self._save(pi, group=pi.get("transfer_group") or "")
                events.append(("payment_intent.succeeded", pi))
                events += self._sessions_complete(pi)
            elif outcome == "decline":
                if pi["status"] != "requires_payment_method":
                    raise PaymentStateConflict(f"This PaymentIntent is {pi['status']}; it cannot be declined now.")
                pi["last_payment_error"] = {"type": "card_error", "code": "card_declined", "message": DECLINE_MESSAGE}
                self._save(pi, group=pi.get("transfer_group") or "")
                events.append(("payment_intent.payment_failed", pi))
            elif outcome == "succeed":
                raise PaymentStateConflict(f"This PaymentIntent is {pi['status']}; it cannot be paid now.")
            if outcome in {"dispute", "inquiry"}:
                # An inquiry (warning_*): nothing withdrawn and the charge still refundable; a chargeback: withdrawn.
                inquiry = outcome == "inquiry"
                charge = self._load(pi["latest_charge"], "charge", lock=True)
                dispute = {
                    "id": f"dp_off_{_digest(charge['id'])}",
                    "object": "dispute",
                    "amount": charge["amount"] - charge["amount_refunded"],
                    "currency": charge["currency"],
                    "charge": charge["id"],
                    "payment_intent": pi["id"],
                    "status": "warning_needs_response" if inquiry else "needs_response",
                    "is_charge_refundable": inquiry,
                    "reason": "fraudulent",
                    "livemode": False,
                }
                dispute["balance_transactions"] = [
                    self._balance_transaction_make(
                        source_id=dispute["id"],
                        type_="adjustment",
                        amount=-dispute["amount"],
                        currency=dispute["currency"],
                        fee=self._dispute_fee,
                        description="Dispute fee",
                    )
                ]
                charge["disputed"] = True
                self._save(charge)
                self._save(dispute)
                events.append(("charge.dispute.created", dispute))
                if not inquiry:
                    events.append(("charge.dispute.funds_withdrawn", dispute))
            elif outcome in {"dispute_won", "dispute_lost", "inquiry_closed"}:
                if not pi.get("latest_charge"):
                    raise PaymentStateConflict("This payment has no charge to dispute.")
                dispute = self._load(f"dp_off_{_digest(pi['latest_charge'])}", "dispute", lock=True)
                dispute["status"] = {"dispute_won": "won", "dispute_lost": "lost", "inquiry_closed": "warning_closed"}[
                    outcome
                ]
                dispute["is_charge_refundable"] = False
                if outcome == "dispute_won":
                    reinstated = self._balance_transaction_make(
                        source_id=dispute["id"],
                        type_="adjustment",
                        amount=dispute["amount"],
                        currency=dispute["currency"],
                        key="reinstated",
                    )
                    if reinstated not in dispute.setdefault("balance_transactions", []):
                        dispute["balance_transactions"].append(reinstated)
                self._save(dispute)
                events.append(("charge.dispute.closed", dispute))
                if outcome == "dispute_won":
                    events.append(("charge.dispute.funds_reinstated", dispute))
            elif outcome not in {"succeed", "decline", "dispute", "inquiry"}:
                raise ProviderRejected(f"Unknown outcome {outcome!r}.", code="invalid_outcome")
        return [self._event(event_type, obj) for event_type, obj in events]

    # ---- transfers -----------------------------------------------------------------------------
    def _transfer(self, tr: dict) -> Transfer:
        return Transfer(
            id=tr["id"],
            amount=tr["amount"],
            currency=tr["currency"].upper(),
            destination=tr["destination"],
            amount_reversed=tr["amount_reversed"],
            transfer_group=tr.get("transfer_group"),
            source_transaction=tr.get("source_transaction"),
            metadata=tr.get("metadata") or {},
            reversals=tuple(
                TransferReversal(
                    id=rev["id"],
                    transfer_id=tr["id"],
                    amount=rev["amount"],
                    currency=rev["currency"].upper(),
                    metadata=rev.get("metadata") or {},
                )
                for rev in tr.get("reversals") or ()
            ),
        )

    def transfer_create(
        self, *, amount, currency, destination, source_transaction, transfer_group, metadata, idempotency_key
    ) -> Transfer:
        params = {
            "amount": amount,
            "currency": currency.lower(),
            "destination": destination,
            "source_transaction": source_transaction,
            "transfer_group": transfer_group,
            "metadata": dict(metadata),
        }

        def create() -> dict:
            _amount_check(amount, currency, charge=False)
            account = self._load(destination, "account", lock=True)
            if account.get("deauthorized"):
                raise AccountAccessRevoked("The destination account has disconnected from the platform.")
            if account["capabilities"].get("transfers") != "active":
                raise ProviderRejected(
                    "Your destination account needs to have the transfers capability enabled.",
                    code="insufficient_capabilities_for_transfer",
                )
            if source_transaction:
                charge = self._load(source_transaction, "charge", lock=True)
                already = sum(
                    row.data["amount"]
                    for row in OfflineObject.objects.filter(object_type="transfer", group=transfer_group)
                    if row.data.get("source_transaction") == source_transaction
                )
                if already + amount > charge["amount"]:
                    raise ProviderRejected(
                        "The transfer amount exceeds the source transaction's available amount.",
                        code="balance_insufficient",
                    )
            tr = {
                "id": _random_id("tr"),
                "object": "transfer",
                "amount": amount,
                "amount_reversed": 0,
                "currency": currency.lower(),
                "destination": destination,
                "source_transaction": source_transaction,
                "transfer_group": transfer_group,
                "reversed": False,
                "metadata": dict(metadata),
                "livemode": False,
                "created": int(time.time()),
            }
            tr["balance_transaction"] = self._balance_transaction_make(
                source_id=tr["id"], type_="transfer", amount=-amount, currency=currency.lower()
            )
            self._save(tr, group=transfer_group)
            return tr

        tr, created = self._idempotent(idempotency_key, "transfers.create", params, create)
        if created:
            self._event("transfer.created", tr)
        return self._transfer(tr)

    def transfer_get(self, *, transfer_id) -> Transfer:
        return self._transfer(self._load(transfer_id, "transfer"))

    def transfer_reverse(self, *, transfer_id, amount, idempotency_key, metadata=None) -> TransferReversal:
        def create() -> dict:
            tr = self._load(transfer_id, "transfer", lock=True)
            if tr["amount_reversed"] + amount > tr["amount"]:
                raise ProviderRejected(
                    "The reversal exceeds the transfer's unreversed amount.", code="amount_too_large"
                )
            rev = {
                "id": _random_id("trr"),
                "object": "transfer_reversal",
                "amount": amount,
                "currency": tr["currency"],
                "transfer": transfer_id,
                "metadata": dict(metadata or {}),
            }
            tr["amount_reversed"] += amount
            tr["reversed"] = tr["amount_reversed"] == tr["amount"]
            tr["reversals"] = [*(tr.get("reversals") or []), rev][-10:]
            self._save(tr, group=tr.get("transfer_group") or "")
            return self._save(rev)

        rev, _ = self._idempotent(
            idempotency_key,
            "transfers.reversals.create",
            {"transfer": transfer_id, "amount": amount, "metadata": dict(metadata or {})},
            create,
        )
        return TransferReversal(
            id=rev["id"],
            transfer_id=rev["transfer"],
            amount=rev["amount"],
            currency=rev["currency"].upper(),
            metadata=rev.get("metadata") or {},
        )

    def transfers_list(self, *, transfer_group) -> list[Transfer]:
        rows = OfflineObject.objects.filter(object_type="transfer", group=transfer_group).order_by("id")
        return [self._transfer(row.data) for row in rows]

    # ---- refunds -------------------------------------------------------------------------------
    def _refund(self, re: dict) -> Refund:
        return Refund(
            id=re["id"],
            amount=re["amount"],
            currency=re["currency"].upper(),
            status=re["status"],
            payment_intent_id=re.get("payment_intent"),
            charge_id=re.get("charge"),
            failure_reason=re.get("failure_reason"),
            metadata=re.get("metadata") or {},
        )

    def refund_create(self, *, payment_intent_id, amount, metadata, idempotency_key) -> Refund:
        params = {"payment_intent": payment_intent_id, "amount": amount, "metadata": dict(metadata)}

        def create() -> dict:
            pi = self._load(payment_intent_id, "payment_intent")
            _amount_check(amount, pi["currency"], charge=False)
            if not pi.get("latest_charge"):
                raise ProviderRejected(
                    "This PaymentIntent has no successful charge to refund.", code="charge_not_found"
                )
            charge = self._load(pi["latest_charge"], "charge", lock=True)
            if amount <= 0 or charge["amount_refunded"] + amount > charge["amount"]:
                raise ProviderRejected(
                    f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                    f"({charge['amount'] - charge['amount_refunded']})",
                    code="amount_too_large",
                )
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] == charge["amount"]
            self._save(charge)
            re = {
                "id": _random_id("re"),
                "object": "refund",
                "amount": amount,
                "currency": charge["currency"],
                "charge": charge["id"],
                "payment_intent": payment_intent_id,
                "status": "succeeded",
                "failure_reason": None,
                "metadata": dict(metadata),
            }
            # Like Stripe: the processing fee of the charge is not returned, and a refund costs no fee here.
            re["balance_transaction"] = self._balance_transaction_make(
                source_id=re["id"], type_="refund", amount=-amount, currency=charge["currency"]
            )
            return self._save(re, group=payment_intent_id)

        re, created = self._idempotent(idempotency_key, "refunds.create", params, create)
        if created:
            self._event("charge.refunded", self._load(re["charge"], "charge"))
        return self._refund(re)

    def refund_get(self, *, refund_id) -> Refund:
        return self._refund(self._load(refund_id, "refund"))

    def refunds_list(self, *, payment_intent_id) -> list[Refund]:
        rows = OfflineObject.objects.filter(object_type="refund", group=payment_intent_id).order_by("id")
        return [self._refund(row.data) for row in rows]

    # ---- connected accounts --------------------------------------------------------------------
    def _account(self, acct: dict) -> ConnectedAccountInfo:
        return ConnectedAccountInfo(
            id=acct["id"],
            transfers_active=acct["capabilities"].get("transfers") == "active",
            details_submitted=acct["details_submitted"],
            payouts_enabled=acct["payouts_enabled"],
            requirements_due=tuple(acct["requirements"]["currently_due"]),
            country=acct.get("country", ""),
            service_agreement=(acct.get("tos_acceptance") or {}).get("service_agreement", ""),
        )

    def account_create(self, *, email, country, service_agreement, metadata, idempotency_key) -> ConnectedAccountInfo:
        def create() -> dict:
            return self._save(
                {
                    "id": _random_id("acct"),
                    "object": "account",
                    "email": email,
                    "country": country,
                    "tos_acceptance": {"service_agreement": service_agreement},
                    "capabilities": {"transfers": "inactive"},
                    "controller": {"type": "application", "is_controller": True},
                    "details_submitted": False,
                    "payouts_enabled": False,
                    "charges_enabled": False,
                    "requirements": {"currently_due": ["external_account", "tos_acceptance.date"]},
                    "metadata": dict(metadata),
                }
            )

        params = {
            "email": email,
            "country": country,
            "service_agreement": service_agreement,
            "metadata": dict(metadata),
        }
        acct, _ = self._idempotent(idempotency_key, "accounts.create", params, create)
        return self._account(acct)

    def _account_connected(self, account_id: str, *, lock: bool = False) -> dict:
        acct = self._load(account_id, "account", lock=lock)
        if acct.get("deauthorized"):
            raise AccountAccessRevoked("The payout account has disconnected from the platform.")
        return acct

    def account_get(self, *, account_id) -> ConnectedAccountInfo:
        return self._account(self._account_connected(account_id))

    def account_link_create(self, *, account_id, refresh_url, return_url) -> OnboardingLink:
        self._account_connected(account_id)
        return OnboardingLink(url=f"{self._base_url}/payments/offline/onboarding/{account_id}/", expires_at=None)

    def account_login_link_create(self, *, account_id) -> OnboardingLink:
        acct = self._account_connected(account_id)
        if not acct["details_submitted"]:
            raise ProviderRejected("The account has not completed onboarding.", code="account_not_onboarded")
        return OnboardingLink(url=f"{self._base_url}/payments/offline/onboarding/{account_id}/", expires_at=None)

    def payout_get(self, *, account_id, payout_id) -> Payout:
        po = self._load(payout_id, "payout")
        if po["account"] != account_id:
            raise ProviderObjectMissing(f"No such payout: '{payout_id}'", code="resource_missing")
        return Payout(
            id=po["id"],
            account_id=account_id,
            status=po["status"],
            amount=po["amount"],
            currency=po["currency"].upper(),
            failure_code=po.get("failure_code"),
            failure_message=po.get("failure_message"),
        )

    def account_simulate_onboarding(self, *, account_id: str) -> list[ProviderEvent]:
        with transaction.atomic():
            acct = self._account_connected(account_id, lock=True)
            if acct["capabilities"].get("transfers") == "active" and not acct["requirements"]["currently_due"]:
                return []
            acct.update(details_submitted=True, payouts_enabled=True)
            acct["capabilities"]["transfers"] = "active"
            acct["requirements"]["currently_due"] = []
            self._save(acct)
        return [self._event("account.updated", acct, account=account_id)]

    def account_simulate(self, *, account_id: str, outcome: str) -> list[ProviderEvent]:
        """requirements_due: new information is owed (transfers paused); payout_failed: the bank returned a payout;
        deauthorize: the account disconnects from the platform."""
        with transaction.atomic():
            acct = self._account_connected(account_id, lock=True)
            if outcome == "requirements_due":
                acct["requirements"]["currently_due"] = ["individual.verification.document"]
                acct["capabilities"]["transfers"] = "inactive"
                self._save(acct)
                return [self._event("account.updated", acct, account=account_id)]
            if outcome == "payout_failed":
                po = self._save(
                    {
                        "id": _random_id("po"),
                        "object": "payout",
                        "account": account_id,
                        "status": "failed",
                        "amount": 1000,
                        "currency": "usd",
                        "failure_code": "account_closed",
                        "failure_message": "The bank account has been closed.",
                    },
                    group=account_id,
                )
                return [self._event("payout.failed", po, account=account_id)]
            if outcome == "deauthorize":
                acct["deauthorized"] = True
                self._save(acct)
                application = {"id": "ca_offline", "object": "application", "name": "Speedproof (offline)"}
                return [self._event("account.application.deauthorized", application, account=account_id)]
        raise ProviderRejected(f"Unknown outcome {outcome!r}.", code="unknown_outcome")

    # ---- balance transactions ------------------------------------------------------------------
    def _processing_fee(self, amount: int, currency: str) -> int:
        step = currency_amount_step(currency)
        return (amount * self._fee_bps + 5_000) // 10_000 + self._fee_fixed * step

    def _balance_transaction_make(
        self,
        *,
        source_id: str,
        type_: str,
        amount: int,
        currency: str,
        fee: int = 0,
        description: str = "Processing fees (offline simulation)",
        pending_for: int = 0,
        key: str = "",
    ) -> str:
        now = int(time.time())
        txn = {
            "id": f"txn_off_{_digest(source_id, key)}",
            "object": "balance_transaction",
            "type": type_,
            "amount": amount,
            "fee": fee,
            "fee_details": (
                [{"amount": fee, "currency": currency, "type": "stripe_fee", "description": description}] if fee else []
            ),
            "net": amount - fee,
            "currency": currency,
            "source": source_id,
            "created": now,
            "available_on": now + pending_for,
            "exchange_rate": None,
        }
        if not OfflineObject.objects.filter(object_id=txn["id"]).exists():
            self._save(txn, group=source_id)
        return txn["id"]

    def _balance_transaction(self, txn_id: str | None) -> BalanceTransaction | None:
        row = OfflineObject.objects.filter(object_id=txn_id or "", object_type="balance_transaction").first()
        if row is None:
            return None
        txn = row.data
        return BalanceTransaction(
            id=txn["id"],
            type=txn["type"],
            amount=txn["amount"],
            fee=txn["fee"],
            net=txn["net"],
            currency=txn["currency"].upper(),
            status="available" if txn["available_on"] <= time.time() else "pending",
            available_on=txn["available_on"],
            source_id=txn.get("source"),
            fee_details=tuple(
                FeeDetail(
                    amount=d["amount"], currency=d["currency"].upper(), type=d["type"], description=d["description"]
                )
                for d in txn["fee_details"]
            ),
        )

    def charge_balance_transaction(self, *, charge_id) -> BalanceTransaction | None:
        return self._balance_transaction(self._load(charge_id, "charge").get("balance_transaction"))

    def refund_balance_transaction(self, *, refund_id) -> BalanceTransaction | None:
        return self._balance_transaction(self._load(refund_id, "refund").get("balance_transaction"))

    def transfer_balance_transaction(self, *, transfer_id) -> BalanceTransaction | None:
        return self._balance_transaction(self._load(transfer_id, "transfer").get("balance_transaction"))

    def platform_fee_balance_transactions(self, *, created_gte, limit) -> list[BalanceTransaction]:
        # The offline provider bills no Connect fees unless a test or a demo stores one (type `stripe_fee`).
        rows = OfflineObject.objects.filter(object_type="balance_transaction").order_by("-id")
        found = [
            self._balance_transaction(row.object_id)
            for row in rows
            if row.data["type"] == "stripe_fee" and row.data["created"] >= created_gte
        ]
        return [bt for bt in found if bt][:limit]

    def balance_get(self) -> ProviderBalance:
        available: dict[str, int] = {}
        pending: dict[str, int] = {}
        for row in OfflineObject.objects.filter(object_type="balance_transaction"):
            txn = row.data
            bucket = available if txn["available_on"] <= time.time() else pending
            currency = txn["currency"].upper()
            bucket[currency] = bucket.get(currency, 0) + txn["net"]
        return ProviderBalance(available=available, pending=pending)

    # ---- disputes and webhooks -----------------------------------------------------------------
    def dispute_get(self, *, dispute_id) -> Dispute:
        dp = self._load(dispute_id, "dispute")
        return Dispute(
            id=dp["id"],
            status=dp["status"],
            amount=dp["amount"],
            currency=dp["currency"].upper(),
            charge_id=dp.get("charge"),
            payment_intent_id=dp.get("payment_intent"),
            balance_transactions=tuple(
                bt for bt in (self._balance_transaction(txn) for txn in dp.get("balance_transactions") or ()) if bt
            ),
            is_charge_refundable=bool(dp.get("is_charge_refundable", False)),
        )

    def dispute_evidence_submit(self, *, dispute_id, text, files, idempotency_key) -> Dispute:
        """Keep the evidence on the stored dispute (files by name and size: no file store offline)."""

        def submit() -> dict:
            dp = self._load(dispute_id, "dispute", lock=True)
            if dp["status"] not in ("needs_response", "warning_needs_response"):
                raise ProviderRejected(
                    f"This dispute is {dp['status']}; evidence can no longer be submitted.", code="dispute_not_open"
                )
            dp["evidence"] = {
                "uncategorized_text": text,
                **{f.field: {"filename": f.filename, "size": len(f.content)} for f in files},
            }
            dp["status"] = "warning_under_review" if dp["status"].startswith("warning_") else "under_review"
            return self._save(dp)

        self._idempotent(
            idempotency_key,
            "disputes.update",
            {"dispute": dispute_id, "text": text, "files": [f.filename for f in files]},
            submit,
        )
        return self.dispute_get(dispute_id=dispute_id)

    def webhook_parse(self, *, payload: bytes, signature: str | None, connect: bool) -> ProviderEvent:
        """The same `t=…,v1=…` HMAC-SHA256 scheme as Stripe, so the endpoints behave alike offline."""
        secret = self._connect_webhook_secret if connect else self._webhook_secret
        try:
            items = [part.split("=", 1) for part in (signature or "").split(",")]
            timestamp = int(next(value for key, value in items if key == "t"))
            signatures = [value for key, value in items if key == "v1"]
        except (StopIteration, ValueError) as exc:
            raise WebhookRejected("Invalid signature header.", code="invalid_signature") from exc
        expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
        if not any(hmac.compare_digest(expected, sig) for sig in signatures):
            raise WebhookRejected("Invalid signature.", code="invalid_signature")
        if abs(time.time() - timestamp) > self._tolerance:
            raise WebhookRejected("Signature timestamp outside the tolerance.", code="invalid_signature")
        return event_from_body(payload, what="an event")
