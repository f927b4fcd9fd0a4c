"""The offline provider's simulated payer and onboarding: their events enter the stored-event path like Stripe's."""

from __future__ import annotations

import logging

from accounts.models import User
from accounts.selectors import user_is_org_admin
from common.errors import NotFound, NotPermitted, ValidationFailed

from ..models import ConnectedAccount, Escrow
from ..providers.factory import payment_provider
from .webhook_events import webhook_event_store

logger = logging.getLogger(__name__)


# The payer's (and the issuer's) side of an offline payment: pay, decline, a chargeback or an inquiry and its end.
OFFLINE_OUTCOMES = ("succeed", "decline", "dispute", "dispute_won", "dispute_lost", "inquiry", "inquiry_closed")


def offline_payment_confirm(*, payment_intent_id: str, outcome: str, actor: User) -> Escrow:
    """Play the payer's side of an offline payment; its events enter the stored-event path like Stripe's."""
    escrow = Escrow.objects.filter(payment_intent_id=payment_intent_id).first()
    if escrow is None:
        raise NotFound("No such payment.", code="payment_intent_not_found")
    if not (actor.is_staff or user_is_org_admin(user=actor, organization_id=escrow.payer_organization_id)):
        raise NotPermitted("Only the paying organization's owners and admins can confirm this payment.")
    if outcome not in OFFLINE_OUTCOMES:
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
