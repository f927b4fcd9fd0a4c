"""The runner as an engineer runs it on a laptop: an ordinary uid, no cgroups, bwrap's user namespace.

Run for real as uid 65534 (switched with setpriv), with a Python environment that uid can read:
Debian's interpreter of the same version, a fresh venv, this environment's numpy copied in for the
sandboxed runtime, and this checkout's packages on PYTHONPATH for the runner itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy
import pytest

ROOT = Path(__file__).resolve().parents[3]
NOBODY = 65534
SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
SITE_PACKAGES = Path(numpy.__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("setpriv") is None or not SYSTEM_PYTHON.exists(),
        reason="needs root to switch to an unprivileged uid, setpriv, and the system's Python "
        f"{sys.version_info.major}.{sys.version_info.minor}",
    ),
]


def _as_nobody(home: Path, *argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            f"HOME={home}",
            f"TMPDIR={home}",
            f"PYTHONPATH={ROOT}:{SITE_PACKAGES}",
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=home,
    )


@pytest.fixture(scope="module")
def laptop():
    """(home, python): a home directory and a venv Python owned by the unprivileged uid."""
    home = Path(tempfile.mkdtemp(prefix="speedproof-laptop-"))
    try:
        subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(home / "venv")], check=True)
        target = next((home / "venv" / "lib").glob("python3*/site-packages"))
        for name in ("numpy", "numpy.libs"):
            if (SITE_PACKAGES / name).exists():
                shutil.copytree(SITE_PACKAGES / name, target / name, symlinks=True)
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(home)], check=True)
        python = str(home / "venv" / "bin" / "python")
        probe = _as_nobody(home, python, "-c", "import numpy, verification.runner")
        if probe.returncode != 0:
            pytest.skip(f"this checkout is not readable by uid {NOBODY}: {probe.stderr[-300:]}")
        yield home, python
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_the_example_passes_for_an_engineer_without_root(laptop):
    home, python = laptop
    report_path = home / "report.json"
    result = _as_nobody(
        home,
        python,
        "-m",
        "verification.runner",
        "check",
        "--package",
        str(ROOT / "examples/mlp/package"),
        "--candidate",
        str(ROOT / "examples/mlp/candidates/fast"),
        "--criteria",
        str(ROOT / "examples/mlp/criteria.json"),
        "--report",
        str(report_path),
        "--quiet",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(report_path.read_text())
    assert report["decision"] == "PASS"
    measured = [m for m in report["measurements"] if m["phase"] == "measure"]
    # No cgroups here: CPU time and peak memory come from the sandbox's supervisor, and exist.
    assert measured and all(m["cpu_seconds"] > 0 and m["peak_memory_bytes"] > 10 * 2**20 for m in measured)
    memory = next(c for c in report["criteria"] if c["criterion"]["metric"] == "peak_memory")
    assert memory["decision"] == "PASS"
    policy = [b["action"] for b in report["blocked_actions"] if b["role"] == "policy"]
    assert any("invoking user's uid" in line and "verify on a root host" in line for line in policy)
    assert not any("uid 65534" in line for line in policy)


SANDBOXED = r"""
import os, socket, subprocess, time
try:
    os.write(3, b"rusage 0.000001 1\n")
    print("report fd writable")
except OSError:
    print("report fd closed")
try:
    socket.create_connection(("192.0.2.1", 80), timeout=1)
    print("network reachable")
except OSError:
    print("network blocked")
subprocess.Popen(["sleep", "300"])  # left behind on purpose
middle = os.fork()
if middle == 0:  # an orphan that burns 0.3 s of CPU and ends before the command does
    if os.fork() == 0:
        start = time.process_time()
        while time.process_time() - start < 0.3:
            pass
    os._exit(0)
os.waitpid(middle, 0)
start = time.process_time()
while time.process_time() - start < 0.3:
    pass
block = bytearray(b"x" * (120 * 1024 * 1024))
time.sleep(0.3)
import ctypes
print(ctypes.CDLL(None).unshare(0x10000000))  # CLONE_NEWUSER: refused and counted without root too
print(os.getuid() == int(os.environ["EXPECTED_UID"]))
"""

DRIVER = r"""
import json, sys
from pathlib import Path
from verification.runner import sandbox as sb
implementation = Path(sys.argv[1])
spec = sb.SandboxSpec(command=[sys.executable, "main.py"], implementation=implementation,
                      runtime_paths=sb.default_runtime_paths(), supervisor_python=sys.executable,
                      env={"EXPECTED_UID": sys.argv[2]})
with sb.SandboxProcess(spec) as process:
    outcome = process.finish()
print(json.dumps({"exit": outcome.exit_code, "cpu": outcome.cpu_seconds, "peak": outcome.peak_memory_bytes,
                  "stdout": outcome.stdout.decode(), "leftover": outcome.leftover_processes,
                  "blocked": outcome.blocked, "violations": outcome.violations,
                  "privileged_calls": outcome.privileged_calls, "unobserved": outcome.unobserved}))
"""


def test_the_sandbox_holds_and_measures_without_root(laptop):
    home, python = laptop
    implementation = home / "impl"
    implementation.mkdir()
    (implementation / "main.py").write_text(SANDBOXED)
    (home / "driver.py").write_text(DRIVER)
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(implementation), str(home / "driver.py")], check=True)
    result = _as_nobody(home, python, str(home / "driver.py"), str(implementation), str(NOBODY))
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["exit"] == 0
    assert outcome["stdout"].split() == ["report", "fd", "closed", "network", "blocked", "-1", "True"]
    assert outcome["privileged_calls"] == {"unshare": 1} and outcome["unobserved"] == []
    assert outcome["violations"]["privileged_call"] == 1
    assert outcome["leftover"] == 1 and any("still running" in line for line in outcome["blocked"])
    assert 0.55 <= outcome["cpu"] < 5  # the command's own CPU and its ended orphan's
    assert outcome["peak"] >= 120 * 2**20
    assert subprocess.run(["pgrep", "-u", str(NOBODY), "-f", "sleep 300"], capture_output=True).returncode == 1
