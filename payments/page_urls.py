"""Mounted at /payments/: the offline provider's HTML pages."""

from django.urls import path

from . import pages

urlpatterns = [
    path("offline/checkout/<str:payment_intent_id>/", pages.offline_checkout, name="payments-offline-checkout"),
    path("offline/onboarding/<str:account_id>/", pages.offline_onboarding, name="payments-offline-onboarding"),
]
