import io
import tarfile
import zipfile

from django.core.files.uploadedfile import SimpleUploadedFile

MANIFEST = b'name = "demo"\nversion = 1\n'


def make_tar_gz(files: dict[str, bytes], *, extra=None) -> bytes:
    """A .tar.gz of `files`; `extra(tar)` may add hand-made members (links, devices)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        if extra is not None:
            extra(archive)
    return buffer.getvalue()


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def package_archive(name: str = "package.tar.gz", files: dict[str, bytes] | None = None) -> SimpleUploadedFile:
    content = make_tar_gz(files or {"speedproof.toml": MANIFEST, "baseline/run.py": b"print(1)\n"})
    return SimpleUploadedFile(name, content, content_type="application/gzip")


def upload(content: bytes, name: str = "upload.tar.gz") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="application/octet-stream")
