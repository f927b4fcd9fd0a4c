"""Contract lifecycle: funding, verified earnings, release after review, settlement and refund."""

from datetime import timedelta

import structlog
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from accounts.selectors import user_is_org_admin
from common.errors import IllegalTransition, NotPermitted
from common.services import audit_record
from common.transitions import transition_apply
from notifications import event_types
from payments import selectors as payments_selectors
from payments import services as payments
from payments.errors import EscrowFrozen

from ..models import Contract, Job, Submission
from ..response_cache import job_views_changed
from ..states import CONTRACT_TRANSITIONS, JOB_TRANSITIONS
from .events import contract_event_emit, escrow_event_emit, escrow_settled_event_emit

log = structlog.get_logger(__name__)
FULL_BPS = 10_000
REFERENCE_PREFIX = "contract:"


def contract_reference(contract_id: int) -> str:
    return f"{REFERENCE_PREFIX}{contract_id}"


def contract_id_from_reference(reference: str) -> int | None:
    if not reference.startswith(REFERENCE_PREFIX):
        return None
    return int(reference.removeprefix(REFERENCE_PREFIX))


def contract_lock(contract_id: int) -> Contract:
    return Contract.objects.select_for_update().get(pk=contract_id)


def job_and_contract_lock(contract_id: int) -> tuple[Job, Contract]:
    """Lock the contract's job, then the contract: the order every contract service takes the two locks in."""
    job_id = Contract.objects.values_list("job_id", flat=True).get(pk=contract_id)
    return Job.objects.select_for_update().get(pk=job_id), contract_lock(contract_id)


def _require_admin(actor: User, contract: Contract) -> None:
    if not user_is_org_admin(user=actor, organization_id=contract.organization_id):
        raise NotPermitted("Only the organization's owners and admins can do this.")


def contract_cancel_locked(*, contract: Contract, actor: User | None, reason: str) -> Contract:
    contract.status_reason = reason
    transition_apply(
        contract,
        to=Contract.Status.CANCELLED,
        allowed={Contract.Status.AWAITING_FUNDING: {Contract.Status.CANCELLED}},
        actor=actor,
        verb="contract_cancelled",
        data={"reason": reason},
        update_fields=["status_reason"],
    )
    if contract.escrow_id:
        payments.escrow_cancel_unfunded(escrow_id=contract.escrow_id, reason=reason)
    return contract


@transaction.atomic
def contract_cancel_unfunded(*, actor: User | None, contract: Contract, reason: str) -> Contract:
    """Cancel a contract that was never funded; its job is cancelled with it."""
    job = Job.objects.select_for_update().get(pk=contract.job_id)
    contract = contract_lock(contract.pk)
    if actor is not None:
        _require_admin(actor, contract)
    if contract.status == Contract.Status.CANCELLED:
        return contract
    contract_cancel_locked(contract=contract, actor=actor, reason=reason)
    if job.status != Job.Status.CANCELLED:
        transition_apply(
            job,
            to=Job.Status.CANCELLED,
            allowed=JOB_TRANSITIONS,
            actor=actor,
            verb="job_cancelled",
            data={"reason": reason},
        )
        job_views_changed(job=job)
    return contract


def contract_fund_start(*, actor: User, contract: Contract) -> payments.FundingInstructions:
    _require_admin(actor, contract)
    if contract.status != Contract.Status.AWAITING_FUNDING:
        raise IllegalTransition(
            f"The contract is {contract.status}; it needs no funding.", code="contract_not_awaiting_funding"
        )
    return payments.escrow_funding_start(escrow_id=contract.escrow_id, actor=actor)


@transaction.atomic
def contract_activate(*, contract_id: int, actor: User | None = None, reason: str = "funded") -> Contract:
    """Funding arrived: work starts. Safe to call again for an already active contract."""
    job, contract = job_and_contract_lock(contract_id)
    if contract.status == Contract.Status.ACTIVE:
        return contract
    contract.status_reason = ""
    transition_apply(
        contract,
        to=Contract.Status.ACTIVE,
        allowed=CONTRACT_TRANSITIONS,
        actor=actor,
        verb="contract_activated",
        data={"reason": reason},
        update_fields=["status_reason"],
    )
    transition_apply(job, to=Job.Status.IN_PROGRESS, allowed=JOB_TRANSITIONS, actor=actor, verb="job_started")
    contract_event_emit(event_type=event_types.CONTRACT_FUNDED, contract=contract)
    job_views_changed(job=job)
    return contract


@transaction.atomic
def contract_record_funding_failure(*, contract_id: int, reason: str) -> Contract:
    contract = contract_lock(contract_id)
    contract.status_reason = f"Funding failed: {reason}"[:255]
    contract.save(update_fields=["status_reason", "updated_at"])
    audit_record(
        actor=None,
        verb="contract_funding_failed",
        obj=contract,
        from_state=contract.status,
        to_state=contract.status,
        data={"reason": reason},
    )
    return contract


