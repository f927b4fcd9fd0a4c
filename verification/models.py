from django.db import models

from common.models import Artifact, TimeStampedModel


class SigningKey(TimeStampedModel):
    """A verification host's Ed25519 public key; certificates name it by `key_id`.

    Retired keys stay listed so that old certificates remain verifiable; only active keys are
    accepted for new results.
    """

    key_id = models.CharField(max_length=32, unique=True)
    public_key_pem = models.TextField()
    active = models.BooleanField(default=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.key_id


class VerificationRun(TimeStampedModel):
    """One verification of a candidate (or one A/A calibration of a baseline) on a hardware class."""

    class Kind(models.TextChoices):
        SUBMISSION = "submission", "Submission"
        CALIBRATION = "calibration", "Calibration"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed"
        INCONCLUSIVE = "inconclusive", "Inconclusive"
        ERROR = "error", "Error"

    FINAL_STATUSES = (Status.PASSED, Status.FAILED, Status.INCONCLUSIVE, Status.ERROR)

    kind = models.CharField(max_length=16, choices=Kind.choices)
    # The orchestrating app's object this run verifies, e.g. "submission:42" (verification never imports it).
    subject = models.CharField(max_length=64, db_index=True)
    hardware_class = models.CharField(max_length=32)
    package = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="+")
    candidate = models.ForeignKey(Artifact, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    hidden_inputs = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="+")
    criteria = models.JSONField()
    budget_pairs = models.PositiveIntegerField(default=40)
    time_limit_seconds = models.PositiveIntegerField(default=1800)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    infrastructure_failures = models.PositiveSmallIntegerField(default=0)
    dispatch_count = models.PositiveIntegerField(default=0)
    token_hash = models.CharField(max_length=64, blank=True, db_index=True)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    progress = models.JSONField(default=dict, blank=True)
    decision = models.CharField(max_length=16, blank=True)
    reason = models.TextField(blank=True)
    payout_fraction_bps = models.PositiveIntegerField(null=True, blank=True)
    tier = models.PositiveSmallIntegerField(null=True, blank=True)
    speedup_estimate = models.FloatField(null=True, blank=True)
    report = models.JSONField(null=True, blank=True)
    certificate = models.JSONField(null=True, blank=True)
    signing_key = models.ForeignKey(SigningKey, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    plot_png = models.ForeignKey(Artifact, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    plot_svg = models.ForeignKey(Artifact, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    error_log = models.JSONField(default=list, blank=True)
    # The host that started the run (as it names itself, VERIFICATION_HOST_ID) and the signing key it said it
    # signs with; a requeued run records the host that starts it next.
    host_id = models.CharField(max_length=128, blank=True)
    host_key_id = models.CharField(max_length=32, blank=True)
    # A re-verification must run elsewhere: a host naming this id or key is refused the run.
    exclude_host = models.CharField(max_length=128, blank=True)
    exclude_key_id = models.CharField(max_length=32, blank=True)
    declined_count = models.PositiveIntegerField(default=0)
    declined_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"Verification {self.pk} ({self.subject})"

    @property
    def excludes_a_host(self) -> bool:
        return bool(self.exclude_host or self.exclude_key_id)

    @property
    def waiting_for_another_host(self) -> bool:
        """Queued, and only excluded hosts have tried to take it so far."""
        return self.status == self.Status.QUEUED and self.excludes_a_host and self.declined_count > 0

    @property
    def queue(self) -> str:
        return f"verify.{self.hardware_class}"
