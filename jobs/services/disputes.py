"""Disputes decided on evidence: a party challenges a verified result, the same submission is verified again on
a different host, the other party may answer once, and an operator rules.

Who may dispute what, and until when:
- the company (an owner or admin of the contract's organization) disputes the PASS that holds the contract's
  current earning, while its release is still waiting (``Contract.release_due_at`` in the future: the job's
  review window after the PASS was recorded);
- the engineer disputes a FAIL or an INCONCLUSIVE of one of their submissions within the job's
  ``review_window_hours`` after that run's decision was recorded (``VerificationRun.finished_at``), while the
  contract is active (a last attempt that failed waits that long before the contract settles).
One unresolved dispute per contract; a run is disputed at most once by each side. Opening freezes every
release and the settlement of the contract until the ruling (``Contract.review_disputed``).

Lock order: Job, then Contract, then Dispute (the verification run's own lock comes first in the receivers,
which run inside verification's transaction).
"""

from datetime import timedelta

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from accounts.operators import PAYMENTS_OPERATOR, SUPPORT, operator_role_require
from accounts.selectors import user_is_org_admin
from common.errors import IllegalTransition, NotFound, NotPermitted, ValidationFailed
from common.models import AuditEvent
from common.services import audit_record
from common.transitions import transition_apply
from notifications import event_types
from payments import selectors as payments_selectors
from verification.models import VerificationRun
from verification.services import verification_run_repeat_elsewhere

from ..criteria import tier_fraction_bps
from ..models import Contract, Dispute, DisputeEvidence, Job, Submission
from ..states import DISPUTE_TRANSITIONS
from .contracts import contract_lock, contract_settlement_schedule, job_and_contract_lock, release_on_commit
from .dispute_evidence import EvidenceFile, evidence_files_store
from .events import dispute_event_emit
from .submissions import SUBJECT_PREFIX

log = structlog.get_logger(__name__)

VERB_OPENED = "dispute_opened"
VERB_REVERIFYING = "dispute_reverifying"
VERB_ANSWERED = "dispute_answered"
VERB_REVERIFIED = "dispute_reverified"
VERB_RESOLVED = "dispute_resolved"
VERB_ESCALATED = "dispute_escalated"
VERB_CONTRACT_DISPUTED = "contract_review_disputed"
VERB_CONTRACT_RESOLVED = "contract_dispute_resolved"

DISPUTABLE_RUN_STATUSES = {
    Dispute.Side.COMPANY: (VerificationRun.Status.PASSED,),
    Dispute.Side.ENGINEER: (VerificationRun.Status.FAILED, VerificationRun.Status.INCONCLUSIVE),
}
RULINGS_FOR_SIDE = {
    # The company disputes a PASS: it stands, is withheld, or pays a lower tier.
    Dispute.Side.COMPANY: {Dispute.Ruling.UPHOLD, Dispute.Ruling.OVERTURN_WITHHOLD, Dispute.Ruling.SPLIT},
    # The engineer disputes a FAIL or an INCONCLUSIVE: it stands, pays the tier reached, or pays a lower tier.
    Dispute.Side.ENGINEER: {Dispute.Ruling.UPHOLD, Dispute.Ruling.OVERTURN_RELEASE, Dispute.Ruling.SPLIT},
}
REASON_MAX_CHARS = 500
TEXT_MAX_CHARS = 20_000


def _text(value: str, *, field: str, limit: int, required: bool = False) -> str:
    value = (value or "").strip()
    if required and not value:
        raise ValidationFailed(f"The {field} is required.", code=f"{field}_required", fields={field: ["required"]})
    if len(value) > limit:
        raise ValidationFailed(
            f"The {field} may hold at most {limit} characters.", code="validation_failed", fields={field: ["too long"]}
        )
    return value


def _side_of(actor: User, contract: Contract) -> str:
    if user_is_org_admin(user=actor, organization_id=contract.organization_id):
        return Dispute.Side.COMPANY
    if actor.pk == contract.engineer_id:
        return Dispute.Side.ENGINEER
    raise NotPermitted("Only the contract's engineer and its organization's owners and admins can do this.")


