"""Per-run cgroups (v1): memory cap and peak, process count, CPU time of a sandbox's whole tree."""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from pathlib import Path

from .limits import Limits

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT_NAME = "speedproof-sandbox"


class Cgroups:
    """Per-run cgroups in the memory, pids and cpuacct v1 hierarchies, when the host lets us."""

    def __init__(self, limits: Limits) -> None:
        self.name = f"run-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.paths: dict[str, Path] = {}
        for controller in ("memory", "pids", "cpuacct"):
            parent = _cgroup_parent(controller)
            if parent is None:
                continue
            path = parent / self.name
            try:
                path.mkdir()
            except OSError:
                continue
            self.paths[controller] = path
        try:
            if "memory" in self.paths:
                _write(self.paths["memory"] / "memory.limit_in_bytes", str(limits.memory_bytes))
                swap = self.paths["memory"] / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    _write(swap, str(limits.memory_bytes))
            if "pids" in self.paths:
                _write(self.paths["pids"] / "pids.max", str(limits.max_processes))
        except OSError:
            self.remove()
            raise

    @property
    def has_memory(self) -> bool:
        return "memory" in self.paths

    @property
    def has_pids(self) -> bool:
        return "pids" in self.paths

    def procs_files(self) -> list[str]:
        return [str(p / "cgroup.procs") for p in self.paths.values()]

    def peak_memory(self) -> int | None:
        if not self.has_memory:
            return None
        return int(_read(self.paths["memory"] / "memory.max_usage_in_bytes"))

    def cpu_seconds(self) -> float | None:
        if "cpuacct" not in self.paths:
            return None
        return int(_read(self.paths["cpuacct"] / "cpuacct.usage")) / 1e9

    def memory_limit_hit(self) -> bool:
        if not self.has_memory:
            return False
        return _oom_killed(self.paths["memory"])

    def pids_limit_hit(self) -> bool:
        if not self.has_pids:
            return False
        events = self.paths["pids"] / "pids.events"
        if not events.exists():
            return False
        match = re.search(r"max (\d+)", _read(events))
        return bool(match and int(match.group(1)) > 0)

    def kill_all(self) -> int:
        """Kill every process still in the run's cgroups; returns how many were found."""
        killed = 0
        for _ in range(500):
            pids = self._pids()
            if not pids:
                return killed
            for pid in pids:
                try:
                    alive = not _is_zombie(pid)
                    os.kill(pid, signal.SIGKILL)
                    killed += alive
                except ProcessLookupError:
                    pass
            time.sleep(0.0005)  # exiting tasks leave the cgroup within a few hundred microseconds
        return killed

    def _pids(self) -> set[int]:
        pids: set[int] = set()
        for path in self.paths.values():
            try:
                pids |= {int(x) for x in _read(path / "cgroup.procs").split()}
            except OSError:
                pass
        return pids

    def remove(self) -> None:
        for path in self.paths.values():
            for _ in range(100):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)
        self.paths = {}


def _is_zombie(pid: int) -> bool:
    try:
        stat = _read(Path(f"/proc/{pid}/stat"))
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _oom_killed(memory_path: Path) -> bool:
    match = re.search(r"oom_kill (\d+)", _read(memory_path / "memory.oom_control"))
    if match is not None:
        return int(match.group(1)) > 0
    # Kernels before 4.13 lack the counter: a failed charge at the limit is the best evidence.
    return int(_read(memory_path / "memory.failcnt")) > 0


def _cgroup_parent(controller: str) -> Path | None:
    """``<hierarchy>/<our own cgroup>/speedproof-sandbox``, created on first use; None if impossible."""
    hierarchy = CGROUP_ROOT / controller
    if not hierarchy.is_dir() or os.geteuid() != 0:
        return None
    own = "/"
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                own = path
    except OSError:
        return None
    base = hierarchy / own.lstrip("/")
    if not base.is_dir():
        base = hierarchy
    parent = base / CGROUP_PARENT_NAME
    try:
        parent.mkdir(exist_ok=True)
    except OSError:
        return None
    return parent


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _read(path: Path) -> str:
    with open(path) as handle:
        return handle.read()
