"""Outbound webhook events of jobs: who receives each one, and what each recipient is shown.

The data is the API's own representation of the object, read through the same visibility selectors and
serializers the API uses with the recipient's viewer as the user, so an event never shows more than that
recipient could GET: an engineer receives only their own bids, contracts and submissions, and never the
job's hidden-input data. Called inside the service's transaction (the outbox row commits with the change).
"""

import functools
import uuid
from dataclasses import asdict
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from common.errors import NotFound
from common.money import currency_exponent
from notifications import emails, event_types
from notifications.services import Recipient, event_emit
from payments import selectors as payments_selectors
from payments import services as payments_services
from verification.models import VerificationRun
from verification.serializers import VerificationRunSerializer

from .. import selectors
from ..models import Bid, Contract, Dispute, Job, Submission
from ..serializers import BidSerializer, ContractSerializer, DisputeSerializer, JobSerializer, SubmissionSerializer

FULL_BPS = 10_000
REVIEW_REMINDER_HOURS = 24


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
    if event_type == event_types.BID_PLACED:
        _bid_email(kind=emails.BID_RECEIVED, bid=bid, to=Recipient(organization_id=organization_id))
    elif event_type == event_types.BID_ACCEPTED:
        _bid_email(kind=emails.BID_ACCEPTED, bid=bid, to=Recipient(user_id=bid.engineer_id))


def contract_event_emit(*, event_type: str, contract: Contract) -> None:
    event_emit(
        event_type=event_type,
        recipients=_parties(organization_id=contract.organization_id, engineer_id=contract.engineer_id),
        render=_visible(
            lambda viewer: ContractSerializer(selectors.contract_get_visible(user=viewer, contract_id=contract.pk)).data
        ),
    )
    if event_type == event_types.CONTRACT_FUNDING_REQUIRED:
        _contract_email(
            kind=emails.FUNDING_REQUIRED,
            contract=contract,
            to=[Recipient(organization_id=contract.organization_id)],
            key=f"{event_type}:contract:{contract.pk}",
        )


DISPUTE_EMAILS = {
    event_types.DISPUTE_OPENED: emails.DISPUTE_OPENED,
    event_types.DISPUTE_ANSWERED: emails.DISPUTE_ANSWERED,
    event_types.DISPUTE_REVERIFIED: emails.DISPUTE_REVERIFIED,
    event_types.DISPUTE_RESOLVED: emails.DISPUTE_RESOLVED,
}


