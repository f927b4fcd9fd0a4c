"""Funding an escrow: the PaymentIntent and the Checkout Session beside it, acting on their current state,
and cancelling escrows whose funding never started."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Organization, User
from accounts.selectors import user_is_org_admin
from common.errors import DomainError, IllegalTransition, NotPermitted, RetryableError
from common.money import charge_amount_validate, currency_validate_settlement
from common.services import audit_record

from .. import signals
from ..errors import FundingFailed
from ..ledger import A, ledger_post
from ..models import Escrow, PaymentCustomer, ProviderOperation, ReconciliationIssue
from ..providers.base import CheckoutSession, Funding
from ..providers.factory import payment_provider
from .escrows import _refund_mark
from .support import S, _enqueue, _lock, _move, _signal_kwargs, _transfer_group

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FundingInstructions:
    """Two ways to pay the same escrow: the hosted `checkout_url`, or `client_secret` + `publishable_key` in the
    client's own UI (Stripe.js). Whichever succeeds first funds it; a second payment is refunded in full."""

    provider: str
    payment_intent_id: str
    client_secret: str | None
    publishable_key: str | None
    checkout_session_id: str | None
    checkout_url: str | None
    confirm_url: str | None
    amount: int
    currency: str


def _funding_key(escrow: Escrow) -> str:
    return f"fund:{escrow.pk}" if escrow.funding_attempt == 1 else f"fund:{escrow.pk}:{escrow.funding_attempt}"


def payment_customer_ensure(*, organization: Organization, email: str) -> str:
    """The organization's customer at the provider, created once: the idempotency key is per organization, so
    concurrent or repeated calls (even after a crash between the call and the insert) name one customer."""
    existing = PaymentCustomer.objects.filter(organization=organization).first()
    if existing is not None:
        return existing.provider_customer_id
    customer = payment_provider().customer_create(
        email=email,
        name=organization.name,
        metadata={"organization_id": str(organization.pk)},
        idempotency_key=f"customer:organization:{organization.pk}",
    )
    with transaction.atomic():
        row, created = PaymentCustomer.objects.get_or_create(
            organization=organization, defaults={"provider_customer_id": customer.id, "email": email}
        )
        if created:
            audit_record(actor=None, verb="payment_customer_created", obj=row, data={"customer": customer.id})
    return row.provider_customer_id


def _checkout_key(escrow: Escrow, previous_session_id: str) -> str:
    base = f"checkout:{escrow.pk}:{escrow.funding_attempt}"
    return f"{base}:after:{previous_session_id}" if previous_session_id else base


def escrow_funding_start(*, escrow_id: int, actor: User | None) -> FundingInstructions:
    """Create (or find again) the PaymentIntent for amount + fee and a hosted Checkout Session beside it.

    Call it outside any transaction: the provider calls happen with no lock held.
    """
    provider = payment_provider()
    with transaction.atomic():
        escrow = _lock(escrow_id)
        if actor is not None and not (
            actor.is_staff or user_is_org_admin(user=actor, organization_id=escrow.payer_organization_id)
        ):
            raise NotPermitted("Only the paying organization's owners and admins can fund this contract.")
        if escrow.status != S.PENDING_FUNDING:
            raise IllegalTransition(f"Cannot fund: the escrow is {escrow.status}.", fields={"status": [escrow.status]})
        if escrow.funding_deadline <= timezone.now():
            raise IllegalTransition("The funding deadline has passed.", code="funding_deadline_passed")
        # Never start a charge that could not be paid out or that Stripe would refuse.
        currency_validate_settlement(escrow.currency)
        charge_amount_validate(escrow.total, escrow.currency)
        payment_intent_id, key, attempt = escrow.payment_intent_id, _funding_key(escrow), escrow.funding_attempt
        session_id = escrow.checkout_session_id
        if payment_intent_id is None:
            audit_record(actor=actor, verb="escrow_funding_started", obj=escrow, data={"idempotency_key": key})
    payer_email = actor.email if actor is not None and actor.email else None
    metadata = {"escrow_id": str(escrow.pk), "reference": escrow.reference}
    # Committed: now the network calls, holding no lock.
    try:
        customer_id = payment_customer_ensure(organization=escrow.payer_organization, email=payer_email or "")
        if payment_intent_id:
            funding = provider.funding_get(payment_intent_id=payment_intent_id)
        else:
            funding = provider.funding_create(
                amount=escrow.total,
                currency=escrow.currency,
                transfer_group=_transfer_group(escrow),
                metadata=metadata,
                idempotency_key=key,
                customer_id=customer_id,
                receipt_email=payer_email,
            )
        session = provider.checkout_get(session_id=session_id) if session_id else None
        if session is None or session.status == "expired":
            session = provider.checkout_create(
                amount=escrow.total,
                currency=escrow.currency,
                description=f"Speedproof {escrow.reference}",
                customer_id=customer_id,
                receipt_email=payer_email,
                transfer_group=_transfer_group(escrow),
                metadata=metadata,
                success_url=settings.CHECKOUT_SUCCESS_URL,
                cancel_url=settings.CHECKOUT_CANCEL_URL,
                idempotency_key=_checkout_key(escrow, session_id),
            )
    except FundingFailed as exc:
        # The provider keeps the declined answer under this idempotency key: the next attempt needs a new one.
        _funding_failure_record(escrow_id=escrow_id, reason=exc.message, next_attempt=not payment_intent_id)
        raise
    with transaction.atomic():
        escrow = _lock(escrow_id)
        fields = []
        if escrow.payment_intent_id is None and escrow.funding_attempt == attempt:
            escrow.payment_intent_id = funding.id
            fields.append("payment_intent_id")
        if escrow.checkout_session_id == session_id and session.id != session_id:
            escrow.checkout_session_id = session.id
            fields.append("checkout_session_id")
        if fields:
            escrow.save(update_fields=[*fields, "updated_at"])
    return FundingInstructions(
        provider=provider.name,
        payment_intent_id=funding.id,
        client_secret=funding.client_secret,
        publishable_key=(settings.STRIPE_PUBLISHABLE_KEY or None) if funding.client_secret else None,
        checkout_session_id=session.id,
        checkout_url=session.url if session.status == "open" else None,
        confirm_url=provider.funding_confirm_url(payment_intent_id=funding.id),
        amount=funding.amount,
        currency=escrow.currency,
    )


