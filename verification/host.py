"""What a verification host does with one run: fetch, check, measure, sign, report back.

Plain Python, no Django: a host holds a signing key and a broker address, never database or
payment credentials. It learns everything through the run's token-scoped internal API.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runner
from .runner.archive import sha256_of
from .runner.certificate import key_id, load_private_key, sign_report

HEARTBEAT_SECONDS = 10.0
# The job's own files are the same for every verification of the job (and its calibration): the
# host keeps them by sha256. A candidate is new each time and is always downloaded.
CACHED_ARTIFACTS = ("package", "hidden_inputs")
DEFAULT_CACHE_MAX_BYTES = 4 * 1024**3
RECENT_USE_SECONDS = 600
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
ARCHIVE_FORMATS = ("tar.gz", "tgz", "tar", "zip")  # the runner knows an archive by its name
CACHE_ENTRY = re.compile(r"[0-9a-f]{64}\.(?:tar\.gz|tgz|tar|zip)")
PROGRESS_MIN_INTERVAL_SECONDS = 1.0
HTTP_TIMEOUT_SECONDS = 60


class HostFailure(RuntimeError):
    """A failure this host describes in its own words, which name no file contents: posted as is."""


class RunRejected(Exception):
    """The platform refused this run's token: the run was requeued elsewhere, finished or expired."""


class HostExcluded(Exception):
    """The platform wants this run verified by another host (it re-verifies this host's own result)."""


class PlatformUnreachable(ConnectionError):
    """The platform could not be reached (refused, reset, timed out): the run is retried, not failed."""


@dataclass(frozen=True)
class HostConfig:
    signing_key_path: Path
    work_dir: Path | None = None
    python_executable: str | None = None
    devices: tuple[str, ...] = ()
    cache_dir: Path | None = None
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES  # 0: keep nothing between verifications
    # How this host names itself to the platform; a re-verification is refused to the host of the original.
    host_id: str = ""

    @classmethod
    def from_environment(cls) -> HostConfig:
        key = os.environ.get("VERIFICATION_SIGNING_KEY_PATH")
        if not key:
            raise HostFailure("VERIFICATION_SIGNING_KEY_PATH is not set on this verification host")
        work_dir = os.environ.get("VERIFICATION_WORK_DIR")
        cache_dir = os.environ.get("VERIFICATION_CACHE_DIR")
        return cls(
            signing_key_path=Path(key),
            work_dir=Path(work_dir) if work_dir else None,
            python_executable=os.environ.get("VERIFICATION_PYTHON") or None,
            # e.g. "/dev/nvidia0,/dev/nvidiactl,/dev/nvidia-uvm" on a GPU host
            devices=tuple(filter(None, os.environ.get("VERIFICATION_DEVICES", "").split(","))),
            cache_dir=Path(cache_dir) if cache_dir else None,
            cache_max_bytes=int(os.environ.get("VERIFICATION_CACHE_MAX_BYTES", DEFAULT_CACHE_MAX_BYTES)),
            host_id=os.environ.get("VERIFICATION_HOST_ID") or socket.gethostname(),
        )

    def artifact_cache(self) -> ArtifactCache | None:
        if self.cache_max_bytes <= 0:
            return None
        root = self.cache_dir or Path(self.work_dir or tempfile.gettempdir()) / "speedproof-artifact-cache"
        return ArtifactCache(root, self.cache_max_bytes)


