"""Test archives, built deterministically: the same files give the same bytes at any time.

Artifacts are stored once by sha256, so an archive stamped with the clock (gzip's header, tar and zip member times)
would make two uploads of the same files differ when they are built a second apart.
"""

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile

# A manifest that the upload rules (verification/runner/archive_rules.py) accept, naming what PACKAGE_FILES hold.
MANIFEST = (
    b'format = 1\nname = "demo"\nmode = "process"\ncommand = ["python", "run.py"]\n'
    b'implementation = "baseline"\npublic_inputs = "inputs"\n'
)
PACKAGE_FILES = {"speedproof.toml": MANIFEST, "baseline/run.py": b"print(1)\n", "inputs/0.json": b"1"}
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip header can hold


def make_tar_gz(files: dict[str, bytes], *, extra=None) -> bytes:
    """A .tar.gz of `files`; `extra(tar)` may add hand-made members (links, devices)."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w") as archive,
    ):
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        if extra is not None:
            extra(archive)
    return buffer.getvalue()


def directory_tar_gz(directory: Path, *, arcname: str | None = None) -> bytes:
    """A .tar.gz of a directory's files (not __pycache__), under `arcname/` when given."""
    files = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            relative = path.relative_to(directory).as_posix()
            files[f"{arcname}/{relative}" if arcname else relative] = path.read_bytes()
    return make_tar_gz(files)


def make_zip(files: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = compression
            info.external_attr = 0o644 << 16
            archive.writestr(info, content)
    return buffer.getvalue()


def package_archive(name: str = "package.tar.gz", files: dict[str, bytes] | None = None) -> SimpleUploadedFile:
    content = make_tar_gz(files or PACKAGE_FILES)
    return SimpleUploadedFile(name, content, content_type="application/gzip")


def upload(content: bytes, name: str = "upload.tar.gz") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="application/octet-stream")
