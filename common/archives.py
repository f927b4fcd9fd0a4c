"""Safety checks for uploaded archives (benchmark packages, hidden inputs, candidates).

The rules are the verification runner's (``verification.runner.archive_rules``, no Django), the same ones a
host applies when it unpacks the archive: whatever is accepted here can be verified there. This module only
maps settings onto the rules' limits and a broken rule onto the API's validation error, before anything is
stored.
"""

from dataclasses import dataclass
from typing import BinaryIO

from django.conf import settings

from verification.runner.archive_rules import ArchiveLimits, ArchiveViolation, archive_walk

from .errors import ValidationFailed


class ArchiveRejected(ValidationFailed):
    pass


@dataclass(frozen=True)
class ArchiveInfo:
    archive_format: str
    file_count: int
    uncompressed_size: int
    has_manifest: bool


def archive_limits() -> ArchiveLimits:
    return ArchiveLimits(
        max_archive_bytes=settings.UPLOAD_MAX_BYTES,
        max_unpacked_bytes=settings.ARCHIVE_MAX_UNCOMPRESSED_BYTES,
        max_members=settings.ARCHIVE_MAX_FILES,
    )


def archive_validate(*, fileobj: BinaryIO, size: int, field: str, require_manifest: bool) -> ArchiveInfo:
    try:
        summary = archive_walk(fileobj, size=size, limits=archive_limits(), require_manifest=require_manifest)
    except ArchiveViolation as violation:
        raise ArchiveRejected(violation.message, code=violation.code, fields={field: [violation.code]}) from None
    finally:
        fileobj.seek(0)
    return ArchiveInfo(
        summary.archive_format, summary.member_count, summary.unpacked_bytes, summary.manifest is not None
    )
