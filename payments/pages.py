"""The offline provider's small HTML pages: a checkout with succeed / decline / dispute buttons, and onboarding.

Like the API, a page answers 404 to anyone it does not belong to, so it reveals neither the amount nor that the
payment exists: a checkout belongs to the paying organization's members, a payout account to its engineer, and
both to operators.
"""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

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
