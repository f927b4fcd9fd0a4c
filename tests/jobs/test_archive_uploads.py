"""Every kind of unsafe or malformed archive is refused with its own code, and nothing is stored."""

import io
import struct
import tarfile
import zipfile

import pytest

from common.archives import ArchiveRejected, archive_limits, archive_validate
from common.models import Artifact
from tests.factories import CompanyAdminFactory, JobFactory, make_tar_gz, make_zip
from tests.factories.archives import MANIFEST, upload
from verification.runner.archive import ArchiveError, materialize
from verification.runner.archive_rules import ArchiveLimits

OFF_SCHEMA_MANIFEST = b'name = "demo"\nversion = 1\n'
PACKAGE_MANIFEST = b'format = 1\nname = "demo"\nmode = "process"\ncommand = ["python", "run.py"]\n'
PACKAGE = {
    "speedproof.toml": PACKAGE_MANIFEST,
    "implementation/run.py": b"print(1)\n",
    "inputs/public/0.json": b"1",
}


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
        for member, content in PACKAGE.items():
            archive.writestr(zipfile.ZipInfo(member), content)
        info = zipfile.ZipInfo(name)
        info.external_attr = 0o120777 << 16
        archive.writestr(info, target)
    return buffer.getvalue()


def _zip_bomb() -> bytes:
    return make_zip({"speedproof.toml": PACKAGE_MANIFEST, "zeros.bin": b"\0" * (40 * 1024 * 1024)})


