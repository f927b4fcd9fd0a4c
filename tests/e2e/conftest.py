"""Real processes for end-to-end tests: the live web server, a default Celery worker and a
verification worker, on the suite's PostgreSQL database and Redis broker; and `make run`'s own process set
(`make_run`), which touches neither and talks only HTTP."""

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import requests
from django.db import connection

from tests.embedded import embedded_environment
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
def default_worker_environment() -> dict[str, str]:
    """Variables the default worker gets besides this process's; a test module overrides this fixture to give its
    worker settings of its own (the worker reads its settings from the environment, not from `settings`)."""
    return {}


@pytest.fixture
def stack(live_server, settings, tmp_path, broker_url, transactional_db, default_worker_environment):
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
        **default_worker_environment,
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Recorder:
    """Every response the test saw, so that one 5xx anywhere fails it."""

    def __init__(self):
        self.statuses: Counter = Counter()
        self.server_errors: list[str] = []
        self.lock = threading.Lock()

    def record(self, response: requests.Response) -> None:
        with self.lock:
            self.statuses[response.status_code] += 1
            if response.status_code >= 500:
                self.server_errors.append(
                    f"{response.request.method} {response.request.path_url} -> {response.status_code}: "
                    f"{response.text[:300]}"
                )


class Client:
    def __init__(self, base: str, recorder: Recorder, token: str | None = None):
        self.base, self.recorder = base, recorder
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        response = self.session.request(method, f"{self.base}{path}", timeout=60, **kwargs)
        self.recorder.record(response)
        return response

    def __call__(self, method: str, path: str, expect: int = 200, **kwargs) -> dict:
        response = self.request(method, f"/api/v1/{path}", **kwargs)
        assert response.status_code == expect, (method, path, response.status_code, response.text[:1000])
        return response.json() if response.content else {}

    def login(self, email: str, password: str) -> None:
        """A browser's session, for the offline provider's HTML pages."""
        self.request("get", "/api-auth/login/")
        response = self.request(
            "post",
            "/api-auth/login/",
            data={"username": email, "password": password, "csrfmiddlewaretoken": self.session.cookies["csrftoken"]},
            headers={"Referer": f"{self.base}/api-auth/login/"},
            allow_redirects=False,
        )
        assert response.status_code == 302 and "sessionid" in self.session.cookies, response.text[:500]

    def post_page(self, url: str, data: dict) -> requests.Response:
        self.request("get", url)
        data = {**data, "csrfmiddlewaretoken": self.session.cookies["csrftoken"]}
        return self.request("post", url, data=data, headers={"Referer": f"{self.base}{url}"})


class MakeRun:
    def __init__(self, url: str, var: Path, log: Path, accounts: dict[str, str], password: str):
        self.url, self.var, self.log, self.accounts, self.password = url, var, log, accounts, password
        self.recorder = Recorder()

    def client(self, email: str | None = None) -> Client:
        return Client(self.url, self.recorder, self.accounts[email] if email else None)

    def query(self, sql: str) -> list[tuple]:
        """Read the stack's database directly (read-only), to see what the API does not show: stuck runs."""
        with sqlite3.connect(f"file:{self.var / 'db.sqlite3'}?mode=ro", uri=True, timeout=30) as connection:
            return connection.execute(sql).fetchall()


@contextmanager
def make_run_started(var: Path, **environment_extra: str) -> Iterator[MakeRun]:
    """`scripts/run_local.sh` on a fresh var/ folder and a free port, stopped (its whole process group) on exit."""
    port = _free_port()
    environment = embedded_environment(var, SPEEDPROOF_PORT=str(port), **environment_extra)
    log = var / "make-run.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            ["bash", "scripts/run_local.sh"],
            cwd=REPO,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the teardown stops every process it started
        )
    try:
        wait_for(
            lambda: process.poll() is not None or "Speedproof is running" in log.read_text(),
            timeout=300,
            interval=0.5,
            what="make run to start",
        )
        assert process.poll() is None, log.read_text()[-5000:]
        box = log.read_text()
        password = re.search(r"password for all: (\S+)\)", box).group(1)
        accounts = dict(re.findall(r"\| (\S+@\S+)\s+\w+\s+Authorization: Bearer (\S+)", box))
        assert (var / "demo-accounts.txt").stat().st_mode & 0o077 == 0, "the demo tokens are readable by others"
        yield MakeRun(f"http://127.0.0.1:{port}", var, log, accounts, password)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def make_run(tmp_path_factory):
    with make_run_started(tmp_path_factory.mktemp("make-run-var")) as stack:
        yield stack