def _submission_of(run: VerificationRun, contract: Contract) -> Submission | None:
    if not run.subject.startswith(SUBJECT_PREFIX):
        return None
    return Submission.objects.filter(pk=int(run.subject.removeprefix(SUBJECT_PREFIX)), contract=contract).first()


def _default_run_id(side: str, contract: Contract) -> int | None:
    if side == Dispute.Side.COMPANY:
        return contract.earned_run_id
    subjects = [f"{SUBJECT_PREFIX}{pk}" for pk in contract.submissions.values_list("pk", flat=True)]
    run = (
        VerificationRun.objects.filter(subject__in=subjects, status__in=DISPUTABLE_RUN_STATUSES[side])
        .exclude(pk__in=Dispute.objects.filter(reverification_run__isnull=False).values("reverification_run"))
        .order_by("-finished_at", "-id")
        .first()
    )
    return run.pk if run else None


def _disputable_run(side: str, contract: Contract, run_id: int | None, job: Job) -> tuple[VerificationRun, Submission]:
    run_id = run_id or _default_run_id(side, contract)
    run = VerificationRun.objects.filter(pk=run_id).first() if run_id else None
    submission = _submission_of(run, contract) if run else None
    if run is None or submission is None or Dispute.objects.filter(reverification_run=run).exists():
        raise NotFound("No such verification of this contract's submissions.", code="run_not_found")
    if run.status not in DISPUTABLE_RUN_STATUSES[side]:
        wanted = " or ".join(str(status).upper() for status in DISPUTABLE_RUN_STATUSES[side])
        raise IllegalTransition(
            f"The {side} may dispute a {wanted}; this run is {run.status}.",
            code="run_not_disputable",
            fields={"run": [run.status]},
        )
    now = timezone.now()
    if side == Dispute.Side.COMPANY:
        in_window = contract.earned_run_id == run.pk and contract.release_due_at is not None
        in_window = in_window and contract.release_due_at > now
    else:
        # Still the submission's result (an accepted inconclusive is a pass now), and decided recently enough.
        in_window = submission.status in (Submission.Status.FAILED, Submission.Status.INCONCLUSIVE)
        in_window = in_window and run.finished_at + timedelta(hours=job.review_window_hours) > now
    if not in_window:
        raise IllegalTransition("Only a result inside its review window can be disputed.", code="review_window_closed")
    return run, submission


def _attach(dispute: Dispute, files: list[EvidenceFile], *, side: str, actor: User) -> None:
    DisputeEvidence.objects.bulk_create(
        DisputeEvidence(
            dispute=dispute,
            side=side,
            uploaded_by=actor,
            artifact=file.artifact,
            filename=file.filename,
            content_type=file.content_type,
        )
        for file in files
    )