def contract_record_earning(*, contract: Contract, fraction_bps: int, run_id: int, review_window_hours: int) -> bool:
    """A verified PASS: remember the best tier reached and when it becomes payable. Caller holds the lock."""
    if fraction_bps <= contract.earned_bps:
        return False
    previous = contract.earned_bps
    contract.earned_bps = fraction_bps
    contract.earned_run_id = run_id
    contract.release_due_at = timezone.now() + timedelta(hours=review_window_hours)
    # An open dispute stays open (and keeps the release frozen): only its ruling ends it.
    contract.save(update_fields=["earned_bps", "earned_run_id", "release_due_at", "updated_at"])
    audit_record(
        actor=None,
        verb="contract_earned",
        obj=contract,
        from_state=contract.status,
        to_state=contract.status,
        data={
            "from_bps": previous,
            "to_bps": fraction_bps,
            "run": run_id,
            "release_due_at": contract.release_due_at.isoformat(),
        },
    )
    if review_window_hours == 0 and not contract.review_disputed:
        release_on_commit(contract.pk)
    return True


def release_on_commit(contract_id: int) -> None:
    def send() -> None:
        from ..tasks import contract_release_due

        contract_release_due.delay(contract_id)

    transaction.on_commit(send)


def contract_release_earned(*, contract_id: int, force: bool = False) -> Contract:
    """Release the earned fraction once its review window has passed (or at once when `force`).

    Idempotent: payments releases cumulatively, so a repeat releases nothing new.
    """
    with transaction.atomic():
        job, contract = job_and_contract_lock(contract_id)
        due = contract.release_due_at is not None and (force or contract.release_due_at <= timezone.now())
        if contract.status != Contract.Status.ACTIVE or contract.earned_bps == 0 or not due or contract.review_disputed:
            return contract
        try:
            with transaction.atomic():
                payments.escrow_release(
                    escrow_id=contract.escrow_id,
                    fraction_bps=contract.earned_bps,
                    reason=f"verified tier of contract {contract.pk}",
                    verification_run_id=str(contract.earned_run_id),
                )
        except EscrowFrozen:
            log.info("release_postponed_chargeback_open", contract_id=contract.pk)
            return contract  # still due: the beat task tries again once the chargeback is settled
        contract.release_due_at = None
        contract.save(update_fields=["release_due_at", "updated_at"])
        audit_record(
            actor=None,
            verb="contract_released",
            obj=contract,
            from_state=contract.status,
            to_state=contract.status,
            data={"bps": contract.earned_bps},
        )
        escrow_event_emit(event_type=event_types.ESCROW_RELEASED, contract=contract)
        if contract.earned_bps == FULL_BPS:
            _close(contract, job, to=Contract.Status.COMPLETED, reason="top tier reached")
    return contract


def _close(contract: Contract, job: Job, *, to: str, reason: str) -> None:
    contract.status_reason = reason
    transition_apply(
        contract,
        to=to,
        allowed=CONTRACT_TRANSITIONS,
        actor=None,
        verb=f"contract_{to}",
        data={"reason": reason},
        update_fields=["status_reason"],
    )
    job_to = Job.Status.COMPLETED if to == Contract.Status.COMPLETED else Job.Status.CANCELLED
    transition_apply(job, to=job_to, allowed=JOB_TRANSITIONS, actor=None, verb=f"job_{job_to}", data={"reason": reason})
    job_views_changed(job=job)


def contract_settlement_schedule(*, contract: Contract, job: Job) -> None:
    """Attempts or time ran out and nothing is verifying: set when the contract settles. Caller holds the lock."""
    now = timezone.now()
    if contract.earned_bps == FULL_BPS or not (contract.attempts_left == 0 or contract.deadline <= now):
        return
    if contract.submissions.filter(status=Submission.Status.VERIFYING).exists():
        return  # the last pending result schedules it
    last = contract.submissions.order_by("-number").first()
    # An inconclusive last attempt gives the company its review window to accept it before settling, and a
    # failed or inconclusive one gives the engineer the same window to dispute it; an earned tier still in
    # review keeps its window: settlement would pay it out.
    disputable = last is not None and (
        last.status == Submission.Status.INCONCLUSIVE
        or (last.status == Submission.Status.FAILED and not last.disputes.filter(side="engineer").exists())
    )
    grace_hours = job.review_window_hours if disputable else 0
    due = now + timedelta(hours=grace_hours)
    if contract.release_due_at is not None and contract.release_due_at > due:
        due = contract.release_due_at
    contract.settle_due_at = due
    contract.save(update_fields=["settle_due_at", "updated_at"])
    if due <= now:

        def send() -> None:
            from ..tasks import contract_settle_due

            contract_settle_due.delay(contract.pk)

        transaction.on_commit(send)


