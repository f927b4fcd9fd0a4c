"""Every write of the payments app, by concern; the public names are re-exported here for callers.

Modules: `escrows` (open, release, refund, disputes), `funding` (PaymentIntent, Checkout, unfunded expiry),
`operations` (executing and recording transfers and refunds), `payouts` (engineers' payout accounts),
`webhook_events` (stored events and the drain), `fees` (Stripe's fees from balance transactions, the refund fee
policy), `reconciliation`, `offline` (the offline provider's simulations)
and `support` (row locks, moves checked against `payments.states`, queueing on commit, the idempotency namespace).
"""

from ..states import ESCROW_TRANSITIONS
from .escrows import (
    RefundResult,
    ReleaseResult,
    escrow_dispute_sync,
    escrow_open,
    escrow_refund_remainder,
    escrow_release,
)
from .fees import (
    REFUND_FEE_POLICIES,
    escrow_dispute_fees_book,
    escrow_fees_book,
    escrow_fees_record,
    platform_fees_book,
    refund_fee_policy,
)
from .funding import (
    FundingInstructions,
    escrow_cancel_unfunded,
    escrow_checkout_close,
    escrow_checkout_sync,
    escrow_expire_unfunded,
    escrow_funding_cancel,
    escrow_funding_start,
    escrow_funding_sync,
    escrows_expire_unfunded,
    funding_intent_cancel,
    payment_customer_ensure,
)
from .offline import offline_onboarding_complete, offline_payment_confirm
from .operations import (
    operation_refund_record,
    operation_transfer_record,
    payment_operation_execute,
    refund_sync,
    transfer_sync,
)
from .payouts import (
    ONBOARDING_URL_MAX_AGE,
    OnboardingStatus,
    connected_account_sync,
    engineer_onboarding_refresh,
    engineer_onboarding_start,
    payout_account_disconnect,
    payout_account_for_token,
    payout_account_link_refresh,
    payout_account_refetch,
    payout_account_return,
    payout_account_status,
    payout_record,
    payouts_release_awaiting,
    payouts_retry_payable,
)
from .reconciliation import payments_reconcile
from .support import FULL_BPS, PAYEE_DISCONNECTED_REASON, STALE_CLAIM, idempotency_namespace
from .webhook_events import (
    DRAIN_BATCH,
    DRAIN_KEY,
    webhook_event_ignored,
    webhook_event_process,
    webhook_event_store,
    webhook_events_drain,
    webhook_events_redrive,
)

__all__ = [
    "DRAIN_BATCH",
    "DRAIN_KEY",
    "ESCROW_TRANSITIONS",
    "FULL_BPS",
    "FundingInstructions",
    "ONBOARDING_URL_MAX_AGE",
    "OnboardingStatus",
    "PAYEE_DISCONNECTED_REASON",
    "REFUND_FEE_POLICIES",
    "RefundResult",
    "ReleaseResult",
    "STALE_CLAIM",
    "connected_account_sync",
    "engineer_onboarding_refresh",
    "engineer_onboarding_start",
    "escrow_cancel_unfunded",
    "escrow_checkout_close",
    "escrow_checkout_sync",
    "escrow_dispute_fees_book",
    "escrow_dispute_sync",
    "escrow_expire_unfunded",
    "escrow_fees_book",
    "escrow_fees_record",
    "escrow_funding_cancel",
    "escrow_funding_start",
    "escrow_funding_sync",
    "escrow_open",
    "escrow_refund_remainder",
    "escrow_release",
    "escrows_expire_unfunded",
    "funding_intent_cancel",
    "idempotency_namespace",
    "offline_onboarding_complete",
    "offline_payment_confirm",
    "operation_refund_record",
    "operation_transfer_record",
    "payment_customer_ensure",
    "payment_operation_execute",
    "payments_reconcile",
    "platform_fees_book",
    "payout_account_disconnect",
    "payout_account_for_token",
    "payout_account_link_refresh",
    "payout_account_refetch",
    "payout_account_return",
    "payout_account_status",
    "payout_record",
    "payouts_release_awaiting",
    "payouts_retry_payable",
    "refund_fee_policy",
    "refund_sync",
    "transfer_sync",
    "webhook_event_ignored",
    "webhook_event_process",
    "webhook_event_store",
    "webhook_events_drain",
    "webhook_events_redrive",
]
