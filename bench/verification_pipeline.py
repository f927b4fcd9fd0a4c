"""The verification service end to end, with real processes: two figures of issue 5.

Run:  .venv/bin/python bench/verification_pipeline.py [--passes 30] [--runs 3] [--budget-pairs 12]

It recreates the PostgreSQL database `bench_pipeline` (postgres://postgres@127.0.0.1:5432, trust auth),
flushes Redis db 11 (broker) and 12 (cache), migrates, registers a fresh signing key with
`manage.py verification_key`, and starts, each in its own process group and on loopback only:
gunicorn (`marketplace.wsgi`, 2 sync workers, access log with request durations), a default Celery worker
(`-Q default --concurrency 1`) and a verification worker (`verification.worker -Q verify.cpu-x86
--concurrency 1 --prefetch-multiplier 1`) whose environment holds no database URL, no Django settings and
no Stripe key. Everything is stopped at the end (also on errors) and the database dropped (unless
--keep-db).

Figure A — PASS recorded → transfer (review window 0), real default worker. For N funded contracts with
review_window_hours=0 and an onboarded engineer, the bench submits a candidate (the run's dispatch is
captured in-process instead of sent, so the bench holds the run token, as a host would), then acts as the
host over HTTP: POST start/, POST result/ with a report (shaped like the runner's, with the run's real
artifact sha256s) signed by the registered key. The figure is the time from the result/ POST returning
until the escrow's transfer ProviderOperation is `succeeded` (DB polled every 10 ms). The path measured:
result/ commits → web process enqueues `contract_release_due` → default worker → `escrow_release`
marks the transfer and enqueues `payment_operation_execute` → default worker → offline provider transfer
→ succeeded. One extra warm-up pass runs first and is not counted. Target p95 <= 1 s.

Figure B — pipeline overhead beyond the runs, for the example job (examples/mlp, fast candidate). K times,
`submission_create` is called in-process on a funded contract; the run goes on-commit dispatch → Redis →
verification worker → start/ with the downloads alongside (the job's package and hidden inputs come from
the host's cache after the warm-up verification; the candidate over HTTP) → runner (bwrap sandbox) →
signed report → result/ (the platform draws the plot afterwards).
pipeline = run.finished_at − run.created_at (the submission's transaction; both stamped by Django on this
machine's clock). runs = the runner's `timings.warmup_seconds + timings.measure_seconds` (the phases that
execute the warm-up and measured runs, sandbox start-up of each run included; the per-run `wall_seconds`
of a stream-mode package exclude the server's start-up, so their sum is printed too but not used for the
figure). overhead = pipeline − runs. Target <= 3 % of the pipeline. A breakdown by segment is printed
from the run's timestamps, the report's timings, the gunicorn access log (request durations) and a local
replay of the host's signing and plotting on the recorded report.

Figure B runs the verifications one after another, each once the previous one's plot is drawn (the
platform draws it after the result, ~0.4 s of CPU on the default worker; on this 2-core machine it would
otherwise overlap the next verification's start, which a separate verification host never sees).

Figures are noisy: the machine is shared (2 cores; other test suites may be running).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DATABASE = "bench_pipeline"
POSTGRES = "postgres://postgres@127.0.0.1:5432"
BROKER_URL = "redis://127.0.0.1:6379/11"
CACHE_URL = "redis://127.0.0.1:6379/12"
HOST_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
FORBIDDEN_ON_HOST = (
    "DATABASE_URL",
    "DJANGO_SETTINGS_MODULE",
    "DJANGO_SECRET_KEY",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "REDIS_URL",
)
ACCESS_FORMAT = '%(t)s %(p)s "%(r)s" %(s)s %(B)s %(D)s'
DEADLINE_SECONDS = 570  # the whole script stays under ~10 minutes


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise TimeoutError(f"the benchmark's time budget ran out during: {what}")


# ---------------------------------------------------------------------------- processes


def free_port(preferred: int) -> int:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does: TIME_WAIT is no conflict
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """A subprocess in its own process group, logging to a file; stopped with TERM, then KILL."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path):
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.process: subprocess.Popen | None = None

    def start(self) -> Service:
        self.log_file = self.log.open("w")
        self.process = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def wait_ready(self, ready, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not become ready within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.2)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def environment(self) -> dict[str, str]:
        raw = Path(f"/proc/{self.process.pid}/environ").read_bytes()
        return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            print(f"  {self.name} did not stop on TERM within 20 s; killing its process group", file=sys.stderr)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        finally:
            self.log_file.close()


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