def _funding_failure_record(*, escrow_id: int, reason: str, next_attempt: bool = False) -> None:
    with transaction.atomic():
        escrow = _lock(escrow_id)
        if escrow.status != S.PENDING_FUNDING:
            return
        if next_attempt and escrow.payment_intent_id is None:
            escrow.funding_attempt += 1
            escrow.save(update_fields=["funding_attempt", "updated_at"])
        _funding_failure_note(escrow, reason)


def _funding_failure_note(escrow: Escrow, reason: str) -> None:
    """Store a new failure reason on the locked escrow, audit it and tell listeners (once per distinct reason)."""
    if escrow.funding_failure_reason == reason:
        return
    escrow.funding_failure_reason = reason[:500]
    escrow.save(update_fields=["funding_failure_reason", "updated_at"])
    audit_record(actor=None, verb="escrow_funding_failed", obj=escrow, data={"reason": reason})
    signals.escrow_funding_failed.send(sender=Escrow, **_signal_kwargs(escrow, reason=reason))


def escrow_funding_sync(*, escrow_id: int, funding: Funding) -> Escrow:
    """Act on the PaymentIntent's current state (re-fetched), whatever order its events came in."""
    with transaction.atomic():
        escrow = _lock(escrow_id)
        if funding.id != escrow.payment_intent_id:
            if not _funding_belongs(escrow, funding) or not funding.succeeded:
                return escrow
            if escrow.status == S.PENDING_FUNDING or (escrow.status == S.CANCELLED and not _funding_booked(escrow)):
                # The Checkout page's own intent paid first: it funds the escrow, the direct one is cancelled.
                superseded = escrow.payment_intent_id
                escrow.payment_intent_id = funding.id
                escrow.save(update_fields=["payment_intent_id", "updated_at"])
                audit_record(
                    actor=None,
                    verb="escrow_funding_intent_switched",
                    obj=escrow,
                    data={"payment_intent": funding.id, "superseded": superseded or ""},
                )
                if superseded:
                    _enqueue("funding_intent_cancel", superseded)
            else:
                _duplicate_refund_mark(escrow, funding)
                return escrow
        if funding.succeeded:
            if escrow.status == S.PENDING_FUNDING and escrow.checkout_session_id:
                _enqueue("escrow_checkout_close", escrow.pk)
            if escrow.status in (S.PENDING_FUNDING, S.CANCELLED):
                escrow.charge_id = funding.charge_id or ""
                if funding.amount != escrow.total:
                    ReconciliationIssue.objects.get_or_create(
                        escrow=escrow,
                        kind="funding_amount",
                        resolved_at=None,
                        defaults={
                            "expected": escrow.total,
                            "actual": funding.amount,
                            "detail": {"payment_intent": funding.id},
                        },
                    )
                _, funded_now = ledger_post(
                    escrow=escrow,
                    idempotency_key=f"fund:{escrow.pk}",
                    kind="funding",
                    lines=[(A.HELD, escrow.total), (A.COMPANY_FUNDING, -escrow.total)],
                    provider_object_id=funding.id,
                    provider_ids={"payment_intent": funding.id, "charge": funding.charge_id or ""},
                )
                if funded_now:
                    _enqueue("escrow_fees_book", escrow.pk)  # the charge's processing fee (services/fees.py)
            if escrow.status == S.PENDING_FUNDING:
                escrow.funding_failure_reason = ""
                _move(
                    escrow,
                    S.FUNDED,
                    verb="escrow_funded",
                    data={"payment_intent": funding.id},
                    fields=["charge_id", "funding_failure_reason"],
                )
                signals.escrow_funded.send(sender=Escrow, **_signal_kwargs(escrow))
            elif escrow.status == S.CANCELLED:
                # Paid after the deadline cancelled it: send everything back.
                _refund_mark(escrow, amount=escrow.total, reason="funded after cancellation")
                _move(escrow, S.REFUNDED, verb="escrow_late_funding_refunded", fields=["charge_id"])
                signals.escrow_closed.send(
                    sender=Escrow, **_signal_kwargs(escrow, reason="funded after cancellation", status=escrow.status)
                )
            return escrow
        if escrow.status != S.PENDING_FUNDING:
            return escrow
        if funding.status == "canceled":
            reason = "The payment was canceled."
            escrow.payment_intent_id = None
            escrow.funding_attempt = F("funding_attempt") + 1
            escrow.funding_failure_reason = reason
            escrow.save(update_fields=["payment_intent_id", "funding_attempt", "funding_failure_reason", "updated_at"])
            escrow.refresh_from_db()
            audit_record(actor=None, verb="escrow_funding_failed", obj=escrow, data={"reason": reason})
            signals.escrow_funding_failed.send(sender=Escrow, **_signal_kwargs(escrow, reason=reason))
        elif funding.failure_message:
            _funding_failure_note(escrow, funding.failure_message)
    return escrow


