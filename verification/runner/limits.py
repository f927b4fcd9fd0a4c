"""What one sandboxed process tree may use; the sandbox enforces them with rlimits and its cgroups."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 120.0
    memory_bytes: int = 2 << 30
    max_processes: int = 64
    max_file_bytes: int = 256 << 20
    max_open_files: int = 256
    scratch_bytes: int = 256 << 20
    outputs_bytes: int = 256 << 20
