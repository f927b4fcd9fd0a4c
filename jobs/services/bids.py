from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from accounts.selectors import user_is_org_admin, user_is_org_member
from accounts.services import market_party_require
from common.errors import Conflict, IllegalTransition, NotPermitted, ValidationFailed
from common.money import (
    MAX_AMOUNT_MINOR_UNITS,
    charge_amount_validate,
    currency_validate_settlement,
    fee_for,
    funded_total,
)
from common.services import audit_record
from common.transitions import transition_apply
from notifications import event_types
from payments.services import escrow_open

from ..models import Bid, Contract, Job
from ..response_cache import job_views_changed
from ..states import BID_TRANSITIONS, JOB_TRANSITIONS
from .contracts import contract_reference
from .events import bid_event_emit, contract_event_emit

MAX_BID_AMOUNT = MAX_AMOUNT_MINOR_UNITS
BID_FIELDS = {"amount", "estimated_days", "proposal", "predicted_speedup"}


def _validate_bid_fields(fields: dict) -> dict:
    errors: dict[str, list[str]] = {}
    if "amount" in fields and not 0 < fields["amount"] <= MAX_BID_AMOUNT:
        errors["amount"] = ["a positive amount in minor units"]
    if "estimated_days" in fields and not 1 <= fields["estimated_days"] <= 365:
        errors["estimated_days"] = ["between 1 and 365"]
    if "proposal" in fields and not str(fields["proposal"]).strip():
        errors["proposal"] = ["a proposal is required"]
    speedup = fields.get("predicted_speedup")
    if speedup is not None and not 0 < speedup <= 1000:
        errors["predicted_speedup"] = ["a ratio between 0 and 1000"]
    if errors:
        raise ValidationFailed("The bid has invalid fields.", fields=errors)
    return fields


def _validate_bid_payable(job: Job, amount: int) -> None:
    """The contract this bid would become must be chargeable and payable: settled currency, Stripe's limits."""
    currency = currency_validate_settlement(job.currency)
    charge_amount_validate(
        amount, currency, field="amount", charged=funded_total(amount, currency, settings.PLATFORM_FEE_BPS)
    )


def _require_biddable(job: Job, engineer: User) -> None:
    market_party_require(user=engineer)
    if engineer.account_type != User.AccountType.ENGINEER:
        raise NotPermitted("Only engineer accounts can bid.", code="not_an_engineer")
    if user_is_org_member(user=engineer, organization_id=job.organization_id):
        raise NotPermitted("You cannot bid on your own organization's job.", code="own_organization")
    if job.visibility == Job.Visibility.INVITED and not job.invited_engineers.filter(pk=engineer.pk).exists():
        raise NotPermitted("This job takes bids from invited engineers only.", code="not_invited")
    if job.status != Job.Status.OPEN:
        raise IllegalTransition(f"The job is {job.status}, not open for bids.", code="job_not_open")
    if job.bidding_deadline <= timezone.now():
        raise IllegalTransition("The bidding deadline has passed.", code="bidding_closed")


@transaction.atomic
def bid_place(
    *,
    actor: User,
    job: Job,
    amount: int,
    estimated_days: int,
    proposal: str,
    predicted_speedup: float | None = None,
) -> Bid:
    # Lock the job so a bid cannot slip in beside a concurrent award.
    job = Job.objects.select_for_update().get(pk=job.pk)
    _require_biddable(job, actor)
    _validate_bid_fields(
        {
            "amount": amount,
            "estimated_days": estimated_days,
            "proposal": proposal,
            "predicted_speedup": predicted_speedup,
        }
    )
    _validate_bid_payable(job, amount)
    if Bid.objects.filter(job=job, engineer=actor, status__in=Bid.ACTIVE_STATUSES).exists():
        raise Conflict("You already have an active bid on this job; update it instead.", code="bid_exists")
    try:
        with transaction.atomic():
            bid = Bid.objects.create(
                job=job,
                engineer=actor,
                amount=amount,
                estimated_days=estimated_days,
                proposal=proposal,
                predicted_speedup=predicted_speedup,
            )
    except IntegrityError:
        raise Conflict("You already have an active bid on this job; update it instead.", code="bid_exists") from None
    audit_record(actor=actor, verb="bid_placed", obj=bid, to_state=bid.status, data={"job": job.pk})
    bid_event_emit(event_type=event_types.BID_PLACED, bid=bid)
    job_views_changed(job=job)
    return bid