def dispute_open(
    *,
    actor: User,
    contract_id: int,
    reason: str,
    evidence_text: str = "",
    files=(),
    run_id: int | None = None,
) -> Dispute:
    """Open a dispute on a verified result; its re-verification on another host is queued at once."""
    reason = _text(reason, field="reason", limit=REASON_MAX_CHARS, required=True)
    evidence_text = _text(evidence_text, field="evidence_text", limit=TEXT_MAX_CHARS)
    stored = evidence_files_store(uploads=files)
    with transaction.atomic():
        job, contract = job_and_contract_lock(contract_id)
        side = _side_of(actor, contract)
        if contract.status != Contract.Status.ACTIVE:
            raise IllegalTransition(
                f"The contract is {contract.status}; only an active contract's results can be disputed.",
                code="contract_not_active",
            )
        if Dispute.objects.filter(contract=contract, status__in=Dispute.UNRESOLVED_STATUSES).exists():
            raise IllegalTransition("The contract already has an open dispute.", code="dispute_already_open")
        run, submission = _disputable_run(side, contract, run_id, job)
        if Dispute.objects.filter(disputed_run=run, side=side).exists():
            raise IllegalTransition(f"The {side} has already disputed this result.", code="run_already_disputed")
        try:
            with transaction.atomic():
                dispute = Dispute.objects.create(
                    contract=contract,
                    submission=submission,
                    disputed_run=run,
                    side=side,
                    opened_by=actor,
                    reason=reason,
                    evidence_text=evidence_text,
                )
        except IntegrityError as error:  # a concurrent open won the race (both constraints are checked above)
            raise IllegalTransition("The contract already has an open dispute.", code="dispute_already_open") from error
        _attach(dispute, stored, side=side, actor=actor)
        audit_record(
            actor=actor,
            verb=VERB_OPENED,
            obj=dispute,
            to_state=dispute.status,
            data={"side": side, "run": run.pk, "reason": reason, "files": len(stored)},
        )
        contract.review_disputed = True
        contract.save(update_fields=["review_disputed", "updated_at"])
        audit_record(
            actor=actor,
            verb=VERB_CONTRACT_DISPUTED,
            obj=contract,
            from_state=contract.status,
            to_state=contract.status,
            data={"reason": reason, "dispute": dispute.pk, "side": side, "run": run.pk},
        )
        _reverify_locked(dispute, actor=actor)
        dispute_event_emit(event_type=event_types.DISPUTE_OPENED, dispute=dispute)
    log.info("dispute_opened", dispute_id=dispute.pk, contract_id=contract_id, side=side)
    return dispute


def _reverify_locked(dispute: Dispute, *, actor: User | None) -> None:
    rerun = verification_run_repeat_elsewhere(run_id=dispute.disputed_run_id)
    dispute.reverification_run = rerun
    dispute.recommendation = ""
    transition_apply(
        dispute,
        to=Dispute.Status.REVERIFYING,
        allowed=DISPUTE_TRANSITIONS,
        actor=actor,
        verb=VERB_REVERIFYING,
        data={"run": rerun.pk, "exclude_host": rerun.exclude_host, "exclude_key_id": rerun.exclude_key_id},
        update_fields=["reverification_run", "recommendation"],
    )


def _dispute_lock(dispute_id: int, *, with_job: bool = True) -> tuple[Job | None, Contract, Dispute]:
    """Job, contract and dispute locked in that order; ``with_job=False`` from verification's receivers, which
    already hold the contract (locking the job after it would reverse the order)."""
    contract_id = Dispute.objects.values_list("contract_id", flat=True).filter(pk=dispute_id).first()
    if contract_id is None:
        raise NotFound("No such dispute.", code="dispute_not_found")
    if with_job:
        job, contract = job_and_contract_lock(contract_id)
    else:
        job, contract = None, contract_lock(contract_id)
    return job, contract, Dispute.objects.select_for_update().get(pk=dispute_id)


def dispute_answer(*, actor: User, dispute_id: int, text: str, files=()) -> Dispute:
    """The other party's answer, once, while the dispute is unresolved."""
    text = _text(text, field="answer_text", limit=TEXT_MAX_CHARS, required=True)
    stored = evidence_files_store(uploads=files)
    with transaction.atomic():
        _, contract, dispute = _dispute_lock(dispute_id)
        side = _side_of(actor, contract)
        if side == dispute.side:
            raise NotPermitted("Only the other party can answer a dispute.", code="dispute_answer_other_party")
        if not dispute.is_unresolved:
            raise IllegalTransition("The dispute is resolved.", code="dispute_resolved")
        if dispute.answered_at is not None:
            raise IllegalTransition("The dispute has been answered already.", code="dispute_already_answered")
        dispute.answer_text, dispute.answered_by, dispute.answered_at = text, actor, timezone.now()
        dispute.save(update_fields=["answer_text", "answered_by", "answered_at", "updated_at"])
        _attach(dispute, stored, side=side, actor=actor)
        audit_record(
            actor=actor,
            verb=VERB_ANSWERED,
            obj=dispute,
            from_state=dispute.status,
            to_state=dispute.status,
            data={"side": side, "files": len(stored)},
        )
        dispute_event_emit(event_type=event_types.DISPUTE_ANSWERED, dispute=dispute)
    return dispute


