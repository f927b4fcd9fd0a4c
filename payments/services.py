"""Escrow state machine and every write of the payments app.

Rules kept by every function here:
- the escrow row is locked (`select_for_update`) and its move checked against ESCROW_TRANSITIONS;
- a money movement is marked as a ProviderOperation and committed *before* the provider is called, with a
  deterministic idempotency key; the outcome is recorded in a second transaction; ledger idempotency keys and
  unique provider ids are the backstop. No row lock is ever held across a provider (network) call;
- signals are sent inside the transaction that changes the escrow; Celery work is enqueued on commit.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from accounts.models import Organization, User
from accounts.selectors import user_is_org_admin
from common.errors import (
    Conflict,
    DomainError,
    IllegalTransition,
    NotFound,
    NotPermitted,
    RetryableError,
    ValidationFailed,
)
from common.money import amount_round_down, charge_amount_validate, currency_amount_step, currency_validate_settlement
from common.services import audit_record
from common.transitions import transition_apply

from . import signals
from .errors import EscrowFrozen, FundingFailed, WebhookRejected
from .ledger import A, ledger_balances, ledger_post
from .models import (
    ConnectedAccount,
    Escrow,
    LedgerEntry,
    PaymentCustomer,
    PaymentsInstallation,
    ProviderOperation,
    ReconciliationIssue,
    WebhookEvent,
)
from .providers.base import CheckoutSession, ConnectedAccountInfo, Dispute, Funding, ProviderEvent, Refund, Transfer
from .providers.factory import payment_provider

logger = logging.getLogger(__name__)

S = Escrow.Status
ESCROW_TRANSITIONS = {
    S.PENDING_FUNDING: {S.FUNDED, S.CANCELLED},
    S.FUNDED: {S.PARTIALLY_RELEASED, S.RELEASED, S.REFUNDED, S.CLOSED},
    S.PARTIALLY_RELEASED: {S.PARTIALLY_RELEASED, S.RELEASED, S.CLOSED},
    S.RELEASED: {S.CLOSED},
    # Money that arrives after the funding deadline cancelled the escrow goes straight back.
    S.CANCELLED: {S.REFUNDED},
}
FULL_BPS = 10_000
STALE_CLAIM = timedelta(minutes=5)


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


@dataclass(frozen=True)
class ReleaseResult:
    escrow_id: int
    fraction_bps: int
    released_amount: int  # cumulative engineer amount released
    released_fee: int  # cumulative fee kept
    transfer_amount: int  # this call's new transfer (0 when nothing new: idempotent repeat)
    operation_key: str | None
    status: str


@dataclass(frozen=True)
class RefundResult:
    escrow_id: int
    refund_amount: int
    operation_key: str | None
    status: str


@dataclass(frozen=True)
class OnboardingStatus:
    account_id: str | None
    onboarding_url: str | None
    transfers_active: bool
    details_submitted: bool
    requirements_due: tuple[str, ...]


# ---- helpers -------------------------------------------------------------------------------------


def _task_send(task_name: str, args: tuple, *, countdown: int | None = None) -> None:
    from kombu.exceptions import OperationalError

    from . import tasks

    try:
        getattr(tasks, task_name).apply_async(args=args, countdown=countdown)
    except OperationalError:
        # Broker down: the row is committed, and the beat tasks (payouts_retry_payable,
        # webhook_events_redrive) pick it up later. Never fail the request that stored it.
        logger.exception("could not enqueue %s%r; the beat task will retry it", task_name, args)


def _enqueue(task_name: str, *args) -> None:
    """Enqueue a payments task once the current transaction commits (immediately when there is none)."""
    transaction.on_commit(lambda: _task_send(task_name, args))


def _lock(escrow_id: int) -> Escrow:
    try:
        return Escrow.objects.select_for_update().get(pk=escrow_id)
    except Escrow.DoesNotExist:
        raise NotFound("No such escrow.", code="escrow_not_found") from None


def _signal_kwargs(escrow: Escrow, **extra) -> dict:
    return {"escrow_id": escrow.pk, "reference": escrow.reference, **extra}


def _move(escrow: Escrow, to: str, *, actor=None, verb: str, data: dict | None = None, fields=()) -> None:
    transition_apply(escrow, to=to, allowed=ESCROW_TRANSITIONS, actor=actor, verb=verb, data=data, update_fields=fields)


def _payee_payable(user_id: int) -> bool:
    return ConnectedAccount.objects.filter(user_id=user_id, transfers_active=True).exists()


def _transfer_group(escrow: Escrow) -> str:
    return f"escrow_{escrow.pk}"


# ---- opening and funding -------------------------------------------------------------------------


def escrow_open(
    *,
    payer_organization: Organization,
    payee: User,
    amount: int,
    fee: int,
    currency: str,
    reference: str,
    actor: User | None = None,
) -> Escrow:
    """Open an escrow awaiting funding (runs inside the caller's transaction, e.g. bid acceptance)."""
    if not isinstance(amount, int) or amount <= 0:
        raise ValidationFailed("The amount must be a positive integer of minor units.", fields={"amount": ["invalid"]})
    if not isinstance(fee, int) or fee < 0:
        raise ValidationFailed("The fee must be a non-negative integer of minor units.", fields={"fee": ["invalid"]})
    if not reference or len(reference) > 64:
        raise ValidationFailed("A reference of at most 64 characters is required.", fields={"reference": ["invalid"]})
    currency = currency_validate_settlement(currency)
    step = currency_amount_step(currency)
    if amount % step or fee % step:
        raise ValidationFailed(
            f"{currency} amounts and fees must be multiples of {step} minor units.",
            code="amount_not_payable_step",
            fields={"amount": [f"a multiple of {step}"]},
        )
    charge_amount_validate(amount + fee, currency)
    with transaction.atomic():
        existing = Escrow.objects.select_for_update().filter(reference=reference).first()
        if existing is None:
            try:
                with transaction.atomic():
                    escrow = Escrow.objects.create(
                        reference=reference,
                        payer_organization=payer_organization,
                        payee=payee,
                        currency=currency,
                        amount=amount,
                        fee=fee,
                        funding_deadline=timezone.now() + timedelta(days=settings.FUNDING_DEADLINE_DAYS),
                    )
            except IntegrityError:
                existing = Escrow.objects.select_for_update().get(reference=reference)
            else:
                audit_record(
                    actor=actor,
                    verb="escrow_opened",
                    obj=escrow,
                    to_state=escrow.status,
                    data={"amount": amount, "fee": fee, "currency": currency, "reference": reference},
                )
                return escrow
        same = (
            existing.payer_organization_id == payer_organization.pk
            and existing.payee_id == payee.pk
            and (existing.amount, existing.fee, existing.currency) == (amount, fee, currency)
        )
        if not same:
            raise Conflict("An escrow with this reference already exists with other terms.", code="escrow_exists")
        return existing


def idempotency_namespace() -> str:
    """What every key we send to the provider is prefixed with: `<PAYMENTS_IDEMPOTENCY_PREFIX>:<installation id>`.

    The prefix names the deployment (two environments sharing a Stripe account never replay each other's objects);
    the installation id is random per database, made at first use, so two databases never share keys either.
    Both are stable, so a retry within one deployment sends the very same key.
    """
    row = PaymentsInstallation.objects.filter(pk=1).first()
    if row is None:
        try:
            with transaction.atomic():
                row = PaymentsInstallation.objects.create(pk=1, installation_id=secrets.token_hex(8))
        except IntegrityError:  # another process made it first
            row = PaymentsInstallation.objects.get(pk=1)
    return f"{settings.PAYMENTS_IDEMPOTENCY_PREFIX}:{row.installation_id}"


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
                ledger_post(
                    escrow=escrow,
                    idempotency_key=f"fund:{escrow.pk}",
                    kind="funding",
                    lines=[(A.HELD, escrow.total), (A.COMPANY_FUNDING, -escrow.total)],
                    provider_object_id=funding.id,
                    provider_ids={"payment_intent": funding.id, "charge": funding.charge_id or ""},
                )
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


def escrow_release(*, escrow_id: int, fraction_bps: int, reason: str, verification_run_id: str) -> ReleaseResult:
    """Release up to `fraction_bps`/10,000 of the engineer amount (cumulative), keeping the fee pro rata.

    Idempotent: releasing a fraction already reached does nothing. Runs inside the caller's transaction if
    there is one; the transfer itself happens after commit, on the queue.
    """
    if not isinstance(fraction_bps, int) or not 0 < fraction_bps <= FULL_BPS:
        raise ValidationFailed("fraction_bps must be an integer from 1 to 10000.", fields={"fraction_bps": ["invalid"]})
    with transaction.atomic():
        escrow = _lock(escrow_id)
        if fraction_bps <= escrow.released_bps:
            return ReleaseResult(
                escrow.pk, fraction_bps, escrow.released_amount, escrow.released_fee, 0, None, escrow.status
            )
        if escrow.frozen:
            raise EscrowFrozen("The escrow is frozen while a chargeback is open; nothing can be released.")
        if escrow.status not in (S.FUNDED, S.PARTIALLY_RELEASED):
            raise IllegalTransition(
                f"Cannot release: the escrow is {escrow.status}.", fields={"status": [escrow.status]}
            )
        # Rounded down to the currency's amount step (three-decimal currencies: multiples of 10), so every transfer
        # and the final refund are amounts Stripe accepts; the full fraction still releases exactly amount and fee.
        target_amount = amount_round_down(escrow.amount * fraction_bps // FULL_BPS, escrow.currency)
        target_fee = amount_round_down(escrow.fee * fraction_bps // FULL_BPS, escrow.currency)
        delta_amount = target_amount - escrow.released_amount
        delta_fee = target_fee - escrow.released_fee
        key = f"release:{escrow.pk}:{fraction_bps}"
        if delta_amount + delta_fee > 0:
            ledger_post(
                escrow=escrow,
                idempotency_key=key,
                kind="release",
                lines=[
                    (A.HELD, -(delta_amount + delta_fee)),
                    (A.ENGINEER_PAYABLE, delta_amount),
                    (A.PLATFORM_FEE, delta_fee),
                ],
                memo=reason,
                provider_ids={"verification_run": verification_run_id},
            )
        escrow.released_bps, escrow.released_amount, escrow.released_fee = fraction_bps, target_amount, target_fee
        to = S.RELEASED if fraction_bps == FULL_BPS else S.PARTIALLY_RELEASED
        _move(
            escrow,
            to,
            verb="escrow_released",
            data={
                "fraction_bps": fraction_bps,
                "amount": delta_amount,
                "fee": delta_fee,
                "reason": reason,
                "verification_run_id": verification_run_id,
            },
            fields=["released_bps", "released_amount", "released_fee"],
        )
        op_key = None
        if delta_amount > 0:
            payable = _payee_payable(escrow.payee_id)
            op = ProviderOperation.objects.create(
                escrow=escrow,
                kind=ProviderOperation.Kind.TRANSFER,
                idempotency_key=key,
                amount=delta_amount,
                currency=escrow.currency,
                status=ProviderOperation.Status.PENDING if payable else ProviderOperation.Status.AWAITING_PAYEE,
                reason=reason[:255],
                verification_run_id=verification_run_id[:128],
            )
            op_key = op.idempotency_key
            if payable:
                _enqueue("payment_operation_execute", op.pk)
        if to == S.RELEASED:
            signals.escrow_closed.send(sender=Escrow, **_signal_kwargs(escrow, reason=reason, status=escrow.status))
    return ReleaseResult(escrow.pk, fraction_bps, target_amount, target_fee, delta_amount, op_key, escrow.status)


def _refund_mark(escrow: Escrow, *, amount: int, reason: str) -> ProviderOperation:
    op = ProviderOperation.objects.create(
        escrow=escrow,
        kind=ProviderOperation.Kind.REFUND,
        idempotency_key=f"refund:{escrow.pk}",
        amount=amount,
        currency=escrow.currency,
        reason=reason[:255],
    )
    _enqueue("payment_operation_execute", op.pk)
    return op


def escrow_refund_remainder(*, escrow_id: int, reason: str) -> RefundResult:
    """Refund everything still held (the unreleased amount and its share of the fee). Idempotent."""
    with transaction.atomic():
        escrow = _lock(escrow_id)
        existing = ProviderOperation.objects.filter(idempotency_key=f"refund:{escrow.pk}").first()
        if existing is not None:
            return RefundResult(escrow.pk, existing.amount, existing.idempotency_key, escrow.status)
        if escrow.status in (S.PENDING_FUNDING, S.CANCELLED):
            raise IllegalTransition(
                f"Cannot refund: the escrow is {escrow.status}; cancel an unfunded escrow instead.",
                fields={"status": [escrow.status]},
            )
        held = ledger_balances(escrow_id=escrow.pk)[A.HELD]
        if held <= 0:
            return RefundResult(escrow.pk, 0, None, escrow.status)
        if escrow.frozen:
            raise EscrowFrozen("The escrow is frozen while a chargeback is open; nothing can be refunded.")
        op = _refund_mark(escrow, amount=held, reason=reason)
        escrow.status_reason = reason[:255]
        to = S.REFUNDED if escrow.released_amount == 0 and escrow.status == S.FUNDED else S.CLOSED
        _move(escrow, to, verb="escrow_refunded", data={"amount": held, "reason": reason}, fields=["status_reason"])
        signals.escrow_closed.send(sender=Escrow, **_signal_kwargs(escrow, reason=reason, status=escrow.status))
    return RefundResult(escrow.pk, held, op.idempotency_key, escrow.status)


# ---- executing provider operations ---------------------------------------------------------------


def _operation_failure_record(op_id: int, exc: DomainError, *, blocked: bool) -> None:
    updates = {
        "attempts": F("attempts") + 1,
        "last_error": f"{exc.code}: {exc.message}"[:2000],
        "updated_at": timezone.now(),
    }
    if blocked:
        updates["status"] = ProviderOperation.Status.BLOCKED
    ProviderOperation.objects.filter(pk=op_id).exclude(status=ProviderOperation.Status.SUCCEEDED).update(**updates)


def payment_operation_execute(*, operation_id: int) -> ProviderOperation:
    """Make the marked transfer or refund at the provider with its idempotency key and record the outcome.

    Safe to run any number of times, concurrently or after a crash: the key makes the provider answer with
    the same object, and recording is idempotent.
    """
    op = ProviderOperation.objects.select_related("escrow").get(pk=operation_id)
    if op.status in (ProviderOperation.Status.SUCCEEDED, ProviderOperation.Status.BLOCKED):
        return op
    escrow = op.escrow
    provider = payment_provider()
    metadata = {"escrow_id": str(escrow.pk), "reference": escrow.reference, "operation_key": op.idempotency_key}
    if op.kind == ProviderOperation.Kind.TRANSFER:
        if escrow.frozen:
            return op  # paid once the chargeback is settled (payouts_retry_payable)
        account = ConnectedAccount.objects.filter(user_id=escrow.payee_id).first()
        if account is None or not account.transfers_active:
            ProviderOperation.objects.filter(pk=op.pk, status=ProviderOperation.Status.PENDING).update(
                status=ProviderOperation.Status.AWAITING_PAYEE, updated_at=timezone.now()
            )
            op.refresh_from_db()
            return op

        def transfer() -> Transfer:
            found = None
            if op.attempts:  # a retry: look before creating, in case the provider's idempotency key expired
                found = next(
                    (
                        t
                        for t in provider.transfers_list(transfer_group=_transfer_group(escrow))
                        if t.metadata.get("operation_key") == op.idempotency_key
                    ),
                    None,
                )
            return found or provider.transfer_create(
                amount=op.amount,
                currency=op.currency,
                destination=account.provider_account_id,
                source_transaction=escrow.charge_id or None,
                transfer_group=_transfer_group(escrow),
                metadata=metadata,
                idempotency_key=op.idempotency_key,
            )

        return _operation_call(op, transfer, lambda made: operation_transfer_record(operation_id=op.pk, transfer=made))

    refunded_intent = op.payment_intent_id or escrow.payment_intent_id

    def refund() -> Refund:
        found = None
        if op.attempts:
            found = next(
                (
                    r
                    for r in provider.refunds_list(payment_intent_id=refunded_intent)
                    if r.metadata.get("operation_key") == op.idempotency_key
                ),
                None,
            )
        return found or provider.refund_create(
            payment_intent_id=refunded_intent,
            amount=op.amount,
            metadata=metadata,
            idempotency_key=op.idempotency_key,
        )

    return _operation_call(op, refund, lambda made: operation_refund_record(operation_id=op.pk, refund=made))


def _operation_call(op: ProviderOperation, call, record) -> ProviderOperation:
    """Call the provider once for `op`; retryable failures re-raise for the queue, others block the operation."""
    try:
        outcome = call()
    except RetryableError as exc:
        _operation_failure_record(op.pk, exc, blocked=False)
        raise
    except DomainError as exc:
        _operation_failure_record(op.pk, exc, blocked=True)
        logger.error("%s %s blocked: %s", op.kind, op.idempotency_key, exc.message)
        return ProviderOperation.objects.get(pk=op.pk)
    return record(outcome)


def _operation_lock(operation_id: int) -> tuple[ProviderOperation, Escrow]:
    """Lock an operation and its escrow in the order every writer uses: the escrow first."""
    escrow = _lock(ProviderOperation.objects.values_list("escrow_id", flat=True).get(pk=operation_id))
    return ProviderOperation.objects.select_for_update().get(pk=operation_id), escrow


def operation_transfer_record(*, operation_id: int, transfer: Transfer) -> ProviderOperation:
    with transaction.atomic():
        op, escrow = _operation_lock(operation_id)
        if op.status == ProviderOperation.Status.SUCCEEDED:
            return op
        op.status = ProviderOperation.Status.SUCCEEDED
        op.provider_object_id = transfer.id
        op.save(update_fields=["status", "provider_object_id", "updated_at"])
        ledger_post(
            escrow=escrow,
            idempotency_key=f"transfer:{op.idempotency_key}",
            kind="transfer",
            lines=[(A.ENGINEER_PAYABLE, -op.amount), (A.ENGINEER_PAID, op.amount)],
            provider_object_id=transfer.id,
            provider_ids={"transfer": transfer.id, "destination": transfer.destination},
        )
        audit_record(
            actor=None, verb="escrow_transfer_made", obj=escrow, data={"transfer": transfer.id, "amount": op.amount}
        )
    return op


def operation_refund_record(*, operation_id: int, refund: Refund) -> ProviderOperation:
    with transaction.atomic():
        op, escrow = _operation_lock(operation_id)
        if op.kind == ProviderOperation.Kind.DUPLICATE_REFUND:
            if not op.provider_object_id:
                op.status = ProviderOperation.Status.SUCCEEDED
                op.provider_object_id = refund.id
                op.save(update_fields=["status", "provider_object_id", "updated_at"])
                audit_record(
                    actor=None,
                    verb="escrow_duplicate_payment_refunded",
                    obj=escrow,
                    data={"refund": refund.id, "payment_intent": op.payment_intent_id, "amount": op.amount},
                )
            return op
        if not op.provider_object_id:
            op.status = ProviderOperation.Status.SUCCEEDED
            op.provider_object_id = refund.id
            op.save(update_fields=["status", "provider_object_id", "updated_at"])
            ledger_post(
                escrow=escrow,
                idempotency_key=f"refund:{escrow.pk}",
                kind="refund",
                lines=[(A.HELD, -op.amount), (A.REFUNDS, op.amount)],
                provider_object_id=refund.id,
                provider_ids={"refund": refund.id, "payment_intent": escrow.payment_intent_id or ""},
            )
            audit_record(
                actor=None, verb="escrow_refund_made", obj=escrow, data={"refund": refund.id, "amount": op.amount}
            )
        if refund.status in ("failed", "canceled"):
            _, created = ledger_post(
                escrow=escrow,
                idempotency_key=f"refund_failed:{refund.id}",
                kind="refund_failed",
                lines=[(A.REFUNDS, -op.amount), (A.HELD, op.amount)],
                provider_object_id=refund.id,
                memo=refund.failure_reason or refund.status,
            )
            if created:
                op.status = ProviderOperation.Status.BLOCKED
                op.last_error = f"refund {refund.status}: {refund.failure_reason or ''}"
                op.save(update_fields=["status", "last_error", "updated_at"])
                escrow.status_reason = f"refund {refund.status}; the money is held again"[:255]
                escrow.save(update_fields=["status_reason", "updated_at"])
                audit_record(actor=None, verb="escrow_refund_failed", obj=escrow, data={"refund": refund.id})
    return op


def transfer_sync(*, transfer: Transfer) -> None:
    """A transfer's current state: record it if our operation did not yet, book reversals once."""
    op = (
        ProviderOperation.objects.filter(
            Q(provider_object_id=transfer.id) | Q(idempotency_key=transfer.metadata.get("operation_key", "-"))
        )
        .filter(kind=ProviderOperation.Kind.TRANSFER)
        .first()
    )
    if op is None:
        return
    if op.status != ProviderOperation.Status.SUCCEEDED:
        operation_transfer_record(operation_id=op.pk, transfer=transfer)
    with transaction.atomic():
        escrow = _lock(op.escrow_id)
        booked = -(
            LedgerEntry.objects.filter(
                transaction__kind="transfer_reversal",
                transaction__provider_object_id=transfer.id,
                account=A.ENGINEER_PAID,
            ).aggregate(total=Sum("amount"))["total"]
            or 0
        )
        missing = transfer.amount_reversed - booked
        if missing > 0:
            ledger_post(
                escrow=escrow,
                idempotency_key=f"transfer_reversal:{transfer.id}:{transfer.amount_reversed}",
                kind="transfer_reversal",
                lines=[(A.ENGINEER_PAID, -missing), (A.HELD, missing)],
                provider_object_id=transfer.id,
            )
            audit_record(
                actor=None,
                verb="escrow_transfer_reversed",
                obj=escrow,
                data={"transfer": transfer.id, "amount": missing},
            )


def refund_sync(*, refund: Refund) -> None:
    op = (
        ProviderOperation.objects.filter(
            Q(provider_object_id=refund.id) | Q(idempotency_key=refund.metadata.get("operation_key", "-"))
        )
        .filter(kind=ProviderOperation.Kind.REFUND)
        .first()
    )
    if op is not None:
        operation_refund_record(operation_id=op.pk, refund=refund)


# ---- disputes ------------------------------------------------------------------------------------


def escrow_dispute_sync(*, escrow_id: int, dispute: Dispute) -> Escrow:
    """Freeze while a chargeback is open, unfreeze when won, book the loss once when lost."""
    with transaction.atomic():
        escrow = _lock(escrow_id)
        if dispute.open:
            if not escrow.frozen:
                escrow.frozen, escrow.dispute_id = True, dispute.id
                escrow.frozen_reason = f"chargeback {dispute.id} ({dispute.status})"[:255]
                escrow.save(update_fields=["frozen", "dispute_id", "frozen_reason", "updated_at"])
                audit_record(
                    actor=None, verb="escrow_frozen", obj=escrow, data={"dispute": dispute.id, "amount": dispute.amount}
                )
            return escrow
        if dispute.status == "lost":
            held = ledger_balances(escrow_id=escrow.pk)[A.HELD]
            from_held = min(dispute.amount, max(held, 0))
            loss = dispute.amount - from_held
            _, created = ledger_post(
                escrow=escrow,
                idempotency_key=f"dispute_loss:{dispute.id}",
                kind="dispute_loss",
                lines=[
                    (A.HELD, -from_held),
                    (A.CHARGEBACKS, from_held),
                    (A.DISPUTE_LOSS, loss),
                    (A.PLATFORM_CASH, -loss),
                ],
                provider_object_id=dispute.id,
            )
            if created:
                audit_record(
                    actor=None,
                    verb="escrow_dispute_lost",
                    obj=escrow,
                    data={"dispute": dispute.id, "from_held": from_held, "platform_loss": loss},
                )
                if from_held == held and escrow.status in (S.FUNDED, S.PARTIALLY_RELEASED):
                    to = S.REFUNDED if escrow.released_amount == 0 else S.CLOSED
                    escrow.status_reason = f"chargeback {dispute.id} lost"
                    _move(
                        escrow,
                        to,
                        verb="escrow_closed_by_chargeback",
                        data={"dispute": dispute.id},
                        fields=["status_reason"],
                    )
                    signals.escrow_closed.send(
                        sender=Escrow, **_signal_kwargs(escrow, reason="chargeback lost", status=escrow.status)
                    )
        if escrow.frozen and escrow.dispute_id == dispute.id:
            escrow.frozen, escrow.frozen_reason = False, ""
            escrow.save(update_fields=["frozen", "frozen_reason", "updated_at"])
            audit_record(
                actor=None, verb="escrow_unfrozen", obj=escrow, data={"dispute": dispute.id, "status": dispute.status}
            )
            for op_id in escrow.operations.filter(status=ProviderOperation.Status.PENDING).values_list("pk", flat=True):
                _enqueue("payment_operation_execute", op_id)
    return escrow


# ---- engineers' payout accounts ------------------------------------------------------------------


def connected_account_sync(*, info: ConnectedAccountInfo) -> ConnectedAccount | None:
    with transaction.atomic():
        account = ConnectedAccount.objects.select_for_update().filter(provider_account_id=info.id).first()
        if account is None:
            return None
        became_payable = info.transfers_active and not account.transfers_active
        account.transfers_active = info.transfers_active
        account.details_submitted = info.details_submitted
        account.payouts_enabled = info.payouts_enabled
        account.requirements_due = list(info.requirements_due)
        account.save()
        if became_payable:
            payouts_release_awaiting(user_id=account.user_id)
    return account


def payouts_release_awaiting(*, user_id: int) -> int:
    """The engineer can now be paid: queue every transfer that waited for their account."""
    ids = list(
        ProviderOperation.objects.filter(
            escrow__payee_id=user_id, status=ProviderOperation.Status.AWAITING_PAYEE
        ).values_list("pk", flat=True)
    )
    ProviderOperation.objects.filter(pk__in=ids, status=ProviderOperation.Status.AWAITING_PAYEE).update(
        status=ProviderOperation.Status.PENDING, updated_at=timezone.now()
    )
    for op_id in ids:
        _enqueue("payment_operation_execute", op_id)
    return len(ids)


def _onboarding_urls() -> tuple[str, str]:
    base = settings.PUBLIC_BASE_URL.rstrip("/")
    return f"{base}/api/v1/payments/onboarding/?refresh=1", f"{base}/api/v1/payments/onboarding/?done=1"


def engineer_onboarding_start(*, user: User) -> OnboardingStatus:
    if not user.is_authenticated or user.account_type != User.AccountType.ENGINEER:
        raise NotPermitted("Only engineers set up payout accounts.", code="not_an_engineer")
    provider = payment_provider()
    account = ConnectedAccount.objects.filter(user=user).first()
    if account is None:
        info = provider.account_create(
            email=user.email, metadata={"user_id": str(user.pk)}, idempotency_key=f"account:{user.pk}"
        )
        try:
            with transaction.atomic():
                account = ConnectedAccount.objects.create(
                    user=user,
                    provider_account_id=info.id,
                    transfers_active=info.transfers_active,
                    details_submitted=info.details_submitted,
                    payouts_enabled=info.payouts_enabled,
                    requirements_due=list(info.requirements_due),
                )
                audit_record(actor=user, verb="payout_account_created", obj=account, data={"account": info.id})
        except IntegrityError:
            account = ConnectedAccount.objects.get(user=user)
    url = None
    if not account.transfers_active:
        refresh_url, return_url = _onboarding_urls()
        url = provider.account_link_create(
            account_id=account.provider_account_id, refresh_url=refresh_url, return_url=return_url
        ).url
    return OnboardingStatus(
        account.provider_account_id,
        url,
        account.transfers_active,
        account.details_submitted,
        tuple(account.requirements_due),
    )


def engineer_onboarding_refresh(*, user: User) -> OnboardingStatus:
    account = ConnectedAccount.objects.filter(user=user).first()
    if account is None:
        return OnboardingStatus(None, None, False, False, ())
    if not account.transfers_active:
        info = payment_provider().account_get(account_id=account.provider_account_id)
        account = connected_account_sync(info=info) or account
    return OnboardingStatus(
        account.provider_account_id,
        None,
        account.transfers_active,
        account.details_submitted,
        tuple(account.requirements_due),
    )


# ---- offline provider's simulated checkout -------------------------------------------------------


def offline_payment_confirm(*, payment_intent_id: str, outcome: str, actor: User) -> Escrow:
    """Play the payer's side of an offline payment; its events enter the stored-event path like Stripe's."""
    escrow = Escrow.objects.filter(payment_intent_id=payment_intent_id).first()
    if escrow is None:
        raise NotFound("No such payment.", code="payment_intent_not_found")
    if not (actor.is_staff or user_is_org_admin(user=actor, organization_id=escrow.payer_organization_id)):
        raise NotPermitted("Only the paying organization's owners and admins can confirm this payment.")
    if outcome not in {"succeed", "decline", "dispute", "dispute_won", "dispute_lost"}:
        raise ValidationFailed("Unknown outcome.", fields={"outcome": ["invalid"]})
    events = payment_provider().funding_simulate(payment_intent_id=payment_intent_id, outcome=outcome)
    for event in events:
        webhook_event_store(event=event, source="offline")
    return escrow


def offline_onboarding_complete(*, account_id: str, actor: User) -> None:
    account = ConnectedAccount.objects.filter(provider_account_id=account_id).first()
    if account is None or not (actor.is_staff or account.user_id == actor.pk):
        raise NotFound("No such payout account.")
    for event in payment_provider().account_simulate_onboarding(account_id=account_id):
        webhook_event_store(event=event, source="offline")


# ---- webhook events ------------------------------------------------------------------------------


def webhook_event_ignored(*, event: ProviderEvent, source: str) -> bool:
    """Stripe sends connected accounts' test-mode events to a live platform's Connect endpoint as well as to its
    test one (https://stripe.com/docs/connect/webhooks): they are answered 200 and neither stored nor acted on.
    The account endpoint receives only its own mode's events, so a mismatch there is still refused."""
    return source == "connect" and settings.STRIPE_LIVEMODE and not event.livemode


def webhook_event_store(*, event: ProviderEvent, source: str) -> bool:
    """Store a verified event once (the unique event id settles races) and queue it; True if it was new.

    A test-mode event at a live deployment's Connect endpoint is not stored (False): see webhook_event_ignored.
    """
    if webhook_event_ignored(event=event, source=source):
        return False
    if event.livemode != settings.STRIPE_LIVEMODE and source != "offline":
        raise WebhookRejected("The event's livemode does not match this deployment.", code="livemode_mismatch")
    fields = {
        "event_id": event.id,
        "source": source,
        "type": event.type[:100],
        "livemode": event.livemode,
        "account": event.account,
        "object_type": event.object_type[:64],
        "object_id": event.object_id,
    }
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        # One statement, one round trip: the unique event id settles concurrent deliveries.
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO payments_webhookevent (event_id, source, type, livemode, account, object_type, object_id,"
                " payload, status, attempts, processed_count, last_error, received_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, 0, 0, '', now())"
                " ON CONFLICT (event_id) DO NOTHING RETURNING id",
                [*fields.values(), json.dumps(dict(event.payload)), WebhookEvent.Status.PENDING],
            )
            row = cursor.fetchone()
        if row is None:
            return False
    else:
        try:
            with transaction.atomic():
                WebhookEvent.objects.create(**fields, payload=dict(event.payload))
        except IntegrityError:
            return False
    _webhook_drain_request()
    return True


def webhook_event_process(*, event_id: int) -> str | None:
    """Claim the stored event, re-fetch its object and act on the object's current state."""
    now = timezone.now()
    claimed = (
        WebhookEvent.objects.filter(pk=event_id)
        .filter(
            Q(status=WebhookEvent.Status.PENDING)
            | Q(status=WebhookEvent.Status.PROCESSING, claimed_at__lt=now - STALE_CLAIM)
        )
        .update(status=WebhookEvent.Status.PROCESSING, claimed_at=now, attempts=F("attempts") + 1)
    )
    if not claimed:
        return None
    return _webhook_event_handle(WebhookEvent.objects.get(pk=event_id))


def _webhook_event_handle(event: WebhookEvent, *, record: bool = True) -> str:
    """Act on a claimed event; RetryableError leaves it pending for a later attempt.

    With `record=False` the caller marks the outcome itself (the drain does it once per batch).
    """
    from .webhooks import webhook_event_dispatch

    try:
        outcome = webhook_event_dispatch(event)
    except RetryableError as exc:
        WebhookEvent.objects.filter(pk=event.pk).update(
            status=WebhookEvent.Status.PENDING, last_error=exc.message[:2000]
        )
        raise
    except DomainError as exc:
        # Retrying will not help (e.g. the provider no longer has the object): keep it for operators.
        WebhookEvent.objects.filter(pk=event.pk).update(
            status=WebhookEvent.Status.IGNORED,
            last_error=f"{exc.code}: {exc.message}"[:2000],
            processed_at=timezone.now(),
            processed_count=F("processed_count") + 1,
        )
        return WebhookEvent.Status.IGNORED
    except Exception as exc:
        give_up = event.attempts >= 5
        WebhookEvent.objects.filter(pk=event.pk).update(
            status=WebhookEvent.Status.IGNORED if give_up else WebhookEvent.Status.PENDING,
            last_error=f"{type(exc).__name__}: {exc}"[:2000],
        )
        raise
    if record:
        _webhook_events_mark([event.pk], outcome)
    return outcome


def _webhook_events_mark(ids: list[int], outcome: str) -> None:
    WebhookEvent.objects.filter(pk__in=ids, status=WebhookEvent.Status.PROCESSING).update(
        status=outcome, processed_at=timezone.now(), processed_count=F("processed_count") + 1
    )


DRAIN_KEY = "payments:webhook-drain-scheduled"
DRAIN_BATCH = 100


def _webhook_drain_request() -> None:
    """After commit, make sure one drain task is on its way (one Redis SET NX instead of a publish per event).

    The key stays set while a drain runs; the drain deletes it only when it finds nothing pending, and then
    looks once more. An event is committed *before* its request tries to set the key, so a request that finds
    the key set can count on a drain that will still look after it: no stored event is left waiting (the key
    expires, and the beat redrive is the backstop, if a drain message is ever lost).
    """

    def send() -> None:
        from django.core.cache import cache
        from kombu.exceptions import OperationalError

        from . import tasks

        try:
            if cache.add(DRAIN_KEY, 1, timeout=10):
                tasks.webhook_events_drain.delay()
        except OperationalError:
            logger.exception("could not enqueue the webhook drain; the beat redrive will process the events")
        except Exception:  # the cache (Redis) is down: fall back to a message per event
            logger.warning("webhook drain debounce unavailable; enqueueing directly", exc_info=True)
            tasks.webhook_events_drain.delay()

    transaction.on_commit(send)


def webhook_events_drain(*, max_batches: int = 1000) -> int:
    """Process every pending stored event, in batches claimed with SKIP LOCKED (concurrent drains share out)."""
    from django.core.cache import cache

    done = 0
    failed: set[int] = set()
    released = False
    for _ in range(max_batches):
        with transaction.atomic():
            ids = list(
                WebhookEvent.objects.select_for_update(skip_locked=True)
                .filter(status=WebhookEvent.Status.PENDING)
                .exclude(pk__in=failed)
                .order_by("id")
                .values_list("pk", flat=True)[:DRAIN_BATCH]
            )
            WebhookEvent.objects.filter(pk__in=ids).update(
                status=WebhookEvent.Status.PROCESSING, claimed_at=timezone.now(), attempts=F("attempts") + 1
            )
        if not ids:
            if released:
                break
            # Nothing pending: let the next event schedule a drain, then look once more for any event whose
            # request found the key still set just before this.
            cache.delete(DRAIN_KEY)
            released = True
            continue
        released = False
        outcomes: dict[str, list[int]] = {}
        try:
            for event in WebhookEvent.objects.filter(pk__in=ids).order_by("id"):
                try:
                    outcomes.setdefault(_webhook_event_handle(event, record=False), []).append(event.pk)
                    done += 1
                except Exception:
                    logger.warning("webhook event %s failed; retrying it on its own", event.event_id, exc_info=True)
                    failed.add(event.pk)
                    _task_send(
                        "webhook_event_process", (event.pk,), countdown=min(600, 5 * 2 ** min(event.attempts, 7))
                    )
        finally:
            # One write per outcome for the whole batch. A crash before it leaves the batch claimed; the
            # redrive hands it out again after STALE_CLAIM, and handlers act on current state, so that is safe.
            for outcome, handled in outcomes.items():
                _webhook_events_mark(handled, outcome)
    return done


def webhook_events_redrive(*, older_than: timedelta = timedelta(minutes=2)) -> int:
    """Queue again events that were stored but never finished (broker down, worker killed)."""
    now = timezone.now()
    ids = list(
        WebhookEvent.objects.filter(
            Q(status=WebhookEvent.Status.PENDING, received_at__lt=now - older_than)
            | Q(status=WebhookEvent.Status.PROCESSING, claimed_at__lt=now - STALE_CLAIM)
        ).values_list("pk", flat=True)[:1000]
    )
    for event_id in ids:
        _enqueue("webhook_event_process", event_id)
    return len(ids)


# ---- beat work -----------------------------------------------------------------------------------


def payouts_retry_payable(*, older_than: timedelta = timedelta(minutes=1)) -> int:
    """Pay what is owed: transfers waiting for a now-payable engineer, and operations left pending."""
    waiting = ProviderOperation.objects.filter(status=ProviderOperation.Status.AWAITING_PAYEE).values(
        "escrow__payee_id"
    )
    for user_id in ConnectedAccount.objects.filter(user_id__in=waiting, transfers_active=True).values_list(
        "user_id", flat=True
    ):
        payouts_release_awaiting(user_id=user_id)
    stale = ProviderOperation.objects.filter(
        status=ProviderOperation.Status.PENDING, updated_at__lt=timezone.now() - older_than, escrow__frozen=False
    ).values_list("pk", flat=True)
    done = 0
    for op_id in list(stale):
        try:
            payment_operation_execute(operation_id=op_id)
            done += 1
        except RetryableError as exc:
            logger.warning("operation %s still failing: %s", op_id, exc.message)
    return done


def _issue_record(escrow: Escrow, kind: str, expected: int, actual: int, detail: dict) -> None:
    open_issue = ReconciliationIssue.objects.filter(escrow=escrow, kind=kind, resolved_at__isnull=True).first()
    if expected == actual:
        if open_issue is not None:
            open_issue.resolved_at = timezone.now()
            open_issue.save(update_fields=["resolved_at", "updated_at"])
        return
    if open_issue is None:
        try:
            with transaction.atomic():
                ReconciliationIssue.objects.create(
                    escrow=escrow, kind=kind, expected=expected, actual=actual, detail=detail
                )
        except IntegrityError:
            pass
        logger.error("reconciliation: %s on escrow %s: ledger %s, provider %s", kind, escrow.pk, expected, actual)
    elif (open_issue.expected, open_issue.actual) != (expected, actual):
        open_issue.expected, open_issue.actual, open_issue.detail = expected, actual, detail
        open_issue.save(update_fields=["expected", "actual", "detail", "updated_at"])


def payments_reconcile(*, limit: int = 500) -> int:
    """Compare the provider's transfers (by transfer group) and refunds (by payment intent) with the ledger."""
    provider = payment_provider()
    checked = 0
    for escrow in Escrow.objects.filter(status=S.PENDING_FUNDING, payment_intent_id__isnull=False)[:limit]:
        try:
            escrow_funding_sync(
                escrow_id=escrow.pk, funding=provider.funding_get(payment_intent_id=escrow.payment_intent_id)
            )
        except DomainError as exc:
            logger.warning("reconcile: funding of escrow %s: %s", escrow.pk, exc.message)
    recent = timezone.now() - timedelta(days=90)
    funded = (
        Escrow.objects.exclude(status__in=[S.PENDING_FUNDING])
        .exclude(payment_intent_id=None)
        .filter(updated_at__gte=recent)
    )
    for escrow in funded.order_by("-updated_at")[:limit]:
        try:
            transfers = provider.transfers_list(transfer_group=_transfer_group(escrow))
            refunds = provider.refunds_list(payment_intent_id=escrow.payment_intent_id)
        except DomainError as exc:
            logger.warning("reconcile: escrow %s: %s", escrow.pk, exc.message)
            continue
        balances = ledger_balances(escrow_id=escrow.pk)
        paid = sum(t.amount - t.amount_reversed for t in transfers)
        refunded = sum(r.amount for r in refunds if r.status in ("succeeded", "pending", "requires_action"))
        _issue_record(escrow, "transfers", balances[A.ENGINEER_PAID], paid, {"transfers": [t.id for t in transfers]})
        _issue_record(escrow, "refunds", balances[A.REFUNDS], refunded, {"refunds": [r.id for r in refunds]})
        checked += 1
    webhook_events_redrive()
    return checked