def _funding_belongs(escrow: Escrow, funding: Funding) -> bool:
    """An intent of this escrow (ours or Checkout's): our metadata and transfer group, the escrow's total."""
    return (
        funding.metadata.get("escrow_id") == str(escrow.pk)
        and funding.transfer_group == _transfer_group(escrow)
        and funding.currency == escrow.currency
    )


def _funding_booked(escrow: Escrow) -> bool:
    return escrow.ledger_transactions.filter(idempotency_key=f"fund:{escrow.pk}").exists()


def _duplicate_refund_mark(escrow: Escrow, funding: Funding) -> None:
    """A second successful payment for an escrow already paid (Checkout and the direct intent both paid): it never
    enters the escrow's ledger and goes back in full, once (the operation's key is per PaymentIntent)."""
    op, created = ProviderOperation.objects.get_or_create(
        idempotency_key=f"refund_duplicate:{funding.id}",
        defaults={
            "escrow": escrow,
            "kind": ProviderOperation.Kind.DUPLICATE_REFUND,
            "amount": funding.amount,
            "currency": funding.currency,
            "payment_intent_id": funding.id,
            "reason": "second payment for an escrow already paid",
        },
    )
    if created:
        audit_record(
            actor=None,
            verb="escrow_duplicate_payment",
            obj=escrow,
            data={"payment_intent": funding.id, "amount": funding.amount},
        )
        _enqueue("payment_operation_execute", op.pk)


def funding_intent_cancel(*, payment_intent_id: str) -> None:
    """Cancel a superseded PaymentIntent that has not started; one that went through is refunded by the sync."""
    provider = payment_provider()
    funding = provider.funding_get(payment_intent_id=payment_intent_id)
    if funding.status in ("requires_payment_method", "requires_confirmation", "requires_action"):
        try:
            funding = provider.funding_cancel(payment_intent_id=funding.id, idempotency_key=f"cancel:{funding.id}")
        except RetryableError:
            raise
        except DomainError:
            funding = provider.funding_get(payment_intent_id=funding.id)
    escrow_id = funding.metadata.get("escrow_id", "")
    if funding.succeeded and escrow_id.isdigit():
        escrow_funding_sync(escrow_id=int(escrow_id), funding=funding)


def escrow_checkout_close(*, escrow_id: int) -> None:
    """The escrow is paid or cancelled: expire its Checkout Session if still open, and act on one already paid."""
    escrow = Escrow.objects.get(pk=escrow_id)
    if not escrow.checkout_session_id or escrow.status == S.PENDING_FUNDING:
        return
    provider = payment_provider()
    session = provider.checkout_get(session_id=escrow.checkout_session_id)
    if session.status == "open":
        try:
            session = provider.checkout_expire(session_id=session.id, idempotency_key=f"checkout_expire:{session.id}")
        except RetryableError:
            raise
        except DomainError:
            session = provider.checkout_get(session_id=session.id)
    escrow_checkout_sync(escrow_id=escrow_id, session=session)


