"""Every kind of unsafe or malformed archive is refused with its own code, and nothing is stored."""

import io
import tarfile
import zipfile

import pytest

from common.models import Artifact
from tests.factories import CompanyAdminFactory, JobFactory, make_tar_gz, make_zip
from tests.factories.archives import MANIFEST, upload


def _tar_with(member: tarfile.TarInfo, content: bytes = b"") -> bytes:
    def add(archive):
        archive.addfile(member, io.BytesIO(content) if content else None)

    return make_tar_gz({"speedproof.toml": MANIFEST}, extra=add)


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _hardlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info


def _zip_symlink(name: str, target: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("speedproof.toml", MANIFEST)
        info = zipfile.ZipInfo(name)
        info.external_attr = 0o120777 << 16
        archive.writestr(info, target)
    return buffer.getvalue()


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("speedproof.toml", MANIFEST)
        archive.writestr("zeros.bin", b"\0" * (40 * 1024 * 1024))
    return buffer.getvalue()


BAD_ARCHIVES = [
    ("not an archive", lambda: b"plain text, not an archive", "archive_unsupported_format"),
    ("empty", lambda: b"", "archive_empty"),
    ("truncated gzip", lambda: make_tar_gz({"speedproof.toml": MANIFEST})[:30], "archive_corrupt"),
    ("corrupt zip", lambda: b"PK\x03\x04" + b"\0" * 64, "archive_corrupt"),
    ("no manifest", lambda: make_tar_gz({"baseline/run.py": b"x"}), "archive_manifest_missing"),
    ("absolute path", lambda: make_tar_gz({"speedproof.toml": MANIFEST, "/etc/passwd": b"x"}), "archive_absolute_path"),
    (
        "parent traversal",
        lambda: make_tar_gz({"speedproof.toml": MANIFEST, "../evil.py": b"x"}),
        "archive_path_traversal",
    ),
    (
        "nested traversal",
        lambda: make_zip({"speedproof.toml": MANIFEST, "a/../../evil.py": b"x"}),
        "archive_path_traversal",
    ),
    ("backslash path", lambda: make_zip({"speedproof.toml": MANIFEST, "..\\evil.py": b"x"}), "archive_absolute_path"),
    ("symlink absolute", lambda: _tar_with(_symlink("data", "/etc/shadow")), "archive_link_outside"),
    ("symlink escaping", lambda: _tar_with(_symlink("data", "../../secret")), "archive_link_outside"),
    ("hard link outside", lambda: _tar_with(_hardlink("data", "etc/passwd")), "archive_link_outside"),
    ("zip symlink escaping", lambda: _zip_symlink("data", "../../etc/passwd"), "archive_link_outside"),
    ("device file", lambda: _tar_with(_device("dev/null")), "archive_special_file"),
    ("zip bomb", _zip_bomb, "archive_uncompressed_too_large"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("name,build,code", BAD_ARCHIVES, ids=[case[0] for case in BAD_ARCHIVES])
def test_bad_package_is_refused_with_its_code(api_client_for, name, build, code):
    admin = CompanyAdminFactory()
    job = JobFactory(organization=admin.memberships.get().organization, created_by=admin)
    response = api_client_for(admin).put(
        f"/api/v1/jobs/{job.pk}/package/", {"file": upload(build())}, format="multipart"
    )
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["fields"] == {"package": [code]}
    assert not Artifact.objects.exists()
    job.refresh_from_db()
    assert job.package_id is None


@pytest.mark.django_db
def test_too_many_files_and_too_large_uploads(api_client_for, settings):
    admin = CompanyAdminFactory()
    job = JobFactory(organization=admin.memberships.get().organization, created_by=admin)
    client = api_client_for(admin)
    settings.ARCHIVE_MAX_FILES = 3
    many = make_tar_gz({"speedproof.toml": MANIFEST, **{f"f{i}": b"x" for i in range(5)}})
    response = client.put(f"/api/v1/jobs/{job.pk}/package/", {"file": upload(many)}, format="multipart")
    assert response.json()["error"]["code"] == "archive_too_many_files"
    settings.UPLOAD_MAX_BYTES = 100
    big = make_tar_gz({"speedproof.toml": MANIFEST, "weights.bin": bytes(range(256)) * 64})
    response = client.put(f"/api/v1/jobs/{job.pk}/package/", {"file": upload(big)}, format="multipart")
    assert response.json()["error"]["code"] == "archive_too_large"
    assert not Artifact.objects.exists()


@pytest.mark.django_db
def test_links_inside_the_archive_and_zip_packages_are_accepted(api_client_for):
    admin = CompanyAdminFactory()
    job = JobFactory(organization=admin.memberships.get().organization, created_by=admin)
    inside = _tar_with(_symlink("baseline/current", "../speedproof.toml"))
    client = api_client_for(admin)
    response = client.put(f"/api/v1/jobs/{job.pk}/package/", {"file": upload(inside)}, format="multipart")
    assert response.status_code == 200, response.json()
    response = client.put(
        f"/api/v1/jobs/{job.pk}/package/", {"file": upload(make_zip({"speedproof.toml": MANIFEST}))}, format="multipart"
    )
    assert response.json()["package"]["archive_format"] == "zip"
    assert len(response.json()["package"]["sha256"]) == 64