# ---------------------------------------------------------------------------- environment


def platform_env(args, port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("STRIPE_", "DJANGO_", "CELERY_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="marketplace.settings.test",
        DATABASE_URL=f"{POSTGRES}/{DATABASE}",
        DATABASE_CONN_MAX_AGE="60",  # persistent connections, as in production (the test settings default to 0)
        REDIS_URL=CACHE_URL,
        CELERY_BROKER_URL=BROKER_URL,
        PAYMENT_PROVIDER="offline",
        INTERNAL_API_BASE_URL=f"http://127.0.0.1:{port}",
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        VERIFICATION_BUDGET_PAIRS=str(args.budget_pairs),
        PYTHONPATH=str(ROOT),
    )
    return env


def database_recreate(*, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        if not drop_only:
            connection.execute(f'CREATE DATABASE "{DATABASE}"')


def redis_flush() -> None:
    import redis

    for url in (BROKER_URL, CACHE_URL):
        redis.Redis.from_url(url).flushdb()


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return (
        f"nproc {os.cpu_count()}, CPU {model}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


# ---------------------------------------------------------------------------- helpers (Django loaded)


class CapturedDispatches:
    """Run dispatches kept in-process instead of sent to the broker (the bench acts as the host)."""

    def __init__(self):
        import verification.dispatch as dispatch

        self.module = dispatch
        self.real = dispatch.send_run
        self.sent: list = []

    @contextmanager
    def capturing(self):
        self.module.send_run = self.sent.append
        try:
            yield self.sent
        finally:
            self.module.send_run = self.real


def upload_of(content: bytes, name: str):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content, content_type="application/gzip")


def queue_idle(timeout: float = 30) -> None:
    """Wait until the default queue is empty and the default worker had a moment to finish."""
    import redis

    client = redis.Redis.from_url(BROKER_URL)
    deadline = time.monotonic() + timeout
    while client.llen("default") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)


def wait_active(contract, timeout: float = 30):
    """Funding is processed both here and by the default worker (its webhook task): wait for either."""
    deadline = time.monotonic() + timeout
    while contract.status != "active":
        if time.monotonic() > deadline:
            raise RuntimeError(f"contract {contract.pk} still {contract.status} {timeout:.0f} s after funding")
        time.sleep(0.05)
        contract.refresh_from_db()
    return contract


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def host_call(base: str, run_id: int, token: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}/internal/verification/runs/{run_id}/{path}", data=data, method="POST")
    request.add_header("Authorization", f"RunToken {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"{}")


def pass_report(run, criteria: dict) -> dict:
    """A PASS report shaped like the runner's (the tests' factory), with the run's real sha256s."""
    from tests.factories.verification import fake_report

    now = datetime.now().astimezone()
    return {
        **fake_report(run),
        "runner_version": "bench",
        "reason": "PASS (bench: recorded through the internal API)",
        "criteria_spec": criteria,
        "timings": {"started_at": (now - timedelta(seconds=5)).isoformat(), "finished_at": now.isoformat()},
        "environment": {"cpu_model": "bench", "cpu_count": os.cpu_count()},
        "logs": {},
    }


# ---------------------------------------------------------------------------- figure A


def figure_a(args, base: str, signing_key, captured: CapturedDispatches, deadline: Deadline) -> dict:
    from django.db import connection

    from jobs.examples import example_candidate
    from jobs.services.submissions import submission_create
    from payments.models import ProviderOperation
    from tests.factories import CompanyAdminFactory, EngineerFactory, funded_contract
    from tests.factories.jobs import CRITERIA, onboard
    from verification.models import VerificationRun
    from verification.runner.certificate import sign_report

    count = args.passes + 1  # one warm-up pass first, not counted
    print(f"\n[A] preparing {count} funded contracts (review window 0, onboarded engineers) ...", flush=True)
    began = time.monotonic()
    prepared = []
    candidate = example_candidate("fast")
    with captured.capturing() as sent:
        for _ in range(count):
            deadline.check("preparing figure A")
            engineer = EngineerFactory()
            onboard(engineer)
            contract = wait_active(
                funded_contract(
                    admin=CompanyAdminFactory(),
                    engineer=engineer,
                    amount=100_000,
                    review_window_hours=0,
                    max_submissions=3,
                )
            )
            submission_create(actor=engineer, contract=contract, upload=upload_of(candidate, "fast.tar.gz"))
            dispatch = sent[-1]
            run = VerificationRun.objects.select_related("package", "candidate", "hidden_inputs").get(
                pk=dispatch.run_id
            )
            report = pass_report(run, CRITERIA)
            prepared.append((contract, run, dispatch.token, report, sign_report(report, signing_key)))
    queue_idle()
    print(
        f"    prepared in {time.monotonic() - began:.1f} s; measuring one at a time (DB polled every 10 ms) ...",
        flush=True,
    )

    results = []
    for index, (contract, run, token, report, certificate) in enumerate(prepared):
        deadline.check("measuring figure A")
        host_call(base, run.pk, token, "start/")
        answer = host_call(base, run.pk, token, "result/", {"report": report, "certificate": certificate})
        posted = time.perf_counter()
        if answer.get("status") != "passed":
            raise RuntimeError(f"run {run.pk} recorded as {answer!r}")
        operations = ProviderOperation.objects.filter(escrow_id=contract.escrow_id, kind="transfer", status="succeeded")
        limit = posted + 30
        while not operations.exists():
            if time.perf_counter() > limit:
                raise RuntimeError(f"no succeeded transfer for contract {contract.pk} within 30 s")
            time.sleep(0.01)
        seen = time.perf_counter()
        op = operations.get()
        run.refresh_from_db(fields=["finished_at"])
        results.append(
            {
                "poll_ms": (seen - posted) * 1000,
                "recorded_to_marked_ms": (op.created_at - run.finished_at).total_seconds() * 1000,
                "recorded_to_succeeded_ms": (op.updated_at - run.finished_at).total_seconds() * 1000,
            }
        )
        if index == 0:
            queue_idle(timeout=5)  # after the warm-up pass: let the worker finish anything it started
    connection.close()
    return {"warmup": results[0], "measured": results[1:]}


# ---------------------------------------------------------------------------- figure B


def figure_b(args, captured: CapturedDispatches, deadline: Deadline, access_log: Path, signing_key) -> list[dict]:
    from django.utils.dateparse import parse_datetime

    from jobs.examples import example_candidate, example_criteria, example_hidden_inputs, example_package
    from jobs.services.bids import bid_accept, bid_place
    from jobs.services.jobs import job_attach_hidden_inputs, job_attach_package, job_publish
    from jobs.services.submissions import submission_create
    from tests.factories import CompanyAdminFactory, EngineerFactory, JobFactory
    from tests.factories.jobs import fund, onboard
    from verification.models import VerificationRun

    print(
        f"\n[B] the example job (examples/mlp), fast candidate, {args.runs} verification(s), "
        f"budget {args.budget_pairs} pairs ...",
        flush=True,
    )
    admin, engineer = CompanyAdminFactory(), EngineerFactory()
    onboard(engineer)
    with captured.capturing():  # the A/A calibration on publish is not part of this figure: not sent
        job = JobFactory(
            organization=admin.memberships.first().organization,
            created_by=admin,
            criteria=example_criteria(),
            hardware_class="cpu-x86",
            max_submissions=args.warmup_runs + args.runs,
            review_window_hours=48,
            budget_min=50_000,
            budget_max=150_000,
        )
        job_attach_package(actor=admin, job=job, upload=upload_of(example_package(), "package.tar.gz"))
        job_attach_hidden_inputs(actor=admin, job=job, upload=upload_of(example_hidden_inputs(), "hidden.tar.gz"))
        job = job_publish(actor=admin, job=job)
    bid = bid_place(actor=engineer, job=job, amount=100_000, estimated_days=5, proposal="Vectorize.")
    contract = wait_active(fund(bid_accept(actor=admin, bid=bid)))
    candidate = example_candidate("fast")
    queue_idle()

    rows = []
    for index in range(args.warmup_runs + args.runs):
        deadline.check("figure B")
        log_offset = access_log.stat().st_size if access_log.exists() else 0
        submission = submission_create(actor=engineer, contract=contract, upload=upload_of(candidate, "fast.tar.gz"))
        subject = f"submission:{submission.pk}"
        limit = time.monotonic() + min(240, max(10, deadline.left() - 20))
        while True:
            run = VerificationRun.objects.get(subject=subject)
            if run.finished_at is not None and run.status not in ("queued", "running"):
                break
            if time.monotonic() > limit:
                raise RuntimeError(f"run {run.pk} not finished in time: {run.status} {run.progress}")
            time.sleep(0.05)
        time.sleep(0.3)  # the access log line of result/ is written after the response
        report = run.report or {}
        timings = report.get("timings", {})
        if report.get("decision") == "ERROR" or "warmup_seconds" not in timings:
            raise RuntimeError(f"run {run.pk}: {run.status} {run.reason}")
        runner_start = parse_datetime(timings["started_at"])
        runner_end = parse_datetime(timings["finished_at"])
        requests = access_requests(access_log, log_offset, run.pk)
        measured = [m for m in report.get("measurements", []) if m.get("wall_seconds") is not None]
        sign_ms, plot_ms = replay_host_tail(report, signing_key)
        row = {
            "run": run.pk,
            "status": run.status,
            "decision": run.decision,
            "pairs": report["runs"]["pairs"],
            "runs": report["runs"]["total"] + report["runs"].get("warmup", 0),
            "speedup": run.speedup_estimate,
            "pipeline": (run.finished_at - run.created_at).total_seconds(),
            "runs_time": timings["warmup_seconds"] + timings["measure_seconds"],
            "runs_wall_sum": sum(m["wall_seconds"] for m in measured),
            "commit_to_dispatched": (run.dispatched_at - run.created_at).total_seconds(),
            "dispatched_to_started": (run.started_at - run.dispatched_at).total_seconds(),
            "started_to_runner": (runner_start - run.started_at).total_seconds(),
            "runner_setup": timings.get("setup_seconds", 0.0),
            "runner_tail": timings["total_seconds"]
            - timings.get("setup_seconds", 0.0)
            - timings["warmup_seconds"]
            - timings["measure_seconds"],
            "runner_report": (runner_end - runner_start).total_seconds() - timings["total_seconds"],
            "runner_to_recorded": (run.finished_at - runner_end).total_seconds(),
            "downloads_server": sum(d for kind, d in requests if kind == "artifacts") / 1e6,
            "start_server": sum(d for kind, d in requests if kind == "start") / 1e6,
            "result_server": sum(d for kind, d in requests if kind == "result") / 1e6,
            "heartbeats": len([1 for kind, _ in requests if kind == "heartbeat"]),
            "heartbeats_server": sum(d for kind, d in requests if kind == "heartbeat") / 1e6,
            "replay_sign": sign_ms / 1000,
            "replay_plot": plot_ms / 1000,
        }
        row["overhead"] = row["pipeline"] - row["runs_time"]
        row["warmup"] = index < args.warmup_runs
        rows.append(row)
        # The platform draws the run's plot after the result (~0.4 s of CPU on the default worker). On
        # this shared 2-core machine that would land on the next verification's start: wait for it.
        plot_deadline = time.monotonic() + 20
        while not VerificationRun.objects.filter(pk=run.pk, plot_png__isnull=False).exists():
            if time.monotonic() > plot_deadline:
                raise RuntimeError(f"run {run.pk}: no plot 20 s after its result")
            time.sleep(0.05)
        print(
            f"    {'warm-up ' if row['warmup'] else ''}run {run.pk}: {run.status} ({run.decision}, {row['pairs']} pairs, {row['runs']} runs incl. warm-up, "
            f"speedup {run.speedup_estimate or float('nan'):.2f}); pipeline {row['pipeline'] * 1000:.0f} ms, "
            f"runs {row['runs_time'] * 1000:.0f} ms, overhead {row['overhead'] * 1000:.0f} ms "
            f"({row['overhead'] / row['pipeline']:.1%})",
            flush=True,
        )
    return rows


ACCESS_LINE = re.compile(
    r'"POST /internal/verification/runs/(\d+)/(start|heartbeat|result|failure)/ |'
    r'"GET /internal/verification/runs/(\d+)/(artifacts)/\w+/ '
)


def access_requests(log: Path, offset: int, run_id: int) -> list[tuple[str, int]]:
    """(kind, duration in µs) of this run's internal API requests, from gunicorn's access log."""
    found = []
    with log.open("rb") as handle:
        handle.seek(offset)
        for raw in handle.read().decode(errors="replace").splitlines():
            match = ACCESS_LINE.search(raw)
            if not match:
                continue
            rid, kind = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
            if int(rid) == run_id:
                found.append((kind, int(raw.rsplit(" ", 1)[1])))
    return found


def replay_host_tail(report: dict, signing_key) -> tuple[float, float]:
    """What the host does after the runner, replayed here on the recorded report: sign it; draw the plot."""
    from verification.runner.certificate import sign_report
    from verification.runner.plot import write_plot

    body = dict(report.items())
    began = time.perf_counter()
    sign_report(body, signing_key)
    signed = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        png, svg = write_plot(body, Path(scratch) / "plot.png")
        png.read_bytes(), svg.read_text()
    plotted = time.perf_counter()
    return (signed - began) * 1000, (plotted - signed) * 1000


# ---------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=30, help="figure A: PASS results recorded (plus one warm-up)")
    parser.add_argument("--runs", type=int, default=3, help="figure B: verifications of the example's fast candidate")
    parser.add_argument(
        "--warmup-runs",
        type=int,
        default=1,
        help="figure B: verifications first run and not counted (the worker's first run is cold)",
    )
    parser.add_argument("--budget-pairs", type=int, default=12, help="VERIFICATION_BUDGET_PAIRS for figure B")
    parser.add_argument("--port", type=int, default=8765, help="web server port on 127.0.0.1 (another if busy)")
    parser.add_argument("--only", choices=("A", "B"), help="run one figure only")
    parser.add_argument("--keep-db", action="store_true", help=f"leave the `{DATABASE}` database for inspection")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the finally blocks
    deadline = Deadline(DEADLINE_SECONDS)
    command = " ".join(shlex.quote(part) for part in [os.path.relpath(sys.executable, ROOT), *sys.argv])
    print(f"command: {command}")
    print(f"machine: {machine()}")
    print("note: a shared 2-core machine (other test suites may run concurrently): figures are noisy.")

    port = free_port(args.port)
    env = platform_env(args, port)
    os.environ.update(env)
    for key in [k for k in os.environ if k.startswith("STRIPE_")]:
        del os.environ[key]
    sys.path.insert(0, str(ROOT))
    out = Path(tempfile.mkdtemp(prefix="speedproof-bench-pipeline-"))
    print(
        f"logs: {out}; web http://127.0.0.1:{port}; database {env['DATABASE_URL']}; broker {BROKER_URL}; "
        f"cache {CACHE_URL}"
    )

    services: list[Service] = []
    figures: dict = {}
    try:
        database_recreate()
        redis_flush()
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", "--noinput", verbosity=0)
        key_path = out / "signing-key.pem"
        subprocess.run(
            [sys.executable, "manage.py", "verification_key", str(key_path)],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        from verification.runner.certificate import load_private_key

        signing_key = load_private_key(key_path)

        access_log = out / "gunicorn-access.log"
        web = Service(
            "web (gunicorn)",
            [
                str(VENV_BIN / "gunicorn"),
                "marketplace.wsgi",
                f"--bind=127.0.0.1:{port}",
                "--workers=2",
                "--worker-class=sync",
                "--timeout=120",
                "--graceful-timeout=5",
                f"--access-logfile={access_log}",
                f"--access-logformat={ACCESS_FORMAT}",
            ],
            env,
            out / "web.log",
        )
        default = Service(
            "default worker",
            [
                str(VENV_BIN / "celery"),
                "-A",
                "marketplace",
                "worker",
                "-Q",
                "default",
                "-n",
                "default@bench-pipeline",
                "--concurrency",
                "1",
                "--loglevel",
                "INFO",
            ],
            env,
            out / "default-worker.log",
        )
        host_env = {name: os.environ[name] for name in HOST_ENVIRONMENT if name in os.environ}
        host_env.update(
            CELERY_BROKER_URL=BROKER_URL,
            VERIFICATION_SIGNING_KEY_PATH=str(key_path),
            PYTHONPATH=str(ROOT),
            SPEEDPROOF_VAR_DIR=str(out / "host-var"),
        )
        verifier = Service(
            "verification worker",
            [
                str(VENV_BIN / "celery"),
                "-A",
                "verification.worker",
                "worker",
                "-Q",
                "verify.cpu-x86",
                "-n",
                "verify@bench-pipeline",
                "--concurrency",
                "1",
                "--prefetch-multiplier",
                "1",
                "--loglevel",
                "INFO",
            ],
            host_env,
            out / "verification-worker.log",
        )
        for service in (web, default, verifier):
            services.append(service.start())
        web.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/health/"))
        default.wait_ready(lambda: "ready." in default.tail(100_000))
        verifier.wait_ready(lambda: "ready." in verifier.tail(100_000))
        leaked = sorted(set(FORBIDDEN_ON_HOST) & set(verifier.environment()))
        if leaked:
            raise RuntimeError(f"the verification worker's environment holds {leaked}")
        print(
            f"started web, default worker and verification worker (host environment: "
            f"{', '.join(sorted(verifier.environment()))}) after {DEADLINE_SECONDS - deadline.left():.0f} s"
        )

        captured = CapturedDispatches()
        base = f"http://127.0.0.1:{port}"
        if args.only in (None, "A"):
            figures["A"] = figure_a(args, base, signing_key, captured, deadline)
        if args.only in (None, "B"):
            figures["B"] = figure_b(args, captured, deadline, access_log, signing_key)
    finally:
        for service in reversed(services):
            service.stop()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:
            pass
        try:
            redis_flush()
            if not args.keep_db:
                database_recreate(drop_only=True)
        except Exception as error:
            print(f"clean-up: {error}", file=sys.stderr)
    report(args, figures)
    print(f"\ntotal {DEADLINE_SECONDS - deadline.left():.0f} s; logs in {out}")
    return 0


def report(args, figures: dict) -> None:
    print("\n==== figures ====")
    if "A" in figures:
        measured = figures["A"]["measured"]
        poll = [r["poll_ms"] for r in measured]
        marked = [r["recorded_to_marked_ms"] for r in measured]
        succeeded = [r["recorded_to_succeeded_ms"] for r in measured]
        p95 = percentile(poll, 0.95)
        print(
            f"A  PASS recorded -> transfer succeeded (review window 0, real default worker), n={len(poll)}: "
            f"p50 {percentile(poll, 0.5):.0f} ms, p95 {p95:.0f} ms, max {max(poll):.0f} ms "
            f"(target p95 <= 1000 ms: {'met' if p95 <= 1000 else 'MISSED'})"
        )
        print(
            f"   same, from DB timestamps (run.finished_at -> transfer op updated_at): p50 {percentile(succeeded, 0.5):.0f} ms, "
            f"p95 {percentile(succeeded, 0.95):.0f} ms, max {max(succeeded):.0f} ms; "
            f"-> transfer op created (marked): p50 {percentile(marked, 0.5):.0f} ms, p95 {percentile(marked, 0.95):.0f} ms"
        )
        print(f"   warm-up pass (not counted): {figures['A']['warmup']['poll_ms']:.0f} ms")
    if "B" in figures:
        cold = [r for r in figures["B"] if r["warmup"]]
        rows = [r for r in figures["B"] if not r["warmup"]]
        total = sum(r["pipeline"] for r in rows)
        runs = sum(r["runs_time"] for r in rows)
        overhead = total - runs
        share = overhead / total
        print(
            f"B  verification pipeline overhead beyond the runs (examples/mlp, fast candidate, {len(rows)} runs, "
            f"budget {args.budget_pairs} pairs): mean {overhead / len(rows) * 1000:.0f} ms per verification = "
            f"{share:.1%} of the pipeline wall time (mean {total / len(rows) * 1000:.0f} ms; runs "
            f"{runs / len(rows) * 1000:.0f} ms) (target <= 3%: {'met' if share <= 0.03 else 'MISSED'})"
        )
        shares = sorted(r["overhead"] / r["pipeline"] for r in rows)
        print(f"   per verification: median {statistics.median(shares):.1%}, min {shares[0]:.1%}, max {shares[-1]:.1%}")
        for r in rows:
            print(
                f"   run {r['run']}: pipeline {r['pipeline'] * 1000:7.0f} ms  runs {r['runs_time'] * 1000:7.0f} ms  "
                f"overhead {r['overhead'] * 1000:6.0f} ms ({r['overhead'] / r['pipeline']:.1%}); "
                f"{r['decision']}, {r['runs']} runs; sum of per-run wall_seconds {r['runs_wall_sum'] * 1000:.0f} ms "
                f"(-> overhead {(r['pipeline'] - r['runs_wall_sum']) / r['pipeline']:.1%} by that measure)"
            )
        print(
            "   runs = report timings warmup_seconds + measure_seconds (executing warm-up and measured runs, "
            "sandbox start-up included)"
        )
        if True:  # the breakdown is printed whether or not the target is met
            n = len(rows)

            def mean(key: str) -> float:
                return sum(r[key] for r in rows) / n * 1000

            print(
                "   where the overhead goes (mean ms per verification; DB/report timestamps, gunicorn request durations, "
                "local replay):"
            )
            lines = [
                ("commit -> dispatched (on-commit token + send to Redis)", mean("commit_to_dispatched")),
                ("dispatched -> started (queue wait, worker pick-up, start/)", mean("dispatched_to_started")),
                ("started -> runner began (downloads, scratch, heartbeat thread)", mean("started_to_runner")),
                (
                    "runner setup (archives, tree sha256, manifest, sequential plan: cached per process)",
                    mean("runner_setup"),
                ),
                ("runner tail (last decision update after the runs)", mean("runner_tail")),
                ("runner report assembly (environment fingerprint, report)", mean("runner_report")),
                (
                    "runner finished -> recorded (last progress, plot, sign, result/ POST, record)",
                    mean("runner_to_recorded"),
                ),
            ]
            for label, value in lines:
                print(f"     {label:<82} {value:7.0f}")
            print(f"     sum {sum(v for _, v in lines):.0f} ms (= overhead {overhead / n * 1000:.0f} ms)")
            print(
                f"     of which, server side: start/ {mean('start_server'):.0f} ms, downloads {mean('downloads_server'):.0f} ms, "
                f"result/ {mean('result_server'):.0f} ms; replayed here: signing {mean('replay_sign'):.0f} ms, "
                f"plot (PNG+SVG) {mean('replay_plot'):.0f} ms"
            )
            print(
                f"     inside the runs' time: {sum(r['heartbeats'] for r in rows) / n:.1f} heartbeat/progress POSTs per "
                f"verification, {mean('heartbeats_server'):.0f} ms server side (progress sent synchronously between runs)"
            )
            for r in cold:
                print(
                    f"   warm-up verification (not counted; the worker's first): pipeline {r['pipeline'] * 1000:.0f} ms, "
                    f"runs {r['runs_time'] * 1000:.0f} ms, overhead {r['overhead'] * 1000:.0f} ms "
                    f"({r['overhead'] / r['pipeline']:.1%}): runner setup {r['runner_setup'] * 1000:.0f} ms, "
                    f"runner finished -> recorded {r['runner_to_recorded'] * 1000:.0f} ms"
                )


if __name__ == "__main__":
    sys.exit(main())
