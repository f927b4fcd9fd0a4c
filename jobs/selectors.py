from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import User
from accounts.selectors import user_organization_ids
from common.errors import NotFound
from common.models import AuditEvent
from notifications import selectors as notifications_selectors
from notifications.models import Delivery, OutboundEvent
from payments import selectors as payments_selectors
from payments.selectors import EscrowSummary
from verification import selectors as verification_selectors
from verification.models import VerificationRun

from .models import Bid, Contract, Dispute, DisputeEvidence, Job, Submission


@dataclass(frozen=True)
class JobViewerScope:
    """Viewers with equal scopes see the same jobs; `job_list_for_scope` is the one place that says which."""

    kind: str  # "staff", "organizations", "engineer" (invited and own-bid jobs too) or "public"
    organization_ids: tuple[int, ...] = ()
    engineer_id: int | None = None


def job_list_scope(*, user: User) -> JobViewerScope:
    """The user's scope as `job_list_visible` applies it (no query for engineers)."""
    if user.is_staff:
        return JobViewerScope("staff")
    if user.account_type != User.AccountType.ENGINEER:  # engineers never join organizations
        return JobViewerScope("organizations", tuple(sorted(user_organization_ids(user=user))))
    return JobViewerScope("engineer", engineer_id=user.pk)


def job_list_visible(*, user: User) -> QuerySet[Job]:
    """Jobs the user may see: their organization's (drafts too), and published public or invited ones."""
    return job_list_for_scope(scope=job_list_scope(user=user))


def job_viewer_scope(*, scope: JobViewerScope, engineer: User | None = None, sees_unlisted=None) -> JobViewerScope:
    """`scope` narrowed to "public" when its viewer sees exactly the public jobs (so they share its cache).

    `sees_unlisted(engineer)` answers for an engineer's scope; by default `engineer_sees_unlisted` (a query).
    """
    if scope.kind == "organizations" and not scope.organization_ids:
        return JobViewerScope("public")
    if scope.kind == "engineer" and not (sees_unlisted or engineer_sees_unlisted)(engineer=engineer):
        return JobViewerScope("public")
    return scope


def engineer_sees_unlisted(*, engineer: User) -> bool:
    """Whether an invitation or an own bid shows the engineer a published job that is not public."""
    return (
        Job.objects.exclude(status=Job.Status.DRAFT)
        .exclude(visibility=Job.Visibility.PUBLIC)
        .filter(_invited_or_bid_on(engineer.pk))
        .exists()
    )


def _invited_or_bid_on(engineer_id: int) -> Q:
    invited_ids = Job.invited_engineers.through.objects.filter(user_id=engineer_id).values("job_id")
    own_bid_ids = Bid.objects.filter(engineer_id=engineer_id).values("job_id")
    return Q(pk__in=invited_ids) | Q(pk__in=own_bid_ids)


def job_list_for_scope(*, scope: JobViewerScope) -> QuerySet[Job]:
    # A correlated subquery, not a join: the paginator's COUNT stays a plain count over jobs, and bids are
    # counted only for the rows of the page.
    active_bids = (
        Bid.objects.filter(job=OuterRef("pk"), status__in=Bid.ACTIVE_STATUSES)
        .order_by()
        .values("job")
        .annotate(n=Count("pk"))
        .values("n")
    )
    jobs = Job.objects.select_related("organization").annotate(
        bid_count=Coalesce(Subquery(active_bids, output_field=IntegerField()), 0)
    )
    if scope.kind == "staff":
        return jobs.order_by("-id")
    published = ~Q(status=Job.Status.DRAFT)
    visible = published & Q(visibility=Job.Visibility.PUBLIC)
    if scope.kind == "organizations":
        visible |= Q(organization_id__in=scope.organization_ids)
    elif scope.kind == "engineer":
        visible |= published & _invited_or_bid_on(scope.engineer_id)
    return jobs.filter(visible).order_by("-id")


def job_get_visible(*, user: User, job_id: int) -> Job:
    job = job_list_visible(user=user).filter(pk=job_id).first()
    if job is None:
        raise NotFound("No such job.", code="job_not_found")
    return job


def job_hidden_inputs_visible(*, user: User, job: Job) -> bool:
    return job.organization_id in user_organization_ids(user=user)


def bid_list_visible(*, user: User, job: Job | None = None) -> QuerySet[Bid]:
    """The job's organization sees every bid on its jobs; an engineer sees only their own bids."""
    bids = Bid.objects.select_related("job", "engineer")
    if job is not None:
        bids = bids.filter(job=job)
    if not user.is_staff:
        bids = bids.filter(Q(engineer=user) | Q(job__organization_id__in=user_organization_ids(user=user)))
    return bids.order_by("-id")