def bids_decline_pending(*, job: Job, actor: User | None, reason: str, exclude_id: int | None = None) -> None:
    """Decline the job's pending bids (all but `exclude_id`), each locked and audited; runs in the caller's transaction."""
    for bid in Bid.objects.select_for_update().filter(job=job, status=Bid.Status.PENDING).exclude(pk=exclude_id):
        transition_apply(
            bid,
            to=Bid.Status.DECLINED,
            allowed=BID_TRANSITIONS,
            actor=actor,
            verb="bid_declined",
            data={"reason": reason},
        )
        bid_event_emit(event_type=event_types.BID_DECLINED, bid=bid)


def _lock_own_pending_bid(actor: User, bid: Bid) -> tuple[Job, Bid]:
    job = Job.objects.select_for_update().get(pk=bid.job_id)
    bid = Bid.objects.select_for_update().get(pk=bid.pk)
    if bid.engineer_id != actor.pk:
        raise NotPermitted("Only the engineer who placed a bid can change it.")
    if bid.status != Bid.Status.PENDING:
        raise IllegalTransition(
            f"The bid is {bid.status}, not pending.", code="illegal_transition", fields={"status": [bid.status]}
        )
    return job, bid


@transaction.atomic
def bid_update(*, actor: User, bid: Bid, **fields) -> Bid:
    job, bid = _lock_own_pending_bid(actor, bid)
    unknown = set(fields) - BID_FIELDS
    if unknown:
        raise ValidationFailed("Unknown fields.", fields={name: ["not editable"] for name in unknown})
    if job.status != Job.Status.OPEN or job.bidding_deadline <= timezone.now():
        raise IllegalTransition("Bids can change only while the job is open for bids.", code="bidding_closed")
    _validate_bid_fields(fields)
    if "amount" in fields:
        _validate_bid_payable(job, fields["amount"])
    for name, value in fields.items():
        setattr(bid, name, value)
    bid.save()
    audit_record(
        actor=actor,
        verb="bid_updated",
        obj=bid,
        from_state=bid.status,
        to_state=bid.status,
        data={"fields": sorted(fields)},
    )
    return bid


@transaction.atomic
def bid_withdraw(*, actor: User, bid: Bid) -> Bid:
    job, bid = _lock_own_pending_bid(actor, bid)
    transition_apply(bid, to=Bid.Status.WITHDRAWN, allowed=BID_TRANSITIONS, actor=actor, verb="bid_withdrawn")
    bid_event_emit(event_type=event_types.BID_WITHDRAWN, bid=bid)
    job_views_changed(job=job)
    return bid


@transaction.atomic
def bid_accept(*, actor: User, bid: Bid) -> Contract:
    """Award the job to one bid: the job row is locked first, so concurrent accepts serialize on it."""
    job = Job.objects.select_for_update().get(pk=bid.job_id)
    if not user_is_org_admin(user=actor, organization_id=job.organization_id):
        raise NotPermitted("Only the organization's owners and admins can award a job.")
    bid = Bid.objects.select_for_update().get(pk=bid.pk)
    if job.status != Job.Status.OPEN:
        raise IllegalTransition(
            f"The job is {job.status}; it can no longer be awarded.",
            code="job_not_open",
            fields={"status": [job.status]},
        )
    transition_apply(bid, to=Bid.Status.ACCEPTED, allowed=BID_TRANSITIONS, actor=actor, verb="bid_accepted")
    bids_decline_pending(job=job, actor=actor, reason="another_bid_accepted", exclude_id=bid.pk)
    transition_apply(
        job, to=Job.Status.AWARDED, allowed=JOB_TRANSITIONS, actor=actor, verb="job_awarded", data={"bid": bid.pk}
    )
    job_views_changed(job=job)
    contract = Contract.objects.create(
        job=job,
        bid=bid,
        organization_id=job.organization_id,
        engineer_id=bid.engineer_id,
        currency=job.currency,
        amount=bid.amount,
        platform_fee=fee_for(bid.amount, settings.PLATFORM_FEE_BPS, currency=job.currency),
        submission_limit=job.max_submissions,
        deadline=timezone.now() + timedelta(days=bid.estimated_days),
    )
    contract.escrow = escrow_open(
        payer_organization=job.organization,
        payee=bid.engineer,
        amount=contract.amount,
        fee=contract.platform_fee,
        currency=contract.currency,
        reference=contract_reference(contract.pk),
        actor=actor,
    )
    contract.save(update_fields=["escrow", "updated_at"])
    audit_record(
        actor=actor,
        verb="contract_created",
        obj=contract,
        to_state=contract.status,
        data={"bid": bid.pk, "job": job.pk},
    )
    bid_event_emit(event_type=event_types.BID_ACCEPTED, bid=bid)
    contract_event_emit(event_type=event_types.CONTRACT_FUNDING_REQUIRED, contract=contract)
    return contract
