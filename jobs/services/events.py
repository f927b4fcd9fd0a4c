"""Outbound webhook events of jobs: who receives each one, and what each recipient is shown.

The data is the API's own representation of the object, read through the same visibility selectors and
serializers the API uses with the recipient's viewer as the user, so an event never shows more than that
recipient could GET: an engineer receives only their own bids, contracts and submissions, and never the
job's hidden-input data. Called inside the service's transaction (the outbox row commits with the change).
"""

from dataclasses import asdict

from accounts.models import User
from common.errors import NotFound
from notifications import event_types
from notifications.services import Recipient, event_emit
from payments import selectors as payments_selectors
from verification.models import VerificationRun
from verification.serializers import VerificationRunSerializer

from .. import selectors
from ..models import Bid, Contract, Job, Submission
from ..serializers import BidSerializer, ContractSerializer, JobSerializer, SubmissionSerializer

FULL_BPS = 10_000


def _visible(render):
    """A recipient who may not see the object (NotFound through the API) receives nothing."""

    def guarded(viewer: User) -> dict | None:
        try:
            return render(viewer)
        except NotFound:
            return None

    return guarded


def _parties(*, organization_id: int, engineer_id: int) -> list[Recipient]:
    return [Recipient(organization_id=organization_id), Recipient(user_id=engineer_id)]


def job_event_emit(*, event_type: str, job: Job) -> None:
    event_emit(
        event_type=event_type,
        recipients=[Recipient(organization_id=job.organization_id)],
        render=_visible(lambda viewer: JobSerializer(selectors.job_get_visible(user=viewer, job_id=job.pk)).data),
    )


def bid_event_emit(*, event_type: str, bid: Bid) -> None:
    organization_id = Job.objects.values_list("organization_id", flat=True).get(pk=bid.job_id)
    event_emit(
        event_type=event_type,
        recipients=_parties(organization_id=organization_id, engineer_id=bid.engineer_id),
        render=_visible(lambda viewer: BidSerializer(selectors.bid_get_visible(user=viewer, bid_id=bid.pk)).data),
    )


def contract_event_emit(*, event_type: str, contract: Contract) -> None:
    event_emit(
        event_type=event_type,
        recipients=_parties(organization_id=contract.organization_id, engineer_id=contract.engineer_id),
        render=_visible(
            lambda viewer: ContractSerializer(selectors.contract_get_visible(user=viewer, contract_id=contract.pk)).data
        ),
    )


def submission_event_emit(*, event_type: str, submission: Submission, contract: Contract) -> None:
    event_emit(
        event_type=event_type,
        recipients=_parties(organization_id=contract.organization_id, engineer_id=contract.engineer_id),
        render=_visible(
            lambda viewer: (
                SubmissionSerializer(selectors.submission_get_visible(user=viewer, submission_id=submission.pk)).data
            )
        ),
    )


def verification_event_emit(*, event_type: str, submission: Submission, contract: Contract, run_id: int) -> None:
    """The run as `GET /submissions/{id}/verification/` shows it to the viewer, with its submission's id."""

    def render(viewer: User) -> dict:
        visible = selectors.submission_get_visible(user=viewer, submission_id=submission.pk)
        owner = selectors.job_hidden_inputs_visible(user=viewer, job=visible.contract.job)
        run = VerificationRun.objects.get(pk=run_id)
        return {**VerificationRunSerializer(run, context={"hidden_inputs_owner": owner}).data, "submission": visible.pk}

    event_emit(
        event_type=event_type,
        recipients=_parties(organization_id=contract.organization_id, engineer_id=contract.engineer_id),
        render=_visible(render),
    )


def escrow_event_emit(*, event_type: str, contract: Contract) -> None:
    """The escrow as `GET /payments/escrows/{id}/` shows it."""

    def render(viewer: User) -> dict:
        escrow = payments_selectors.escrow_get_for_user(user=viewer, escrow_id=contract.escrow_id)
        return asdict(payments_selectors.escrow_summary(escrow.pk))

    event_emit(
        event_type=event_type,
        recipients=_parties(organization_id=contract.organization_id, engineer_id=contract.engineer_id),
        render=_visible(render),
    )


def escrow_settled_event_emit(*, contract: Contract) -> None:
    """Settlement pays what was earned and refunds the rest: one event for each movement that happened."""
    if contract.earned_bps:
        escrow_event_emit(event_type=event_types.ESCROW_RELEASED, contract=contract)
    if contract.earned_bps < FULL_BPS:
        escrow_event_emit(event_type=event_types.ESCROW_REFUNDED, contract=contract)
