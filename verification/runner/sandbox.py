"""A fresh bubblewrap sandbox for every single run of untrusted code.

Layout inside the sandbox: the runtime (the worker's Python environment and ``/usr``) and the
implementation are bound read-only at their host paths or at ``/impl``; ``/tmp`` is a size-capped tmpfs;
in process mode ``/inputs`` is the run's staged hidden inputs (read-only) and ``/outputs`` a
size-capped tmpfs that is streamed back as a tar when the run ends. Nothing else of the host is visible.

Privileges: bwrap runs as root with new mount, PID, network, IPC, UTS and cgroup namespaces and
every capability dropped except SETUID/SETGID/SETPCAP/KILL, which only the trusted launcher (a
``/bin/sh`` script, ``LAUNCHER``) uses to start the untrusted command as uid/gid 65534 through
``setpriv`` with an empty bounding set and no_new_privs. The untrusted code therefore runs as a real,
unprivileged host uid, cannot signal or trace the launcher (uid 0), and no user namespace is created
(which would make it root-mapped). The launcher waits for the command, then reports from inside the
sandbox, where it is trusted: how many processes the command left behind and the network namespace's
counters. When bwrap's PID 1 exits, the kernel kills everything left in the PID namespace; the runner
also kills whatever is left in the run's cgroup, so no process survives a run.

Between ``setpriv`` and the command, seccomp.py's installer filters privileged and namespace system
calls: the runner answers them with EPERM and counts them (``RunOutcome.privileged_calls``), or the
outcome names the category as ``unobserved`` when the filter could not be installed.

When the runner is not root (an engineer's laptop) bwrap creates a user namespace instead and the
code runs as the invoking user mapped into it; everything else is the same.

Limits: wall clock (the runner kills the sandbox), memory and process count through cgroup v1 memory
and pids controllers when the host allows creating cgroups (else RLIMIT_AS on the address space of
each process and RLIMIT_NPROC), RLIMIT_FSIZE for file size, RLIMIT_NOFILE for open files, tmpfs sizes
for scratch and outputs, RLIMIT_CORE 0.

Fail closed: if bwrap is missing or the sandbox cannot be set up, ``SandboxError`` is raised and the
run is an infrastructure error; nothing is ever run unsandboxed.
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import io
import os
import re
import resource
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from . import seccomp
from .cgroups import Cgroups
from .limits import Limits

SANDBOX_UID = 65534
SANDBOX_GID = 65534
IMPL_MOUNT = "/impl"
INPUTS_MOUNT = "/inputs"
OUTPUTS_MOUNT = "/outputs"
SCRATCH_MOUNT = "/tmp"

# Exit statuses the launcher uses for its own failures (chosen outside the usual command range).
LAUNCHER_SETUP_FAILED = 125

LAUNCHER = r"""
report_fd=3
setpriv --reuid=%(uid)d --regid=%(gid)d --clear-groups --inh-caps=-all --bounding-set=-all \
    --no-new-privs -- "$@" 3>&- 4>&- 5>&-
rc=$?
left=0
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  if [ "$p" != "$$" ] && [ "$p" != 1 ]; then left=$((left+1)); fi
done
echo "leftover $left" >&$report_fd
if [ "$left" != 0 ]; then kill -9 -1 2>/dev/null; fi  # before collecting outputs
while IFS= read -r line; do
  case $line in Ip:*|Icmp:*|Tcp:*|Udp:*) echo "$line" >&$report_fd;; esac
done < /proc/net/snmp
if [ -r /proc/net/snmp6 ]; then
  while read -r name value; do
    case $name in Ip6OutNoRoutes|Udp6OutDatagrams|Icmp6OutEchos) echo "snmp6 $name $value" >&$report_fd;; esac
  done < /proc/net/snmp6
