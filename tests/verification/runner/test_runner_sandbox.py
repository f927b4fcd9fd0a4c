"""The bwrap sandbox, for real: isolation, limits, and teardown."""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import pytest
from runner_testlib import processes_matching

from verification.runner import cgroups
from verification.runner import sandbox as sb

# Runs real sandboxes (uid 65534, whose RLIMIT_NPROC is shared machine-wide): `make check` runs these one at a time.
pytestmark = pytest.mark.sandbox

PYTHON = sys.executable


def _run(tmp_path: Path, code: str, **limits) -> sb.RunOutcome:
    implementation = tmp_path / "impl"
    implementation.mkdir(exist_ok=True)
    implementation.chmod(0o755)
    script = implementation / "main.py"
    script.write_text(code)
    script.chmod(0o644)
    spec = sb.SandboxSpec(
        command=[PYTHON, "main.py"],
        implementation=implementation,
        runtime_paths=sb.default_runtime_paths(),
        limits=sb.Limits(**limits),
        with_outputs=True,
    )
    with sb.SandboxProcess(spec) as process:
        return process.finish()


def test_code_runs_unprivileged_without_capabilities(tmp_path):
    outcome = _run(
        tmp_path,
        "import os\nprint(os.getuid(), os.getgid(), os.getgroups())\n"
        "status = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
        "print(status['CapEff'].strip(), status['CapBnd'].strip(), status['NoNewPrivs'].strip())\n",
    )
    assert outcome.ok, outcome.stderr
    lines = outcome.stdout.decode().splitlines()
    assert lines[0] in ("65534 65534 []", "65534 65534 [65534]")
    effective, bounding, no_new_privs = lines[1].split()
    assert int(effective, 16) == 0 and int(bounding, 16) == 0 and no_new_privs == "1"


@pytest.mark.skipif(os.geteuid() != 0, reason="root hosts only")
def test_root_hosts_never_let_code_with_the_commands_uid_report_measurements(tmp_path):
    implementation = tmp_path / "impl"
    implementation.mkdir()
    implementation.chmod(0o755)
    (implementation / "main.py").write_text("import os\nprint(open(f'/proc/{os.getppid()}/comm').read())\n")
    (implementation / "main.py").chmod(0o644)
    spec = sb.SandboxSpec(
        command=[PYTHON, "main.py"],
        implementation=implementation,
        runtime_paths=sb.default_runtime_paths(),
        supervisor_python=PYTHON,
    )
    with sb.SandboxProcess(spec) as process:
        outcome = process.finish()
    assert outcome.ok, outcome.stderr
    assert outcome.stdout.decode().strip() == "sh"  # started by the launcher, not by a supervisor


