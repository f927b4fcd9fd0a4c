"""The offline provider's small HTML pages: a checkout with succeed / decline / dispute buttons, and onboarding."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

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


@login_required(login_url=LOGIN_URL)
def offline_checkout(request: HttpRequest, payment_intent_id: str) -> HttpResponse:
    escrow = Escrow.objects.filter(payment_intent_id=payment_intent_id).first()
    message, status = "", 200
    if request.method == "POST":
        try:
            services.offline_payment_confirm(
                payment_intent_id=payment_intent_id, outcome=request.POST.get("outcome", ""), actor=request.user
            )
            message = f"Done: {request.POST.get('outcome')}. The payment's events are being processed."
        except DomainError as exc:
            message, status = exc.message, exc.status_code
        if escrow is not None:
            escrow.refresh_from_db()
    context = {"escrow": escrow, "payment_intent_id": payment_intent_id, "outcomes": OUTCOMES, "message": message}
    return render(request, "payments/offline_checkout.html", context, status=status if escrow else 404)


@login_required(login_url=LOGIN_URL)
def offline_onboarding(request: HttpRequest, account_id: str) -> HttpResponse:
    account = ConnectedAccount.objects.filter(provider_account_id=account_id).first()
    message, status = "", 200
    if request.method == "POST":
        try:
            services.offline_onboarding_complete(account_id=account_id, actor=request.user)
            message = "Onboarding complete: transfers will be enabled shortly."
        except DomainError as exc:
            message, status = exc.message, exc.status_code
        if account is not None:
            account.refresh_from_db()
    return render(
        request,
        "payments/offline_onboarding.html",
        {"account": account, "account_id": account_id, "message": message},
        status=status if account else 404,
    )