def _understated_zip(size: int) -> bytes:
    """A zip whose headers (local and central) claim `zeros.bin` holds 16 bytes; it holds `size`."""
    data = bytearray(make_zip({**PACKAGE, "zeros.bin": b"\0" * size}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        local = archive.getinfo("zeros.bin").header_offset
    struct.pack_into("<L", data, local + 22, 16)
    central = data.find(b"PK\x01\x02")
    while central >= 0:
        name_length = struct.unpack_from("<H", data, central + 28)[0]
        if data[central + 46 : central + 46 + name_length] == b"zeros.bin":
            struct.pack_into("<L", data, central + 24, 16)
        central = data.find(b"PK\x01\x02", central + 4)
    return bytes(data)


def _fifo(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.FIFOTYPE
    return info


def _package_tar_with(member: tarfile.TarInfo) -> bytes:
    return make_tar_gz(PACKAGE, extra=lambda archive: archive.addfile(member))


def _package_with(manifest: bytes) -> bytes:
    return make_tar_gz({**PACKAGE, "speedproof.toml": manifest})


def _duplicate_member() -> bytes:
    def add(archive):
        info = tarfile.TarInfo("implementation/run.py")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))

    return make_tar_gz(PACKAGE, extra=add)


BAD_ARCHIVES = [
    ("not an archive", lambda: b"plain text, not an archive", "archive_unsupported_format"),
    ("empty", lambda: b"", "archive_empty"),
    ("truncated gzip", lambda: make_tar_gz(PACKAGE)[:30], "archive_corrupt"),
    ("corrupt zip", lambda: b"PK\x03\x04" + b"\0" * 64, "archive_corrupt"),
    ("no manifest", lambda: make_tar_gz({"baseline/run.py": b"x"}), "archive_manifest_missing"),
    (
        "manifest not at the root",
        lambda: make_tar_gz({"a/speedproof.toml": PACKAGE_MANIFEST, "b/x": b""}),
        "archive_manifest_missing",
    ),
    ("absolute path", lambda: make_tar_gz({**PACKAGE, "/etc/passwd": b"x"}), "archive_absolute_path"),
    ("parent traversal", lambda: make_tar_gz({**PACKAGE, "../evil.py": b"x"}), "archive_path_traversal"),
    ("nested traversal", lambda: make_zip({**PACKAGE, "a/../../evil.py": b"x"}), "archive_path_traversal"),
    ("dot-dot inside", lambda: make_zip({**PACKAGE, "a/../evil.py": b"x"}), "archive_path_traversal"),
    ("backslash path", lambda: make_zip({**PACKAGE, "..\\evil.py": b"x"}), "archive_absolute_path"),
    ("symlink absolute", lambda: _package_tar_with(_symlink("data", "/etc/shadow")), "archive_link_outside"),
    ("symlink escaping", lambda: _package_tar_with(_symlink("data", "../../secret")), "archive_link_outside"),
    (
        "symlink inside",
        lambda: _package_tar_with(_symlink("implementation/current", "../speedproof.toml")),
        "archive_link_not_allowed",
    ),
    ("hard link", lambda: _package_tar_with(_hardlink("data", "speedproof.toml")), "archive_link_not_allowed"),
    (
        "hard link to a missing member",
        lambda: _package_tar_with(_hardlink("data", "etc/passwd")),
        "archive_link_not_allowed",
    ),
    ("zip symlink escaping", lambda: _zip_symlink("data", "../../etc/passwd"), "archive_link_outside"),
    ("zip symlink inside", lambda: _zip_symlink("data", "speedproof.toml"), "archive_link_not_allowed"),
    ("device file", lambda: _package_tar_with(_device("dev/null")), "archive_special_file"),
    ("fifo", lambda: _package_tar_with(_fifo("pipe")), "archive_special_file"),
    ("same path twice", _duplicate_member, "archive_path_conflict"),
    ("zip bomb", _zip_bomb, "archive_uncompressed_too_large"),
    ("zip understating a member's size", lambda: _understated_zip(100_000), "archive_size_mismatch"),
    ("zip understating a bomb's size", lambda: _understated_zip(40 * 1024 * 1024), "archive_uncompressed_too_large"),
    ("manifest not TOML", lambda: _package_with(b"name = [unclosed\n"), "archive_manifest_invalid"),
    ("manifest not UTF-8", lambda: _package_with(b'name = "\xff"\n'), "archive_manifest_invalid"),
    ("manifest off the schema", lambda: _package_with(OFF_SCHEMA_MANIFEST), "archive_manifest_invalid"),
    (
        "manifest naming a missing directory",
        lambda: _package_with(PACKAGE_MANIFEST + b'implementation = "missing"\n'),
        "archive_manifest_invalid",
    ),
    (
        "manifest naming a directory outside",
        lambda: _package_with(PACKAGE_MANIFEST + b'public_inputs = "../outside"\n'),
        "archive_manifest_invalid",
    ),
    (
        "manifest over 64 KiB",
        lambda: _package_with(PACKAGE_MANIFEST + b"# padding\n" * 7000),
        "archive_manifest_too_large",
    ),
    (
        "20 MB manifest",
        lambda: _package_with(PACKAGE_MANIFEST + b"#" * (20 * 1024 * 1024)),
        "archive_uncompressed_too_large",
    ),
]

GOOD_ARCHIVES = [
    ("package", lambda: make_tar_gz(PACKAGE)),
    ("zip package", lambda: make_zip(PACKAGE)),
    ("package in one top directory", lambda: make_tar_gz({f"pkg/{name}": data for name, data in PACKAGE.items()})),
    ("package with its ./ prefix", lambda: make_tar_gz({f"./{name}": data for name, data in PACKAGE.items()})),
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
@pytest.mark.parametrize("name,build", GOOD_ARCHIVES, ids=[case[0] for case in GOOD_ARCHIVES])
def test_good_packages_are_accepted(api_client_for, name, build):
    admin = CompanyAdminFactory()
    job = JobFactory(organization=admin.memberships.get().organization, created_by=admin)
    response = api_client_for(admin).put(
        f"/api/v1/jobs/{job.pk}/package/", {"file": upload(build())}, format="multipart"
    )
    assert response.status_code == 200, response.json()
    assert len(response.json()["package"]["sha256"]) == 64
    assert response.json()["package"]["archive_format"] == ("zip" if name.startswith("zip") else "tar.gz")


def _upload_verdict(content: bytes) -> str | None:
    try:
        archive_validate(fileobj=io.BytesIO(content), size=len(content), field="package", require_manifest=True)
    except ArchiveRejected as rejected:
        return rejected.code
    return None


def _host_verdict(content: bytes, tmp_path) -> str | None:
    source = tmp_path / "package.tar.gz"  # a host names the download by its format; the rules read the bytes
    source.write_bytes(content)
    try:
        unpacked = materialize(source, tmp_path / "unpacked", require_manifest=True, limits=archive_limits())
    except ArchiveError as error:
        return error.code
    assert (unpacked / "speedproof.toml").is_file()
    return None


VERDICT_CASES = [(name, build, code) for name, build, code in BAD_ARCHIVES] + [
    (name, build, None) for name, build in GOOD_ARCHIVES
]


@pytest.mark.parametrize("name,build,code", VERDICT_CASES, ids=[case[0] for case in VERDICT_CASES])
def test_the_host_unpacker_gives_the_upload_verdict(tmp_path, name, build, code):
    content = build()
    assert _upload_verdict(content) == code
    assert _host_verdict(content, tmp_path) == code


def test_hosts_and_the_platform_default_to_the_same_limits():
    assert ArchiveLimits.from_environment({}) == archive_limits()
