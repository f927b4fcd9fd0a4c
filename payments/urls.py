"""Mounted at /api/v1/payments/."""

from django.urls import path

from . import apis, webhooks

app_name = "payments"

urlpatterns = [
    path("escrows/<int:escrow_id>/", apis.EscrowSummaryApi.as_view(), name="escrow-summary"),
    path("onboarding/", apis.OnboardingApi.as_view(), name="onboarding"),
    path(
        "offline/payment-intents/<str:payment_intent_id>/confirm/",
        apis.OfflinePaymentConfirmApi.as_view(),
        name="offline-confirm",
    ),
    path("stripe/webhook/", webhooks.stripe_webhook, name="stripe-webhook"),
    path("stripe/connect-webhook/", webhooks.stripe_connect_webhook, name="stripe-connect-webhook"),
]