def dispute_reverify(*, actor: User, dispute_id: int) -> Dispute:
    """Support asks for another re-verification (the last one produced no result)."""
    operator_role_require(user=actor, role=SUPPORT)
    with transaction.atomic():
        _, _, dispute = _dispute_lock(dispute_id)
        if dispute.status != Dispute.Status.AWAITING_RULING:
            raise IllegalTransition(
                "A re-verification can be asked for once the last one has finished and before the ruling.",
                code="dispute_not_awaiting_ruling",
            )
        _reverify_locked(dispute, actor=actor)
    return dispute


def _recommendation(original: VerificationRun, rerun: VerificationRun) -> str:
    if rerun.status == VerificationRun.Status.ERROR or not rerun.decision:
        return Dispute.Recommendation.UNAVAILABLE
    same = ("decision", "tier", "payout_fraction_bps")
    if all(getattr(rerun, name) == getattr(original, name) for name in same):
        return Dispute.Recommendation.AGREE
    return Dispute.Recommendation.DISAGREE


def dispute_record_reverification(*, run_id: int) -> Dispute | None:
    """The re-verification finished: recommend. Runs inside the run's transaction (verification's signal)."""
    dispute_id = (
        Dispute.objects.filter(reverification_run_id=run_id, status=Dispute.Status.REVERIFYING)
        .values_list("pk", flat=True)
        .first()
    )
    if dispute_id is None:
        return None
    _, _, dispute = _dispute_lock(dispute_id, with_job=False)
    if dispute.status != Dispute.Status.REVERIFYING or dispute.reverification_run_id != run_id:
        return None
    rerun = VerificationRun.objects.get(pk=run_id)
    original = VerificationRun.objects.get(pk=dispute.disputed_run_id)
    dispute.recommendation = _recommendation(original, rerun)
    transition_apply(
        dispute,
        to=Dispute.Status.AWAITING_RULING,
        allowed=DISPUTE_TRANSITIONS,
        actor=None,
        verb=VERB_REVERIFIED,
        data={
            "run": run_id,
            "recommendation": dispute.recommendation,
            "original": {"host": original.host_id, "decision": original.decision, "tier": original.tier},
            "rerun": {"host": rerun.host_id, "decision": rerun.decision, "tier": rerun.tier},
        },
        update_fields=["recommendation"],
    )
    if dispute.recommendation == Dispute.Recommendation.DISAGREE:
        log.warning("dispute_results_disagree_noise_investigation", dispute_id=dispute.pk, run_id=run_id)
    dispute_event_emit(event_type=event_types.DISPUTE_REVERIFIED, dispute=dispute)
    return dispute


def _earning_without(contract: Contract, excluded_run_ids: set[int]) -> tuple[int, int | None]:
    """The best payout fraction the contract earned on runs other than ``excluded_run_ids`` (withheld ones), and
    the run that earned it; never less than what was already released."""
    subjects = [f"{SUBJECT_PREFIX}{pk}" for pk in contract.submissions.values_list("pk", flat=True)]
    reruns = Dispute.objects.filter(reverification_run__isnull=False).values_list("reverification_run_id", flat=True)
    earned: dict[int, int] = dict(
        VerificationRun.objects.filter(subject__in=subjects, status=VerificationRun.Status.PASSED)
        .exclude(pk__in=reruns)
        .values_list("pk", "payout_fraction_bps")
    )
    # Earnings recorded without a PASS (an accepted inconclusive, a ruling) are in the contract's audit trail.
    for event in AuditEvent.objects.filter(
        object_type=contract._meta.label_lower, object_id=str(contract.pk), verb="contract_earned"
    ).only("data"):
        run, bps = event.data.get("run"), event.data.get("to_bps") or 0
        if isinstance(run, int):
            earned[run] = max(earned.get(run) or 0, bps)
    # A split capped a run's payout at the ruled tier.
    for run, bps in Dispute.objects.filter(contract=contract, ruling=Dispute.Ruling.SPLIT).values_list(
        "disputed_run_id", "ruling_bps"
    ):
        if run in earned:
            earned[run] = min(earned[run] or 0, bps or 0)
    released = payments_selectors.escrow_get(escrow_id=contract.escrow_id).released_bps
    candidates = [(bps or 0, run) for run, bps in earned.items() if run not in excluded_run_ids]
    best_bps, best_run = max(candidates, default=(0, None))
    return (best_bps, best_run) if best_bps >= released else (released, best_run)


