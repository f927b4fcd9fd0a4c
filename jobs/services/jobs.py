from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Organization, User
from accounts.operators import SUPPORT, operator_role_require
from accounts.selectors import user_is_org_admin, user_is_org_member
from common.archives import archive_validate
from common.errors import IllegalTransition, NotPermitted, ValidationFailed
from common.money import (
    MAX_AMOUNT_MINOR_UNITS,
    charge_amount_validate,
    currency_validate,
    currency_validate_settlement,
    funded_total,
)
from common.services import artifact_store, audit_record
from common.transitions import transition_apply
from notifications import event_types
from verification.models import VerificationRun
from verification.services import verification_run_create

from ..criteria import criteria_validate
from ..models import Contract, Job
from ..response_cache import job_views_changed
from ..states import JOB_TRANSITIONS
from .bids import bids_decline_pending
from .contracts import contract_cancel_locked
from .events import job_event_emit

CALIBRATION_PREFIX = "calibration:job:"

EDITABLE_FIELDS = {
    "title",
    "description",
    "hardware_class",
    "currency",
    "budget_min",
    "budget_max",
    "bidding_deadline",
    "visibility",
    "review_window_hours",
    "max_submissions",
    "criteria",
}


def job_lock(job_id: int) -> Job:
    return Job.objects.select_for_update().get(pk=job_id)


def _require_member(actor: User, organization_id: int) -> None:
    if not user_is_org_member(user=actor, organization_id=organization_id):
        raise NotPermitted("Only members of the job's organization can do this.")


def _require_admin(actor: User, organization_id: int) -> None:
    if not user_is_org_admin(user=actor, organization_id=organization_id):
        raise NotPermitted("Only the organization's owners and admins can do this.")


def _validate_fields(fields: dict[str, Any], *, current: Job | None = None) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    cleaned = dict(fields)
    if "hardware_class" in cleaned and cleaned["hardware_class"] not in settings.HARDWARE_CLASSES:
        errors["hardware_class"] = [f"one of {', '.join(settings.HARDWARE_CLASSES)}"]
    if "currency" in cleaned:
        try:
            cleaned["currency"] = currency_validate(cleaned["currency"])
        except ValidationFailed:
            errors["currency"] = ["unsupported currency"]
    budget_min = cleaned.get("budget_min", current.budget_min if current else None)
    budget_max = cleaned.get("budget_max", current.budget_max if current else None)
    if budget_min is not None and budget_min <= 0:
        errors["budget_min"] = ["must be positive (minor units)"]
    for name in ("budget_min", "budget_max"):
        if cleaned.get(name) is not None and cleaned[name] > MAX_AMOUNT_MINOR_UNITS:
            errors[name] = [f"at most {MAX_AMOUNT_MINOR_UNITS} (minor units)"]
    if budget_min is not None and budget_max is not None and budget_max < budget_min:
        errors["budget_max"] = ["must be at least budget_min"]
    deadline = cleaned.get("bidding_deadline")
    if deadline is not None and deadline <= timezone.now():
        errors["bidding_deadline"] = ["must be in the future"]
    if "max_submissions" in cleaned and not 1 <= cleaned["max_submissions"] <= 100:
        errors["max_submissions"] = ["between 1 and 100"]
    if "review_window_hours" in cleaned and cleaned["review_window_hours"] > 24 * 30:
        errors["review_window_hours"] = ["at most 720 hours"]
    if errors:
        raise ValidationFailed("The job has invalid fields.", code="validation_failed", fields=errors)
    _validate_payable_budget(cleaned, current=current)
    if "criteria" in cleaned and cleaned["criteria"]:
        cleaned["criteria"] = criteria_validate(cleaned["criteria"])
    return cleaned


def _validate_payable_budget(cleaned: dict[str, Any], *, current: Job | None) -> None:
    """A budget whose bids could not be charged (or paid out) is refused now, not when a contract is funded."""
    currency = cleaned.get("currency", current.currency if current else None)
    if currency is None:
        return
    if "currency" in cleaned:
        cleaned["currency"] = currency = currency_validate_settlement(currency)
    for name in ("budget_min", "budget_max"):
        amount = cleaned.get(name, getattr(current, name, None) if current else None)
        if amount is not None and (name in cleaned or "currency" in cleaned):
            charged = funded_total(amount, currency, settings.PLATFORM_FEE_BPS)
            charge_amount_validate(amount, currency, field=name, charged=charged)


@transaction.atomic
def job_create(
    *,
    actor: User,
    organization: Organization,
    title: str,
    hardware_class: str,
    currency: str,
    budget_min: int,
    budget_max: int,
    bidding_deadline: datetime,
    description: str = "",
    visibility: str = Job.Visibility.PUBLIC,
    review_window_hours: int = 48,
    max_submissions: int = 5,
    criteria: dict | None = None,
    invited_engineers: list[User] | None = None,
) -> Job:
    _require_member(actor, organization.pk)
    fields = _validate_fields(
        {
            "hardware_class": hardware_class,
            "currency": currency,
            "budget_min": budget_min,
            "budget_max": budget_max,
            "bidding_deadline": bidding_deadline,
            "review_window_hours": review_window_hours,
            "max_submissions": max_submissions,
            "criteria": criteria or {},
        }
    )
    job = Job.objects.create(
        organization=organization,
        created_by=actor,
        title=title,
        description=description,
        visibility=visibility,
        **fields,
    )
    if invited_engineers:
        job.invited_engineers.set(_engineers_only(invited_engineers))
    audit_record(actor=actor, verb="job_created", obj=job, to_state=job.status)
    job_views_changed(job=job)
    return job


