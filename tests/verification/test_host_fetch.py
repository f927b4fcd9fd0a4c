"""How a host gets a run's files: the job's package and hidden inputs kept by sha256 between verifications,
candidates always fetched, fetching while start/ is answered; and what it makes of the run's spec.
Served by a real local HTTP server."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.factories.archives import directory_tar_gz
from verification import host

# Runs real sandboxes (uid 65534, whose RLIMIT_NPROC is shared machine-wide): `make check` runs these one at a time.
pytestmark = pytest.mark.sandbox


class _Platform:
    """Serves bytes by artifact name and counts the requests for each."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        platform = self

        self.start_status = 200
        self.start_digests: dict[str, str] = {}
        self.start_spec: dict = {"kind": "submission"}
        self.posted: dict[str, list[dict]] = {}  # heartbeat, result, failure: the bodies received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                endpoint = self.path.rstrip("/").rsplit("/", 1)[-1]
                if endpoint != "start":
                    received = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    platform.posted.setdefault(endpoint, []).append(json.loads(received or b"{}"))
                    body = json.dumps({"ok": True, "status": "passed"}).encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                platform.requests.append("start")
                if platform.start_status != 200:
                    self.send_response(platform.start_status)
                    self.end_headers()
                    return
                spec = {**platform.start_spec, "artifacts": platform.spec(**platform.start_digests)}
                body = json.dumps(spec).encode()
                time.sleep(0.2)  # a platform slow to answer: what may a host fetch meanwhile?
                platform.requests.append("started")  # before the answer, so nothing can overtake it
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if platform.start_status != 200:
                    self.send_response(platform.start_status)
                    self.end_headers()
                    return
                name = self.path.rstrip("/").rsplit("/", 1)[-1]
                platform.requests.append(name)
                body = platform.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_port}"

    def spec(self, **digests_override: str) -> dict[str, dict]:
        return {
            name: {
                "sha256": digests_override.get(name, hashlib.sha256(body).hexdigest()),
                "url": f"{self.base}/internal/verification/runs/1/artifacts/{name}/",
                "archive_format": "tar.gz",
            }
            for name, body in self.files.items()
        }

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def platform():
    served = _Platform()
    served.files = {"package": b"package v1" * 100, "candidate": b"candidate 1", "hidden_inputs": b"hidden" * 300}
    yield served
    served.close()


def _fetch(platform: _Platform, tmp_path: Path, cache: host.ArtifactCache | None, **override) -> dict[str, Path]:
    scratch = tmp_path / f"scratch-{len(platform.requests)}"
    scratch.mkdir()
    client = host.PlatformClient(platform.base, 1, "token")
    return host._fetch_artifacts(client, platform.spec(**override), scratch, cache)


def test_second_verification_of_a_job_downloads_only_the_candidate(platform, tmp_path):
    cache = host.ArtifactCache(tmp_path / "cache", max_bytes=10**6)
    first = _fetch(platform, tmp_path, cache)
    assert sorted(platform.requests) == ["candidate", "hidden_inputs", "package"]
    platform.files["candidate"] = b"candidate 2"
    second = _fetch(platform, tmp_path, cache)
    assert sorted(platform.requests) == ["candidate", "candidate", "hidden_inputs", "package"]
    for name, body in platform.files.items():
        assert second[name].read_bytes() == body
    assert second["package"] == first["package"] and second["package"].parent == cache.root
    assert second["package"].name.endswith(".tar.gz")  # the runner knows an archive by its name
    assert second["candidate"].parent != cache.root  # candidates stay in the run's scratch
    assert stat.S_IMODE(cache.root.stat().st_mode) == 0o700
    assert not [p for p in cache.root.iterdir() if p.name.endswith(".part")]


def test_an_altered_cache_entry_is_dropped_and_downloaded_again(platform, tmp_path):
    cache = host.ArtifactCache(tmp_path / "cache", max_bytes=10**6)
    files = _fetch(platform, tmp_path, cache)
    files["hidden_inputs"].write_bytes(b"tampered")
    again = _fetch(platform, tmp_path, cache)
    assert platform.requests.count("hidden_inputs") == 2
    assert again["hidden_inputs"].read_bytes() == platform.files["hidden_inputs"]


def test_a_download_that_does_not_match_its_digest_leaves_nothing_behind(platform, tmp_path):
    cache = host.ArtifactCache(tmp_path / "cache", max_bytes=10**6)
    with pytest.raises(RuntimeError, match="sha256 mismatch"):
        _fetch(platform, tmp_path, cache, package="0" * 64)
    assert list(cache.root.iterdir()) == []