def _tier_bps(job: Job, tier: int | None) -> int | None:
    tiers = job.criteria.get("tiers") or []
    if tier is None:
        return None
    if not 0 <= tier < len(tiers):
        raise ValidationFailed(
            f"The job has tiers 0 to {len(tiers) - 1}.", code="ruling_tier_invalid", fields={"tier": ["no such tier"]}
        )
    return tier_fraction_bps(tiers[tier]["fraction"])


def _withheld_run_ids(contract: Contract, also: int) -> set[int]:
    withheld = Dispute.objects.filter(contract=contract, ruling=Dispute.Ruling.OVERTURN_WITHHOLD)
    return {*withheld.values_list("disputed_run_id", flat=True), also}


def dispute_rule(*, dispute_id: int, actor: User, ruling: str, note: str, tier: int | None = None) -> Dispute:
    """An operator's ruling, with a required note. Every ruling decides money, so it takes the payments
    operator role.

    - ``uphold``: the disputed result stands (a disputed PASS is released now; a disputed FAIL pays nothing).
    - ``overturn_withhold`` (company's dispute): the PASS earns nothing; the contract's earning falls back to the
      best tier earned on other runs, released now if it is not yet, else to what was paid out.
    - ``overturn_release`` (engineer's dispute): the FAIL or INCONCLUSIVE pays ``tier``, by default the tier
      the re-verification reached; released now.
    - ``split``: pays ``tier`` (required), lower than the disputed PASS's tier (company's dispute) or than the
      job's top tier (engineer's dispute); released now.
    """
    operator_role_require(user=actor, role=PAYMENTS_OPERATOR)
    note = _text(note, field="note", limit=TEXT_MAX_CHARS, required=True)
    if ruling not in Dispute.Ruling.values:
        raise ValidationFailed("Unknown ruling.", code="ruling_invalid", fields={"ruling": [str(ruling)]})
    with transaction.atomic():
        job, contract, dispute = _dispute_lock(dispute_id)
        if not dispute.is_unresolved:
            raise IllegalTransition("The dispute is resolved already.", code="dispute_resolved")
        if ruling not in RULINGS_FOR_SIDE[dispute.side]:
            raise IllegalTransition(
                f"A {dispute.side}'s dispute cannot be ruled {ruling}.",
                code="ruling_not_applicable",
                fields={"ruling": sorted(RULINGS_FOR_SIDE[dispute.side])},
            )
        original = VerificationRun.objects.get(pk=dispute.disputed_run_id)
        rerun = VerificationRun.objects.filter(pk=dispute.reverification_run_id).first()
        before = {"earned_bps": contract.earned_bps, "earned_run": contract.earned_run_id}
        pay_bps, pay_run = _ruling_payment(dispute, job, contract, original, rerun, ruling, tier)
        # The disputed result's review ends with the ruling: what it decides is released now. An earning that
        # rests on another run (a higher tier earned since) keeps its own review window.
        release_now = pay_bps is not None or (
            ruling == Dispute.Ruling.UPHOLD
            and dispute.side == Dispute.Side.COMPANY
            and contract.earned_run_id == original.pk
        )
        if pay_bps is not None:
            contract.earned_bps, contract.earned_run_id = pay_bps, pay_run
        released = payments_selectors.escrow_get(escrow_id=contract.escrow_id).released_bps
        if contract.earned_bps <= released:
            contract.release_due_at = None
        elif release_now:
            contract.release_due_at = timezone.now()
        contract.review_disputed = False
        contract.save(update_fields=["earned_bps", "earned_run_id", "release_due_at", "review_disputed", "updated_at"])
        dispute.ruling, dispute.ruling_note, dispute.ruled_by, dispute.ruled_at = ruling, note, actor, timezone.now()
        dispute.ruling_tier = tier
        dispute.ruling_bps = pay_bps if ruling != Dispute.Ruling.UPHOLD else None
        transition_apply(
            dispute,
            to=Dispute.Status.RESOLVED,
            allowed=DISPUTE_TRANSITIONS,
            actor=actor,
            verb=VERB_RESOLVED,
            data={"ruling": ruling, "tier": tier, "note": note, "before": before, "earned_bps": contract.earned_bps},
            update_fields=["ruling", "ruling_note", "ruled_by", "ruled_at", "ruling_tier", "ruling_bps"],
        )
        audit_record(
            actor=actor,
            verb=VERB_CONTRACT_RESOLVED,
            obj=contract,
            from_state=contract.status,
            to_state=contract.status,
            data={
                "dispute": dispute.pk,
                "ruling": ruling,
                "outcome": "released" if contract.release_due_at else "withheld",
                "earned_bps": before["earned_bps"],
                "to_bps": contract.earned_bps,
                "note": note,
            },
        )
        dispute_event_emit(event_type=event_types.DISPUTE_RESOLVED, dispute=dispute)
        if contract.release_due_at is not None and contract.release_due_at <= timezone.now():
            release_on_commit(contract.pk)
        # A contract out of attempts or time waited for the ruling to settle.
        contract_settlement_schedule(contract=contract, job=job)
    log.info("dispute_ruled", dispute_id=dispute.pk, ruling=ruling, earned_bps=contract.earned_bps)
    return dispute