def contract_settle(*, contract_id: int, reason: str) -> Contract:
    """Attempts or time ran out: pay what was earned, refund the remainder, and close the contract."""
    with transaction.atomic():
        job, contract = job_and_contract_lock(contract_id)
        verifying = contract.submissions.filter(status=Submission.Status.VERIFYING).exists()
        if contract.status != Contract.Status.ACTIVE or contract.review_disputed or verifying:
            # A pending verification settles the contract when its result arrives.
            return contract
        waits_until = max(
            (due for due in (contract.release_due_at, contract.settle_due_at) if due is not None), default=None
        )
        if waits_until is not None and waits_until > timezone.now():
            # A review window is still open (the earned tier's, or the company's to accept an
            # inconclusive last attempt), even if the deadline has passed: settling now would pay out
            # a result it may still dispute, or refund one it may still accept.
            if contract.settle_due_at != waits_until:
                contract.settle_due_at = waits_until
                contract.save(update_fields=["settle_due_at", "updated_at"])
                audit_record(
                    actor=None,
                    verb="contract_settlement_postponed",
                    obj=contract,
                    from_state=contract.status,
                    to_state=contract.status,
                    data={"reason": reason, "until": waits_until.isoformat()},
                )
            return contract
        # A tier released after its review window was announced then; settling only repeats that release.
        released_before = payments_selectors.escrow_get(escrow_id=contract.escrow_id).released_bps
        try:
            with transaction.atomic():
                if contract.earned_bps:
                    payments.escrow_release(
                        escrow_id=contract.escrow_id,
                        fraction_bps=contract.earned_bps,
                        reason=f"earned before settlement of contract {contract.pk}",
                        verification_run_id=str(contract.earned_run_id),
                    )
                if contract.earned_bps < FULL_BPS:
                    payments.escrow_refund_remainder(escrow_id=contract.escrow_id, reason=reason)
        except EscrowFrozen:
            log.info("settlement_postponed_chargeback_open", contract_id=contract.pk)
            return contract  # the settle beat task tries again once the chargeback is settled
        contract.release_due_at = contract.settle_due_at = None
        escrow_settled_event_emit(contract=contract, released=contract.earned_bps > released_before)
        contract.save(update_fields=["release_due_at", "settle_due_at", "updated_at"])
        _close(
            contract,
            job,
            to=Contract.Status.COMPLETED if contract.earned_bps else Contract.Status.FAILED,
            reason=reason,
        )
    return contract


@transaction.atomic
def contract_approve_early(*, actor: User, contract: Contract) -> Contract:
    contract = contract_lock(contract.pk)
    _require_admin(actor, contract)
    if contract.status != Contract.Status.ACTIVE or not contract.release_due_at:
        raise IllegalTransition("There is no verified result waiting for release.", code="nothing_to_approve")
    if contract.review_disputed:
        raise IllegalTransition(
            "The contract has an open dispute; its ruling decides the release.", code="dispute_open"
        )
    contract.release_due_at = timezone.now()
    contract.save(update_fields=["release_due_at", "updated_at"])
    audit_record(
        actor=actor, verb="contract_approved_early", obj=contract, from_state=contract.status, to_state=contract.status
    )
    release_on_commit(contract.pk)
    return contract


def contract_dispute_review(*, actor: User, contract: Contract, reason: str) -> Contract:
    """The `dispute` action from before disputes carried evidence: opens a dispute (``disputes.dispute_open``)
    on the result the actor's side may dispute, with a reason and no files."""
    from .disputes import dispute_open

    dispute_open(actor=actor, contract_id=contract.pk, reason=reason)
    return Contract.objects.get(pk=contract.pk)


def contract_dispute_resolve(*, actor: User, contract_id: int, release: bool, note: str) -> Contract:
    """The release/withhold resolution from before rulings: ``disputes.dispute_rule`` with the ruling that
    releases (uphold a PASS, overturn a FAIL) or withholds (overturn a PASS, uphold a FAIL)."""
    from .disputes import dispute_rule_legacy

    dispute_rule_legacy(actor=actor, contract_id=contract_id, release=release, note=note)
    return Contract.objects.get(pk=contract_id)


def contracts_release_due() -> list[int]:
    due = Contract.objects.filter(
        status=Contract.Status.ACTIVE, release_due_at__lte=timezone.now(), review_disputed=False, earned_bps__gt=0
    ).values_list("pk", flat=True)
    return [contract_release_earned(contract_id=pk).pk for pk in list(due)]


def contracts_settle_due() -> list[int]:
    now = timezone.now()
    overdue = Contract.objects.filter(status=Contract.Status.ACTIVE, deadline__lte=now).values_list("pk", flat=True)
    exhausted = Contract.objects.filter(status=Contract.Status.ACTIVE, settle_due_at__lte=now).values_list(
        "pk", flat=True
    )
    settled = [contract_settle(contract_id=pk, reason="deadline passed").pk for pk in list(overdue)]
    settled += [
        contract_settle(contract_id=pk, reason="attempts exhausted").pk for pk in list(exhausted) if pk not in settled
    ]
    return settled