def test_a_digest_is_never_used_as_a_path(platform, tmp_path):
    cache = host.ArtifactCache(tmp_path / "cache", max_bytes=10**6)
    with pytest.raises(ValueError):
        _fetch(platform, tmp_path, cache, package="../../etc/passwd")
    assert platform.requests == []


def test_least_recently_used_entries_go_first_but_never_those_in_use(platform, tmp_path):
    cache = host.ArtifactCache(tmp_path / "cache", max_bytes=2500)
    first = _fetch(platform, tmp_path, cache)  # package 1,000 + hidden 1,800 bytes: over the cap, in use
    assert first["package"].exists() and first["hidden_inputs"].exists()
    platform.files["package"] = b"package v2" * 100  # the next job
    _fetch(platform, tmp_path, cache)
    assert first["package"].exists()  # used minutes ago at most: another worker may still need it
    an_hour_ago = time.time() - 3600
    os.utime(first["package"], (an_hour_ago, an_hour_ago))
    second = _fetch(platform, tmp_path, cache)
    kept = {p.name for p in cache.root.iterdir() if host.CACHE_ENTRY.fullmatch(p.name)}
    assert kept == {second["package"].name, second["hidden_inputs"].name}
    assert not first["package"].exists()


def test_no_cache_keeps_every_file_in_the_run_scratch(platform, tmp_path):
    config = host.HostConfig(signing_key_path=tmp_path / "key.pem", cache_max_bytes=0)
    assert config.artifact_cache() is None
    files = _fetch(platform, tmp_path, None)
    _fetch(platform, tmp_path, None)
    assert platform.requests.count("package") == 2
    assert all(path.parent.name.startswith("scratch-") for path in files.values())


