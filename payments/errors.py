"""Payment-specific members of the one domain error family (common.errors)."""

from common.errors import Conflict, DomainError, NotFound, ValidationFailed


class FundingFailed(DomainError):
    """The payer's payment was declined; the message is the provider's, safe to show to the payer."""

    status_code = 402
    default_code = "funding_failed"


class ProviderRejected(DomainError):
    """The provider refused a request for a reason that retrying will not fix."""

    status_code = 502
    default_code = "provider_rejected"


class AccountAccessRevoked(ProviderRejected):
    """The connected account deauthorized the platform: the provider no longer lets us read or pay it."""

    status_code = 409
    default_code = "payout_account_disconnected"


class ProviderObjectMissing(NotFound):
    default_code = "provider_object_missing"


class IdempotencyConflict(Conflict):
    default_code = "provider_idempotency_conflict"


class EscrowFrozen(Conflict):
    default_code = "escrow_frozen"


class PaymentStateConflict(Conflict):
    """The payment is not in a state that allows this step (paying a paid one, declining a paid one)."""

    default_code = "payment_intent_unexpected_state"


class WebhookRejected(ValidationFailed):
    default_code = "webhook_rejected"


class NotSupported(DomainError):
    status_code = 404
    default_code = "not_supported_by_provider"


class WebhookNotConfigured(DomainError):
    """A Stripe webhook endpoint whose signing secret is not set: nothing can be verified, so nothing is taken."""

    status_code = 503
    default_code = "webhook_secret_not_configured"