def escrow_checkout_sync(*, escrow_id: int, session: CheckoutSession) -> Escrow | None:
    """Act on a Checkout Session's current state: its PaymentIntent (re-fetched) goes through the funding sync."""
    if not session.payment_intent_id:
        return None
    funding = payment_provider().funding_get(payment_intent_id=session.payment_intent_id)
    return escrow_funding_sync(escrow_id=escrow_id, funding=funding)


def _funding_in_flight(escrow: Escrow) -> bool:
    """True when a payment for the escrow has started (e.g. a bank debit `processing`) or already succeeded:
    the funding deadline applies only to payments that have not started. Provider calls, no lock held."""
    provider = payment_provider()
    try:
        intents = [escrow.payment_intent_id] if escrow.payment_intent_id else []
        if escrow.checkout_session_id:
            session = provider.checkout_get(session_id=escrow.checkout_session_id)
            if session.payment_intent_id and session.payment_intent_id not in intents:
                intents.append(session.payment_intent_id)
        for payment_intent_id in intents:
            funding = provider.funding_get(payment_intent_id=payment_intent_id)
            if funding.succeeded:
                escrow_funding_sync(escrow_id=escrow.pk, funding=funding)
                return True
            if funding.status == "processing":
                return True
    except DomainError as exc:
        # Unknown state: do not cancel on a guess; the next sweep asks again.
        logger.warning("funding state of escrow %s unavailable: %s", escrow.pk, exc.message)
        return True
    return False


def _cancel_locked(escrow: Escrow, *, reason: str) -> None:
    escrow.status_reason = reason[:255]
    _move(escrow, S.CANCELLED, verb="escrow_cancelled", data={"reason": reason}, fields=["status_reason"])
    signals.escrow_cancelled.send(sender=Escrow, **_signal_kwargs(escrow, reason=reason, status=escrow.status))
    if escrow.payment_intent_id:
        _enqueue("escrow_funding_cancel", escrow.pk)
    if escrow.checkout_session_id:
        _enqueue("escrow_checkout_close", escrow.pk)


def escrow_cancel_unfunded(*, escrow_id: int, reason: str) -> Escrow:
    with transaction.atomic():
        escrow = _lock(escrow_id)
        if escrow.status == S.CANCELLED:
            return escrow
        if escrow.status != S.PENDING_FUNDING:
            raise IllegalTransition(
                f"Cannot cancel: the escrow is {escrow.status}.", fields={"status": [escrow.status]}
            )
        _cancel_locked(escrow, reason=reason)
    return escrow


def escrow_expire_unfunded(*, escrow_id: int) -> bool:
    """Cancel an escrow whose funding deadline has passed; False when it is funded, not yet due, or its payment
    has started (a PaymentIntent `processing` is left to finish)."""
    escrow = Escrow.objects.filter(pk=escrow_id).first()
    if escrow is None or escrow.status != S.PENDING_FUNDING or escrow.funding_deadline > timezone.now():
        return False
    if _funding_in_flight(escrow):
        return False
    with transaction.atomic():
        escrow = _lock(escrow_id)
        if escrow.status != S.PENDING_FUNDING or escrow.funding_deadline > timezone.now():
            return False
        _cancel_locked(escrow, reason="funding_deadline_passed")
    return True


def escrows_expire_unfunded() -> int:
    ids = Escrow.objects.filter(status=S.PENDING_FUNDING, funding_deadline__lte=timezone.now()).values_list(
        "pk", flat=True
    )
    return sum(escrow_expire_unfunded(escrow_id=escrow_id) for escrow_id in list(ids))


def escrow_funding_cancel(*, escrow_id: int) -> None:
    """Cancel the PaymentIntent of a cancelled escrow at the provider (a payment racing it is refunded)."""
    escrow = Escrow.objects.get(pk=escrow_id)
    if escrow.status != S.CANCELLED or not escrow.payment_intent_id:
        return
    provider = payment_provider()
    funding = provider.funding_get(payment_intent_id=escrow.payment_intent_id)
    if funding.status not in ("succeeded", "canceled"):
        try:
            funding = provider.funding_cancel(payment_intent_id=funding.id, idempotency_key=f"cancel:{funding.id}")
        except RetryableError:
            raise
        except DomainError:
            funding = provider.funding_get(payment_intent_id=funding.id)
    escrow_funding_sync(escrow_id=escrow_id, funding=funding)


# ---- release and refund --------------------------------------------------------------------------