def _engineers_only(users: list[User]) -> list[User]:
    if any(user.account_type != User.AccountType.ENGINEER for user in users):
        raise ValidationFailed(
            "Only engineers can be invited.",
            code="invalid_invitation",
            fields={"invited_engineers": ["engineers only"]},
        )
    return users


@transaction.atomic
def job_update(*, actor: User, job: Job, invited_engineers: list[User] | None = None, **fields: Any) -> Job:
    job = job_lock(job.pk)
    _require_member(actor, job.organization_id)
    unknown = set(fields) - EDITABLE_FIELDS
    if unknown:
        raise ValidationFailed("Unknown fields.", fields={name: ["not editable"] for name in unknown})
    if job.status not in (Job.Status.DRAFT, Job.Status.OPEN):
        raise IllegalTransition(f"A job that is {job.status} can no longer be edited.", code="job_not_editable")
    has_bids = job.bids.exists()
    if has_bids and "criteria" in fields and fields["criteria"] != job.criteria:
        raise IllegalTransition("Criteria are frozen once the job has bids.", code="criteria_frozen")
    if job.status == Job.Status.OPEN and {"currency", "hardware_class"} & set(fields):
        raise IllegalTransition("Currency and hardware class cannot change after publishing.", code="job_field_frozen")
    cleaned = _validate_fields(fields, current=job)
    changed = {}
    for name, value in cleaned.items():
        if getattr(job, name) != value:
            changed[name] = True
            setattr(job, name, value)
    job.save()
    if invited_engineers is not None:
        job.invited_engineers.set(_engineers_only(invited_engineers))
        changed["invited_engineers"] = True
    audit_record(
        actor=actor,
        verb="job_updated",
        obj=job,
        from_state=job.status,
        to_state=job.status,
        data={"fields": sorted(changed)},
    )
    job_views_changed(job=job)
    return job


def _attach_archive(*, actor: User, job: Job, upload, field: str, require_manifest: bool) -> Job:
    info = archive_validate(fileobj=upload, size=upload.size, field=field, require_manifest=require_manifest)
    # Stored (hashed and written, idempotent by sha256) before the lock, so the transaction stays short.
    artifact = artifact_store(fileobj=upload, archive_format=info.archive_format)
    with transaction.atomic():
        job = job_lock(job.pk)
        _require_member(actor, job.organization_id)
        if job.status != Job.Status.DRAFT and (job.status != Job.Status.OPEN or job.bids.exists()):
            raise IllegalTransition(
                "Benchmark files can change only before the job has bids.", code="job_artifacts_frozen"
            )
        setattr(job, field, artifact)
        job.save(update_fields=[field, "updated_at"])
        audit_record(
            actor=actor,
            verb=f"job_{field}_attached",
            obj=job,
            from_state=job.status,
            to_state=job.status,
            data={"sha256": artifact.sha256, "size": artifact.size},
        )
        job_views_changed(job=job)
    return job


def job_attach_package(*, actor: User, job: Job, upload) -> Job:
    return _attach_archive(actor=actor, job=job, upload=upload, field="package", require_manifest=True)


def job_attach_hidden_inputs(*, actor: User, job: Job, upload) -> Job:
    return _attach_archive(actor=actor, job=job, upload=upload, field="hidden_inputs", require_manifest=False)


@transaction.atomic
def job_publish(*, actor: User, job: Job) -> Job:
    job = job_lock(job.pk)
    _require_admin(actor, job.organization_id)
    missing = {}
    if not job.package_id:
        missing["package"] = ["a benchmark package is required"]
    if not job.hidden_inputs_id:
        missing["hidden_inputs"] = ["hidden acceptance inputs are required"]
    if not job.criteria:
        missing["criteria"] = ["success criteria are required"]
    if job.bidding_deadline <= timezone.now():
        missing["bidding_deadline"] = ["must be in the future"]
    if missing and job.status == Job.Status.DRAFT:
        raise ValidationFailed("The job is not ready to publish.", code="job_incomplete", fields=missing)
    job.published_at = timezone.now()
    job.calibration = {"status": "queued"}
    transition_apply(
        job,
        to=Job.Status.OPEN,
        allowed=JOB_TRANSITIONS,
        actor=actor,
        verb="job_published",
        update_fields=["published_at", "calibration"],
    )
    job_event_emit(event_type=event_types.JOB_PUBLISHED, job=job)
    job_views_changed(job=job)
    # Bidders see how noisy the job's hardware is before they commit to a speedup.
    verification_run_create(
        kind=VerificationRun.Kind.CALIBRATION,
        subject=calibration_subject(job.pk),
        hardware_class=job.hardware_class,
        package=job.package,
        hidden_inputs=job.hidden_inputs,
        criteria=job.criteria,
        budget_pairs=settings.VERIFICATION_CALIBRATION_PAIRS,
    )
    return job