def dispute_event_emit(*, event_type: str, dispute: Dispute) -> None:
    """`dispute.*`: the dispute as `GET /contracts/{id}/disputes/{id}/` shows it to each party; an email to both.

    The email names the side, the status, the recommendation and the ruling, never the evidence itself."""
    contract = dispute.contract
    parties = _parties(organization_id=contract.organization_id, engineer_id=contract.engineer_id)
    event_emit(
        event_type=event_type,
        recipients=parties,
        render=_visible(
            lambda viewer: (
                DisputeSerializer(
                    selectors.dispute_get_visible(user=viewer, contract_id=contract.pk, dispute_id=dispute.pk)
                ).data
            )
        ),
    )
    ruling = dispute.get_ruling_display() if dispute.ruling else ""
    if dispute.ruling_bps is not None and dispute.ruling != Dispute.Ruling.UPHOLD:
        ruling = f"{ruling} ({_percent(dispute.ruling_bps)}% of the amount)"
    occurrence = dispute.reverification_run_id if event_type == event_types.DISPUTE_REVERIFIED else ""
    _contract_email(
        kind=DISPUTE_EMAILS[event_type],
        contract=contract,
        to=parties,
        key=f"{event_type}:dispute:{dispute.pk}:{occurrence}",
        dispute_id=dispute.pk,
        side=dispute.get_side_display().lower(),
        recommendation=dispute.get_recommendation_display() if dispute.recommendation else "",
        ruling=ruling,
        ruling_note=dispute.ruling_note,
        link=_url(f"/api/v1/contracts/{contract.pk}/disputes/{dispute.pk}/"),
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

    @functools.cache  # read once for all recipients, and only if some endpoint renders the event
    def run() -> VerificationRun:
        return VerificationRun.objects.get(pk=run_id)

    def render(viewer: User) -> dict:
        visible = selectors.submission_get_visible(user=viewer, submission_id=submission.pk)
        owner = selectors.job_hidden_inputs_visible(user=viewer, job=visible.contract.job)
        return {
            **VerificationRunSerializer(run(), context={"hidden_inputs_owner": owner}).data,
            "submission": visible.pk,
        }

    event_emit(
        event_type=event_type,
        recipients=_parties(organization_id=contract.organization_id, engineer_id=contract.engineer_id),
        render=_visible(render),
    )
    if event_type == event_types.VERIFICATION_COMPLETED:
        _contract_email(
            kind=emails.VERIFICATION_COMPLETED,
            contract=contract,
            to=_parties(organization_id=contract.organization_id, engineer_id=contract.engineer_id),
            key=f"{event_type}:run:{run_id}",
            submission_id=submission.pk,
            decision=str(submission.status).upper(),
            link=_url(f"/api/v1/submissions/{submission.pk}/verification/"),
        )


def payout_event_emit(*, user_id: int, payout: dict) -> None:
    """`payout.paid` / `payout.failed`: a payout from the engineer's payout account to their bank; theirs only."""
    event_type = event_types.PAYOUT_PAID if payout["status"] == "paid" else event_types.PAYOUT_FAILED
    event_emit(event_type=event_type, recipients=[Recipient(user_id=user_id)], render=lambda viewer: dict(payout))


def payout_account_event_emit(*, user_id: int) -> None:
    """`payout_account.updated`: the account as `GET /payments/onboarding/` shows it (without its one-time links)."""
    event_emit(
        event_type=event_types.PAYOUT_ACCOUNT_UPDATED,
        recipients=[Recipient(user_id=user_id)],
        render=lambda viewer: payments_services.payout_account_status(user_id=user_id),
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
    if event_type == event_types.ESCROW_RELEASED:
        _contract_email(
            kind=emails.PAYMENT_RELEASED,
            contract=contract,
            to=[Recipient(user_id=contract.engineer_id)],
            key=f"{event_type}:contract:{contract.pk}:{contract.earned_bps}",
            released_percent=_percent(contract.earned_bps),
            link=_url(f"/api/v1/payments/escrows/{contract.escrow_id}/"),
        )
    elif event_type == event_types.ESCROW_REFUNDED:
        _contract_email(
            kind=emails.REFUND_ISSUED,
            contract=contract,
            to=[Recipient(organization_id=contract.organization_id)],
            key=f"{event_type}:contract:{contract.pk}",
            refunded_percent=_percent(FULL_BPS - contract.earned_bps),
            link=_url(f"/api/v1/payments/escrows/{contract.escrow_id}/"),
        )


def escrow_settled_event_emit(*, contract: Contract, released: bool) -> None:
    """Settlement pays what was earned and refunds the rest: one event for each movement that happened
    (`released`: the settlement released more than was released before it)."""
    if released:
        escrow_event_emit(event_type=event_types.ESCROW_RELEASED, contract=contract)
    if contract.earned_bps < FULL_BPS:
        escrow_event_emit(event_type=event_types.ESCROW_REFUNDED, contract=contract)


# Email: the context is built here from plain fields only (titles, ids, amounts, decisions, links), never from
# the API's representations, so no hidden-input data, token or secret can reach a template.


def _url(path: str) -> str:
    return settings.PUBLIC_BASE_URL.rstrip("/") + path


def _money(amount: int, currency: str) -> str:
    exponent = currency_exponent(currency)
    return f"{Decimal(amount).scaleb(-exponent):.{exponent}f} {currency}"


def _percent(bps: int) -> str:
    return f"{Decimal(bps) / 100:g}"


def _bid_email(*, kind: emails.EmailKind, bid: Bid, to: Recipient) -> None:
    job = Job.objects.only("title", "currency").get(pk=bid.job_id)
    engineer = User.objects.get(pk=bid.engineer_id)
    emails.email_notify(
        kind=kind,
        key=f"{kind.template}:bid:{bid.pk}",
        recipients=[to],
        context={
            "job_title": job.title,
            "job_id": bid.job_id,
            "bid_id": bid.pk,
            "amount": _money(bid.amount, job.currency),
            "engineer_name": engineer.name or "An engineer",
            "link": _url(f"/api/v1/bids/{bid.pk}/"),
        },
    )


def _contract_email(
    *, kind: emails.EmailKind, contract: Contract, to: list[Recipient], key: str | None = None, **extra
) -> list:
    """`key` names the occurrence (one email per person); without one, each call is a new occurrence."""
    job_title = Job.objects.values_list("title", flat=True).get(pk=contract.job_id)
    context = {
        "job_title": job_title,
        "job_id": contract.job_id,
        "contract_id": contract.pk,
        "amount": _money(contract.amount, contract.currency),
        "link": _url(f"/api/v1/contracts/{contract.pk}/"),
        **extra,
    }
    return emails.email_notify(
        kind=kind,
        key=key or f"{kind.template}:contract:{contract.pk}:{uuid.uuid4().hex}",
        recipients=to,
        context=context,
    )


def contracts_remind_review_closing() -> int:
    """Tell the company once per review window that it closes within 24 hours (the beat task calls this); the
    key names the window, so a run finding the same contract again sends nothing."""
    now = timezone.now()
    due = Contract.objects.filter(
        status=Contract.Status.ACTIVE,
        review_disputed=False,
        earned_bps__gt=0,
        release_due_at__gt=now,
        release_due_at__lte=now + timedelta(hours=REVIEW_REMINDER_HOURS),
    )
    written = 0
    for contract in due:
        with transaction.atomic():
            written += len(
                _contract_email(
                    kind=emails.REVIEW_WINDOW_CLOSING,
                    contract=contract,
                    to=[Recipient(organization_id=contract.organization_id)],
                    key=f"review_window_closing:contract:{contract.pk}:{contract.release_due_at.isoformat()}",
                    release_due_at=f"{contract.release_due_at:%Y-%m-%d %H:%M}",
                )
            )
    return written
