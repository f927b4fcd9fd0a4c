"""What a verification host does with one run: fetch, check, measure, sign, report back.

Plain Python, no Django: a host holds a signing key and a broker address, never database or
payment credentials. It learns everything through the run's token-scoped internal API.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runner import api as runner
from .runner.certificate import load_private_key, sign_report

HEARTBEAT_SECONDS = 10.0
PROGRESS_MIN_INTERVAL_SECONDS = 1.0
HTTP_TIMEOUT_SECONDS = 60


class RunRejected(Exception):
    """The platform refused this run's token: the run was requeued elsewhere, finished or expired."""


@dataclass(frozen=True)
class HostConfig:
    signing_key_path: Path
    work_dir: Path | None = None
    python_executable: str | None = None
    devices: tuple[str, ...] = ()

    @classmethod
    def from_environment(cls) -> "HostConfig":
        key = os.environ.get("VERIFICATION_SIGNING_KEY_PATH")
        if not key:
            raise RuntimeError("VERIFICATION_SIGNING_KEY_PATH is not set on this verification host")
        work_dir = os.environ.get("VERIFICATION_WORK_DIR")
        return cls(
            signing_key_path=Path(key),
            work_dir=Path(work_dir) if work_dir else None,
            python_executable=os.environ.get("VERIFICATION_PYTHON") or None,
            # e.g. "/dev/nvidia0,/dev/nvidiactl,/dev/nvidia-uvm" on a GPU host
            devices=tuple(filter(None, os.environ.get("VERIFICATION_DEVICES", "").split(","))),
        )


class PlatformClient:
    def __init__(self, base_url: str, run_id: int, token: str):
        self.base = f"{base_url.rstrip('/')}/internal/verification/runs/{run_id}"
        self.token = token

    def _request(self, method: str, url: str, body: dict | None = None) -> urllib.request.Request:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"RunToken {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        return request

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            with urllib.request.urlopen(self._request(method, f"{self.base}/{path}", body), timeout=HTTP_TIMEOUT_SECONDS) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            if error.code in (403, 409):
                raise RunRejected(f"{path}: {error.code}") from error
            detail = error.read()[:500].decode(errors="replace")
            raise RuntimeError(f"{path}: the platform answered {error.code}: {detail}") from error

    def download(self, url: str, destination: Path, sha256: str) -> None:
        digest = hashlib.sha256()
        with urllib.request.urlopen(self._request("GET", url), timeout=HTTP_TIMEOUT_SECONDS) as response, destination.open("wb") as out:
            for chunk in iter(lambda: response.read(1024 * 1024), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise RuntimeError(f"{destination.name}: sha256 mismatch after download")


class _Heartbeat:
    """Tells the platform the host is alive, with the latest progress, from its own thread.

    The measuring thread only hands progress over, so network calls never sit between two timed runs.
    """

    def __init__(self, client: PlatformClient):
        self.client = client
        self.progress: dict[str, Any] = {}
        self.stopped = threading.Event()
        self.progressed = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.progressed.set()
        self.thread.join(timeout=5)

    def _send(self) -> None:
        try:
            self.client.call("POST", "heartbeat/", {"progress": self.progress})
        except (RunRejected, OSError, RuntimeError):
            pass  # the result post will tell whether the run is still ours

    def _loop(self) -> None:
        while not self.stopped.is_set():
            self.progressed.wait(HEARTBEAT_SECONDS)
            if self.stopped.is_set():
                return
            self.progressed.clear()
            self._send()
            self.stopped.wait(PROGRESS_MIN_INTERVAL_SECONDS)

    def update(self, progress: runner.Progress) -> None:
        self.progress = {
            "phase": progress.phase,
            "runs_done": progress.runs_done,
            "runs_budget": progress.runs_budget,
            "pairs_done": progress.pairs_done,
            "pairs_budget": progress.pairs_budget,
            "estimate": progress.estimate,
            "interval": list(progress.interval) if progress.interval else None,
        }
        self.progressed.set()


def execute_run(*, run_id: int, token: str, base_url: str, config: HostConfig | None = None) -> str:
    """Carry out one run end to end; returns the status the platform recorded."""
    config = config or HostConfig.from_environment()
    signing_key = load_private_key(config.signing_key_path)
    client = PlatformClient(base_url, run_id, token)
    spec = client.call("POST", "start/")
    scratch = Path(tempfile.mkdtemp(prefix=f"speedproof-run-{run_id}-", dir=config.work_dir))
    try:
        files = {
            name: scratch / f"{name}.{artifact.get('archive_format') or 'tar.gz'}"
            for name, artifact in spec["artifacts"].items()
        }
        with ThreadPoolExecutor(max_workers=len(files)) as downloads:
            for finished in [
                downloads.submit(client.download, artifact["url"], files[name], artifact["sha256"])
                for name, artifact in spec["artifacts"].items()
            ]:
                finished.result()
        with _Heartbeat(client) as heartbeat:
            common = dict(
                progress=heartbeat.update, python_executable=config.python_executable, work_dir=scratch,
                devices=config.devices,
            )
            if spec["kind"] == "calibration":
                calibration = runner.calibrate(
                    files["package"], files["hidden_inputs"], spec["criteria"], pairs=spec["budget_pairs"], **common
                )
                report = calibration.report.to_dict()
                report["calibration"] = calibration.to_dict()
            else:
                report = runner.run_verification(
                    files["package"], files["candidate"], files["hidden_inputs"], spec["criteria"],
                    budget=spec["budget_pairs"], secrets=[token], **common,
                ).to_dict()
        report.pop("certificate", None)
        # The certificate names the archives exactly as the platform stores them; the runner's
        # content-tree fingerprints stay in the report beside them.
        report["sha256_trees"] = report.get("sha256")
        report["sha256"] = {
            name: spec["artifacts"][name]["sha256"] if name in spec["artifacts"] else None
            for name in ("package", "candidate", "hidden_inputs")
        }
        certificate = sign_report(report, signing_key)
        body = {"report": report, "certificate": certificate}
    except RunRejected:
        raise
    except Exception as error:  # noqa: BLE001 - anything else is the host's failure, not the candidate's
        try:
            client.call("POST", "failure/", {"reason": f"{type(error).__name__}: {error}"[:1900]})
        except (RunRejected, OSError):
            pass
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return client.call("POST", "result/", _json_safe(body))["status"]


def _json_safe(value: Any) -> Any:
    """Strict JSON for the platform: NaN and infinities become null (the certificate treats them alike)."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