def calibration_subject(job_id: int) -> str:
    return f"{CALIBRATION_PREFIX}{job_id}"


@transaction.atomic
def job_record_calibration(*, job_id: int, run_id: int, run_status: str, report: dict | None) -> Job:
    """Store the A/A noise measurement and flag every criterion the run budget cannot verify."""
    job = job_lock(job_id)
    measured = (report or {}).get("calibration", {}).get("criteria", [])
    thresholds: dict[str, Any] = {}
    for criterion in job.criteria.get("criteria", []):
        if criterion.get("kind") == "speedup":
            thresholds.setdefault(criterion["metric"], criterion.get("threshold"))  # the first one counts
    flags = []
    for entry in measured:
        detectable = entry.get("smallest_verifiable_speedup")
        threshold = thresholds.get(entry.get("metric"))
        if detectable and threshold and threshold < detectable:
            flags.append(
                f"{entry['metric']} speedup >= {threshold:g} is inside the noise floor: the run budget can verify "
                f"only speedups of about {detectable:.3g}x or more on this hardware."
            )
    violations = (report or {}).get("calibration", {}).get("sandbox_violations", [])
    flags += _baseline_violation_flags(violations)
    job.calibration = {
        "status": "done" if run_status == VerificationRun.Status.PASSED else "error",
        "run": run_id,
        "criteria": measured,
        "flags": flags,
        "sandbox_violations": violations,
    }
    job.save(update_fields=["calibration", "updated_at"])
    audit_record(
        actor=None,
        verb="job_calibrated",
        obj=job,
        from_state=job.status,
        to_state=job.status,
        data={"flags": len(flags)},
    )
    job_event_emit(event_type=event_types.JOB_CALIBRATED, job=job)
    job_views_changed(job=job)
    return job


def _baseline_violation_flags(violations: list[dict]) -> list[str]:
    """The company's own package attempting what the sandbox forbids: the A/A reports it rather than
    failing, so the job keeps its noise measurement, and the company learns before bidders do."""
    flags = []
    for entry in violations:
        category, runs = entry.get("category"), entry.get("runs")
        if entry.get("job_action") == "fail":
            consequence = (
                "a candidate that keeps this behaviour FAILs with sandbox_violation: remove it from the package "
                f'or set sandbox_policy.{category} to "report"'
            )
        else:
            consequence = f'the job\'s sandbox_policy.{category} is "report", so candidates are not failed for it'
        flags.append(f"The baseline itself triggered the sandbox's {category} check in {runs} run(s): {consequence}.")
    return flags


@transaction.atomic
def job_cancel(*, actor: User, job: Job, reason: str = "") -> Job:
    job = job_lock(job.pk)
    _require_admin(actor, job.organization_id)
    if job.status == Job.Status.IN_PROGRESS:
        raise IllegalTransition(
            "A funded job is closed through its contract, which refunds the company.", code="job_funded"
        )
    transition_apply(
        job,
        to=Job.Status.CANCELLED,
        allowed=JOB_TRANSITIONS,
        actor=actor,
        verb="job_cancelled",
        data={"reason": reason},
    )
    bids_decline_pending(job=job, actor=actor, reason="job_cancelled")
    job_views_changed(job=job)
    contract = Contract.objects.select_for_update().filter(job=job).first()
    if contract is not None:
        contract_cancel_locked(contract=contract, actor=actor, reason="job_cancelled")
    return job


@transaction.atomic
def job_expire(*, job_id: int) -> Job | None:
    """Close an open job left unawarded past its bidding deadline and award window; a no-op otherwise."""
    job = job_lock(job_id)
    award_window_end = job.bidding_deadline + timedelta(days=settings.JOB_AWARD_WINDOW_DAYS)
    if job.status != Job.Status.OPEN or award_window_end > timezone.now():
        return None
    transition_apply(job, to=Job.Status.EXPIRED, allowed=JOB_TRANSITIONS, actor=None, verb="job_expired")
    bids_decline_pending(job=job, actor=None, reason="job_expired")
    job_views_changed(job=job)
    return job


def jobs_expire(*, job_ids: Iterable[int]) -> int:
    """Expire each of these jobs that is overdue (`job_expire`, one transaction each); returns how many were."""
    return sum(job_expire(job_id=job_id) is not None for job_id in job_ids)


def jobs_expire_by_operator(*, actor: User, job_ids: Iterable[int]) -> int:
    """An operator expiring overdue jobs ahead of the schedule: what the scheduled task does, so support may
    (an overdue job holds no money; a job inside its window is left alone)."""
    operator_role_require(user=actor, role=SUPPORT)
    return jobs_expire(job_ids=job_ids)
