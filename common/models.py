from django.conf import settings
from django.db import models


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class AuditEvent(models.Model):
    """Append-only record of one state transition: who moved what from which state to which, and when."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    verb = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    from_state = models.CharField(max_length=32, blank=True)
    to_state = models.CharField(max_length=32, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["object_type", "object_id", "id"])]

    def __str__(self) -> str:
        return f"{self.object_type}:{self.object_id} {self.verb} {self.from_state}->{self.to_state}"


def artifact_upload_path(instance: "Artifact", filename: str) -> str:
    return f"artifacts/{instance.sha256[:2]}/{instance.sha256}"


class Artifact(models.Model):
    """An uploaded file, stored once under its sha256 (content-addressed)."""

    class Kind(models.TextChoices):
        PACKAGE = "package", "Benchmark package"
        HIDDEN_INPUTS = "hidden_inputs", "Hidden inputs"
        CANDIDATE = "candidate", "Candidate"
        REPORT = "report", "Report"
        PLOT = "plot", "Plot"

    sha256 = models.CharField(max_length=64, unique=True)
    size = models.BigIntegerField()
    archive_format = models.CharField(max_length=16, blank=True)
    file = models.FileField(upload_to=artifact_upload_path, max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.sha256[:12]


class IdempotencyRecord(models.Model):
    """The stored answer to a creating POST, replayed when the same client repeats its Idempotency-Key."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    endpoint = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key", "endpoint"], name="uniq_idempotency_key")]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.key}"
