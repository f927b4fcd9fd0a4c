import hashlib
from typing import Any, BinaryIO

from django.core.files import File
from django.db import IntegrityError, transaction

from .models import Artifact, AuditEvent


def audit_record(
    *,
    actor: Any,
    verb: str,
    obj: Any,
    from_state: str = "",
    to_state: str = "",
    data: dict | None = None,
) -> AuditEvent:
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        verb=verb,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        from_state=from_state or "",
        to_state=to_state or "",
        data=data or {},
    )


OPERATOR_ACTION = "operator_action"


def operator_action_record(*, actor: Any, action: str, objects: list[Any], note: str, outcome: str) -> None:
    """What an operator did from the admin, to which rows, and why (their note), one event per row."""
    with transaction.atomic():
        for obj in objects:
            audit_record(
                actor=actor, verb=OPERATOR_ACTION, obj=obj, data={"action": action, "note": note, "outcome": outcome}
            )


def file_sha256(fileobj: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    fileobj.seek(0)
    for chunk in iter(lambda: fileobj.read(1024 * 1024), b""):
        digest.update(chunk)
        size += len(chunk)
    fileobj.seek(0)
    return digest.hexdigest(), size


def artifact_store(*, fileobj: BinaryIO, archive_format: str = "") -> Artifact:
    """Store a file under its sha256; a second upload of the same bytes reuses the stored one."""
    sha256, size = file_sha256(fileobj)
    existing = Artifact.objects.filter(sha256=sha256).first()
    if existing is not None:
        return existing
    artifact = Artifact(sha256=sha256, size=size, archive_format=archive_format)
    artifact.file.save(sha256, File(fileobj), save=False)
    try:
        with transaction.atomic():
            artifact.save()
    except IntegrityError:
        return Artifact.objects.get(sha256=sha256)
    return artifact
