from django.conf import settings
from django.db import models
from django.db.models import Q

from accounts.models import Organization
from common.models import Artifact, TimeStampedModel


class Job(TimeStampedModel):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        OPEN = "open", "Open for bids"
        AWARDED = "awarded", "Awarded"
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"
        EXPIRED = "expired", "Expired"

    class Visibility(models.TextChoices):
        PUBLIC = "public", "Public"
        INVITED = "invited", "Invited engineers only"

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    hardware_class = models.CharField(max_length=32)
    currency = models.CharField(max_length=3)
    budget_min = models.BigIntegerField()
    budget_max = models.BigIntegerField()
    bidding_deadline = models.DateTimeField()
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.PUBLIC)
    invited_engineers = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="job_invitations")
    review_window_hours = models.PositiveIntegerField(default=48)
    max_submissions = models.PositiveIntegerField(default=5)
    criteria = models.JSONField(default=dict, blank=True)
    package = models.ForeignKey(Artifact, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    hidden_inputs = models.ForeignKey(Artifact, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT, db_index=True)
    published_at = models.DateTimeField(null=True, blank=True)
    # The A/A run of the baseline on the job's hardware class: noise per criterion and flags.
    calibration = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(budget_min__gt=0) & Q(budget_max__gte=models.F("budget_min")), name="job_budget_range"
            ),
        ]

    def __str__(self) -> str:
        return self.title


class Bid(TimeStampedModel):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACCEPTED = "accepted", "Accepted"
        DECLINED = "declined", "Declined"
        WITHDRAWN = "withdrawn", "Withdrawn"

    ACTIVE_STATUSES = (Status.PENDING, Status.ACCEPTED)

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="bids")
    engineer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="bids")
    amount = models.BigIntegerField()
    estimated_days = models.PositiveIntegerField()
    proposal = models.TextField()
    predicted_speedup = models.FloatField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "engineer"],
                condition=Q(status__in=["pending", "accepted"]),
                name="one_active_bid_per_engineer_per_job",
            ),
            models.UniqueConstraint(fields=["job"], condition=Q(status="accepted"), name="one_accepted_bid_per_job"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="bid_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"Bid {self.pk} on {self.job_id}"


class Contract(TimeStampedModel):
    class Status(models.TextChoices):
        AWAITING_FUNDING = "awaiting_funding", "Awaiting funding"
        ACTIVE = "active", "Funded, in progress"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    job = models.OneToOneField(Job, on_delete=models.PROTECT, related_name="contract")
    bid = models.OneToOneField(Bid, on_delete=models.PROTECT, related_name="contract")
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="contracts")
    engineer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="contracts")
    currency = models.CharField(max_length=3)
    amount = models.BigIntegerField()
    platform_fee = models.BigIntegerField()
    submission_limit = models.PositiveIntegerField()
    submissions_used = models.PositiveIntegerField(default=0)
    deadline = models.DateTimeField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.AWAITING_FUNDING, db_index=True)
    status_reason = models.CharField(max_length=255, blank=True)
    escrow = models.OneToOneField(
        "payments.Escrow", null=True, blank=True, on_delete=models.PROTECT, related_name="contract"
    )
    # The best verified payout fraction so far (basis points of the amount) and the run that earned it.
    earned_bps = models.PositiveIntegerField(default=0)
    earned_run_id = models.PositiveBigIntegerField(null=True, blank=True)
    release_due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # True exactly while the contract has an unresolved Dispute (kept by the dispute services): nothing is
    # released or settled meanwhile.
    review_disputed = models.BooleanField(default=False)
    settle_due_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(submissions_used__lte=models.F("submission_limit")), name="contract_attempts_within_limit"
            ),
            models.CheckConstraint(condition=Q(earned_bps__lte=10_000), name="contract_earned_at_most_all"),
            models.CheckConstraint(condition=Q(platform_fee__gte=0) & Q(amount__gt=0), name="contract_money_positive"),
        ]

    def __str__(self) -> str:
        return f"Contract {self.pk} for job {self.job_id}"

    @property
    def attempts_left(self) -> int:
        return max(self.submission_limit - self.submissions_used, 0)


