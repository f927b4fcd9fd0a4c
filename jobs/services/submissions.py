from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import EngineerProfile, User
from accounts.selectors import user_is_org_admin
from common.archives import archive_validate
from common.errors import IllegalTransition, NotPermitted
from common.services import artifact_store, audit_record
from common.transitions import transition_apply
from notifications import event_types
from verification.models import VerificationRun
from verification.selectors import verification_run_latest
from verification.services import verification_run_create

from ..criteria import tier_fraction_bps
from ..models import Contract, Job, Submission
from ..states import SUBMISSION_TRANSITIONS
from .contracts import contract_lock, contract_record_earning, contract_settlement_schedule
from .events import submission_event_emit, verification_event_emit

SUBJECT_PREFIX = "submission:"
RUN_STATUS_TO_SUBMISSION = {
    VerificationRun.Status.PASSED: Submission.Status.PASSED,
    VerificationRun.Status.FAILED: Submission.Status.FAILED,
    VerificationRun.Status.INCONCLUSIVE: Submission.Status.INCONCLUSIVE,
    VerificationRun.Status.ERROR: Submission.Status.ERROR,
}


def submission_subject(submission_id: int) -> str:
    return f"{SUBJECT_PREFIX}{submission_id}"


def submission_create(*, actor: User, contract: Contract, upload, notes: str = "") -> Submission:
    """Record an engineer's candidate as the next attempt and queue its verification."""
    # Validate before taking any lock: archive inspection reads the whole upload.
    info = archive_validate(fileobj=upload, size=upload.size, field="candidate", require_manifest=False)
    # Stored (hashed and written, idempotent by sha256) before the lock too, so the transaction stays short.
    artifact = artifact_store(fileobj=upload, archive_format=info.archive_format)
    with transaction.atomic():
        contract = contract_lock(contract.pk)
        if contract.engineer_id != actor.pk:
            raise NotPermitted("Only the contract's engineer can submit candidates.")
        if contract.status != Contract.Status.ACTIVE:
            raise IllegalTransition(
                f"The contract is {contract.status}; candidates are accepted only while it is funded and active.",
                code="contract_not_active",
                fields={"status": [contract.status]},
            )
        if contract.deadline <= timezone.now():
            raise IllegalTransition("The contract's deadline has passed.", code="contract_deadline_passed")
        if contract.attempts_left <= 0:
            raise IllegalTransition("No attempts are left on this contract.", code="attempts_exhausted")
        Contract.objects.filter(pk=contract.pk).update(submissions_used=F("submissions_used") + 1)
        contract.refresh_from_db(fields=["submissions_used"])
        submission = Submission.objects.create(
            contract=contract,
            number=contract.submissions_used,
            submitted_by=actor,
            candidate=artifact,
            notes=notes,
        )
        audit_record(
            actor=actor,
            verb="submission_received",
            obj=submission,
            to_state=submission.status,
            data={"contract": contract.pk, "sha256": artifact.sha256, "attempts_left": contract.attempts_left},
        )
        job = Job.objects.select_related("package", "hidden_inputs").get(pk=contract.job_id)
        verification_run_create(
            kind=VerificationRun.Kind.SUBMISSION,
            subject=submission_subject(submission.pk),
            hardware_class=job.hardware_class,
            package=job.package,
            candidate=artifact,
            hidden_inputs=job.hidden_inputs,
            criteria=job.criteria,
        )
        transition_apply(
            submission,
            to=Submission.Status.VERIFYING,
            allowed=SUBMISSION_TRANSITIONS,
            actor=actor,
            verb="submission_verifying",
        )
        submission_event_emit(event_type=event_types.SUBMISSION_RECEIVED, submission=submission, contract=contract)
    return submission


def submission_verification_event_emit(*, submission_id: int, run_id: int, progress: bool) -> None:
    """`verification.started` / `verification.progress` for the submission's run; inside the run's transaction.

    Only while the submission is still being verified by that run: a late heartbeat of a run the submission
    no longer waits on tells its parties nothing."""
    submission = Submission.objects.select_related("contract").get(pk=submission_id)
    if submission.status != Submission.Status.VERIFYING:
        return
    event_type = event_types.VERIFICATION_PROGRESS if progress else event_types.VERIFICATION_STARTED
    verification_event_emit(event_type=event_type, submission=submission, contract=submission.contract, run_id=run_id)