def bid_get_visible(*, user: User, bid_id: int) -> Bid:
    bid = bid_list_visible(user=user).filter(pk=bid_id).first()
    if bid is None:
        raise NotFound("No such bid.", code="bid_not_found")
    return bid


def contract_list_visible(*, user: User) -> QuerySet[Contract]:
    contracts = Contract.objects.select_related("job", "organization", "engineer")
    if not user.is_staff:
        contracts = contracts.filter(Q(engineer=user) | Q(organization_id__in=user_organization_ids(user=user)))
    return contracts.order_by("-id")


def contract_get_visible(*, user: User, contract_id: int) -> Contract:
    contract = contract_list_visible(user=user).filter(pk=contract_id).first()
    if contract is None:
        raise NotFound("No such contract.", code="contract_not_found")
    return contract


def submission_list(*, contract: Contract) -> QuerySet[Submission]:
    return contract.submissions.select_related("candidate").order_by("-number")


def audit_events_for(*, obj) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(object_type=obj._meta.label_lower, object_id=str(obj.pk)).select_related("actor")


def job_audit_events(*, job: Job) -> QuerySet[AuditEvent]:
    """Events of the job and of everything hanging off it (bids, contract, submissions)."""
    contract_id = Contract.objects.filter(job=job).values_list("pk", flat=True).first()
    scopes = Q(object_type="jobs.job", object_id=str(job.pk))
    if contract_id:
        submission_ids = [
            str(pk) for pk in Submission.objects.filter(contract_id=contract_id).values_list("pk", flat=True)
        ]
        scopes |= Q(object_type="jobs.contract", object_id=str(contract_id))
        scopes |= Q(object_type="jobs.submission", object_id__in=submission_ids)
    return AuditEvent.objects.filter(scopes).select_related("actor").order_by("id")


def submission_get_visible(*, user: User, submission_id: int) -> Submission:
    contract_ids = contract_list_visible(user=user).values("pk")
    submission = (
        Submission.objects.select_related("contract", "candidate")
        .filter(pk=submission_id, contract_id__in=contract_ids)
        .first()
    )
    if submission is None:
        raise NotFound("No such submission.", code="submission_not_found")
    return submission


def submission_next_steps(*, submission: Submission, now=None) -> str:
    """What can happen next to a submission, naming only actions the contract still allows: another attempt
    needs an active contract before its deadline with attempts left; accepting an inconclusive result needs an
    active contract (the rules `submission_create` and `submission_accept_inconclusive` apply)."""
    contract = submission.contract
    status = submission.status
    if status == Submission.Status.RECEIVED:
        return "Waiting for verification."
    if status == Submission.Status.VERIFYING:
        return "Verification is queued or running; progress is shown on the verification run."
    if status == Submission.Status.PASSED:
        return "Passed: the tier's payout is released after the company's review window."
    active = contract.status == Contract.Status.ACTIVE
    if not active:
        blocker = f"the contract is {contract.get_status_display().lower()}"
    elif contract.deadline <= (now or timezone.now()):
        blocker = "the contract's deadline has passed"
    elif contract.attempts_left <= 0:
        blocker = "no attempts are left on this contract"
    else:
        blocker = ""
    left = contract.attempts_left
    attempts = f"{left} attempt{'s' if left != 1 else ''} left"
    submit_again = f"the engineer may submit again ({attempts})"
    if status == Submission.Status.FAILED:
        if blocker:
            return f"Failed; no further attempt is possible: {blocker}."
        return f"Failed: the engineer may submit an improved candidate ({attempts})."
    if status == Submission.Status.INCONCLUSIVE:
        if not active:
            return f"Inconclusive; {blocker}, so it can no longer be accepted or followed by another attempt."
        if blocker:
            return f"Inconclusive: the company may accept it; no further attempt is possible: {blocker}."
        return f"Inconclusive: the company may accept it; otherwise {submit_again}."
    # ERROR: the platform failed and the attempt was given back.
    if blocker:
        return f"The platform could not verify it; the attempt was not counted, but no further attempt is possible: {blocker}."
    return f"The platform could not verify it; the attempt was not counted: {submit_again}."


# The contract's story for operators (the admin's contract page): everything that happened to it, in order.

STORY_OBJECT_TYPES = {
    "job": "jobs.job",
    "bid": "jobs.bid",
    "contract": "jobs.contract",
    "submission": "jobs.submission",
    "escrow": "payments.escrow",
    "run": "verification.verificationrun",
    "dispute": "jobs.dispute",
}
DISPUTE_VERBS = ("contract_review_disputed", "contract_dispute_resolved")


@dataclass(frozen=True)
class RunStory:
    run: VerificationRun
    summary: verification_selectors.ReportSummary | None
    certificate: verification_selectors.CertificateStatus


@dataclass(frozen=True)
class SubmissionStory:
    submission: Submission
    runs: list[RunStory]


