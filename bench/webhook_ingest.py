"""Stripe webhook ingest: signed events posted at rising rates to gunicorn + PostgreSQL.

Run:  .venv/bin/python bench/webhook_ingest.py [--rates 100,200,300,400,500,700] [--step-seconds 5]

What it does, all on 127.0.0.1 and bounded in time (--timeout):
1. uses the PostgreSQL at $BENCH_PG (default postgres://postgres@127.0.0.1:5432; started with pg_ctlcluster if
   it is down, and stopped again at the end), in a throwaway database that is created, migrated and dropped;
2. starts gunicorn (production settings, PAYMENT_PROVIDER=stripe, a bench webhook secret; 4 sync workers by
   default) on a free port, and warms it up for 6 s (not reported);
3. posts Stripe events signed with the SDK's helper, open loop, at each rate for --step-seconds; 10% of the
   posts are re-deliveries of an event already sent. Latency is measured from each request's *scheduled*
   send time to its 2xx (so a backlog counts against it);
4. starts a Celery worker (1 process by default) on the stored events' queue ($BENCH_BROKER, default
   redis://127.0.0.1:6379/5) after the load, or during it with --process-during; waits until it has
   drained, and checks that every distinct event was stored exactly once and processed exactly once;
5. stops everything it started and prints per-step figures and the sustained rate: the highest step with no
   errors, >= 95% of the offered rate achieved and p99 acknowledgement latency <= 50 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import stripe

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SECRET = "whsec_bench_" + uuid.uuid4().hex[:12]
TYPES = [
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "charge.refunded",
    "refund.updated",
    "charge.dispute.created",
    "transfer.created",
    "account.updated",
    "customer.created",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def pg_up(url: str) -> bool:
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5432), timeout=1).close()
        return True
    except OSError:
        return False


def pg_start() -> list[str] | None:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or not shutil.which("pg_ctlcluster"):
        raise RuntimeError("PostgreSQL is not running and pg_ctlcluster is not available")
    cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]
    subprocess.run([*cmd, "start"], check=True)
    return cmd


def make_event(event_type: str) -> dict:
    object_type = {
        "payment_intent": "payment_intent",
        "charge": "charge",
        "refund": "refund",
        "transfer": "transfer",
        "account": "account",
        "customer": "customer",
    }[event_type.split(".")[0]]
    if event_type.startswith("charge.dispute"):
        object_type = "dispute"
    prefix = {
        "payment_intent": "pi",
        "charge": "ch",
        "refund": "re",
        "transfer": "tr",
        "account": "acct",
        "customer": "cus",
        "dispute": "dp",
    }[object_type]
    # Objects the platform never created: processing stores and ignores them without calling Stripe.
    obj = {"id": f"{prefix}_bench{uuid.uuid4().hex[:16]}", "object": object_type, "livemode": False, "metadata": {}}
    return {
        "id": f"evt_bench{uuid.uuid4().hex}",
        "object": "event",
        "api_version": "2025-09-30.clover",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "type": event_type,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": obj},
    }


class Step:
    def __init__(self, rate: int, seconds: float, rng: random.Random, sent_ids: list[str]):
        self.rate = rate
        self.total = int(rate * seconds)
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.bodies: list[bytes] = []
        for _ in range(self.total):
            if sent_ids and rng.random() < 0.10:
                event = make_event(rng.choice(TYPES))
                event["id"] = rng.choice(sent_ids)  # a re-delivery of an event already sent
            else:
                event = make_event(rng.choice(TYPES))
                sent_ids.append(event["id"])
            self.bodies.append(json.dumps(event).encode())


def run_step(port: int, step: Step, threads: int) -> tuple[float, float]:
    interval = 1.0 / step.rate
    start = time.perf_counter() + 0.2
    signatures = [stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET) for body in step.bodies]

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(index, step.total, threads):
            scheduled = start + i * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                conn.request(
                    "POST",
                    "/api/v1/payments/stripe/webhook/",
                    body=step.bodies[i],
                    headers={"Content-Type": "application/json", "Stripe-Signature": signatures[i]},
                )
                response = conn.getresponse()
                response.read()
                done = time.perf_counter()
                if response.status != 200:
                    with step.lock:
                        step.errors.append(f"HTTP {response.status}")
                    continue
                with step.lock:
                    step.latencies.append(done - scheduled)
            except (OSError, http.client.HTTPException) as exc:
                with step.lock:
                    step.errors.append(type(exc).__name__)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.close()

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    return elapsed, len(step.latencies) / elapsed


def p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,200,300,400,500,700")
    parser.add_argument("--step-seconds", type=float, default=5.0)
    parser.add_argument("--gunicorn-workers", type=int, default=4)
    parser.add_argument("--gunicorn-threads", type=int, default=4)
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class: sync or gthread")
    parser.add_argument("--client-threads", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=300.0, help="hard limit for the whole run, seconds")
    parser.add_argument("--settings", default="marketplace.settings.production", help="Django settings module")
    parser.add_argument("--worker-concurrency", type=int, default=1)
    parser.add_argument(
        "--process-during",
        action="store_true",
        help="run the Celery worker during the load (processing competes for the 2 cores)",
    )
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    sys.setswitchinterval(0.0005)  # the load generator's threads hand the GIL over promptly
    deadline = time.monotonic() + args.timeout
    pg_url = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
    broker = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/5")
    redis_url = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/4")
    dbname = f"bench_webhooks_{os.getpid()}"
    started_pg = None
    procs: list[subprocess.Popen] = []
    logs = Path(os.environ.get("BENCH_LOG_DIR", "/tmp")) / f"webhook_ingest_{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)

    def stop_all() -> None:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        procs.clear()

    if not pg_up(pg_url):
        started_pg = pg_start()
    admin_url = f"{pg_url}/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": args.settings,
        "DJANGO_SECRET_KEY": "bench-only-" + uuid.uuid4().hex,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        # Plain HTTP on loopback, as behind the TLS-terminating proxy production settings expect.
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": f"{pg_url}/{dbname}",
        "DATABASE_CONN_MAX_AGE": "600",
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": broker,
        "PAYMENT_PROVIDER": "stripe",
        "STRIPE_SECRET_KEY": "sk_test_bench_never_used",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_CONNECT_WEBHOOK_SECRET": SECRET + "_connect",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    results = []
    ok = True
    try:
        subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        subprocess.run(
            [PYTHON, "-m", "celery", "-A", "marketplace", "purge", "-f", "-Q", "default"],
            cwd=ROOT,
            env=env,
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = free_port()
        procs.append(
            subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "gunicorn",
                    "marketplace.wsgi:application",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    str(args.gunicorn_workers),
                    "--threads",
                    str(args.gunicorn_threads),
                    "--worker-class",
                    args.worker_class,
                    "--keep-alive",
                    "30",
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=env,
                stdout=open(logs / "gunicorn.log", "w"),
                stderr=subprocess.STDOUT,
            )
        )
        wait_port(port, 30)

        def start_worker() -> None:
            procs.append(
                subprocess.Popen(
                    [
                        PYTHON,
                        "-m",
                        "celery",
                        "-A",
                        "marketplace",
                        "worker",
                        "-Q",
                        "default",
                        "-c",
                        str(args.worker_concurrency),
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                        "--loglevel",
                        "WARNING",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=open(logs / "worker.log", "w"),
                    stderr=subprocess.STDOUT,
                )
            )

        if args.process_during:
            start_worker()
            time.sleep(3)
        rng = random.Random(42)
        sent_ids: list[str] = []
        # Warm-up, not reported: every gunicorn worker opens its PostgreSQL, Redis and broker connections.
        # Clearing the drain debounce key makes each warm-up request publish, so every worker connects to
        # the broker now rather than on its first publish during a measured step.
        import redis

        cache = redis.Redis.from_url(redis_url)
        warming = threading.Event()

        def clear_key() -> None:
            while not warming.is_set():
                cache.delete(":1:payments:webhook-drain-scheduled")
                time.sleep(0.002)

        clearer = threading.Thread(target=clear_key)
        clearer.start()
        run_step(port, Step(100, 2.0, rng, sent_ids), args.client_threads)
        warming.set()
        clearer.join()
        run_step(port, Step(150, 4.0, rng, sent_ids), args.client_threads)
        print(f"{'offered/s':>9} {'achieved/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'errors':>6}")
        for rate in rates:
            if time.monotonic() > deadline - 90:
                print("stopping early: time limit")
                break
            step = Step(rate, args.step_seconds, rng, sent_ids)
            elapsed, achieved = run_step(port, step, args.client_threads)
            row = (
                rate,
                achieved,
                p(step.latencies, 0.5) * 1000,
                p(step.latencies, 0.99) * 1000,
                max(step.latencies or [0]) * 1000,
                len(step.errors),
            )
            results.append(row)
            print(f"{row[0]:>9} {row[1]:>10.1f} {row[2]:>7.1f} {row[3]:>7.1f} {row[4]:>7.1f} {row[5]:>6}", flush=True)
        sent_total = len(set(sent_ids))
        # Drain: the worker processes everything that was stored; each event must be processed exactly once.
        if not args.process_during:
            start_worker()
        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
            stored = conn.execute("SELECT count(*) FROM payments_webhookevent").fetchone()[0]
            drain_start = time.monotonic()
            while time.monotonic() < deadline - 10:
                pending = conn.execute(
                    "SELECT count(*) FROM payments_webhookevent WHERE status IN ('pending', 'processing')"
                ).fetchone()[0]
                if pending == 0:
                    break
                time.sleep(1)
            drain = time.monotonic() - drain_start
            counts = dict(
                conn.execute(
                    "SELECT processed_count, count(*) FROM payments_webhookevent GROUP BY processed_count"
                ).fetchall()
            )
            duplicates = conn.execute(
                "SELECT count(*) FROM (SELECT event_id FROM payments_webhookevent GROUP BY event_id HAVING count(*) > 1) d"
            ).fetchone()[0]
        lost = sent_total - stored
        twice = sum(n for c, n in counts.items() if c > 1)
        never = counts.get(0, 0)
        print(
            f"distinct events sent {sent_total}, stored {stored}, lost {lost}, stored twice {duplicates}; "
            f"processed once {counts.get(1, 0)}, processed twice or more {twice}, not processed {never} "
            f"(queue drained in {drain:.1f}s)"
        )
        ok = lost == 0 and duplicates == 0 and twice == 0 and never == 0
    finally:
        stop_all()
        subprocess.run(
            [PYTHON, "-m", "celery", "-A", "marketplace", "purge", "-f", "-Q", "default"],
            cwd=ROOT,
            env=env,
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        if started_pg:
            subprocess.run([*started_pg, "stop"], check=False)
    good = [r for r in results if r[5] == 0 and r[1] >= 0.95 * r[0] and r[3] <= 50.0]
    if good:
        best = max(good, key=lambda r: r[0])
        print(f"sustained: {best[1]:.0f} events/s (offered {best[0]}/s) with p99 acknowledgement {best[3]:.1f} ms")
    else:
        print("sustained: no step met p99 <= 50 ms with >= 95% of the offered rate")
    target = any(r[0] >= 300 for r in good)
    print(
        f"target >= 300 events/s at p99 <= 50 ms: {'met' if target else 'NOT met'}; "
        f"exactly-once check: {'passed' if ok else 'FAILED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
