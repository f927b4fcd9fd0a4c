"""Safety checks for uploaded archives (benchmark packages, hidden inputs, candidates).

An archive is checked from its headers before anything is stored: format, size caps (including
the declared uncompressed size, against zip bombs), member count, and that every member stays inside
the archive's root as a regular file or directory (no absolute paths, `..`, escaping links, devices).
"""

import posixpath
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

from django.conf import settings

from .errors import ValidationFailed

MANIFEST_NAMES = ("speedproof.toml",)
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
MAX_COMPRESSION_RATIO = 200


class ArchiveRejected(ValidationFailed):
    pass


@dataclass(frozen=True)
class ArchiveInfo:
    archive_format: str
    file_count: int
    uncompressed_size: int
    has_manifest: bool


def _reject(field: str, code: str, message: str) -> ArchiveRejected:
    return ArchiveRejected(message, code=code, fields={field: [code]})


def _check_name(field: str, name: str) -> str:
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _reject(field, "archive_absolute_path", f"Archive member {name!r} has an absolute path.")
    normalized = posixpath.normpath(name)
    if normalized == ".." or normalized.startswith("../") or "/../" in f"/{name}/":
        raise _reject(field, "archive_path_traversal", f"Archive member {name!r} points outside the archive.")
    return normalized


def _check_link_target(field: str, member_name: str, target: str) -> None:
    if not target or target.startswith("/"):
        raise _reject(field, "archive_link_outside", f"Link {member_name!r} points outside the archive.")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(member_name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise _reject(field, "archive_link_outside", f"Link {member_name!r} points outside the archive.")


class _Budget:
    def __init__(self, field: str, compressed_size: int):
        self.field = field
        self.files = 0
        self.bytes = 0
        self.max_bytes = min(
            settings.ARCHIVE_MAX_UNCOMPRESSED_BYTES, max(compressed_size, 1) * MAX_COMPRESSION_RATIO + 1024 * 1024
        )

    def add(self, size: int) -> None:
        self.files += 1
        self.bytes += max(size, 0)
        if self.files > settings.ARCHIVE_MAX_FILES:
            raise _reject(self.field, "archive_too_many_files", "The archive holds too many files.")
        if self.bytes > self.max_bytes:
            raise _reject(self.field, "archive_uncompressed_too_large", "The archive expands to too many bytes.")


def _inspect_tar(fileobj: BinaryIO, field: str, budget: _Budget) -> set[str]:
    names: set[str] = set()
    try:
        with tarfile.open(fileobj=fileobj, mode="r:gz") as archive:
            for member in archive:
                name = _check_name(field, member.name)
                if member.issym():
                    _check_link_target(field, name, member.linkname)
                elif member.islnk():
                    target = _check_name(field, member.linkname)
                    if target not in names:
                        raise _reject(field, "archive_link_outside", f"Hard link {name!r} points outside the archive.")
                elif not (member.isfile() or member.isdir()):
                    raise _reject(
                        field, "archive_special_file", f"Archive member {name!r} is a device or special file."
                    )
                budget.add(member.size if member.isfile() else 0)
                names.add(name)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _reject(field, "archive_corrupt", "The archive is not a readable .tar.gz file.") from exc
    return names


def _inspect_zip(fileobj: BinaryIO, field: str, budget: _Budget) -> set[str]:
    names: set[str] = set()
    try:
        with zipfile.ZipFile(fileobj) as archive:
            for info in archive.infolist():
                name = _check_name(field, info.filename)
                mode = info.external_attr >> 16
                file_type = stat.S_IFMT(mode)  # 0 when the archiver recorded no Unix type
                if stat.S_ISLNK(mode):
                    if info.file_size > 4096:
                        raise _reject(field, "archive_link_outside", f"Link {name!r} is malformed.")
                    _check_link_target(field, name, archive.read(info).decode(errors="replace"))
                elif file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise _reject(
                        field, "archive_special_file", f"Archive member {name!r} is a device or special file."
                    )
                budget.add(info.file_size)
                names.add(name.rstrip("/"))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as exc:
        raise _reject(field, "archive_corrupt", "The archive is not a readable .zip file.") from exc
    return names


def archive_validate(*, fileobj: BinaryIO, size: int, field: str, require_manifest: bool) -> ArchiveInfo:
    if size > settings.UPLOAD_MAX_BYTES:
        raise _reject(field, "archive_too_large", "The upload exceeds the size limit.")
    if size == 0:
        raise _reject(field, "archive_empty", "The upload is empty.")
    fileobj.seek(0)
    magic = fileobj.read(4)
    fileobj.seek(0)
    budget = _Budget(field, size)
    if magic.startswith(GZIP_MAGIC):
        archive_format, names = "tar.gz", _inspect_tar(fileobj, field, budget)
    elif magic in (ZIP_MAGIC, EMPTY_ZIP_MAGIC):
        archive_format, names = "zip", _inspect_zip(fileobj, field, budget)
    else:
        raise _reject(field, "archive_unsupported_format", "Upload a .tar.gz or .zip archive.")
    fileobj.seek(0)
    has_manifest = any(name in names for name in MANIFEST_NAMES)
    if require_manifest and not has_manifest:
        raise _reject(field, "archive_manifest_missing", f"The archive has no {MANIFEST_NAMES[0]} at its root.")
    return ArchiveInfo(archive_format, budget.files, budget.bytes, has_manifest)
