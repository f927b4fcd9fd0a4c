"""The one rule set for archives: what the platform accepts at upload is exactly what a host can unpack.

Upload validation (``common.archives``) and the host's unpacking (``archive.materialize``) both walk an
archive with ``archive_walk``; the upload discards the bytes, the host writes them. Sizes are measured by
reading the streams, never taken from headers (a zip may understate them), and the whole decompressed tar
stream is capped, so a bomb is stopped after a bounded amount of work.

The rules: ``.tar.gz`` or ``.zip`` only; relative paths without ``..``; regular files and directories only
(every symbolic or hard link is refused, so both sides never have to agree on how to resolve one; devices,
fifos and sparse files are refused too); one member per path; caps on the archive size, the unpacked bytes
(also relative to the compressed size) and the member count. A benchmark package also needs a manifest
(``speedproof.toml``, at most ``MAX_MANIFEST_BYTES``) at its root, which must parse against the manifest
schema and name directories the package holds. The package root is the archive root, or its single top
directory when the archive holds nothing else (``tar czf x.tar.gz dir/``).
"""

from __future__ import annotations

import gzip
import os
import posixpath
import stat
import struct
import tarfile
import tomllib
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .manifest import MANIFEST_NAME, ManifestError, parse_manifest

MAX_MANIFEST_BYTES = 64 * 1024
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
CHUNK = 1 << 16
# Tar headers, padding and long-name records on top of the members' own bytes.
TAR_OVERHEAD_PER_MEMBER = 3 * 512
TAR_OVERHEAD_FIXED = 1 << 20
ZIP_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")


@dataclass(frozen=True)
class ArchiveLimits:
    """Platform and hosts read the same environment variables (and share these defaults)."""

    max_archive_bytes: int = 64 * 1024 * 1024
    max_unpacked_bytes: int = 512 * 1024 * 1024
    max_members: int = 5000
    max_compression_ratio: int = 200

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> ArchiveLimits:
        defaults = cls()
        return cls(
            max_archive_bytes=int(environ.get("UPLOAD_MAX_BYTES", defaults.max_archive_bytes)),
            max_unpacked_bytes=int(environ.get("ARCHIVE_MAX_UNCOMPRESSED_BYTES", defaults.max_unpacked_bytes)),
            max_members=int(environ.get("ARCHIVE_MAX_FILES", defaults.max_members)),
        )

    def unpacked_budget(self, archive_size: int) -> int:
        return min(self.max_unpacked_bytes, max(archive_size, 1) * self.max_compression_ratio + (1 << 20))


class ArchiveViolation(ValueError):
    """An archive breaks a rule; ``code`` is stable and machine-readable (the API shows it)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class ArchiveSummary:
    archive_format: str
    member_count: int = 0
    unpacked_bytes: int = 0
    package_root: str = ""  # "" for the archive root, else its single top directory
    manifest: bytes | None = None
    files: set[str] = field(default_factory=set)
    directories: set[str] = field(default_factory=set)
    manifest_candidates: dict[str, bytes] = field(default_factory=dict)


def archive_detect_format(head: bytes) -> str:
    if head.startswith(GZIP_MAGIC):
        return "tar.gz"
    if head[:4] in ZIP_MAGICS:
        return "zip"
    raise ArchiveViolation("archive_unsupported_format", "Upload a .tar.gz or .zip archive.")


def archive_walk(
    fileobj: BinaryIO,
    *,
    size: int,
    limits: ArchiveLimits,
    require_manifest: bool,
    destination: Path | None = None,
) -> ArchiveSummary:
    """Check every rule, reading every byte; with ``destination``, also unpack there (a new, empty
    directory). Raises ``ArchiveViolation`` at the first broken rule."""
    if size == 0:
        raise ArchiveViolation("archive_empty", "The upload is empty.")
    if size > limits.max_archive_bytes:
        raise ArchiveViolation("archive_too_large", "The upload exceeds the size limit.")
    fileobj.seek(0)
    archive_format = archive_detect_format(fileobj.read(4))
    fileobj.seek(0)
    walker = _Walker(archive_format, limits, size, destination)
    if archive_format == "tar.gz":
        walker.walk_tar(fileobj)
    else:
        walker.walk_zip(fileobj)
    summary = walker.summary
    _find_package_root(summary)
    if require_manifest:
        manifest_check(summary)
    return summary


def manifest_check(summary: ArchiveSummary) -> None:
    if summary.manifest is None:
        raise ArchiveViolation("archive_manifest_missing", f"The archive has no {MANIFEST_NAME} at its root.")
    if len(summary.manifest) > MAX_MANIFEST_BYTES:
        raise ArchiveViolation(
            "archive_manifest_too_large", f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES // 1024} KiB."
        )
    try:
        manifest = parse_manifest(tomllib.loads(summary.manifest.decode("utf-8")))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, ManifestError) as error:
        raise ArchiveViolation("archive_manifest_invalid", f"{MANIFEST_NAME}: {error}") from error
    prefix = f"{summary.package_root}/" if summary.package_root else ""
    for relative in (manifest.implementation, manifest.public_inputs):
        normalized = posixpath.normpath(relative)
        if relative.startswith("/") or normalized == ".." or normalized.startswith("../"):
            raise ArchiveViolation(
                "archive_manifest_invalid", f"{MANIFEST_NAME}: {relative!r} must stay inside the package."
            )
        if normalized != "." and prefix + normalized not in summary.directories:
            raise ArchiveViolation(
                "archive_manifest_invalid", f"{MANIFEST_NAME}: directory {relative!r} not found in the package."
            )


def _find_package_root(summary: ArchiveSummary) -> None:
    """Mirrors ``archive._single_top_directory``: hidden top-level entries do not count."""
    if MANIFEST_NAME in summary.files:
        summary.manifest = summary.manifest_candidates[MANIFEST_NAME]
        return
    tops = {name.split("/", 1)[0] for name in summary.files | summary.directories}
    visible = [top for top in tops if not top.startswith(".")]
    if len(visible) == 1 and visible[0] in summary.directories:
        summary.package_root = visible[0]
        summary.manifest = summary.manifest_candidates.get(f"{visible[0]}/{MANIFEST_NAME}")


def _member_name(raw: str) -> str | None:
    """The member's normalized relative path; None for the archive root itself."""
    if "\\" in raw or raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise ArchiveViolation("archive_absolute_path", f"Archive member {raw!r} has an absolute path.")
    if ".." in raw.split("/"):
        raise ArchiveViolation("archive_path_traversal", f"Archive member {raw!r} points outside the archive.")
    normalized = posixpath.normpath(raw)
    return None if normalized == "." else normalized