class ArtifactCache:
    """Archives kept on the host by sha256, in a directory only the host's user can enter.

    Every use re-hashes the file, so a damaged or altered entry is dropped and downloaded again
    instead of being measured. Sandboxed code never sees this directory: the runner binds only the
    files of the run it measures. Least recently used entries go first once ``max_bytes`` is passed.
    """

    def __init__(self, root: Path, max_bytes: int):
        self.root = root
        self.max_bytes = max_bytes
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        root.chmod(0o700)

    def path(self, sha256: str, archive_format: str) -> Path:
        if not SHA256_HEX.fullmatch(sha256 or "") or archive_format not in ARCHIVE_FORMATS:
            raise ValueError("not a sha256 digest and archive format")
        return self.root / f"{sha256}.{archive_format}"

    def get(self, sha256: str, archive_format: str) -> Path | None:
        path = self.path(sha256, archive_format)
        if not path.is_file():
            return None
        if sha256_of(path) != sha256:
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recently used
        return path

    def incoming(self, sha256: str, archive_format: str) -> Path:
        """Where to download an entry before ``admit`` moves it into place."""
        self.path(sha256, archive_format)  # a digest, never a path
        return self.root / f".{sha256}.{os.getpid()}.{threading.get_ident()}.part"

    def admit(self, incoming: Path, sha256: str, archive_format: str) -> Path:
        path = self.path(sha256, archive_format)
        os.replace(incoming, path)
        return path

    def trim(self, keep: set[Path]) -> None:
        """Drop least recently used entries until the cache fits, never one of ``keep`` (in use) nor
        one used in the last ``RECENT_USE_SECONDS`` (another worker sharing the cache may be using it)."""
        entries = []
        for entry in self.root.iterdir():
            if CACHE_ENTRY.fullmatch(entry.name):
                try:
                    status = entry.stat()
                except FileNotFoundError:
                    continue
                entries.append((status.st_mtime, status.st_size, entry))
        total = sum(size for _, size, _ in entries)
        recent = time.time() - RECENT_USE_SECONDS
        for used_at, size, entry in sorted(entries):
            if total <= self.max_bytes or used_at > recent:
                break
            if entry not in keep:
                entry.unlink(missing_ok=True)
                total -= size


