"""The runner as an engineer installs it: a wheel built from the repository, installed into a fresh
virtualenv away from the checkout, whose `speedproof` command checks the example job in real sandboxes
and certifies the version it is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from runner_testlib import EXAMPLE, REPO

from verification.runner import RUNNER_VERSION

# Runs real sandboxes (uid 65534, whose RLIMIT_NPROC is shared machine-wide): `make check` runs these one at a time.
pytestmark = pytest.mark.sandbox

RUNNER = REPO / "verification" / "runner"


def _run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a virtualenv holding the wheel and, through a .pth file, the project
    environment's numpy and cryptography (the test runs offline)."""
    root = tmp_path_factory.mktemp("distribution")
    # A copy, so that the build's own files (build/, *.egg-info) never land in the checkout.
    source = root / "source"
    shutil.copytree(RUNNER, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            "dist",
            str(source),
        ],
        cwd=root,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (root / "dist").glob("*.whl")
    assert wheel.name == f"speedproof_verifier-{RUNNER_VERSION}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert "verification/runner/manifest.schema.json" in names
    assert "verification/__init__.py" not in names  # the platform's Django app stays out of the wheel
    metadata = zipfile.ZipFile(wheel).read(f"speedproof_verifier-{RUNNER_VERSION}.dist-info/METADATA").decode()
    assert "Requires-Dist: numpy" in metadata and "django" not in metadata.lower()

    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        cwd=root,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root)
    (Path(site.stdout.strip()) / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def test_the_wheel_installs_a_speedproof_command_that_is_not_the_checkout(installed, tmp_path):
    helped = _run([str(installed / "speedproof"), "--help"], cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "usage: speedproof" in helped.stdout and "check" in helped.stdout
    located = _run(
        [str(installed / "python"), "-c", "import verification.runner as r; print(r.__file__, r.RUNNER_VERSION)"],
        cwd=tmp_path,
    )
    path, version = located.stdout.split()
    assert Path(path).is_relative_to(installed.parent) and version == RUNNER_VERSION
    imported_django = _run(
        [str(installed / "python"), "-c", "import sys, verification.runner.cli; print('django' in sys.modules)"],
        cwd=tmp_path,
    )
    assert imported_django.stdout.strip() == "False"


def test_the_installed_command_checks_the_example_and_certifies_its_version(installed, tmp_path):
    speedproof = str(installed / "speedproof")
    keys = _run([speedproof, "keygen", "--private-key", "key.pem", "--public-key", "key.pub.pem"], cwd=tmp_path)
    assert keys.returncode == 0, keys.stderr
    checked = _run(
        [
            speedproof,
            "check",
            "--package",
            str(EXAMPLE / "package"),
            "--candidate",
            str(EXAMPLE / "candidates" / "fast"),
            "--criteria",
            str(EXAMPLE / "criteria.json"),
            "--report",
            "report.json",
            "--budget",
            "8",
            "--seed",
            "5",
            "--signing-key",
            "key.pem",
            # The job's Python: the project environment, which has numpy (the virtualenv reaches it
            # only through a .pth file that the sandbox does not bind).
            "--python",
            sys.executable,
            "--quiet",
        ],
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("PASS: ")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["runner_version"] == RUNNER_VERSION
    verified = _run([speedproof, "verify-certificate", "report.json", "--public-key", "key.pub.pem"], cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"runner {RUNNER_VERSION}," in verified.stdout