@dataclass(frozen=True)
class DisputeStory:
    """The contract's disputes (newest first, with evidence), whether one is unresolved, and the dispute audit
    events (which also cover flags raised before disputes were records)."""

    open: bool
    records: list[Dispute]
    current: Dispute | None
    events: list[AuditEvent]


@dataclass(frozen=True)
class DeliveryStory:
    delivery: Delivery
    event_type: str
    destination: str


@dataclass(frozen=True)
class ContractStory:
    contract: Contract
    timeline: list[AuditEvent]
    bids: list[Bid]
    escrow: EscrowSummary | None
    submissions: list[SubmissionStory]
    dispute: DisputeStory
    deliveries: list[DeliveryStory]


def contract_story(*, contract_id: int) -> ContractStory:
    """Everything an operator needs to understand one contract. Staff only: it reads across organizations."""
    contract = Contract.objects.select_related("job", "organization", "engineer", "bid").filter(pk=contract_id).first()
    if contract is None:
        raise NotFound("No such contract.", code="contract_not_found")
    bids = list(Bid.objects.filter(job_id=contract.job_id).select_related("engineer").order_by("created_at", "id"))
    submissions = list(
        Submission.objects.filter(contract=contract).select_related("submitted_by", "candidate").order_by("number")
    )
    runs_by_subject: dict[str, list[VerificationRun]] = {}
    subjects = [f"submission:{submission.pk}" for submission in submissions]
    run_rows = (
        VerificationRun.objects.filter(subject__in=subjects)
        .select_related("package", "candidate", "hidden_inputs", "signing_key", "plot_png", "plot_svg")
        .order_by("id")
    )
    for run in run_rows:
        runs_by_subject.setdefault(run.subject, []).append(run)
    submission_stories = [
        SubmissionStory(
            submission=submission,
            runs=[
                RunStory(
                    run=run,
                    summary=verification_selectors.verification_report_summary(run=run),
                    certificate=verification_selectors.verification_certificate_status(run=run),
                )
                for run in runs_by_subject.get(f"submission:{submission.pk}", [])
            ],
        )
        for submission in submissions
    ]
    ids = {
        "job": [contract.job_id],
        "bid": [bid.pk for bid in bids],
        "contract": [contract.pk],
        "submission": [submission.pk for submission in submissions],
        "escrow": [contract.escrow_id] if contract.escrow_id else [],
        "run": [run.pk for runs in runs_by_subject.values() for run in runs],
        "dispute": list(Dispute.objects.filter(contract=contract).values_list("pk", flat=True)),
    }
    about = Q(pk__in=[])
    for name, object_ids in ids.items():
        if object_ids:
            about |= Q(object_type=STORY_OBJECT_TYPES[name], object_id__in=[str(pk) for pk in object_ids])
    timeline = list(AuditEvent.objects.filter(about).select_related("actor").order_by("created_at", "id"))
    escrow = payments_selectors.escrow_summary(contract.escrow_id) if contract.escrow_id else None
    return ContractStory(
        contract=contract,
        timeline=timeline,
        bids=bids,
        escrow=escrow,
        submissions=submission_stories,
        dispute=contract_dispute_story(contract=contract, timeline=timeline),
        deliveries=contract_deliveries(contract=contract),
    )


def contract_dispute_story(*, contract: Contract, timeline: list[AuditEvent]) -> DisputeStory:
    records = list(
        Dispute.objects.filter(contract=contract)
        .select_related("opened_by", "answered_by", "ruled_by", "disputed_run", "reverification_run")
        .prefetch_related("evidence")
        .order_by("-id")
    )
    return DisputeStory(
        open=contract.review_disputed,
        records=records,
        current=next((record for record in records if record.is_unresolved), None),
        events=[
            event
            for event in timeline
            if event.object_type == "jobs.dispute"
            or (event.object_type == "jobs.contract" and event.verb in DISPUTE_VERBS)
        ],
    )


def contract_deliveries(*, contract: Contract) -> list[DeliveryStory]:
    """Outbound webhook deliveries of the events about this contract (its own, its disputes', its submissions')."""
    about = (
        Q(type__startswith="contract.", data__id=contract.pk)
        | Q(type__startswith="dispute.", data__id=contract.pk)
        | Q(data__contract=contract.pk)
    )
    deliveries = (
        Delivery.objects.filter(event__in=OutboundEvent.objects.filter(about).values("pk"))
        .select_related("event", "endpoint")
        .order_by("created_at", "id")
    )
    return [
        DeliveryStory(
            delivery=delivery,
            event_type=delivery.event.type,
            # The host only: an endpoint's path or query may carry the receiver's own secret.
            destination=urlsplit(delivery.endpoint.url).hostname or "",
        )
        for delivery in deliveries
    ]