class PlatformClient:
    def __init__(self, base_url: str, run_id: int, token: str, identity: dict[str, str] | None = None):
        self.base = f"{base_url.rstrip('/')}/internal/verification/runs/{run_id}"
        self.token = token
        self.identity = identity or {}  # host_id and key_id, sent when claiming the run

    def start(self) -> dict:
        return self.call("POST", "start/", dict(self.identity))

    def _request(self, method: str, url: str, body: dict | None = None) -> urllib.request.Request:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"RunToken {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        return request

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            with urllib.request.urlopen(
                self._request(method, f"{self.base}/{path}", body), timeout=HTTP_TIMEOUT_SECONDS
            ) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            if error.code == 409 and _error_code(error) == "host_excluded":
                raise HostExcluded(path) from error
            if error.code in (403, 409):
                raise RunRejected(f"{path}: {error.code}") from error
            detail = error.read()[:500].decode(errors="replace")
            raise HostFailure(f"{path}: the platform answered {error.code}: {detail}") from error
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise PlatformUnreachable(f"{path}: {type(error).__name__}") from error

    def download(self, url: str, destination: Path, sha256: str) -> None:
        digest = hashlib.sha256()
        with (
            urllib.request.urlopen(self._request("GET", url), timeout=HTTP_TIMEOUT_SECONDS) as response,
            destination.open("wb") as out,
        ):
            for chunk in iter(lambda: response.read(1024 * 1024), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            destination.unlink(missing_ok=True)
            raise HostFailure(f"{destination.name}: sha256 mismatch after download")


def _error_code(error: urllib.error.HTTPError) -> str | None:
    try:
        return (json.loads(error.read()[:4096] or b"{}").get("error") or {}).get("code")
    except (ValueError, AttributeError, OSError):
        return None


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

    def __enter__(self) -> _Heartbeat:
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
        if progress.phase != "done":  # the result, posted next, says it all: no request to wait for
            self.progressed.set()


def execute_run(
    *,
    run_id: int,
    token: str,
    base_url: str,
    config: HostConfig | None = None,
    announced: dict[str, dict] | None = None,
) -> str:
    """Carry out one run end to end; returns the status the platform recorded. ``announced``: the
    run's files as its message named them (digests and formats), fetched while start/ is answered."""
    config = config or HostConfig.from_environment()
    signing_key = load_private_key(config.signing_key_path)
    identity = {"host_id": config.host_id, "key_id": key_id(signing_key.public_key())}
    client = PlatformClient(base_url, run_id, token, identity)
    scratch = Path(tempfile.mkdtemp(prefix=f"speedproof-run-{run_id}-", dir=config.work_dir))
    try:
        spec, files = _start_and_fetch(client, announced, scratch, config.artifact_cache())
        with _Heartbeat(client) as heartbeat:
            common = dict(
                progress=heartbeat.update,
                python_executable=config.python_executable,
                work_dir=scratch,
                devices=config.devices,
            )
            if spec["kind"] == "calibration":
                # A platform older than this host names no verification budget: the runner's default.
                budget = spec.get("verification_budget_pairs") or runner.DEFAULT_BUDGET_PAIRS
                calibration = runner.calibrate(
                    files["package"],
                    files["hidden_inputs"],
                    spec["criteria"],
                    pairs=spec["budget_pairs"],
                    budget=budget,
                    **common,
                )
                report = calibration.report.to_dict()
                report["calibration"] = calibration.to_dict()
            else:
                report = runner.run_verification(
                    files["package"],
                    files["candidate"],
                    files["hidden_inputs"],
                    spec["criteria"],
                    budget=spec["budget_pairs"],
                    secrets=[token],
                    **common,
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
    except (RunRejected, HostExcluded, PlatformUnreachable):
        raise
    except Exception as error:
        # Other exceptions' texts may quote the files they choked on (hidden inputs among them), and
        # the run's parties read the reason: only the type goes out; the whole story stays in this
        # host's log, which is the operators'.
        traceback.print_exc()
        detail = str(error) if isinstance(error, HostFailure) else "see the verification host's log"
        try:
            client.call("POST", "failure/", {"reason": f"{type(error).__name__}: {detail}"[:1900]})
        except (RunRejected, OSError):
            pass
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return client.call("POST", "result/", _json_safe(body))["status"]


def _start_and_fetch(
    client: PlatformClient, announced: dict[str, dict] | None, scratch: Path, cache: ArtifactCache | None
) -> tuple[dict, dict[str, Path]]:
    """start/, then the files it names; or, with the files announced in the message, both at once
    (start/ stays the authority: its digests must be the announced ones)."""
    if not announced:
        spec = client.start()
        return spec, _fetch_artifacts(client, spec["artifacts"], scratch, cache)
    wanted = {name: {**described, "url": f"{client.base}/artifacts/{name}/"} for name, described in announced.items()}
    # Hidden inputs are served only once the run is started: fetched after start/ unless cached.
    early = {name: described for name, described in wanted.items() if name != "hidden_inputs"}
    with ThreadPoolExecutor(max_workers=1) as starting:
        started = starting.submit(client.start)
        try:
            files = _fetch_artifacts(client, early, scratch, cache)
        except Exception:
            started.result()  # a refused start explains a refused download: RunRejected first
            raise
        spec = started.result()
    if {name: a["sha256"] for name, a in spec["artifacts"].items()} != {
        name: a["sha256"] for name, a in announced.items()
    }:
        raise HostFailure("the run's files differ from those its message announced")
    late = {name: spec["artifacts"][name] for name in wanted if name not in early}
    files.update(_fetch_artifacts(client, late, scratch, cache) if late else {})
    return spec, files


def _fetch_artifacts(
    client: PlatformClient, artifacts: dict[str, dict], scratch: Path, cache: ArtifactCache | None
) -> dict[str, Path]:
    """Local paths of the run's archives: from the cache where it holds them, else downloaded (in
    parallel) and checked against their sha256; the job's own files are then kept for next time."""
    files: dict[str, Path] = {}
    missing: list[tuple[str, str, str, str, Path, bool]] = []  # name, url, sha256, format, destination, cached
    for name, artifact in artifacts.items():
        sha256, archive_format = artifact["sha256"], artifact.get("archive_format") or "tar.gz"
        cacheable = cache is not None and name in CACHED_ARTIFACTS
        if cacheable and (hit := cache.get(sha256, archive_format)) is not None:
            files[name] = hit
            continue
        destination = cache.incoming(sha256, archive_format) if cacheable else scratch / f"{name}.{archive_format}"
        missing.append((name, artifact["url"], sha256, archive_format, destination, cacheable))
    if missing:
        try:
            with ThreadPoolExecutor(max_workers=len(missing)) as downloads:
                for finished in [
                    downloads.submit(client.download, url, destination, sha256)
                    for _, url, sha256, _, destination, _ in missing
                ]:
                    finished.result()
        except BaseException:
            for *_, destination, _ in missing:
                destination.unlink(missing_ok=True)
            raise
    for name, _, sha256, archive_format, destination, cacheable in missing:
        files[name] = cache.admit(destination, sha256, archive_format) if cacheable else destination
    if cache is not None:
        cache.trim(keep=set(files.values()))
    return files


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