def test_environment_is_cleared(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEEDPROOF_SECRET_CANARY", "s3cret")
    outcome = _run(tmp_path, "import os\nprint(os.environ.get('SPEEDPROOF_SECRET_CANARY'))\n")
    assert outcome.stdout.decode().strip() == "None"


def test_socket_attempts_are_blocked_and_reported(tmp_path):
    outcome = _run(
        tmp_path,
        """
import socket
for address in [("198.51.100.7", 443), ("8.8.8.8", 53)]:
    try:
        socket.create_connection(address, timeout=2)
        print("connected")
    except OSError as error:
        print("blocked", error.errno)
""",
    )
    assert outcome.stdout.decode().split() == ["blocked", "101", "blocked", "101"]  # ENETUNREACH
    assert any(action.startswith("network:") for action in outcome.blocked)


def test_host_paths_of_hidden_inputs_and_baseline_are_unreadable(tmp_path):
    secret_dir = tmp_path / "hidden"
    secret_dir.mkdir()
    (secret_dir / "answer.json").write_text("42")
    secret_dir.chmod(0o755)
    (secret_dir / "answer.json").chmod(0o644)  # readable to anyone *on the host*
    baseline = Path(__file__).resolve().parents[3] / "examples" / "mlp" / "package" / "implementation" / "serve.py"
    outcome = _run(
        tmp_path,
        f"""
import os
for path in [{str(secret_dir / "answer.json")!r}, {str(baseline)!r}, "/etc/passwd", "/proc/1/root/etc/hostname"]:
    try:
        open(path).read()
        print("read", path)
    except OSError as error:
        print("denied", type(error).__name__)
try:
    open("/impl/new", "w")
except OSError as error:
    print("denied", type(error).__name__)
""",
    )
    lines = outcome.stdout.decode().split("\n")
    assert not any(line.startswith("read") for line in lines), lines
    assert len([line for line in lines if line.startswith("denied")]) == 5


def test_nothing_is_left_running_after_a_run(tmp_path):
    marker = f"speedproof-orphan-{uuid.uuid4().hex[:8]}"
    outcome = _run(
        tmp_path,
        f"""
import subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: time.sleep(0.05)", "{marker}"],
                 start_new_session=True)
subprocess.Popen(["sh", "-c", "sleep 600 # {marker}"])
print("spawned")
""",
    )
    assert outcome.ok
    assert outcome.leftover_processes >= 2
    assert any("still running" in action for action in outcome.blocked)
    time.sleep(0.1)
    assert processes_matching(marker) == []


def test_inputs_are_read_only_and_limited_to_the_run(tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir(mode=0o755)
    (staged / "a.json").write_text("1")
    (staged / "a.json").chmod(0o644)
    implementation = tmp_path / "impl"
    implementation.mkdir(mode=0o755)
    spec = sb.SandboxSpec(
        command=["/bin/sh", "-c", "ls /inputs; echo x > /inputs/a.json; echo y > /inputs/b.json"],
        implementation=implementation,
        runtime_paths=sb.default_runtime_paths(),
        inputs=staged,
    )
    with sb.SandboxProcess(spec) as process:
        outcome = process.finish()
    assert outcome.stdout.decode().split() == ["a.json"]
    assert outcome.stderr.decode().count("Read-only file system") == 2
    assert (staged / "a.json").read_text() == "1" and not (staged / "b.json").exists()


def test_timeout_kills_the_run_promptly(tmp_path):
    started = time.perf_counter()
    outcome = _run(tmp_path, "import time\ntime.sleep(60)\n", wall_seconds=1.0)
    assert outcome.limit_broken == "timeout"
    assert time.perf_counter() - started < 5


def test_memory_blow_up_is_stopped_at_the_cap(tmp_path):
    outcome = _run(
        tmp_path, "blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))\n", memory_bytes=128 << 20
    )
    assert not outcome.ok
    assert outcome.limit_broken == "memory"
    assert outcome.peak_memory_bytes is not None and outcome.peak_memory_bytes <= (128 << 20) + (4 << 20)


def test_fork_bomb_is_contained(tmp_path):
    marker = f"bomb{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    outcome = _run(
        tmp_path,
        f"""
import os, time
children = 0
for _ in range(500):
    try:
        if os.fork() == 0:
            time.sleep(30)  # {marker}
            os._exit(0)
        children += 1
    except OSError:
        break
print(children)
""",
        max_processes=16,
        wall_seconds=10,
    )
    assert outcome.limit_broken == "processes"
    assert int(outcome.stdout.decode().strip()) < 16
    assert time.perf_counter() - started < 8
    assert processes_matching(marker) == []


def test_huge_files_are_refused(tmp_path):
    outcome = _run(
        tmp_path,
        """
with open("/outputs/huge.bin", "wb") as handle:
    for _ in range(64):
        handle.write(b"x" * (1 << 20))
""",
        max_file_bytes=4 << 20,
    )
    assert not outcome.ok
    assert outcome.limit_broken == "file size"


def test_scratch_space_is_capped(tmp_path):
    outcome = _run(
        tmp_path,
        """
import errno
try:
    with open("/tmp/fill.bin", "wb") as handle:
        for _ in range(64):
            handle.write(b"x" * (1 << 20))
            handle.flush()
    print("wrote everything")
except OSError as error:
    print("refused", errno.errorcode[error.errno])
""",
        scratch_bytes=8 << 20,
    )
    assert outcome.stdout.decode().strip() == "refused ENOSPC"


def test_missing_bubblewrap_fails_closed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap to be found
    with pytest.raises(sb.SandboxError, match="bubblewrap"):
        _run(tmp_path, "print('ran without a sandbox')\n")


def test_cgroups_are_removed_after_runs_and_failed_starts(tmp_path, monkeypatch):
    parents = [p for p in (cgroups._cgroup_parent(c) for c in ("memory", "pids", "cpuacct")) if p is not None]
    if not parents:
        pytest.skip("this host does not allow cgroups; RLIMIT_AS is used instead")

    def ours() -> list[str]:
        # Cgroups are named after the creating process, so parallel test runs cannot interfere.
        prefix = f"run-{os.getpid()}-"
        return [p.name for parent in parents for p in parent.iterdir() if p.name.startswith(prefix)]

    _run(tmp_path, "print('x')\n")
    _run(tmp_path, "import time\ntime.sleep(5)\n", wall_seconds=0.5)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(sb.SandboxError):
        _run(tmp_path, "print('x')\n")
    assert ours() == []
