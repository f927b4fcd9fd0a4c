from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import User
from common.archives import archive_validate
from common.errors import IllegalTransition, NotPermitted
from common.services import artifact_store, audit_record

from ..models import Contract, Submission
from .contracts import contract_lock


def submission_create(*, actor: User, contract: Contract, upload, notes: str = "") -> Submission:
    """Record an engineer's candidate as the next attempt of the contract."""
    # Validate before taking any lock: archive inspection reads the whole upload.
    info = archive_validate(fileobj=upload, size=upload.size, field="candidate", require_manifest=False)
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
        artifact = artifact_store(fileobj=upload, archive_format=info.archive_format)
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
    return submission