class Submission(TimeStampedModel):
    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        VERIFYING = "verifying", "Verifying"
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed"
        INCONCLUSIVE = "inconclusive", "Inconclusive"
        ERROR = "error", "Error"

    contract = models.ForeignKey(Contract, on_delete=models.PROTECT, related_name="submissions")
    number = models.PositiveIntegerField()
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    candidate = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="+")
    notes = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["contract", "number"], name="uniq_submission_number")]

    def __str__(self) -> str:
        return f"Submission {self.number} of contract {self.contract_id}"


class Dispute(TimeStampedModel):
    """A party's challenge of a verified result, decided on evidence: an automatic re-verification of the same
    submission on a different host, the other party's answer, then an operator's ruling."""

    class Side(models.TextChoices):
        COMPANY = "company", "Company"  # disputes a PASS
        ENGINEER = "engineer", "Engineer"  # disputes a FAIL or an INCONCLUSIVE

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        REVERIFYING = "reverifying", "Re-verifying on another host"
        AWAITING_RULING = "awaiting_ruling", "Awaiting an operator's ruling"
        RESOLVED = "resolved", "Resolved"

    class Recommendation(models.TextChoices):
        AGREE = "agree", "Agree: the original result stands unless an operator overrules"
        DISAGREE = "disagree", "Disagree: flagged for noise investigation"
        UNAVAILABLE = "unavailable", "Unavailable: the re-verification produced no result"

    class Ruling(models.TextChoices):
        UPHOLD = "uphold", "Uphold the original result"
        OVERTURN_RELEASE = "overturn_release", "Overturn: release the disputed payment"
        OVERTURN_WITHHOLD = "overturn_withhold", "Overturn: withhold the disputed payment"
        SPLIT = "split", "Split: release at a lower tier"

    UNRESOLVED_STATUSES = (Status.OPEN, Status.REVERIFYING, Status.AWAITING_RULING)

    contract = models.ForeignKey(Contract, on_delete=models.PROTECT, related_name="disputes")
    submission = models.ForeignKey(Submission, on_delete=models.PROTECT, related_name="disputes")
    disputed_run = models.ForeignKey("verification.VerificationRun", on_delete=models.PROTECT, related_name="disputes")
    side = models.CharField(max_length=16, choices=Side.choices)
    opened_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(max_length=500)
    evidence_text = models.TextField(blank=True)
    answer_text = models.TextField(blank=True)
    answered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    answered_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN, db_index=True)
    reverification_run = models.ForeignKey(
        "verification.VerificationRun", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    recommendation = models.CharField(max_length=16, choices=Recommendation.choices, blank=True, db_index=True)
    ruling = models.CharField(max_length=20, choices=Ruling.choices, blank=True)
    # The tier a split (or an engineer's overturn) pays: its position (from 0) in the job's tiers.
    ruling_tier = models.PositiveSmallIntegerField(null=True, blank=True)
    ruling_bps = models.PositiveIntegerField(null=True, blank=True)
    ruling_note = models.TextField(blank=True)
    ruled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    ruled_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["contract"],
                condition=Q(status__in=["open", "reverifying", "awaiting_ruling"]),
                name="one_unresolved_dispute_per_contract",
            ),
            models.UniqueConstraint(fields=["disputed_run", "side"], name="one_dispute_per_run_and_side"),
            models.CheckConstraint(
                condition=Q(status="resolved", ruled_at__isnull=False) | ~Q(status="resolved"),
                name="resolved_dispute_has_ruling",
            ),
        ]

    def __str__(self) -> str:
        return f"Dispute {self.pk} on contract {self.contract_id}"

    @property
    def is_unresolved(self) -> bool:
        return self.status in self.UNRESOLVED_STATUSES


class DisputeEvidence(TimeStampedModel):
    """A file a party attached to a dispute or to its answer: stored, served as a download, never opened."""

    dispute = models.ForeignKey(Dispute, on_delete=models.PROTECT, related_name="evidence")
    side = models.CharField(max_length=16, choices=Dispute.Side.choices)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    artifact = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="+")
    filename = models.CharField(max_length=200)
    content_type = models.CharField(max_length=100)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.filename