def _ruling_payment(
    dispute: Dispute,
    job: Job,
    contract: Contract,
    original: VerificationRun,
    rerun: VerificationRun | None,
    ruling: str,
    tier: int | None,
) -> tuple[int | None, int | None]:
    """The contract's new earning and the run it rests on, or (None, None) to leave it as it is."""
    if ruling == Dispute.Ruling.UPHOLD:
        if tier is not None:
            raise ValidationFailed("An upheld result takes no tier.", code="ruling_tier_unexpected")
        return None, None
    if ruling == Dispute.Ruling.OVERTURN_WITHHOLD:
        if tier is not None:
            raise ValidationFailed("A withheld result takes no tier.", code="ruling_tier_unexpected")
        if contract.earned_run_id != original.pk:
            return None, None  # a higher tier earned since rests on another run, which this ruling leaves alone
        return _earning_without(contract, _withheld_run_ids(contract, original.pk))
    if ruling == Dispute.Ruling.OVERTURN_RELEASE:
        if tier is None and rerun is not None and rerun.status == VerificationRun.Status.PASSED:
            tier = rerun.tier
        if tier is None:
            raise ValidationFailed(
                "Name the tier to pay: the re-verification reached none.",
                code="ruling_tier_required",
                fields={"tier": ["required"]},
            )
        bps = _tier_bps(job, tier)
        return (bps, original.pk) if bps > contract.earned_bps else (None, None)
    # split
    bps = _tier_bps(job, tier)
    if bps is None:
        raise ValidationFailed(
            "A split names the tier to pay.", code="ruling_tier_required", fields={"tier": ["required"]}
        )
    tiers = job.criteria.get("tiers") or []
    ceiling = original.payout_fraction_bps if dispute.side == Dispute.Side.COMPANY else _tier_bps(job, len(tiers) - 1)
    if bps >= (ceiling or 0):
        raise ValidationFailed(
            "A split pays a lower tier than the one in dispute.",
            code="split_tier_invalid",
            fields={"tier": [str(tier)]},
        )
    if dispute.side == Dispute.Side.COMPANY:
        if contract.earned_run_id != original.pk:
            return None, None
        fallback_bps, fallback_run = _earning_without(contract, _withheld_run_ids(contract, original.pk))
        return (bps, original.pk) if bps >= fallback_bps else (fallback_bps, fallback_run)
    return (bps, original.pk) if bps > contract.earned_bps else (None, None)


