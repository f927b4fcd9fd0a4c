"""The outbound event types an endpoint can subscribe to (`*` subscribes to all of them)."""

ALL_EVENTS = "*"

JOB_PUBLISHED = "job.published"
JOB_CALIBRATED = "job.calibrated"
BID_PLACED = "bid.placed"
BID_WITHDRAWN = "bid.withdrawn"
BID_ACCEPTED = "bid.accepted"
BID_DECLINED = "bid.declined"
CONTRACT_FUNDING_REQUIRED = "contract.funding_required"
CONTRACT_FUNDED = "contract.funded"
SUBMISSION_RECEIVED = "submission.received"
VERIFICATION_STARTED = "verification.started"
VERIFICATION_PROGRESS = "verification.progress"
VERIFICATION_COMPLETED = "verification.completed"
ESCROW_RELEASED = "escrow.released"
ESCROW_REFUNDED = "escrow.refunded"
PAYOUT_PAID = "payout.paid"
PAYOUT_FAILED = "payout.failed"
PAYOUT_ACCOUNT_UPDATED = "payout_account.updated"
DISPUTE_OPENED = "dispute.opened"
DISPUTE_ANSWERED = "dispute.answered"
DISPUTE_REVERIFIED = "dispute.reverified"
DISPUTE_RESOLVED = "dispute.resolved"

EVENT_TYPES = (
    JOB_PUBLISHED,
    JOB_CALIBRATED,
    BID_PLACED,
    BID_WITHDRAWN,
    BID_ACCEPTED,
    BID_DECLINED,
    CONTRACT_FUNDING_REQUIRED,
    CONTRACT_FUNDED,
    SUBMISSION_RECEIVED,
    VERIFICATION_STARTED,
    VERIFICATION_PROGRESS,
    VERIFICATION_COMPLETED,
    ESCROW_RELEASED,
    ESCROW_REFUNDED,
    PAYOUT_PAID,
    PAYOUT_FAILED,
    PAYOUT_ACCOUNT_UPDATED,
    DISPUTE_OPENED,
    DISPUTE_ANSWERED,
    DISPUTE_REVERIFIED,
    DISPUTE_RESOLVED,
)
