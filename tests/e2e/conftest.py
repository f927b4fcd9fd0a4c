"""Real processes for end-to-end tests: the live web server, a default Celery worker and a
verification worker, on the suite's PostgreSQL database and Redis broker."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.db import connection

from verification.runner.certificate import generate_signing_key, private_key_pem, public_key_pem
from verification.services import signing_key_register

REPO = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).parent / "celery")
# What a verification host's process may see of this machine's environment: nothing secret.
HOST_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


class WorkerProcess:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path):
        self.name, self.args, self.env, self.log = name, args, env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        self.log.write_text("")
        self.process = subprocess.Popen(
            [CELERY, *self.args],
            cwd=REPO,
            env=self.env,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it stops its sandboxes too
        )
        deadline = time.monotonic() + 60
        while "ready." not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        return self

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def environment(self) -> dict[str, str]:
        raw = Path(f"/proc/{self.process.pid}/environ").read_bytes()
        return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


@pytest.fixture
def broker_url(settings):
    url = settings.CELERY_BROKER_URL
    redis.Redis.from_url(url).flushdb()  # no stale messages from earlier tests
    yield url
    redis.Redis.from_url(url).flushdb()


@pytest.fixture
def stack(live_server, settings, tmp_path, broker_url, transactional_db):
    """Start both workers; yields a handle to start or kill the verification worker again."""
    settings.INTERNAL_API_BASE_URL = live_server.url
    settings.PUBLIC_BASE_URL = live_server.url
    settings.VERIFICATION_BUDGET_PAIRS = 24
    settings.VERIFICATION_CALIBRATION_PAIRS = 3
    key = generate_signing_key()
    key_path = tmp_path / "signing-key.pem"
    key_path.write_bytes(private_key_pem(key))
    signing_key_register(public_key_pem=public_key_pem(key).decode())
    database = connection.settings_dict
    default_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "marketplace.settings.test",
        "DATABASE_URL": f"postgres://{database['USER'] or 'postgres'}@{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}/{database['NAME']}",
        "CELERY_BROKER_URL": broker_url,
        "PYTHONPATH": str(REPO),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),  # the live server's files, shared with the worker
    }
    host_env = {name: os.environ[name] for name in HOST_ENVIRONMENT if name in os.environ}
    host_env.update(
        CELERY_BROKER_URL=broker_url,
        VERIFICATION_SIGNING_KEY_PATH=str(key_path),
        PYTHONPATH=str(REPO),
        SPEEDPROOF_VAR_DIR=str(tmp_path / "var"),
    )

    class Stack:
        default = WorkerProcess(
            "default worker",
            [
                "-A",
                "marketplace",
                "worker",
                "-Q",
                "default",
                "-n",
                "default@e2e",
                "--concurrency",
                "1",
                "--pool",
                "solo",
                "--loglevel",
                "INFO",
            ],
            default_env,
            tmp_path / "default-worker.log",
        )

        def verification_worker(self, **environment: str) -> WorkerProcess:
            """A verification host; ``environment`` overrides its variables (another host id, another key)."""
            worker = WorkerProcess(
                "verification worker",
                [
                    "-A",
                    "verification.worker",
                    "worker",
                    "-Q",
                    "verify.cpu-x86",
                    "-n",
                    f"verify-{time.monotonic_ns()}@e2e",
                    "--concurrency",
                    "1",
                    "--prefetch-multiplier",
                    "1",
                    "--loglevel",
                    "INFO",
                ],
                {**host_env, **environment},
                tmp_path / f"verification-worker-{time.monotonic_ns()}.log",
            )
            self.started.append(worker)
            return worker.start()

        started: list[WorkerProcess] = []
        url = live_server.url

    stack = Stack()
    stack.started = [stack.default.start()]
    stack.verifier = stack.verification_worker()
    try:
        yield stack
    finally:
        for worker in stack.started:
            worker.kill(signal.SIGTERM)


def wait_for(predicate, *, timeout: float = 120, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