def submission_record_verification(
    *, submission_id: int, run_id: int, run_status: str, payout_fraction_bps: int | None, speedup_estimate: float | None
) -> Submission | None:
    """Apply a finished verification to its submission and contract; runs inside the run's transaction."""
    unlocked = Submission.objects.select_related("contract__job").get(pk=submission_id)
    job = unlocked.contract.job  # the row re-read under the lock below carries no related objects
    contract = contract_lock(unlocked.contract_id)
    submission = Submission.objects.select_for_update().get(pk=submission_id)
    to = RUN_STATUS_TO_SUBMISSION[run_status]
    if submission.status != Submission.Status.VERIFYING:
        return None
    transition_apply(
        submission, to=to, allowed=SUBMISSION_TRANSITIONS, actor=None, verb=f"submission_{to}", data={"run": run_id}
    )
    verification_event_emit(
        event_type=event_types.VERIFICATION_COMPLETED, submission=submission, contract=contract, run_id=run_id
    )
    if to == Submission.Status.PASSED:
        contract_record_earning(
            contract=contract,
            fraction_bps=payout_fraction_bps or 0,
            run_id=run_id,
            review_window_hours=job.review_window_hours,
        )
        engineer_track_record_add(
            user_id=contract.engineer_id, contract_id=contract.pk, run_id=run_id, speedup=speedup_estimate
        )
    elif to == Submission.Status.ERROR:
        # The platform failed, not the engineer: the attempt is given back.
        Contract.objects.filter(pk=contract.pk, submissions_used__gt=0).update(
            submissions_used=F("submissions_used") - 1
        )
        contract.refresh_from_db(fields=["submissions_used"])
    contract_settlement_schedule(contract=contract, job=job)
    return submission


def submission_accept_inconclusive(*, actor: User, submission: Submission) -> Submission:
    """The company accepts an inconclusive result as a pass at the tier its estimate reaches."""
    with transaction.atomic():
        contract = contract_lock(submission.contract_id)
        if not user_is_org_admin(user=actor, organization_id=contract.organization_id):
            raise NotPermitted("Only the organization's owners and admins can accept a result.")
        submission = Submission.objects.select_for_update().get(pk=submission.pk)
        if submission.status != Submission.Status.INCONCLUSIVE or contract.status != Contract.Status.ACTIVE:
            raise IllegalTransition(
                "Only an inconclusive result of an active contract can be accepted.", code="not_inconclusive"
            )
        run = verification_run_latest(subject=submission_subject(submission.pk))
        job = Job.objects.get(pk=contract.job_id)
        tiers = job.criteria.get("tiers", [])
        estimate = run.speedup_estimate if run else None
        reached = [tier for tier in tiers if estimate is not None and estimate >= tier["speedup"]]
        tier = reached[-1] if reached else tiers[0]
        transition_apply(
            submission,
            to=Submission.Status.PASSED,
            allowed=SUBMISSION_TRANSITIONS,
            actor=actor,
            verb="submission_inconclusive_accepted",
            data={"tier": tier},
        )
        contract.settle_due_at = None
        contract.save(update_fields=["settle_due_at", "updated_at"])
        contract_record_earning(
            contract=contract,
            fraction_bps=tier_fraction_bps(tier["fraction"]),
            run_id=run.pk if run else 0,
            review_window_hours=0,
        )
        # Accepting the last attempt ends the contract's work: the remainder goes back now, not at the deadline.
        contract_settlement_schedule(contract=contract, job=job)
    return submission


def engineer_track_record_add(*, user_id: int, contract_id: int, run_id: int, speedup: float | None) -> None:
    """The public track record counts only signed, recorded verification results."""
    profile, _ = EngineerProfile.objects.select_for_update().get_or_create(user_id=user_id)
    results = [entry for entry in profile.certified_results if entry.get("run") != run_id]
    results.append({"contract": contract_id, "run": run_id, "speedup": speedup})
    profile.certified_results = results[-100:]
    profile.jobs_passed = len({entry["contract"] for entry in results})
    speedups = [entry["speedup"] for entry in results if entry.get("speedup")]
    profile.best_certified_speedup = max(speedups) if speedups else None
    profile.save(update_fields=["certified_results", "jobs_passed", "best_certified_speedup", "updated_at"])