def test_the_default_cache_lives_beside_the_work_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("VERIFICATION_SIGNING_KEY_PATH", str(tmp_path / "key.pem"))
    monkeypatch.setenv("VERIFICATION_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.delenv("VERIFICATION_CACHE_DIR", raising=False)
    (tmp_path / "work").mkdir()
    cache = host.HostConfig.from_environment().artifact_cache()
    assert cache is not None and cache.root == tmp_path / "work" / "speedproof-artifact-cache"
    assert os.access(cache.root, os.W_OK)


def _announced(platform: _Platform) -> dict[str, dict]:
    return {name: {k: v for k, v in described.items() if k != "url"} for name, described in platform.spec().items()}


def test_announced_files_are_fetched_while_the_run_starts(platform, tmp_path):
    client = host.PlatformClient(platform.base, 1, "token")
    spec, files = host._start_and_fetch(client, _announced(platform), tmp_path, None)
    assert spec["kind"] == "submission" and platform.requests.count("start") == 1
    assert sorted(r for r in platform.requests if r not in ("start", "started")) == [
        "candidate",
        "hidden_inputs",
        "package",
    ]
    # The package and the candidate while start/ is answered; hidden inputs only once the run is started.
    assert platform.requests.index("package") < platform.requests.index("started")
    assert platform.requests.index("candidate") < platform.requests.index("started")
    assert platform.requests.index("hidden_inputs") > platform.requests.index("started")
    assert all(files[name].read_bytes() == body for name, body in platform.files.items())


def test_start_is_the_authority_on_which_files_a_run_measures(platform, tmp_path):
    client = host.PlatformClient(platform.base, 1, "token")
    announced = _announced(platform)
    platform.start_digests = {"candidate": hashlib.sha256(b"another candidate").hexdigest()}
    with pytest.raises(RuntimeError, match="differ from those its message announced"):
        host._start_and_fetch(client, announced, tmp_path, None)


def test_a_refused_start_is_reported_as_refused_not_as_a_failed_download(platform, tmp_path):
    client = host.PlatformClient(platform.base, 1, "token")
    platform.start_status = 403
    with pytest.raises(host.RunRejected):
        host._start_and_fetch(client, _announced(platform), tmp_path, None)


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mlp"


def _tar_gz(directory: Path) -> bytes:
    return directory_tar_gz(directory, arcname=directory.name)


def _example_hidden_inputs(directory: Path) -> Path:
    spec = importlib.util.spec_from_file_location("generate_inputs", EXAMPLE / "generate_inputs.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    generator.generate(directory, count=4, rows=8, seed=987)
    return directory


@pytest.mark.parametrize("named,budget", [(12, 12), (None, 40)], ids=["named", "older-platform"])
def test_a_calibration_judges_speedups_against_the_budget_the_platform_names(platform, tmp_path, named, budget):
    """The run measures its own few A/A pairs, but the smallest verifiable speedup is that of a
    verification with the deployment's budget, not the runner's default (40), which is only for a
    platform older than the host that names none."""
    from verification.runner.calibration import smallest_verifiable_factor
    from verification.runner.certificate import generate_signing_key, private_key_pem

    platform.files = {
        "package": _tar_gz(EXAMPLE / "package"),
        "hidden_inputs": _tar_gz(_example_hidden_inputs(tmp_path / "hidden")),
    }
    platform.start_spec = {
        "kind": "calibration",
        "criteria": json.loads((EXAMPLE / "criteria.json").read_text()),
        "budget_pairs": 3,
    }
    if named:
        platform.start_spec["verification_budget_pairs"] = named
    key_path = tmp_path / "signing-key.pem"
    key_path.write_bytes(private_key_pem(generate_signing_key()))
    (tmp_path / "work").mkdir()
    config = host.HostConfig(signing_key_path=key_path, work_dir=tmp_path / "work", cache_max_bytes=0)

    assert host.execute_run(run_id=1, token="token", base_url=platform.base, config=config) == "passed"
    assert "failure" not in platform.posted
    (result,) = platform.posted["result"]
    calibration = result["report"]["calibration"]
    assert calibration["pairs"] == 3
    wall = next(c for c in calibration["criteria"] if c["metric"] == "wall_time")
    # Three pairs are too few for the robust spread alone: the noise is at least the sample deviation.
    noise = wall["margin_noise_sd"]
    assert noise >= wall["pair_log_ratio_sd"] > 0
    expected = smallest_verifiable_factor(noise, budget=budget)
    assert wall["smallest_verifiable_speedup"] == pytest.approx(expected, rel=1e-9)
    other_budget = 40 if budget == 12 else 12
    assert expected != pytest.approx(smallest_verifiable_factor(noise, budget=other_budget), rel=1e-6)


def _host_config(tmp_path: Path) -> host.HostConfig:
    from verification.runner.certificate import generate_signing_key, private_key_pem

    key_path = tmp_path / "signing-key.pem"
    key_path.write_bytes(private_key_pem(generate_signing_key()))
    (tmp_path / "work").mkdir()
    return host.HostConfig(signing_key_path=key_path, work_dir=tmp_path / "work", cache_max_bytes=0)


def test_a_failure_posts_only_what_names_no_file_contents(platform, tmp_path, monkeypatch, capsys):
    """The run's parties read a failure's reason; an exception's text may quote a hidden input."""

    def choke(*args, **kwargs):
        raise ValueError("cannot parse hidden input 'acme-q3.json': {\"x\": 0.1234567891}")

    monkeypatch.setattr(host.runner, "run_verification", choke)
    platform.start_spec = {"kind": "submission", "criteria": {}, "budget_pairs": 4}
    with pytest.raises(ValueError):
        host.execute_run(run_id=1, token="token", base_url=platform.base, config=_host_config(tmp_path))
    (failure,) = platform.posted["failure"]
    assert failure["reason"] == "ValueError: see the verification host's log"
    assert "0.1234567891" in capsys.readouterr().err  # the operators' copy


def test_a_failure_of_the_hosts_own_making_is_posted_in_full(platform, tmp_path):
    announced = _announced(platform)
    announced["package"]["sha256"] = hashlib.sha256(b"what the message promised").hexdigest()
    with pytest.raises(host.HostFailure):
        host.execute_run(
            run_id=1, token="token", base_url=platform.base, config=_host_config(tmp_path), announced=announced
        )
    (failure,) = platform.posted["failure"]
    assert failure["reason"] == "HostFailure: package.tar.gz: sha256 mismatch after download"


def test_an_unreachable_platform_is_retried_not_failed(tmp_path, monkeypatch):
    """Refused connections (a platform restarting, or not up yet) raise PlatformUnreachable, post nothing, and the
    worker's task runs again with backoff instead of dropping the run."""
    import socket

    from verification import worker

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens once the socket is closed
    with pytest.raises(host.PlatformUnreachable):
        host.execute_run(run_id=1, token="token", base_url=f"http://127.0.0.1:{port}", config=_host_config(tmp_path))

    attempts = []

    def flaky(**kwargs):
        attempts.append(kwargs["run_id"])
        if len(attempts) < 3:
            raise host.PlatformUnreachable("start/: URLError")
        return "passed"

    monkeypatch.setattr(host, "execute_run", flaky)
    result = worker.execute_run.apply(kwargs={"run_id": 7, "token": "t", "base_url": f"http://127.0.0.1:{port}"})
    assert (result.state, result.result, attempts) == ("SUCCESS", "passed", [7, 7, 7])
