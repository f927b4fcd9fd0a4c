"""Mounted at /payments/: the offline provider's HTML pages."""

from django.urls import path

from common import converters  # noqa: F401 - registers the converters the routes name

from . import pages

urlpatterns = [
    path("offline/checkout/<provider_id:payment_intent_id>/", pages.offline_checkout, name="payments-offline-checkout"),
    path("checkout/done/", pages.checkout_returned, {"outcome": "done"}, name="payments-checkout-done"),
    path("checkout/cancelled/", pages.checkout_returned, {"outcome": "cancelled"}, name="payments-checkout-cancelled"),
    path("offline/onboarding/<provider_id:account_id>/", pages.offline_onboarding, name="payments-offline-onboarding"),
    # Stripe's refresh_url and return_url for payout-account onboarding: signed, expiring, no login needed.
    path("onboarding/refresh/<str:token>/", pages.onboarding_refresh, name="payments-onboarding-refresh"),
    path("onboarding/return/<str:token>/", pages.onboarding_returned, name="payments-onboarding-return"),
]
