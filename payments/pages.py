"""The offline provider's small HTML pages: a checkout with succeed / decline / dispute buttons, and onboarding.

The onboarding refresh and return pages (Stripe's `refresh_url` / `return_url`) need no login: engineers who use
API tokens have no session. Their URLs carry a signed, expiring token that names one payout account.

Like the API, a page answers 404 to anyone it does not belong to, so it reveals neither the amount nor that the
payment exists: a checkout belongs to the paying organization's members, a payout account to its engineer, and
both to operators.
"""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import render
from django.utils.html import escape
from django.views.decorators.cache import never_cache

from accounts.models import User
from accounts.selectors import user_is_org_member
from common.errors import DomainError

from . import services
from .models import ConnectedAccount, Escrow

LOGIN_URL = "/api-auth/login/"
OUTCOMES = [
    ("succeed", "Pay (succeeds)"),
    ("decline", "Pay (card declined)"),
    ("dispute", "Pay, then open a chargeback"),
    ("dispute_won", "Chargeback won"),
    ("dispute_lost", "Chargeback lost"),
    ("inquiry", "Pay, then open an inquiry (refundable)"),
    ("inquiry_closed", "Inquiry closed"),
]


def _checkout_visible_to(user: User, escrow: Escrow | None) -> bool:
    return escrow is not None and (
        user.is_staff or user_is_org_member(user=user, organization_id=escrow.payer_organization_id)
    )


def _payout_account_visible_to(user: User, account: ConnectedAccount | None) -> bool:
    return account is not None and (user.is_staff or account.user_id == user.pk)


@login_required(login_url=LOGIN_URL)
def offline_checkout(request: HttpRequest, payment_intent_id: str) -> HttpResponse:
    escrow = Escrow.objects.filter(payment_intent_id=payment_intent_id).first()
    if not _checkout_visible_to(request.user, escrow):
        return render(request, "payments/offline_checkout.html", {"escrow": None}, status=404)
    message, status = "", 200
    if request.method == "POST":
        try:
            services.offline_payment_confirm(
                payment_intent_id=payment_intent_id, outcome=request.POST.get("outcome", ""), actor=request.user
            )
            message = f"Done: {request.POST.get('outcome')}. The payment's events are being processed."
        except DomainError as exc:
            message, status = exc.message, exc.status_code
        escrow.refresh_from_db()
    context = {"escrow": escrow, "payment_intent_id": payment_intent_id, "outcomes": OUTCOMES, "message": message}
    return render(request, "payments/offline_checkout.html", context, status=status)


@login_required(login_url=LOGIN_URL)
def offline_onboarding(request: HttpRequest, account_id: str) -> HttpResponse:
    account = ConnectedAccount.objects.filter(provider_account_id=account_id).first()
    if not _payout_account_visible_to(request.user, account):
        return render(request, "payments/offline_onboarding.html", {"account": None}, status=404)
    message, status = "", 200
    if request.method == "POST":
        try:
            services.offline_onboarding_complete(account_id=account_id, actor=request.user)
            message = "Onboarding complete: transfers will be enabled shortly."
        except DomainError as exc:
            message, status = exc.message, exc.status_code
        account.refresh_from_db()
    return render(
        request,
        "payments/offline_onboarding.html",
        {"account": account, "account_id": account_id, "message": message},
        status=status,
    )


def checkout_returned(request: HttpRequest, *, outcome: str) -> HttpResponse:
    """Where Stripe Checkout sends the payer back. It shows no payment data (anyone may open it): funding is
    decided by the webhooks, never by arriving here."""
    message = {
        "done": "Thank you. The contract shows as funded as soon as Stripe confirms the payment.",
        "cancelled": "The payment was not made. You can start it again from the contract.",
    }[outcome]
    return HttpResponse(
        f"<!doctype html><title>Speedproof payment</title><p>{message}</p>", content_type="text/html; charset=utf-8"
    )


def _plain_page(message: str, *, status: int = 200) -> HttpResponse:
    return HttpResponse(
        f"<!doctype html><title>Speedproof payouts</title><p>{escape(message)}</p>",
        status=status,
        content_type="text/html; charset=utf-8",
    )


def _read_only(request: HttpRequest, token: str, purpose: str) -> HttpResponse | None:
    """Only GET (Stripe's redirects); another method gets 404 for an unknown token, like every page, else 405."""
    if request.method in ("GET", "HEAD"):
        return None
    try:
        services.payout_account_for_token(token=token, purpose=purpose)
    except DomainError as exc:
        return _plain_page(exc.message, status=exc.status_code)
    return HttpResponseNotAllowed(["GET", "HEAD"])


@never_cache
def onboarding_refresh(request: HttpRequest, token: str) -> HttpResponse:
    """Stripe sends the engineer here when an onboarding link expired or was used: make a fresh one, redirect."""
    refused = _read_only(request, token, "refresh")
    if refused is not None:
        return refused
    try:
        url = services.payout_account_link_refresh(token=token)
    except DomainError as exc:
        return _plain_page(exc.message, status=exc.status_code)
    return HttpResponseRedirect(url)


@never_cache
def onboarding_returned(request: HttpRequest, token: str) -> HttpResponse:
    """Stripe sends the engineer back here: say where onboarding stands (re-fetched); it shows no personal data."""
    refused = _read_only(request, token, "return")
    if refused is not None:
        return refused
    try:
        status = services.payout_account_return(token=token)
    except DomainError as exc:
        return _plain_page(exc.message, status=exc.status_code)
    if status.status != "connected":
        message = "This payout account is disconnected from Speedproof. Start onboarding again to be paid."
    elif status.transfers_active and not status.requirements_due:
        message = "Your payout account is ready: released payments are transferred to it."
    elif status.details_submitted:
        message = (
            "Thank you. Stripe is reviewing your details or needs more information; "
            "ask the API for a new onboarding link if anything is still due."
        )
    else:
        message = "Onboarding is not finished yet. Ask the API for a new onboarding link to continue."
    return _plain_page(message)
