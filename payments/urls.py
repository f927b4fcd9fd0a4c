"""Mounted at /api/v1/payments/."""

from django.urls import path

from common import converters  # noqa: F401 - registers the converters the routes name

from . import apis, webhooks

app_name = "payments"

urlpatterns = [
    path("escrows/<id:escrow_id>/", apis.EscrowSummaryApi.as_view(), name="escrow-summary"),
    path("onboarding/", apis.OnboardingApi.as_view(), name="onboarding"),
    path(
        "offline/payment-intents/<provider_id:payment_intent_id>/confirm/",
        apis.OfflinePaymentConfirmApi.as_view(),
        name="offline-confirm",
    ),
    path("stripe/webhook/", webhooks.stripe_webhook, name="stripe-webhook"),
    path("stripe/connect-webhook/", webhooks.stripe_connect_webhook, name="stripe-connect-webhook"),
]