fi
if [ -d %(outputs)s ]; then
  for f in %(outputs)s/* %(outputs)s/.[!.]*; do
    if [ -e "$f" ]; then tar -C %(outputs)s -cf - . >&4 2>/dev/null; break; fi
  done
fi
exit $rc
""" % {"uid": SANDBOX_UID, "gid": SANDBOX_GID, "outputs": OUTPUTS_MOUNT}


# Without root there are no cgroups, and nothing outside the sandbox sees the command's resource
# usage: bwrap's PID-namespace init does not pass it up. So on non-root hosts a small supervisor, run
# by the runtime's own Python, starts the command, collects its rusage with wait4 (and that of
# descendants orphaned to it, as a child subreaper, that have ended) and reports it on the launcher's
# report fd, which it keeps from the command (Python fds are not inherited across exec). It shares the
# command's uid, so these figures are not protected from the command: root hosts never use it.
SUPERVISOR = r"""
import ctypes, os, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
for fd in (3, 4, 5):
    try:
        os.set_inheritable(fd, False)
    except OSError:
        pass
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    except OSError as error:
        os.write(2, ("cannot start %s: %s\n" % (sys.argv[1], error)).encode())
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
cpu, peak = usage.ru_utime + usage.ru_stime, usage.ru_maxrss
while True:  # orphans that already ended; live ones are the launcher's to count and kill
    try:
        orphan, _, more = os.wait4(-1, os.WNOHANG)
    except ChildProcessError:
        break
    if orphan == 0:
        break
    cpu, peak = cpu + more.ru_utime + more.ru_stime, max(peak, more.ru_maxrss)
os.write(3, b"rusage %.6f %d\n" % (cpu, peak))
code = os.waitstatus_to_exitcode(status)
os._exit(code if code >= 0 else 128 - code)
"""


class SandboxError(RuntimeError):
    """The sandbox could not be created: an infrastructure error, never a reason to run unsandboxed."""


@dataclass(frozen=True)
class Mount:
    host: Path
    sandbox: str


@dataclass
class SandboxSpec:
    command: Sequence[str]
    implementation: Path
    runtime_paths: Sequence[Path]
    limits: Limits = field(default_factory=Limits)
    inputs: Path | None = None
    with_outputs: bool = False
    env: dict[str, str] = field(default_factory=dict)
    devices: Sequence[str] = ()  # e.g. /dev/nvidia0, /dev/nvidiactl, /dev/nvidia-uvm on GPU hosts
    workdir: str = IMPL_MOUNT
    # The runtime's Python, which measures CPU time and peak memory where no cgroup can (see SUPERVISOR).
    supervisor_python: str | None = None
    # Refuse and count privileged and namespace system calls (seccomp.py). Off only to measure its cost.
    observe_privileged_calls: bool = True


@dataclass
class RunOutcome:
    exit_code: int | None
    wall_seconds: float
    cpu_seconds: float | None
    peak_memory_bytes: int | None
    stdout: bytes
    stderr: bytes
    outputs_tar: bytes
    limit_broken: str | None  # "timeout", "memory", "processes", "file size", ...
    blocked: list[str]
    leftover_processes: int
    # What the sandbox saw the command attempt, by category (criteria.SANDBOX_CATEGORIES): counts of
    # network attempts, of processes left running and of privileged calls refused. Only categories
    # seen are present.
    violations: dict[str, int] = field(default_factory=dict)
    # The privileged calls refused, by system call name (the command chose them, like the counts).
    privileged_calls: dict[str, int] = field(default_factory=dict)
    # Categories this run could not observe (seccomp user notification refused, say): absent from
    # ``violations`` because nobody looked, not because nothing happened.
    unobserved: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.limit_broken is None


PR_SET_CHILD_SUBREAPER = 36
_adopting_orphans = False


def orphans_adopt() -> bool:
    """Make this process the reaper of its sandboxes' orphans (Linux); True if it now is.

    bwrap's namespace init can outlive the bwrap that started it and is then reparented to PID 1. Where PID 1
    reaps slowly (some container inits do) those zombies still count against the sandbox uid's RLIMIT_NPROC, and
    after a few runs a sandbox cannot fork (EAGAIN: "exited before announcing it was ready"). Adopted, they are
    reaped after every run. Only for a process whose children are all sandboxes (the `speedproof` command), not a
    worker pool that waits for children of its own.
    """
    global _adopting_orphans
    try:
        _adopting_orphans = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        _adopting_orphans = False
    return _adopting_orphans


def _orphans_reap() -> None:
    """Reap adopted sandbox inits that have exited (zombie children of ours named bwrap)."""
    if not _adopting_orphans:
        return
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        name_end = stat.rfind(")")
        state, parent = stat[name_end + 2 :].split()[:2]
        if state == "Z" and int(parent) == me and stat[stat.find("(") + 1 : name_end] == "bwrap":
            try:
                os.waitpid(int(entry.name), os.WNOHANG)
            except ChildProcessError:
                pass


def default_runtime_paths() -> list[Path]:
    """The worker's Python environment: the interpreter's prefix and, for a virtualenv, its base."""
    paths = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.prefix)}
    return sorted(p for p in paths if p.exists())


def runtime_paths_of(python_executable: str) -> list[Path]:
    """Another interpreter's environment (the job's Python when it is not the verifier's own), asked
    of that interpreter: its prefix and base prefix, as written and resolved."""
    try:
        answer = subprocess.run(
            [python_executable, "-I", "-c", "import sys; print(sys.prefix); print(sys.base_prefix)"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError) as error:
        raise SandboxError(f"cannot run the Python {python_executable!r}: {error}") from error
    paths = {variant for line in answer[:2] if line for variant in (Path(line), Path(line).resolve())}
    return sorted(p for p in paths if p.exists())


def bwrap_path() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxError("bubblewrap (bwrap) is not installed: run `apt-get install -y bubblewrap` as root")
    return path


# ---------------------------------------------------------------- bwrap command line


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def build_bwrap_args(
    spec: SandboxSpec,
    launcher_path: Path,
    *,
    supervised: bool = False,
    prefix: Sequence[str] = (),
    binds: Sequence[Mount] = (),
) -> list[str]:
    """bwrap's command line; ``prefix`` runs first inside the sandbox, as the command's uid, and
    execs the rest (the seccomp installer); ``binds`` are further read-only files it needs."""
    limits = spec.limits
    as_root = os.geteuid() == 0
    args = [
        bwrap_path(),
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--info-fd",
        "5",
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]
    if as_root:
        args += [
            "--cap-drop",
            "ALL",
            "--cap-add",
            "CAP_SETUID",
            "--cap-add",
            "CAP_SETGID",
            "--cap-add",
            "CAP_SETPCAP",
            "--cap-add",
            "CAP_KILL",
        ]
    else:
        args += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    args += ["--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev"]
    for name in ("lib", "lib64", "bin", "sbin"):
        target = Path("/") / name
        if target.is_symlink():
            args += ["--symlink", os.readlink(target), f"/{name}"]
        elif target.is_dir():
            args += ["--ro-bind", str(target), f"/{name}"]
    # bwrap creates missing parents of bind targets as 0700; the sandbox's uid must traverse them.
    args += ["--perms", "0755", "--dir", "/etc"]
    for etc_file in ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives"):
        if os.path.exists(etc_file):
            args += ["--ro-bind", etc_file, etc_file]
    created: set[str] = {"/", "/usr", "/proc", "/dev", "/etc", "/tmp"}
    # Scratch first: a runtime that lives under /tmp (a checkout there, say) is bound on top of it,
    # not hidden beneath it.
    args += ["--perms", "1777", "--size", str(limits.scratch_bytes), "--tmpfs", SCRATCH_MOUNT]
    for runtime in spec.runtime_paths:
        target = str(runtime)
        if target.startswith("/usr/") or target == "/usr":
            continue
        for ancestor in _ancestors(target):
            if ancestor not in created:
                args += ["--perms", "0755", "--dir", ancestor]
                created.add(ancestor)
        args += ["--ro-bind", target, target]
        created.add(target)
    for device in spec.devices:
        args += ["--dev-bind", device, device]
    args += ["--ro-bind", str(spec.implementation), IMPL_MOUNT]
    if spec.inputs is not None:
        args += ["--ro-bind", str(spec.inputs), INPUTS_MOUNT]
    if spec.with_outputs:
        args += ["--perms", "0777", "--size", str(limits.outputs_bytes), "--tmpfs", OUTPUTS_MOUNT]
    args += ["--ro-bind", str(launcher_path), "/.launcher.sh"]
    for bind in binds:
        args += ["--ro-bind", str(bind.host), bind.sandbox]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": SCRATCH_MOUNT,
        "TMPDIR": SCRATCH_MOUNT,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        **spec.env,
    }
    for key, value in env.items():
        args += ["--setenv", key, value]
    command = list(spec.command)
    if supervised:
        command = [spec.supervisor_python, "-I", "-S", "-c", SUPERVISOR, *command]
    command = [*prefix, *command]
    args += ["--chdir", spec.workdir, "/bin/sh", "/.launcher.sh", *command]
    return args


_LAUNCHER_FILES: dict[str, Path] = {}
_LAUNCHER_LOCK = threading.Lock()


def _launcher_file(as_root: bool, supervised: bool = False) -> Path:
    key = "root" if as_root else "user-supervised" if supervised else "user"
    with _LAUNCHER_LOCK:
        path = _LAUNCHER_FILES.get(key)
        if path is not None and path.exists():
            return path
        text = LAUNCHER
        if not as_root:  # already the caller's uid, in bwrap's user namespace
            text = re.sub(r"setpriv .*?-- \"\$@\"", '"$@"', text, flags=re.S)
        if supervised:  # the supervisor keeps the report fd and closes it for the command
            text = text.replace('"$@" 3>&- 4>&- 5>&-', '"$@"')
        directory = Path(os.environ.get("SPEEDPROOF_RUNTIME_DIR", "/tmp")) / f"speedproof-launcher-{os.getpid()}"
        directory.mkdir(mode=0o755, exist_ok=True)
        atexit.register(shutil.rmtree, directory, True)
        path = directory / f"launcher-{key}.sh"
        path.write_text(text)
        path.chmod(0o644)
        _LAUNCHER_FILES[key] = path
        return path


# ---------------------------------------------------------------- running


def _installer_python(spec: SandboxSpec) -> str | None:
    """A Python the sandbox can run the seccomp installer with: the job's own (already in the page
    cache), the runner's, or the system's, whichever is visible inside the sandbox."""
    visible = [Path("/usr"), *spec.runtime_paths]
    for python in (spec.supervisor_python, sys.executable, "/usr/bin/python3"):
        usable = python and os.path.isabs(python) and os.access(python, os.X_OK)
        if usable and any(Path(python).is_relative_to(root) for root in visible):
            return python
    return None


def _preexec(
    limits: Limits, cgroup_procs: list[str], have_memory_cgroup: bool, have_pids_cgroup: bool
) -> Callable[[], None]:
    def setup() -> None:
        pid = str(os.getpid())
        for procs in cgroup_procs:
            with open(procs, "w") as handle:
                handle.write(pid)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if not have_memory_cgroup:
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        if not have_pids_cgroup:  # counts all of uid 65534's processes: coarser than a cgroup
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))

    return setup


class SandboxProcess:
    """One sandboxed command. Use as a context manager; ``finish()`` collects the outcome."""

    def __init__(self, spec: SandboxSpec, *, stream: bool = False) -> None:
        _orphans_reap()
        self.spec = spec
        self.stream = stream
        try:
            self._cgroups = Cgroups(spec.limits)
        except OSError as error:
            raise SandboxError(f"cannot set up the run's cgroups: {error}") from error
        as_root = os.geteuid() == 0
        # Root hosts measure with cgroups or not at all: a supervisor there would run as the
        # command's uid, and figures it reports could be forged by the command.
        self._supervised = bool(spec.supervisor_python) and not as_root
        self._watch: seccomp.PrivilegedCallWatch | None = None
        self._unobserved_why = ""
        prefix: list[str] = []
        binds: list[Mount] = []
        try:
            launcher = _launcher_file(as_root, self._supervised)
            if spec.observe_privileged_calls:
                arch, compiled = seccomp.machine(), seccomp.installer_binary()
                python = None if compiled else _installer_python(spec)
                if arch is None:
                    self._unobserved_why = f"not supported on this architecture ({os.uname().machine})"
                elif compiled is None and python is None:
                    self._unobserved_why = (
                        "no C compiler, and no Python visible inside the sandbox, to install the filter"
                    )
                else:
                    self._watch = seccomp.PrivilegedCallWatch(arch)
                    prefix = seccomp.installer_command(arch, python, compiled=compiled is not None)
                    if compiled is not None:
                        binds.append(Mount(compiled, seccomp.INSTALLER_MOUNT))
            args = build_bwrap_args(spec, launcher, supervised=self._supervised, prefix=prefix, binds=binds)
        except BaseException:
            if self._watch is not None:
                self._watch.close()
            self._cgroups.remove()
            raise
        self._report_read, report_write = os.pipe()
        self._tar_read, tar_write = os.pipe()
        self._info_read, info_write = os.pipe()
        self._stderr_chunks: list[bytes] = []
        self._stdout_chunks: list[bytes] = []
        self._tar_chunks: list[bytes] = []
        self._report_chunks: list[bytes] = []
        self._info_chunks: list[bytes] = []
        # When bwrap reports the sandbox ready (just before it starts the launcher) and when the
        # launcher reports back (just after the command ended): the command's own wall time.
        self._ready_at: list[float] = []
        self._ended_at: list[float] = []
        self._supervisor_usage: tuple[float, int] | None = None
        try:
            # The launcher expects the report on fd 3 and the outputs tar on fd 4.
            self.started = time.perf_counter()
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.PIPE if stream else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(3, 4, 5, seccomp.CHANNEL_FD) if self._watch else (3, 4, 5),
                preexec_fn=_preexec_with_fds(
                    _preexec(
                        spec.limits, self._cgroups.procs_files(), self._cgroups.has_memory, self._cgroups.has_pids
                    ),
                    report_write,
                    tar_write,
                    info_write,
                    self._watch.sandbox_fd() if self._watch else None,
                ),
                close_fds=True,
            )
        except Exception as error:
            for fd in (report_write, tar_write, info_write, self._report_read, self._tar_read, self._info_read):
                os.close(fd)
            if self._watch is not None:
                self._watch.close()
            self._cgroups.kill_all()
            self._cgroups.remove()
            raise SandboxError(f"cannot start the sandbox: {error}") from error
        for fd in (report_write, tar_write, info_write):
            os.close(fd)
        if self._watch is not None:
            self._watch.started()
        assert self._process.stderr is not None and self._process.stdout is not None
        sinks = [
            _Sink(self._process.stderr.fileno(), self._stderr_chunks, limit=MAX_CAPTURED_LOG_BYTES),
            _Sink(self._report_read, self._report_chunks, first_at=self._ended_at),
            _Sink(self._tar_read, self._tar_chunks),
            _Sink(self._info_read, self._info_chunks, first_at=self._ready_at),
        ]
        if not stream:
            sinks.append(_Sink(self._process.stdout.fileno(), self._stdout_chunks, limit=MAX_CAPTURED_LOG_BYTES))
        self._readers = [_collect(sinks)]
        self._finished = False

    @property
    def stdin(self) -> IO[bytes]:
        assert self._process.stdin is not None
        return self._process.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self._process.stdout is not None
        return self._process.stdout

    def deadline(self) -> float:
        return self.started + self.spec.limits.wall_seconds

    def poll(self) -> int | None:
        return self._process.poll()

    def finish(self, *, kill: bool = False, timed_out: bool = False, grace_seconds: float | None = None) -> RunOutcome:
        """Wait for the sandbox (killing it at the deadline, or after ``grace_seconds`` once a
        stream's input is closed), tear everything down, measure."""
        limit_broken: str | None = "timeout" if timed_out else None
        if self.stream and self._process.stdin is not None:
            try:
                self._process.stdin.close()
            except OSError:
                pass
        if kill:
            self._kill()
        remaining = max(0.0, self.deadline() - time.perf_counter())
        if grace_seconds is not None:
            remaining = min(remaining, grace_seconds)
        if not self._wait_exit(remaining):
            if grace_seconds is None:
                limit_broken = "timeout"
            self._kill()
            self._process.wait()
        wall = time.perf_counter() - self.started
        leftover_in_cgroup = self._cgroups.kill_all()
        for reader in self._readers:
            reader.join(timeout=5)
        calls = self._privileged_calls()
        if self._ready_at and self._ended_at and not self.stream:
            # From the command's exec where the installer marked it: the installer's own start is
            # the sandbox's cost, not the command's.
            started = calls.exec_at if calls.exec_at is not None else self._ready_at[0]
            wall = self._ended_at[0] - started
        stdout = b"".join(self._stdout_chunks)  # stream mode: the protocol already consumed stdout
        report = b"".join(self._report_chunks).decode("utf-8", "replace")
        leftover, blocked, network_attempts = _parse_launcher_report(report)
        self._supervisor_usage = _parse_supervisor_usage(report) if self._supervised else None
        if "leftover" not in report and leftover_in_cgroup:
            # No word from the launcher (the sandbox was killed): what the cgroup still held.
            leftover = leftover_in_cgroup
        if leftover:
            blocked.append(f"{leftover} process(es) still running when the run ended were killed")
        exit_code = self._process.returncode
        if exit_code is not None and exit_code < 0:
            exit_code = 128 - exit_code
        if limit_broken is None:
            limit_broken = self._limit_from_evidence(exit_code)
        if limit_broken is not None:
            blocked.append(f"limit enforced: {limit_broken}")
        if calls.total:
            blocked.append(f"privileged calls: {calls.total} system call(s) refused with EPERM")
        if not calls.observed:
            blocked.append(f"privileged calls: not observed in this run ({calls.problem})")
        outcome = RunOutcome(
            exit_code=exit_code,
            wall_seconds=wall,
            cpu_seconds=self._cpu_seconds(),
            peak_memory_bytes=self._peak_memory_bytes(),
            stdout=stdout,
            stderr=b"".join(self._stderr_chunks),
            outputs_tar=b"".join(self._tar_chunks),
            limit_broken=limit_broken,
            blocked=blocked,
            leftover_processes=leftover,
            violations={
                category: count
                for category, count in (
                    ("network", network_attempts),
                    ("leftover_processes", leftover),
                    (seccomp.CATEGORY, calls.total),
                )
                if count
            },
            privileged_calls=calls.counts,
            unobserved=[] if calls.observed else [seccomp.CATEGORY],
        )
        self._close()
        return outcome

    def _privileged_calls(self) -> seccomp.PrivilegedCalls:
        if self._watch is None:
            why = self._unobserved_why or "the sandbox was asked not to observe them"
            return seccomp.PrivilegedCalls(observed=False, problem=why)
        calls, self._watch = self._watch.finish(), None
        return calls

    def _cpu_seconds(self) -> float | None:
        measured = self._cgroups.cpu_seconds()
        if measured is None and self._supervisor_usage is not None:
            measured = self._supervisor_usage[0]
        return measured

    def _peak_memory_bytes(self) -> int | None:
        """The cgroup's peak (the whole tree at once) where there is one; else, from the supervisor,
        the peak RSS of the command's largest process (``ru_maxrss``): the same measure for baseline
        and candidate, so comparisons hold, but not a sum over a tree of processes."""
        measured = self._cgroups.peak_memory()
        if measured is None and self._supervisor_usage is not None:
            measured = self._supervisor_usage[1]
        return measured

    def _wait_exit(self, timeout: float) -> bool:
        """Wait for bwrap to exit, up to ``timeout``. A pidfd wakes us the moment it exits, where
        ``Popen.wait(timeout)`` would poll with sleeps of up to 50 ms."""
        if self._process.poll() is not None:
            return True
        try:
            pidfd = os.pidfd_open(self._process.pid)
        except (AttributeError, OSError):
            try:
                self._process.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        try:
            select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)
        try:
            self._process.wait(timeout=0.5 if self._process.poll() is None else None)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _limit_from_evidence(self, exit_code: int | None) -> str | None:
        if self._cgroups.memory_limit_hit():
            return "memory"
        if self._cgroups.pids_limit_hit():
            return "processes"
        if exit_code == 128 + signal.SIGXFSZ:
            return "file size"
        if exit_code not in (0, None):
            # Python and others ignore SIGXFSZ and fail with EFBIG/ENOSPC instead. The evidence is the
            # command's own stderr, so it only ever names the reason for a failure, never causes one.
            tail = b"".join(self._stderr_chunks)[-4096:]
            if b"File too large" in tail or b"[Errno 27]" in tail:
                return "file size"
            if b"No space left on device" in tail or b"[Errno 28]" in tail:
                return "scratch or output space"
        if (
            not self._cgroups.has_memory
            and exit_code not in (0, None)
            and (
                b"MemoryError" in b"".join(self._stderr_chunks)[-4096:]
                or b"Cannot allocate memory" in b"".join(self._stderr_chunks)[-4096:]
            )
        ):
            return "memory"  # RLIMIT_AS fallback: allocations fail instead of an OOM kill
        return None

    def _kill(self) -> None:
        try:
            self._process.kill()
        except ProcessLookupError:
            pass
        self._cgroups.kill_all()

    def _close(self) -> None:
        if self._finished:
            return
        self._finished = True
        for stream in (self._process.stdin, self._process.stdout, self._process.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        for fd in (self._report_read, self._tar_read, self._info_read):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._watch is not None:
            self._watch.finish()
            self._watch = None
        self._cgroups.remove()
        _orphans_reap()

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._finished:
            if self._process.poll() is None:
                self._kill()
            try:
                self.finish()
            except Exception:
                self._close()


def _preexec_with_fds(
    inner: Callable[[], None], report_fd: int, tar_fd: int, info_fd: int, channel_fd: int | None = None
) -> Callable[[], None]:
    def setup() -> None:
        # Put the pipes at the fixed numbers the launcher and bwrap use (via high numbers, so that
        # one cannot overwrite another); Popen keeps 3, 4, 5 (and 6) open because they are pass_fds.
        sources = (report_fd, tar_fd, info_fd) if channel_fd is None else (report_fd, tar_fd, info_fd, channel_fd)
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 200) for fd in sources]
        for target, fd in zip((3, 4, 5, seccomp.CHANNEL_FD), high):
            os.dup2(fd, target)
        for fd in high:
            os.close(fd)
        inner()  # last: it lowers RLIMIT_NOFILE below the high numbers used above

    return setup


MAX_CAPTURED_LOG_BYTES = 1 << 20


@dataclass
class _Sink:
    fd: int
    chunks: list[bytes]
    first_at: list[float] | None = None  # gets the arrival time of the first byte
    limit: int | None = None  # keep only the last ``limit`` bytes (logs can be gigabytes)
    kept: int = 0


def _collect(sinks: list[_Sink]) -> threading.Thread:
    """One thread reads every pipe of a sandbox to its end (one thread per pipe costs more to start
    than a no-op run takes)."""

    def run() -> None:
        selector = selectors.DefaultSelector()
        for sink in sinks:
            selector.register(sink.fd, selectors.EVENT_READ, sink)
        try:
            while selector.get_map():
                for key, _ in selector.select():
                    sink = key.data
                    try:
                        chunk = os.read(sink.fd, 65536)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        selector.unregister(sink.fd)
                        continue
                    if sink.first_at is not None and not sink.first_at:
                        sink.first_at.append(time.perf_counter())
                    sink.chunks.append(chunk)
                    sink.kept += len(chunk)
                    while sink.limit is not None and sink.kept > sink.limit and len(sink.chunks) > 1:
                        sink.kept -= len(sink.chunks.pop(0))
        finally:
            selector.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _parse_supervisor_usage(report: str) -> tuple[float, int] | None:
    """(CPU seconds, peak RSS bytes) from the supervisor's line; None if it never wrote one."""
    match = re.search(r"^rusage (\d+(?:\.\d+)?) (\d+)$", report, flags=re.M)
    if match is None:
        return None
    return float(match.group(1)), int(match.group(2)) * 1024  # ru_maxrss is in KiB on Linux


def _parse_launcher_report(report: str) -> tuple[int, list[str], int]:
    """(processes left running, blocked-action lines, network attempts) from the launcher's report.

    Network attempts are read from the sandbox's own network namespace, which has nothing but an
    isolated loopback: TCP connections opened, UDP datagrams and ICMP echo requests sent (IPv4 and
    IPv6), and packets that found no route out. Python, numpy and the launcher send none of these, so
    any count is the command's own doing (a DNS lookup, for one, is UDP to a resolver on loopback)."""
    leftover = 0
    blocked: list[str] = []
    match = re.search(r"leftover (\d+)", report)
    if match:
        leftover = int(match.group(1))
    tables: dict[str, dict[str, int]] = {}
    lines = [line for line in report.splitlines() if re.match(r"^(Ip|Icmp|Tcp|Udp):", line)]
    for header, values in zip(lines[0::2], lines[1::2]):
        name = header.split(":", 1)[0]
        keys = header.split()[1:]
        numbers = values.split()[1:]
        tables[name] = {k: int(v) for k, v in zip(keys, numbers) if v.lstrip("-").isdigit()}
    ipv6 = {name: int(value) for name, value in re.findall(r"^snmp6 (\w+) (\d+)$", report, flags=re.M)}
    no_route = tables.get("Ip", {}).get("OutNoRoutes", 0) + ipv6.get("Ip6OutNoRoutes", 0)
    tcp_opens = tables.get("Tcp", {}).get("ActiveOpens", 0)  # the TCP MIB counts IPv4 and IPv6
    udp_out = tables.get("Udp", {}).get("OutDatagrams", 0) + ipv6.get("Udp6OutDatagrams", 0)
    echoes = tables.get("Icmp", {}).get("OutEchos", 0) + ipv6.get("Icmp6OutEchos", 0)
    if no_route:
        blocked.append(f"network: {no_route} outbound packet(s)/connection(s) had no route (no network in the sandbox)")
    if tcp_opens:
        blocked.append(f"network: {tcp_opens} TCP connection attempt(s), loopback only inside the sandbox")
    if udp_out:
        blocked.append(f"network: {udp_out} UDP datagram(s), loopback only inside the sandbox")
    if echoes:
        blocked.append(f"network: {echoes} ICMP echo request(s), loopback only inside the sandbox")
    return leftover, blocked, no_route + tcp_opens + udp_out + echoes


def read_outputs_tar(data: bytes, max_total_bytes: int) -> dict[str, bytes]:
    """Regular files from the launcher's tar of ``/outputs``; links and oddities are ignored."""
    files: dict[str, bytes] = {}
    if not data:
        return files
    total = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive.getmembers():
            if not member.isfile():
                continue
            name = os.path.normpath(member.name).lstrip("./")
            if name.startswith("..") or not name:
                continue
            total += member.size
            if total > max_total_bytes:
                break
            extracted = archive.extractfile(member)
            if extracted is not None:
                files[name] = extracted.read()
    return files