def contracts_awaiting_funding_overdue(*, now=None) -> QuerySet[Contract]:
    """Contracts still unfunded `OPERATOR_FUNDING_OVERDUE_HOURS` after they were made."""
    since = (now or timezone.now()) - timedelta(hours=settings.OPERATOR_FUNDING_OVERDUE_HOURS)
    return Contract.objects.filter(status=Contract.Status.AWAITING_FUNDING, created_at__lt=since)


@dataclass(frozen=True)
class OperatorQueue:
    name: str
    label: str
    count: int


def operator_queues() -> list[OperatorQueue]:
    """How many rows wait in each list operators work from (the admin index links each to its list)."""
    return [
        OperatorQueue(
            "funding_overdue", "Contracts awaiting funding too long", contracts_awaiting_funding_overdue().count()
        ),
        OperatorQueue(
            "disputed", "Disputed contracts awaiting a ruling", Contract.objects.filter(review_disputed=True).count()
        ),
        OperatorQueue(
            "disputes_escalated",
            "Disputes escalated (no ruling in time)",
            Dispute.objects.filter(status__in=Dispute.UNRESOLVED_STATUSES, escalated_at__isnull=False).count(),
        ),
        OperatorQueue(
            "runs_active",
            "Verifications queued or running",
            verification_selectors.verification_runs_filter(state="active").count(),
        ),
        OperatorQueue(
            "runs_errored",
            "Verifications errored",
            verification_selectors.verification_runs_filter(state="errored").count(),
        ),
        OperatorQueue("escrows_frozen", "Escrows frozen", payments_selectors.escrows_frozen().count()),
        OperatorQueue(
            "deliveries_failing", "Webhook deliveries failing", notifications_selectors.deliveries_failing().count()
        ),
        OperatorQueue(
            "reconciliation_open", "Reconciliation issues open", payments_selectors.reconciliation_issues_open().count()
        ),
    ]


# Disputes: the contract's parties and operators see a dispute whole (both sides' evidence included); nobody
# else learns it exists. The side-by-side shows decisions, estimates, hosts and certificates, which both
# parties may see on the verification runs themselves; never a report's hidden-input fields.


def dispute_list_visible(*, user: User, contract: Contract) -> QuerySet[Dispute]:
    contract = contract_get_visible(user=user, contract_id=contract.pk)
    return (
        Dispute.objects.filter(contract=contract)
        .select_related(
            *(
                f"{run}__{field}"
                for run in ("disputed_run", "reverification_run")
                for field in ("signing_key", "package", "candidate", "hidden_inputs")
            ),
            "opened_by",
        )
        .prefetch_related("evidence__artifact")
        .order_by("-id")
    )


def dispute_get_visible(*, user: User, contract_id: int, dispute_id: int) -> Dispute:
    contract = contract_get_visible(user=user, contract_id=contract_id)
    dispute = dispute_list_visible(user=user, contract=contract).filter(pk=dispute_id).first()
    if dispute is None:
        raise NotFound("No such dispute.", code="dispute_not_found")
    return dispute


def dispute_evidence_get_visible(*, user: User, contract_id: int, dispute_id: int, evidence_id: int) -> DisputeEvidence:
    dispute = dispute_get_visible(user=user, contract_id=contract_id, dispute_id=dispute_id)
    evidence = dispute.evidence.select_related("artifact").filter(pk=evidence_id).first()
    if evidence is None:
        raise NotFound("No such evidence file.", code="evidence_not_found")
    return evidence


def dispute_run_side(*, run, submission_id: int) -> dict | None:
    """One column of the side-by-side: a run's outcome, where it ran and whether its certificate checks out."""
    if run is None:
        return None
    speedup = next(
        (
            criterion
            for criterion in (run.report or {}).get("criteria") or []
            if (criterion.get("criterion") or {}).get("kind") == "speedup"
        ),
        {},
    )
    verified = verification_selectors.verification_certificate_status(run=run).valid
    # The route's own form (the router ends every path with a slash): without it a client gets a redirect.
    plot = f"/api/v1/submissions/{submission_id}/verification/{run.pk}/plot"
    if run.status == run.Status.QUEUED:
        state = "waiting_for_another_host" if run.waiting_for_another_host else "queued"
    else:
        state = str(run.status)
    return {
        "run": run.pk,
        "state": state,
        "status": run.status,
        "decision": run.decision,
        "reason": run.reason,
        "tier": run.tier,
        "payout_fraction_bps": run.payout_fraction_bps,
        "speedup_estimate": run.speedup_estimate,
        "speedup_interval": speedup.get("interval"),
        "host_id": run.host_id,
        "certificate": {
            "key_id": run.signing_key.key_id if run.signing_key_id else None,
            "verified": verified,
        },
        "plot_png_url": f"{plot}.png/" if run.plot_png_id else None,
        "plot_svg_url": f"{plot}.svg/" if run.plot_svg_id else None,
        "finished_at": run.finished_at,
    }