def _refuse_link(name: str, target: str) -> None:
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if not target or target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise ArchiveViolation("archive_link_outside", f"Link {name!r} points outside the archive.")
    raise ArchiveViolation("archive_link_not_allowed", f"Archive member {name!r} is a link; links are not allowed.")


class _CappedReader:
    """The decompressed tar stream, refused once it grows past what the members may plausibly need."""

    def __init__(self, source: BinaryIO, cap: int):
        self._source = source
        self._left = cap

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(CHUNK if size is None or size < 0 else size)
        self._left -= len(data)
        if self._left < 0:
            raise ArchiveViolation("archive_uncompressed_too_large", "The archive expands to too many bytes.")
        return data


class _Walker:
    def __init__(self, archive_format: str, limits: ArchiveLimits, size: int, destination: Path | None):
        self.summary = ArchiveSummary(archive_format)
        self.limits = limits
        self.budget = limits.unpacked_budget(size)
        self.destination = destination

    # ---- members ---------------------------------------------------------------------------------
    def _admit(self, name: str | None) -> str | None:
        self.summary.member_count += 1
        if self.summary.member_count > self.limits.max_members:
            raise ArchiveViolation("archive_too_many_files", "The archive holds too many files.")
        if name is None:
            return None
        if name in self.summary.files or name in self.summary.directories:
            raise ArchiveViolation("archive_path_conflict", f"Archive member {name!r} appears more than once.")
        parent = posixpath.dirname(name)
        while parent:
            if parent in self.summary.files:
                raise ArchiveViolation("archive_path_conflict", f"Archive member {name!r} is inside a file.")
            self.summary.directories.add(parent)
            parent = posixpath.dirname(parent)
        return name

    def _directory(self, name: str | None) -> None:
        name = self._admit(name)
        if name is None:
            return
        self.summary.directories.add(name)
        if self.destination is not None:
            self.destination.joinpath(*name.split("/")).mkdir(parents=True, exist_ok=True)

    def _file(self, name: str | None, chunks, executable: bool) -> int:
        name = self._admit(name)
        if name is None:
            raise ArchiveViolation("archive_path_conflict", "A file member has no name.")
        self.summary.files.add(name)
        keep = self._may_be_manifest(name)
        kept = bytearray()
        written = 0
        handle = None
        if self.destination is not None:
            path = self.destination.joinpath(*name.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "xb")
        try:
            for chunk in chunks:
                written += len(chunk)
                self.summary.unpacked_bytes += len(chunk)
                if self.summary.unpacked_bytes > self.budget:
                    raise ArchiveViolation("archive_uncompressed_too_large", "The archive expands to too many bytes.")
                if keep and len(kept) <= MAX_MANIFEST_BYTES:
                    kept += chunk[: MAX_MANIFEST_BYTES + 1 - len(kept)]
                if handle is not None:
                    handle.write(chunk)
        finally:
            if handle is not None:
                handle.close()
                if executable:
                    path.chmod(0o755)
        if keep:
            self.summary.manifest_candidates[name] = bytes(kept)
        return written

    def _may_be_manifest(self, name: str) -> bool:
        """The root manifest, or the first one in a visible top directory: a second such directory would
        mean there is no single top directory, so at most two candidates are ever kept in memory."""
        if name == MANIFEST_NAME:
            return True
        top, _, rest = name.partition("/")
        nested = set(self.summary.manifest_candidates) - {MANIFEST_NAME}
        return rest == MANIFEST_NAME and not top.startswith(".") and not nested

    # ---- tar.gz ----------------------------------------------------------------------------------
    def walk_tar(self, fileobj: BinaryIO) -> None:
        cap = self.budget + (self.limits.max_members + 2) * TAR_OVERHEAD_PER_MEMBER + TAR_OVERHEAD_FIXED
        try:
            with (
                gzip.GzipFile(fileobj=fileobj, mode="rb") as decompressed,
                tarfile.open(fileobj=_CappedReader(decompressed, cap), mode="r|") as archive,
            ):
                for member in archive:
                    self._tar_member(archive, member)
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as error:
            raise ArchiveViolation("archive_corrupt", "The archive is not a readable .tar.gz file.") from error

    def _tar_member(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = _member_name(member.name)
        if member.issym() or member.islnk():
            _refuse_link(name or ".", member.linkname)
        if member.isdir():
            self._directory(name)
            return
        if not member.isreg() or member.issparse():
            raise ArchiveViolation(
                "archive_special_file", f"Archive member {member.name!r} is a device or special file."
            )
        if self.summary.unpacked_bytes + member.size > self.budget:
            raise ArchiveViolation("archive_uncompressed_too_large", "The archive expands to too many bytes.")
        extracted = archive.extractfile(member)
        chunks = iter(lambda: extracted.read(CHUNK), b"") if extracted is not None else iter(())
        if self._file(name, chunks, bool(member.mode & 0o111)) != member.size:
            raise ArchiveViolation("archive_corrupt", f"Archive member {member.name!r} is truncated.")

    # ---- zip -------------------------------------------------------------------------------------
    def walk_zip(self, fileobj: BinaryIO) -> None:
        try:
            with zipfile.ZipFile(fileobj) as archive:
                infos = archive.infolist()
                if len(infos) > self.limits.max_members:
                    raise ArchiveViolation("archive_too_many_files", "The archive holds too many files.")
                for info in infos:
                    self._zip_member(fileobj, info)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, struct.error) as error:
            raise ArchiveViolation("archive_corrupt", "The archive is not a readable .zip file.") from error

    def _zip_member(self, fileobj: BinaryIO, info: zipfile.ZipInfo) -> None:
        name = _member_name(info.filename)
        mode = info.external_attr >> 16
        file_type = stat.S_IFMT(mode)  # 0 when the archiver recorded no Unix type
        if stat.S_ISLNK(mode):
            target = b"".join(_zip_chunks(fileobj, info, 4096)).decode(errors="replace")
            _refuse_link(name or ".", target)
        if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise ArchiveViolation(
                "archive_special_file", f"Archive member {info.filename!r} is a device or special file."
            )
        if info.filename.endswith("/") or stat.S_ISDIR(mode):
            self._directory(name)
            return
        if info.flag_bits & 0x1:
            raise ArchiveViolation("archive_unsupported_format", f"Archive member {info.filename!r} is encrypted.")
        remaining = self.budget - self.summary.unpacked_bytes
        written = self._file(name, _zip_chunks(fileobj, info, remaining + 1), bool(mode & 0o111))
        if written != info.file_size:
            raise ArchiveViolation(
                "archive_size_mismatch", f"Archive member {info.filename!r} does not hold the size its header states."
            )


