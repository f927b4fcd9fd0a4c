"""Allowed state transitions of the jobs app's objects; every service checks its move against these maps."""

from .models import Bid, Contract, Dispute, Job, Submission

JOB_TRANSITIONS = {
    Job.Status.DRAFT: {Job.Status.OPEN, Job.Status.CANCELLED},
    Job.Status.OPEN: {Job.Status.AWARDED, Job.Status.CANCELLED, Job.Status.EXPIRED},
    Job.Status.AWARDED: {Job.Status.IN_PROGRESS, Job.Status.CANCELLED},
    Job.Status.IN_PROGRESS: {Job.Status.COMPLETED, Job.Status.CANCELLED},
}
BID_TRANSITIONS = {
    Bid.Status.PENDING: {Bid.Status.ACCEPTED, Bid.Status.DECLINED, Bid.Status.WITHDRAWN},
}
CONTRACT_TRANSITIONS = {
    Contract.Status.AWAITING_FUNDING: {Contract.Status.ACTIVE, Contract.Status.CANCELLED},
    Contract.Status.ACTIVE: {Contract.Status.COMPLETED, Contract.Status.FAILED, Contract.Status.CANCELLED},
}
SUBMISSION_TRANSITIONS = {
    Submission.Status.RECEIVED: {Submission.Status.VERIFYING, Submission.Status.ERROR},
    Submission.Status.INCONCLUSIVE: {Submission.Status.PASSED},
    Submission.Status.VERIFYING: {
        Submission.Status.PASSED,
        Submission.Status.FAILED,
        Submission.Status.INCONCLUSIVE,
        Submission.Status.ERROR,
    },
}
DISPUTE_TRANSITIONS = {
    # open -> reverifying at once, in the transaction that opens it; again from awaiting_ruling when support
    # asks for another re-verification (the first produced no result).
    Dispute.Status.OPEN: {Dispute.Status.REVERIFYING},
    Dispute.Status.REVERIFYING: {Dispute.Status.AWAITING_RULING, Dispute.Status.RESOLVED},
    Dispute.Status.AWAITING_RULING: {Dispute.Status.REVERIFYING, Dispute.Status.RESOLVED},
}
