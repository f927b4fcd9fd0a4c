from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import User
from common.converters import MAX_DATABASE_ID
from common.models import Artifact, AuditEvent
from common.money import MAX_AMOUNT_MINOR_UNITS
from common.parsers import BoundedJSONField
from common.serializers import FastReadMixin

from .models import Bid, Contract, Dispute, DisputeEvidence, Job, Submission
from .selectors import dispute_run_side, submission_next_steps


class ArtifactSerializer(FastReadMixin, serializers.ModelSerializer):
    class Meta:
        model = Artifact
        fields = ["sha256", "size", "archive_format"]


class OrganizationRefSerializer(FastReadMixin, serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


# Input limits: free text and lists are bounded so one request cannot store (or make every list page serve)
# megabytes; the request size cap bounds the rest.
DESCRIPTION_MAX_CHARS = 20_000
LIST_MAX_ITEMS = 50
# The job list shows this much of each description; the detail shows all of it.
LIST_DESCRIPTION_CHARS = 500


class JobSerializer(FastReadMixin, serializers.ModelSerializer):
    organization = OrganizationRefSerializer(read_only=True)
    bid_count = serializers.IntegerField(read_only=True)
    package = ArtifactSerializer(read_only=True)
    hidden_inputs_attached = serializers.SerializerMethodField()
    description_truncated = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "organization",
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
            "status",
            "published_at",
            "created_at",
            "bid_count",
            "package",
            "hidden_inputs_attached",
            "calibration",
            "description_truncated",
        ]

    def get_hidden_inputs_attached(self, job: Job) -> bool:
        return job.hidden_inputs_id is not None

    def get_description_truncated(self, job: Job) -> bool:
        return False


class JobSummarySerializer(JobSerializer):
    """A job as the list shows it: the description cut to LIST_DESCRIPTION_CHARS; `url` has the full text."""

    description = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "url"]

    def get_description(self, job: Job) -> str:
        if len(job.description) <= LIST_DESCRIPTION_CHARS:
            return job.description
        return job.description[:LIST_DESCRIPTION_CHARS].rstrip() + "…"

    def get_description_truncated(self, job: Job) -> bool:
        return len(job.description) > LIST_DESCRIPTION_CHARS

    def get_url(self, job: Job) -> str:
        path = f"/api/v1/jobs/{job.pk}/"
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


class JobWriteSerializer(serializers.Serializer):
    organization = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_DATABASE_ID, help_text="Defaults to your only organization."
    )
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=DESCRIPTION_MAX_CHARS)
    hardware_class = serializers.CharField(max_length=32)
    currency = serializers.CharField(max_length=3)
    budget_min = serializers.IntegerField(min_value=1, max_value=MAX_AMOUNT_MINOR_UNITS)
    budget_max = serializers.IntegerField(min_value=1, max_value=MAX_AMOUNT_MINOR_UNITS)
    bidding_deadline = serializers.DateTimeField()
    visibility = serializers.ChoiceField(choices=Job.Visibility.choices, default=Job.Visibility.PUBLIC)
    review_window_hours = serializers.IntegerField(min_value=0, max_value=24 * 30, default=48)
    max_submissions = serializers.IntegerField(min_value=1, max_value=100, default=5)
    criteria = BoundedJSONField(required=False)
    invited_engineers = serializers.PrimaryKeyRelatedField(
        queryset=User.objects.filter(account_type=User.AccountType.ENGINEER), many=True, required=False
    )

    def to_internal_value(self, data):
        # Counted before the field looks each id up, so a long list costs no queries.
        invited = data.get("invited_engineers") if hasattr(data, "get") else None
        if hasattr(data, "getlist"):
            invited = data.getlist("invited_engineers")
        if isinstance(invited, list) and len(invited) > LIST_MAX_ITEMS:
            raise serializers.ValidationError({"invited_engineers": [f"at most {LIST_MAX_ITEMS} engineers"]})
        return super().to_internal_value(data)


class UploadSerializer(serializers.Serializer):
    # Empty files reach archive validation, which answers with its own error code.
    file = serializers.FileField(allow_empty_file=True)


class JobCancelSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")


class BidSerializer(serializers.ModelSerializer):
    engineer = serializers.SerializerMethodField()

    class Meta:
        model = Bid
        fields = [
            "id",
            "job",
            "engineer",
            "amount",
            "estimated_days",
            "proposal",
            "predicted_speedup",
            "status",
            "created_at",
            "updated_at",
        ]

    def get_engineer(self, bid: Bid) -> dict:
        return {"id": bid.engineer_id, "name": bid.engineer.name}


class BidWriteSerializer(serializers.Serializer):
    amount = serializers.IntegerField(min_value=1, max_value=MAX_AMOUNT_MINOR_UNITS)
    estimated_days = serializers.IntegerField(min_value=1, max_value=365)
    proposal = serializers.CharField(max_length=10_000)
    predicted_speedup = serializers.FloatField(required=False, allow_null=True, min_value=0)


class ContractSerializer(serializers.ModelSerializer):
    attempts_left = serializers.IntegerField(read_only=True)
    engineer = serializers.SerializerMethodField()
    organization = OrganizationRefSerializer(read_only=True)

    class Meta:
        model = Contract
        fields = [
            "id",
            "job",
            "bid",
            "organization",
            "engineer",
            "currency",
            "amount",
            "platform_fee",
            "submission_limit",
            "submissions_used",
            "attempts_left",
            "deadline",
            "status",
            "status_reason",
            "escrow",
            "earned_bps",
            "release_due_at",
            "review_disputed",
            "created_at",
        ]

    def get_engineer(self, contract: Contract) -> dict:
        return {"id": contract.engineer_id, "name": contract.engineer.name}