def disputes_escalate_overdue() -> list[int]:
    """Mark unresolved disputes older than DISPUTE_ESCALATE_AFTER_HOURS as escalated; once each."""
    cutoff = timezone.now() - timedelta(hours=settings.DISPUTE_ESCALATE_AFTER_HOURS)
    overdue = Dispute.objects.filter(
        status__in=Dispute.UNRESOLVED_STATUSES, escalated_at__isnull=True, created_at__lte=cutoff
    ).values_list("pk", flat=True)
    escalated = []
    for dispute_id in list(overdue):
        with transaction.atomic():
            dispute = Dispute.objects.select_for_update().get(pk=dispute_id)
            if dispute.escalated_at is not None or not dispute.is_unresolved:
                continue
            dispute.escalated_at = timezone.now()
            dispute.save(update_fields=["escalated_at", "updated_at"])
            rerun = VerificationRun.objects.filter(pk=dispute.reverification_run_id).first()
            audit_record(
                actor=None,
                verb=VERB_ESCALATED,
                obj=dispute,
                from_state=dispute.status,
                to_state=dispute.status,
                data={
                    "after_hours": settings.DISPUTE_ESCALATE_AFTER_HOURS,
                    "waiting_for_another_host": bool(rerun and rerun.waiting_for_another_host),
                },
            )
        escalated.append(dispute_id)
    return escalated


def contract_unresolved_dispute(*, contract_id: int) -> Dispute | None:
    return Dispute.objects.filter(contract_id=contract_id, status__in=Dispute.UNRESOLVED_STATUSES).first()


def dispute_rule_legacy(*, actor: User, contract_id: int, release: bool, note: str) -> Dispute | None:
    """The older release/withhold resolution of a contract's open dispute, in terms of rulings."""
    operator_role_require(user=actor, role=PAYMENTS_OPERATOR)
    dispute = contract_unresolved_dispute(contract_id=contract_id)
    if dispute is None:
        _flag_only_dispute_resolve(actor=actor, contract_id=contract_id, release=release, note=note)
        return None
    if dispute.side == Dispute.Side.COMPANY:
        ruling = Dispute.Ruling.UPHOLD if release else Dispute.Ruling.OVERTURN_WITHHOLD
    else:
        ruling = Dispute.Ruling.OVERTURN_RELEASE if release else Dispute.Ruling.UPHOLD
    return dispute_rule(dispute_id=dispute.pk, actor=actor, ruling=ruling, note=note or "resolved", tier=None)


def _flag_only_dispute_resolve(*, actor: User, contract_id: int, release: bool, note: str) -> None:
    """A contract disputed before disputes were recorded (the flag alone, no Dispute row): released, or withheld
    with the earning falling back to the best tier earned on other runs (at least what was paid out)."""
    with transaction.atomic():
        job, contract = job_and_contract_lock(contract_id)
        if contract.status != Contract.Status.ACTIVE or not contract.review_disputed:
            raise IllegalTransition("The contract has no open dispute.", code="no_open_dispute")
        before = contract.earned_bps
        if release:
            contract.release_due_at = timezone.now()
        else:
            excluded = _withheld_run_ids(contract, contract.earned_run_id or 0)
            contract.earned_bps, contract.earned_run_id = _earning_without(contract, excluded)
            contract.release_due_at = None
        contract.review_disputed = False
        contract.save(update_fields=["earned_bps", "earned_run_id", "release_due_at", "review_disputed", "updated_at"])
        audit_record(
            actor=actor,
            verb=VERB_CONTRACT_RESOLVED,
            obj=contract,
            from_state=contract.status,
            to_state=contract.status,
            data={"outcome": "released" if release else "withheld", "earned_bps": before, "note": note},
        )
        if release:
            release_on_commit(contract.pk)
        contract_settlement_schedule(contract=contract, job=job)
