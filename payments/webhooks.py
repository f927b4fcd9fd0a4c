"""Stripe webhooks in: verify on the raw body, store once, answer 2xx at once; process on the queue.

Processing re-fetches the object from the provider and acts on its current state, so arrival order, duplicates
and replays do not matter. Unknown event types and events about objects we never created are stored and ignored.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from common.api import error_body
from common.errors import DomainError

from . import services
from .errors import AccountAccessRevoked, WebhookNotConfigured
from .models import ConnectedAccount, Escrow, ProviderOperation, WebhookEvent
from .providers.factory import payment_provider

logger = logging.getLogger(__name__)

MAX_BODY = 512 * 1024


def _receive(request: HttpRequest, *, connect: bool) -> JsonResponse:
    payload = request.body
    if len(payload) > MAX_BODY:
        return JsonResponse(error_body("payload_too_large", "The webhook body is too large."), status=413)
    try:
        event = payment_provider().webhook_parse(
            payload=payload, signature=request.headers.get("Stripe-Signature"), connect=connect
        )
        source = "connect" if connect else "account"
        if services.webhook_event_ignored(event=event, source=source):
            logger.info("test-mode event %s (%s) ignored at the live Connect endpoint", event.id, event.type)
            return JsonResponse({"received": True, "ignored": "test_mode_event"}, status=200)
        created = services.webhook_event_store(event=event, source=source)
    except WebhookNotConfigured as exc:
        logger.error("webhook refused: %s", exc.message)
        return JsonResponse(error_body(exc.code, exc.message), status=503)
    except DomainError as exc:
        logger.warning("webhook rejected: %s", exc.message)
        return JsonResponse(error_body(exc.code, exc.message), status=400)
    return JsonResponse({"received": True, "duplicate": not created}, status=200)


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    return _receive(request, connect=False)


@csrf_exempt
@require_POST
def stripe_connect_webhook(request: HttpRequest) -> JsonResponse:
    return _receive(request, connect=True)


# ---- processing (called by the webhook_event_process task through services) ----------------------

IGNORED = WebhookEvent.Status.IGNORED
PROCESSED = WebhookEvent.Status.PROCESSED


def _payload_object(event: WebhookEvent) -> dict:
    """The event's snapshot of its object (used only to find our rows; never acted on)."""
    return (event.payload.get("data") or {}).get("object") or {}


def _escrow_named_in(event: WebhookEvent) -> Escrow | None:
    """The escrow an object's metadata names (a Checkout Session and the intent Stripe made for it carry ours)."""
    escrow_id = str((_payload_object(event).get("metadata") or {}).get("escrow_id") or "")
    return Escrow.objects.filter(pk=int(escrow_id)).first() if escrow_id.isdigit() and len(escrow_id) < 19 else None


def _payment_intent(event: WebhookEvent) -> str:
    escrow = Escrow.objects.filter(payment_intent_id=event.object_id).first() or _escrow_named_in(event)
    if escrow is None:
        return IGNORED
    funding = payment_provider().funding_get(payment_intent_id=event.object_id)
    # The sync checks that the re-fetched intent really belongs to this escrow before acting on it.
    services.escrow_funding_sync(escrow_id=escrow.pk, funding=funding)
    return PROCESSED


def _checkout_session(event: WebhookEvent) -> str:
    escrow = Escrow.objects.filter(checkout_session_id=event.object_id).first() or _escrow_named_in(event)
    if escrow is None:
        return IGNORED
    session = payment_provider().checkout_get(session_id=event.object_id)
    services.escrow_checkout_sync(escrow_id=escrow.pk, session=session)
    return PROCESSED


def _refund_related(event: WebhookEvent) -> str:
    if event.object_type == "refund":
        payment_intent_id = _payload_object(event).get("payment_intent")
        escrow = Escrow.objects.filter(operations__provider_object_id=event.object_id).first()
        if escrow is None and payment_intent_id:
            escrow = Escrow.objects.filter(payment_intent_id=payment_intent_id).first()
    else:  # a charge
        escrow = Escrow.objects.filter(charge_id=event.object_id).first() if event.object_id else None
    if escrow is None or not escrow.payment_intent_id:
        return IGNORED
    if not escrow.operations.filter(kind=ProviderOperation.Kind.REFUND).exists():
        return IGNORED
    for refund in payment_provider().refunds_list(payment_intent_id=escrow.payment_intent_id):
        services.refund_sync(refund=refund)
    return PROCESSED


