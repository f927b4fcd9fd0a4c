"""Evidence files of disputes: checked (kind recognised by the bytes, size and count capped) and stored like every
other upload, before any lock is taken. They are kept and served as downloads, never opened, rendered or
unpacked on the platform."""

import re
from dataclasses import dataclass
from pathlib import PurePath

from django.conf import settings

from common.errors import ValidationFailed
from common.models import Artifact
from common.services import artifact_store

FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class EvidenceFile:
    """A checked, stored evidence file, ready to attach once the dispute's lock is held."""

    artifact: Artifact
    filename: str
    content_type: str


# Evidence is kept and served as a download, never opened, rendered or unpacked on the platform. Only these
# kinds are accepted, recognised by their bytes (the name and the declared type are not trusted).
_SIGNATURES = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
)
ALLOWED_EVIDENCE_TYPES = (*(kind for _, kind in _SIGNATURES), "text/plain")


def _sniff(head: bytes) -> str | None:
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    if b"\x00" in head:
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 4:  # not just a character cut at the end of the sample
            return None
    return "text/plain"


def _filename(name: str) -> str:
    cleaned = FILENAME_UNSAFE.sub("_", PurePath(name or "evidence").name).strip("._") or "evidence"
    return cleaned[:100]


def evidence_files_store(*, uploads) -> list[EvidenceFile]:
    """Check and store uploaded evidence (before any lock: storing hashes and writes the whole file)."""
    uploads = list(uploads or [])
    if len(uploads) > settings.DISPUTE_EVIDENCE_MAX_FILES:
        raise ValidationFailed(
            f"At most {settings.DISPUTE_EVIDENCE_MAX_FILES} evidence files.",
            code="evidence_too_many_files",
            fields={"files": [f"at most {settings.DISPUTE_EVIDENCE_MAX_FILES}"]},
        )
    stored = []
    for upload in uploads:
        if upload.size > settings.DISPUTE_EVIDENCE_MAX_BYTES:
            raise ValidationFailed(
                f"An evidence file may hold at most {settings.DISPUTE_EVIDENCE_MAX_BYTES} bytes.",
                code="evidence_too_large",
                fields={
                    "files": [f"{_filename(upload.name)}: larger than {settings.DISPUTE_EVIDENCE_MAX_BYTES} bytes"]
                },
            )
        if upload.size == 0:
            raise ValidationFailed(
                "An evidence file is empty.", code="evidence_empty", fields={"files": [_filename(upload.name)]}
            )
        upload.seek(0)
        kind = _sniff(upload.read(4096))
        upload.seek(0)
        if kind is None:
            raise ValidationFailed(
                "Evidence may be PDF, PNG, JPEG, plain text, zip or gzip files.",
                code="evidence_type_not_allowed",
                fields={"files": [f"{_filename(upload.name)}: not an accepted kind of file"]},
            )
        stored.append(
            EvidenceFile(artifact=artifact_store(fileobj=upload), filename=_filename(upload.name), content_type=kind)
        )
    return stored