class SubmissionSerializer(serializers.ModelSerializer):
    candidate = ArtifactSerializer(read_only=True)
    attempts_left = serializers.SerializerMethodField()
    next_steps = serializers.SerializerMethodField()

    class Meta:
        model = Submission
        fields = [
            "id",
            "contract",
            "number",
            "candidate",
            "notes",
            "status",
            "created_at",
            "attempts_left",
            "next_steps",
        ]

    def get_attempts_left(self, submission: Submission) -> int:
        return submission.contract.attempts_left

    def get_next_steps(self, submission: Submission) -> str:
        return submission_next_steps(submission=submission)


class SubmissionCreateSerializer(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=10_000, default="")


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.SerializerMethodField()
    object = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = ["id", "actor", "verb", "object", "from_state", "to_state", "created_at"]

    def get_actor(self, event: AuditEvent) -> dict | None:
        return {"id": event.actor_id, "name": event.actor.name} if event.actor_id else None

    def get_object(self, event: AuditEvent) -> dict:
        return {"type": event.object_type, "id": event.object_id}


class FundingInstructionsSerializer(serializers.Serializer):
    """How the company pays, two ways, whichever succeeds first funds the contract (a second payment is refunded):
    send the payer to `checkout_url` (Stripe's hosted Checkout page; the offline provider's confirm page), or confirm
    `client_secret` with Stripe.js / the mobile SDKs using `publishable_key`."""

    provider = serializers.CharField()
    payment_intent_id = serializers.CharField()
    client_secret = serializers.CharField(allow_null=True, help_text="The PaymentIntent's client secret (Stripe).")
    publishable_key = serializers.CharField(
        allow_null=True, help_text="The Stripe publishable key to confirm `client_secret` with (Stripe)."
    )
    checkout_session_id = serializers.CharField(allow_null=True)
    checkout_url = serializers.CharField(
        allow_null=True, help_text="A hosted payment page to send the payer to; null once it has been used."
    )
    confirm_url = serializers.CharField(allow_null=True)
    amount = serializers.IntegerField()
    currency = serializers.CharField()


class DisputeCreateSerializer(serializers.Serializer):
    run = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_DATABASE_ID,
        help_text="The verification run disputed; by default the company's is the PASS holding the contract's "
        "earning, the engineer's their latest FAIL or INCONCLUSIVE.",
    )
    reason = serializers.CharField(max_length=500)
    evidence_text = serializers.CharField(required=False, allow_blank=True, max_length=20_000, default="")
    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True), required=False, default=list, max_length=LIST_MAX_ITEMS
    )


class DisputeAnswerSerializer(serializers.Serializer):
    answer_text = serializers.CharField(max_length=20_000)
    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True), required=False, default=list, max_length=LIST_MAX_ITEMS
    )


class DisputeEvidenceSerializer(serializers.ModelSerializer):
    size = serializers.IntegerField(source="artifact.size")
    sha256 = serializers.CharField(source="artifact.sha256")
    url = serializers.SerializerMethodField()

    class Meta:
        model = DisputeEvidence
        fields = ["id", "side", "filename", "content_type", "size", "sha256", "created_at", "url"]

    def get_url(self, evidence: DisputeEvidence) -> str:
        dispute = evidence.dispute
        return f"/api/v1/contracts/{dispute.contract_id}/disputes/{dispute.pk}/evidence/{evidence.pk}/"


class DisputeRunSideSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    state = serializers.CharField(help_text="queued, waiting_for_another_host, running, passed, failed, ...")
    status = serializers.CharField()
    decision = serializers.CharField()
    reason = serializers.CharField()
    tier = serializers.IntegerField(allow_null=True)
    payout_fraction_bps = serializers.IntegerField(allow_null=True)
    speedup_estimate = serializers.FloatField(allow_null=True)
    speedup_interval = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    host_id = serializers.CharField()
    certificate = serializers.DictField()
    plot_png_url = serializers.CharField(allow_null=True)
    plot_svg_url = serializers.CharField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


def _run_side(side: dict | None) -> dict | None:
    """Rendered by its declared serializer, so a webhook event (stored as JSON without DRF's renderer) carries
    the same strings as the API, e.g. `finished_at` to the microsecond."""
    return DisputeRunSideSerializer(side).data if side is not None else None


class DisputeSerializer(serializers.ModelSerializer):
    opened_by = serializers.SerializerMethodField()
    evidence = DisputeEvidenceSerializer(many=True, read_only=True)
    original = serializers.SerializerMethodField()
    reverification = serializers.SerializerMethodField()
    escalated = serializers.SerializerMethodField()

    class Meta:
        model = Dispute
        fields = [
            "id",
            "contract",
            "submission",
            "disputed_run",
            "side",
            "status",
            "opened_by",
            "reason",
            "evidence_text",
            "answer_text",
            "answered_at",
            "evidence",
            "original",
            "reverification",
            "recommendation",
            "ruling",
            "ruling_tier",
            "ruling_bps",
            "ruling_note",
            "ruled_at",
            "escalated",
            "escalated_at",
            "created_at",
        ]

    def get_opened_by(self, dispute: Dispute) -> dict:
        return {"id": dispute.opened_by_id, "name": dispute.opened_by.name}

    @extend_schema_field(DisputeRunSideSerializer)
    def get_original(self, dispute: Dispute) -> dict | None:
        return _run_side(dispute_run_side(run=dispute.disputed_run, submission_id=dispute.submission_id))

    @extend_schema_field(DisputeRunSideSerializer(allow_null=True))
    def get_reverification(self, dispute: Dispute) -> dict | None:
        return _run_side(dispute_run_side(run=dispute.reverification_run, submission_id=dispute.submission_id))

    def get_escalated(self, dispute: Dispute) -> bool:
        return dispute.escalated_at is not None