def _dispute(event: WebhookEvent) -> str:
    obj = _payload_object(event)
    charge_id, payment_intent_id = obj.get("charge"), obj.get("payment_intent")
    escrow = None
    if charge_id:
        escrow = Escrow.objects.filter(charge_id=charge_id).first()
    if escrow is None and payment_intent_id:
        escrow = Escrow.objects.filter(payment_intent_id=payment_intent_id).first()
    if escrow is None:
        return IGNORED
    dispute = payment_provider().dispute_get(dispute_id=event.object_id)
    services.escrow_dispute_sync(escrow_id=escrow.pk, dispute=dispute)
    services.escrow_dispute_fees_book(escrow_id=escrow.pk, dispute=dispute)
    return PROCESSED


def _transfer(event: WebhookEvent) -> str:
    key = (_payload_object(event).get("metadata") or {}).get("operation_key") or "-"
    known = (
        ProviderOperation.objects.filter(provider_object_id=event.object_id).exists()
        or ProviderOperation.objects.filter(idempotency_key=key, kind=ProviderOperation.Kind.TRANSFER).exists()
    )
    if not known:
        return IGNORED
    services.transfer_sync(transfer=payment_provider().transfer_get(transfer_id=event.object_id))
    return PROCESSED


def _our_account(account_id: str) -> ConnectedAccount | None:
    return ConnectedAccount.objects.filter(provider_account_id=account_id).first() if account_id else None


def _account(event: WebhookEvent) -> str:
    """account.updated, capability.updated and account.application.deauthorized: re-fetch the account. A provider
    that refuses us the account confirms a deauthorization (the account is disconnected); one that still answers
    means the event is stale, and the account's current state is what we record."""
    account_id = (
        event.object_id if event.object_type == "account" else (_payload_object(event).get("account") or event.account)
    )
    account = _our_account(account_id)
    if account is None:
        return IGNORED
    services.payout_account_refetch(account=account)
    return PROCESSED


def _account_deauthorized(event: WebhookEvent) -> str:
    # The event's object is our Connect application; the connected account is the event's `account`.
    account = _our_account(event.account)
    if account is None:
        return IGNORED
    services.payout_account_refetch(account=account)
    return PROCESSED


def _payout(event: WebhookEvent) -> str:
    """payout.paid / payout.failed on a connected account: re-fetch the payout (as that account), record it once."""
    if _our_account(event.account) is None:
        return IGNORED
    try:
        payout = payment_provider().payout_get(account_id=event.account, payout_id=event.object_id)
    except AccountAccessRevoked:
        services.payout_account_disconnect(account_id=event.account)
        return PROCESSED
    services.payout_record(payout=payout)
    return PROCESSED


HANDLERS = {
    "payment_intent.succeeded": _payment_intent,
    "payment_intent.payment_failed": _payment_intent,
    "payment_intent.canceled": _payment_intent,
    "payment_intent.processing": _payment_intent,
    "payment_intent.requires_action": _payment_intent,
    "checkout.session.completed": _checkout_session,
    "checkout.session.async_payment_succeeded": _checkout_session,
    "checkout.session.async_payment_failed": _checkout_session,
    "checkout.session.expired": _checkout_session,
    "charge.refunded": _refund_related,
    "charge.refund.updated": _refund_related,
    "refund.created": _refund_related,
    "refund.updated": _refund_related,
    "refund.failed": _refund_related,
    "charge.dispute.created": _dispute,
    "charge.dispute.updated": _dispute,
    "charge.dispute.closed": _dispute,
    "charge.dispute.funds_withdrawn": _dispute,
    "charge.dispute.funds_reinstated": _dispute,
    "transfer.created": _transfer,
    "transfer.updated": _transfer,
    "transfer.reversed": _transfer,
    "account.updated": _account,
    "capability.updated": _account,
    "account.application.deauthorized": _account_deauthorized,
    "payout.paid": _payout,
    "payout.failed": _payout,
}


def webhook_event_dispatch(event: WebhookEvent) -> str:
    handler = HANDLERS.get(event.type)
    if handler is None or not event.object_id:
        return IGNORED
    return handler(event)
