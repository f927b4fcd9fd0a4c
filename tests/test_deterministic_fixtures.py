"""Fixtures must not depend on the clock: the suite has to pass whenever it runs, however fast or slow the machine.

Artifacts are stored by sha256, so an archive whose bytes carry the time it was built (gzip's header, zip member
times, tar members added from files on disk) is a different artifact a second later, and a test comparing two uploads
of "the same" candidate passes or fails by chance.
"""

import os
import re
import time
from pathlib import Path

import pytest

from jobs.examples import example_candidate, example_package
from tests.factories.archives import directory_tar_gz, make_tar_gz, make_zip

ROOT = Path(__file__).resolve().parent.parent
A_DAY = 86_400


@pytest.fixture
def later(monkeypatch):
    """Runs a builder now and again with the clock moved a day ahead (and the example files touched)."""

    def build_twice(builder):
        first = builder()
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() + A_DAY)
        try:
            return first, builder()
        finally:
            monkeypatch.setattr(time, "time", real_time)

    return build_twice


@pytest.mark.parametrize(
    "builder",
    [
        lambda: make_tar_gz({"speedproof.toml": b"x", "run.py": b"print(1)\n"}),
        lambda: make_zip({"speedproof.toml": b"x", "run.py": b"print(1)\n"}),
        lambda: directory_tar_gz(ROOT / "examples" / "mlp" / "candidates" / "fast"),
        example_package,
        lambda: example_candidate("fast"),
    ],
    ids=["make_tar_gz", "make_zip", "directory_tar_gz", "example_package", "example_candidate"],
)
def test_archives_are_the_same_bytes_at_any_time(later, builder):
    first, second = later(builder)
    assert first == second


def test_example_archives_do_not_carry_file_times(tmp_path):
    from jobs.examples import directory_tar_gz as product_directory_tar_gz

    (tmp_path / "run.py").write_text("print(1)\n")
    before = product_directory_tar_gz(tmp_path)
    stamp = time.time() + A_DAY
    os.utime(tmp_path / "run.py", (stamp, stamp))
    assert product_directory_tar_gz(tmp_path) == before


# Ways of building an archive that stamp it with the clock or with files' times; the factories' builders do not.
CLOCK_STAMPED = [
    (re.compile(r"""["']w:gz["']"""), "tarfile mode 'w:gz' writes the current time into the gzip header"),
    (re.compile(r"""\.writestr\(\s*["']"""), "ZipFile.writestr with a name stamps the member with the current time"),
    (re.compile(r"""\barchive\.add\("""), "TarFile.add copies the file's modification time"),
    (re.compile(r"""gzip\.(compress|GzipFile)\((?![^)]*mtime)"""), "gzip without mtime= writes the current time"),
]
ALLOWED = {Path("tests/factories/archives.py"), Path("tests/test_deterministic_fixtures.py")}


def test_no_fixture_builds_archives_from_the_clock():
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative in ALLOWED:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for pattern, why in CLOCK_STAMPED:
                if pattern.search(line):
                    offenders.append(f"{relative}:{number}: {why}: {line.strip()}")
    assert not offenders, "use tests.factories.archives instead:\n" + "\n".join(offenders)