def _zip_chunks(fileobj: BinaryIO, info: zipfile.ZipInfo, max_output: int):
    """The member's bytes, decompressed here from the raw data so that what is counted is what was stored:
    zipfile would stop at the size the header states, hiding a member that holds more."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArchiveViolation(
            "archive_unsupported_format", f"Archive member {info.filename!r} uses an unsupported compression."
        )
    fileobj.seek(info.header_offset)
    header = ZIP_LOCAL_HEADER.unpack(fileobj.read(ZIP_LOCAL_HEADER.size))
    if header[0] != b"PK\x03\x04":
        raise zipfile.BadZipFile("bad local file header")
    fileobj.seek(info.header_offset + ZIP_LOCAL_HEADER.size + header[10] + header[11])
    left = info.compress_size
    decompressor = zlib.decompressobj(-zlib.MAX_WBITS) if info.compress_type == zipfile.ZIP_DEFLATED else None
    produced = 0
    crc = 0
    while left > 0 or (decompressor is not None and decompressor.unconsumed_tail):
        if decompressor is not None and decompressor.unconsumed_tail:
            raw = decompressor.unconsumed_tail
        else:
            raw = fileobj.read(min(CHUNK, left))
            if not raw:
                raise EOFError("zip member data is truncated")
            left -= len(raw)
        data = decompressor.decompress(raw, CHUNK) if decompressor is not None else raw
        produced += len(data)
        crc = zlib.crc32(data, crc)
        if data:
            yield data
        if produced > max_output:
            return
    if decompressor is not None:
        tail = decompressor.flush()
        produced += len(tail)
        crc = zlib.crc32(tail, crc)
        if tail:
            yield tail
        if not decompressor.eof:
            raise zipfile.BadZipFile(f"{info.filename}: deflate stream is incomplete")
    if produced == info.file_size and crc != info.CRC:
        raise zipfile.BadZipFile(f"{info.filename}: CRC mismatch")
