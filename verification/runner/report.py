"""The verification report, environment fingerprint, and log scrubbing."""

from __future__ import annotations

import copy
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

RUNNER_VERSION = "1.1.0"
REPORT_FORMAT = 1

# Names whose values must never appear in a report, and shapes of common credentials.
_SECRET_PATTERNS = [
    re.compile(
        r"(?i)\b([A-Z0-9_]*(?:secret|token|password|passwd|api[_-]?key|private[_-]?key|credential)"
        r"[A-Z0-9_]*)\s*([:=])\s*(\"[^\"]*\"|'[^']*'|\S+)"
    ),
    re.compile(r"(?i)\b(authorization\s*:\s*)(bearer|basic)\s+\S+"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\b(?:sk|pk|rk|whsec)_(?:live|test)_[0-9A-Za-z]{8,}\b"),
    re.compile(r"\bgh[pousr]_[0-9A-Za-z]{20,}\b"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
]
REDACTED = "[REDACTED]"
MAX_LOG_CHARS = 2000


def scrub(text: str, extra_secrets: Sequence[str] = ()) -> str:
    """Remove credentials from a log and truncate it (keeping the end, where errors are)."""
    for secret in extra_secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        if pattern.groups >= 3:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
        elif pattern.groups == 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
        else:
            text = pattern.sub(REDACTED, text)
    if len(text) > MAX_LOG_CHARS:
        text = "[truncated] ..." + text[-MAX_LOG_CHARS:]
    return text


FINGERPRINT_CACHE_SECONDS = 300.0
_fingerprints: dict[str | None, tuple[float, dict[str, Any]]] = {}


def environment_fingerprint(python_executable: str | None = None) -> dict[str, Any]:
    """The host's fingerprint, re-read at most every ``FINGERPRINT_CACHE_SECONDS``: reading it runs
    ``bwrap --version`` and ``nvidia-smi``, which would otherwise sit on every verification's path."""
    now = time.monotonic()
    cached = _fingerprints.get(python_executable)
    if cached is not None and now - cached[0] < FINGERPRINT_CACHE_SECONDS:
        return copy.deepcopy(cached[1])
    fingerprint = _read_fingerprint(python_executable)
    _fingerprints[python_executable] = (now, fingerprint)
    return copy.deepcopy(fingerprint)


def _read_fingerprint(python_executable: str | None) -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages = {}
    for name in ("numpy", "matplotlib", "cryptography"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    fingerprint: dict[str, Any] = {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "runtime_python": python_executable or sys.executable,
        "packages": packages,
        "bubblewrap": _bwrap_version(),
        "gpu": _gpu(),
    }
    return fingerprint


def _bwrap_version() -> str | None:
    path = shutil.which("bwrap")
    if not path:
        return None
    try:
        return subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _gpu() -> list[dict[str, str]] | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for line in out.strip().splitlines():
        name, _, driver = line.partition(",")
        gpus.append({"model": name.strip(), "driver": driver.strip()})
    return gpus or None


@dataclass
class Report:
    decision: str  # PASS | FAIL | INCONCLUSIVE | ERROR
    reason: str
    criteria: list[dict[str, Any]]
    tier: dict[str, Any] | None
    tiers: list[dict[str, Any]]
    correctness: dict[str, Any]
    runs: dict[str, Any]
    measurements: list[dict[str, Any]]
    sha256: dict[str, str | None]
    environment: dict[str, Any]
    timings: dict[str, Any]
    blocked_actions: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    anti_gaming: dict[str, Any]
    settings: dict[str, Any]
    criteria_spec: dict[str, Any]
    package: dict[str, Any]
    runner_version: str = RUNNER_VERSION
    report_format: int = REPORT_FORMAT
    certificate: dict[str, Any] | None = None
    # {"policy": {category: action}, "observed": [...]} (violations.py)
    sandbox_violations: dict[str, Any] = field(default_factory=dict)
    reason_code: str | None = None  # a stable name for the reason where it has one ("sandbox_violation")
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 2}.get(self.decision, 3)

    @property
    def payout_fraction(self) -> float:
        if self.decision != "PASS":
            return 0.0
        return float(self.tier["fraction"]) if self.tier else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "report_format": self.report_format,
            "runner_version": self.runner_version,
            "decision": self.decision,
            "reason": self.reason,
            "reason_code": self.reason_code,
            "payout_fraction": self.payout_fraction,
            "tier": self.tier,
            "tiers": self.tiers,
            "criteria": self.criteria,
            "correctness": self.correctness,
            "anti_gaming": self.anti_gaming,
            "runs": self.runs,
            "settings": self.settings,
            "criteria_spec": self.criteria_spec,
            "package": self.package,
            "sha256": self.sha256,
            "environment": self.environment,
            "timings": self.timings,
            "sandbox_violations": self.sandbox_violations,
            "blocked_actions": self.blocked_actions,
            "logs": self.logs,
            "measurements": self.measurements,
            "certificate": self.certificate,
            **self.extra,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=_json_default)

    def write(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
