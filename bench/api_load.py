"""Load benchmark of the API on gunicorn + PostgreSQL: the job list and bid creation at 16 and 64 clients.

Run (PostgreSQL on 127.0.0.1:5432 with trust auth, Redis on 127.0.0.1:6379; dev requirements installed):
    .venv/bin/python bench/api_load.py [--workers 4] [--duration 20] [--clients 16 64]

What it does, all on loopback and bounded in time:
1. (re)creates the PostgreSQL database `bench` and migrates it;
2. seeds organizations, ~200 open public jobs with criteria (and drafts), engineers with API tokens, bids;
3. starts gunicorn (marketplace.wsgi, production settings, offline payments, throttles set high);
4. runs locust headless (bench/locustfile_api.py) for each scenario and client count and prints
   req/s and p50/p95/p99; the target is job list >= 400 req/s with p95 <= 40 ms at 16 clients;
5. profiles one job-list request in-process (cProfile) and says where its time goes;
6. stops gunicorn and locust, and drops the database (unless --keep-db).

Note: the load generator, gunicorn and PostgreSQL share this machine's cores, so the figures are a lower
bound for a deployment where the clients run elsewhere.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import json
import os
import pstats
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LOCUSTFILE = ROOT / "bench" / "locustfile_api.py"
TARGET_RPS, TARGET_P95_MS = 400, 40
LIST_PATH = "/api/v1/jobs/?page_size=25"


def bench_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of every process of the benchmark: production settings on the `bench` database."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "DATABASE_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": args.settings,
            "DJANGO_SECRET_KEY": "bench-only-not-secret",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
            # Plain HTTP on loopback, as behind the TLS-terminating proxy production settings expect.
            "DJANGO_SECURE_SSL_REDIRECT": "false",
            "DATABASE_URL": f"{args.postgres_url.rstrip('/')}/{args.database}",
            "DATABASE_CONN_MAX_AGE": "600",
            "REDIS_URL": args.redis_url,
            "CELERY_BROKER_URL": args.redis_url,
            "PAYMENT_PROVIDER": "offline",
            "OFFLINE_PAYMENTS_ALLOWED_IN_PRODUCTION": "true",
            "THROTTLE_USER": "10000000/min",
            "THROTTLE_ANON": "10000000/min",
            "LOG_LEVEL": "WARNING",
            "MEDIA_ROOT": str(Path(tempfile.gettempdir()) / "speedproof-bench-media"),
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def database_recreate(args: argparse.Namespace, *, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(f"{args.postgres_url.rstrip('/')}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        if not drop_only:
            connection.execute(f'CREATE DATABASE "{args.database}"')


def seed(args: argparse.Namespace) -> dict:
    """Rows made directly with the ORM (bulk, fast); API tokens through the service."""
    from django.contrib.auth.hashers import make_password
    from django.utils import timezone

    from accounts.models import Membership, Organization, User
    from accounts.services import api_token_create
    from jobs.models import Bid, Job

    criteria = {
        "criteria": [{"metric": "wall_time", "statistic": "median", "kind": "speedup", "threshold": 1.5}],
        "correctness": {"mode": "numeric", "rtol": 1e-4, "atol": 1e-6},
        "tiers": [{"speedup": 1.5, "fraction": 0.5}, {"speedup": 2.0, "fraction": 1.0}],
    }
    from jobs.criteria import criteria_validate

    criteria = criteria_validate(criteria)
    now = timezone.now()
    unusable = make_password(None)
    organizations = Organization.objects.bulk_create(
        Organization(name=f"Bench company {i}", slug=f"bench-company-{i}") for i in range(args.organizations)
    )
    admins = User.objects.bulk_create(
        User(email=f"admin{i}@bench.test", name=f"Admin {i}", account_type=User.AccountType.COMPANY, password=unusable)
        for i in range(args.organizations)
    )
    Membership.objects.bulk_create(
        Membership(organization=org, user=user, role=Membership.Role.OWNER) for org, user in zip(organizations, admins)
    )
    engineers = User.objects.bulk_create(
        User(
            email=f"engineer{i}@bench.test",
            name=f"Engineer {i}",
            account_type=User.AccountType.ENGINEER,
            password=unusable,
        )
        for i in range(args.engineers)
    )
    jobs = Job.objects.bulk_create(
        Job(
            organization=organizations[i % len(organizations)],
            created_by=admins[i % len(admins)],
            title=f"Speed up model {i}",
            description="Make the inference path faster on the reference machine. " * 4,
            hardware_class="cpu-x86",
            currency="USD",
            budget_min=100_000,
            budget_max=500_000 + 1_000 * i,
            bidding_deadline=now + timedelta(days=30),
            criteria=criteria,
            status=Job.Status.OPEN,
            published_at=now,
        )
        for i in range(args.open_jobs)
    )
    Job.objects.bulk_create(
        Job(
            organization=organizations[i % len(organizations)],
            created_by=admins[i % len(admins)],
            title=f"Draft {i}",
            hardware_class="cpu-x86",
            currency="USD",
            budget_min=100_000,
            budget_max=200_000,
            bidding_deadline=now + timedelta(days=30),
            criteria=criteria,
        )
        for i in range(args.open_jobs // 5)
    )
    # Existing bids: the first `seed_bidders` engineers bid on a few jobs each; they never bid during the load.
    seed_bidders, bid_pool = engineers[: args.seed_bidders], engineers[args.seed_bidders :]
    Bid.objects.bulk_create(
        Bid(
            job=jobs[(i * 7 + k) % len(jobs)],
            engineer=engineer,
            amount=120_000 + k,
            estimated_days=10,
            proposal="Fuse kernels.",
        )
        for i, engineer in enumerate(seed_bidders)
        for k in range(args.bids_per_seed_bidder)
    )
    return {
        "list_engineer_tokens": [api_token_create(user=user, name="bench").secret for user in seed_bidders[:64]],
        "bid_engineer_tokens": [api_token_create(user=user, name="bench").secret for user in bid_pool],
        "open_job_ids": [job.pk for job in jobs],
        "counts": {
            "organizations": len(organizations),
            "open_jobs": len(jobs),
            "engineers": len(engineers),
            "bids": Bid.objects.count(),
        },
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen | None, name: str) -> None:
    """Stop a process group this script started: TERM, then KILL after 10 s."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop on TERM; killing it", file=sys.stderr)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


@contextmanager
def gunicorn(env: dict[str, str], port: int, workers: int, log_path: Path, options: list[str] | None = None):
    """gunicorn on loopback until the block ends; `options` replace the default worker options."""
    log = log_path.open("w")
    worker_options = options if options is not None else [f"--workers={workers}", "--worker-class=sync"]
    process = subprocess.Popen(
        [
            str(VENV_BIN / "gunicorn"),
            "marketplace.wsgi",
            f"--bind=127.0.0.1:{port}",
            *worker_options,
            "--backlog=512",
            "--timeout=30",
            "--graceful-timeout=5",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"gunicorn exited with {process.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live/", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"gunicorn did not become healthy within 60 s; see {log_path}")
            time.sleep(0.3)
        yield process
    finally:
        stop(process, "gunicorn")
        log.close()


def _tree_cpu(pid: int) -> float:
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for process in (root, *root.children(recursive=True)):
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


def _bench_postgres_cpu(database: str) -> float:
    """CPU of the PostgreSQL backends serving the benchmark's database (persistent connections)."""
    import psutil

    total = 0.0
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            if cmdline.startswith("postgres:") and f" {database} " in f"{cmdline} ":
                times = process.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
    return total


def cpu_snapshot(gunicorn_pid: int, database: str) -> dict[str, float]:
    import resource

    import psutil

    machine = psutil.cpu_times()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "gunicorn": _tree_cpu(gunicorn_pid),
        "postgres": _bench_postgres_cpu(database),
        "locust": children.ru_utime + children.ru_stime,  # locust is the only child that exits during a run
        "busy": sum(machine) - machine.idle - getattr(machine, "iowait", 0.0),
        "wall": time.monotonic(),
    }


def locust_run(
    env: dict[str, str], *, port: int, scenario: str, clients: int, duration: int, out_dir: Path, bid_run: str = "0/1"
) -> dict | None:
    prefix = out_dir / f"{scenario}-{clients}"
    command = [
        str(VENV_BIN / "locust"),
        "--headless",
        "--only-summary",
        "--skip-log-setup",
        "-u", str(clients),
        "-r", str(clients),
        "-t", f"{duration}s",
        "--stop-timeout", "5",
        "--host", f"http://127.0.0.1:{port}",
        "-f", str(LOCUSTFILE),
        "--csv", str(prefix),
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**env, "BENCH_SCENARIO": scenario, "BENCH_BID_RUN": bid_run},
        stdout=subprocess.DEVNULL,
        stderr=(out_dir / f"{scenario}-{clients}.log").open("w"),
        start_new_session=True,
    )
    try:
        process.wait(timeout=duration + 60)
    except subprocess.TimeoutExpired:
        print(f"locust {scenario}/{clients} overran; stopping it", file=sys.stderr)
    finally:
        stop(process, "locust")
    stats_file = Path(f"{prefix}_stats.csv")
    if not stats_file.exists():
        print(f"locust wrote no statistics; see {out_dir / f'{scenario}-{clients}.log'}", file=sys.stderr)
        return None
    with stats_file.open() as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == "Aggregated":
                return {
                    "requests": int(row["Request Count"]),
                    "failures": int(row["Failure Count"]),
                    "rps": float(row["Requests/s"]),
                    "p50": row["50%"],
                    "p95": row["95%"],
                    "p99": row["99%"],
                }
    return None


@contextmanager
def phase_timers():
    """Time the request's phases (wall and this process's CPU) by wrapping the methods that run them."""
    from rest_framework.generics import GenericAPIView
    from rest_framework.pagination import PageNumberPagination
    from rest_framework.renderers import JSONRenderer
    from rest_framework.serializers import ListSerializer
    from rest_framework.views import APIView

    from accounts.authentication import BearerTokenAuthentication
    from jobs.apis import JobViewSet

    phases = [
        ("authentication: token + user lookup (1 query)", BearerTokenAuthentication, "authenticate"),
        ("throttling: Redis get + set of the history", APIView, "check_throttles"),
        ("visible-jobs queryset: membership query + build", JobViewSet, "get_queryset"),
        ("filter backends: filterset, search, ordering", GenericAPIView, "filter_queryset"),
        ("pagination: COUNT + page query + 25 rows", PageNumberPagination, "paginate_queryset"),
        ("serialization: JobSerializer(many=True)", ListSerializer, "to_representation"),
        ("JSON rendering", JSONRenderer, "render"),
    ]
    totals = {label: [0.0, 0.0] for label, _, _ in phases}
    originals = []
    for label, owner, name in phases:
        original = owner.__dict__[name]

        def timed(*args, _original=original, _label=label, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return _original(*args, **kwargs)
            finally:
                totals[_label][0] += time.perf_counter() - wall
                totals[_label][1] += time.process_time() - cpu

        setattr(owner, name, timed)
        originals.append((owner, name, original))
    try:
        yield totals
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def profile_one_list_request(token: str) -> None:
    """Where one warm job-list request's time goes, in-process: phases timed, then cProfile's top functions."""
    from django.db import connection
    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    for _ in range(20):
        assert client.get(LIST_PATH).status_code == 200
    sql = [0.0, 0]

    def timed_sql(execute, sql_text, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql_text, params, many, context)
        finally:
            sql[0] += time.perf_counter() - started
            sql[1] += 1

    rounds = 200
    with phase_timers() as phases, connection.execute_wrapper(timed_sql):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            client.get(LIST_PATH)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    def ms(seconds: float) -> str:
        return f"{seconds / rounds * 1000:6.2f}"

    print(f"\nProfile of one job-list request (in-process, warm, mean of {rounds}), ms:")
    print(f"  {'phase':<50} {'wall':>6} {'CPU':>6}")
    print(f"  {'whole request (Django test client)':<50} {ms(wall)} {ms(cpu)}")
    for label, (phase_wall, phase_cpu) in phases.items():
        print(f"    {label:<48} {ms(phase_wall)} {ms(phase_cpu)}")
    rest_wall = wall - sum(value[0] for value in phases.values())
    rest_cpu = cpu - sum(value[1] for value in phases.values())
    print(f"    {'rest: middleware, routing, view, response':<48} {ms(rest_wall)} {ms(rest_cpu)}")
    print(
        f"  SQL: {sql[1] / rounds:.0f} queries per request, {ms(sql[0]).strip()} ms wall in total (within the phases above)"
    )

    profiler = cProfile.Profile(time.process_time)  # CPU time: other processes' slices are not charged to us
    profiler.enable()
    for _ in range(50):
        client.get(LIST_PATH)
    profiler.disable()
    stats = pstats.Stats(profiler)
    print("  top functions by own CPU time under cProfile (inflated by the profiler), per request:")
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:10]
    for (filename, line, name), (_, calls, tottime, _, _) in rows:
        short = filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        print(f"    {tottime / 50 * 1000:6.2f} ms {calls // 50:>6}x  {short}:{line} {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workers", type=int, default=4, help="gunicorn sync workers (default 4: 2 per core on 2 cores)"
    )
    parser.add_argument("--duration", type=int, default=20, help="seconds per measured run")
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--scenarios", nargs="+", default=["list", "bid"], choices=["list", "bid"])
    parser.add_argument("--settings", default="marketplace.settings.production")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6")
    parser.add_argument("--organizations", type=int, default=20)
    parser.add_argument("--open-jobs", type=int, default=200)
    parser.add_argument("--engineers", type=int, default=1200)
    parser.add_argument("--seed-bidders", type=int, default=200)
    parser.add_argument("--bids-per-seed-bidder", type=int, default=5)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--keep-db", action="store_true", help="leave the `bench` database for inspection")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop gunicorn/locust, drop the database
    for url in (args.postgres_url, args.redis_url):
        if not any(host in url for host in ("127.0.0.1", "localhost", "[::1]")):
            raise SystemExit(f"loopback addresses only: {url}")

    env = bench_env(args)
    os.environ.update(env)
    warnings.filterwarnings("ignore", message="No directory at")  # whitenoise: no collectstatic for an API bench
    sys.path.insert(0, str(ROOT))
    out_dir = Path(tempfile.mkdtemp(prefix="speedproof-bench-"))
    print(
        f"settings {args.settings}, database {env['DATABASE_URL']}, gunicorn {args.workers} sync workers; logs in {out_dir}"
    )

    started = time.monotonic()
    database_recreate(args)
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        import django

        django.setup()
        from django.core.cache import cache

        cache.clear()  # throttle counters of earlier runs
        seeded = seed(args)
        from django.db import connections

        connections.close_all()
        seed_file = out_dir / "seed.json"
        seed_file.write_text(json.dumps(seeded))
        env["BENCH_SEED_FILE"] = str(seed_file)
        print(f"seeded {seeded['counts']} in {time.monotonic() - started:.0f} s")

        results: dict[tuple[str, int], dict | None] = {}
        port = free_port()
        cpu: dict[tuple[str, int], dict[str, float]] = {}
        with gunicorn(env, port, args.workers, out_dir / "gunicorn.log") as server:
            locust_run(env, port=port, scenario="list", clients=args.clients[0], duration=5, out_dir=out_dir)
            for scenario in args.scenarios:
                for run, clients in enumerate(args.clients):
                    print(
                        f"  running {scenario} at {clients} clients for {args.duration} s (load {os.getloadavg()[0]:.1f}) ...",
                        flush=True,
                    )
                    before = cpu_snapshot(server.pid, args.database)
                    results[scenario, clients] = locust_run(
                        env,
                        port=port,
                        scenario=scenario,
                        clients=clients,
                        duration=args.duration,
                        out_dir=out_dir,
                        bid_run=f"{run}/{len(args.clients)}",
                    )
                    after = cpu_snapshot(server.pid, args.database)
                    cpu[scenario, clients] = {key: after[key] - before[key] for key in after}

        names = {"list": f"GET {LIST_PATH}", "bid": "POST /api/v1/jobs/{id}/bids/"}
        print(
            f"\n{'endpoint':<36} {'clients':>7} {'requests':>9} {'fail':>5} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
        )
        for (scenario, clients), row in results.items():
            if row is None:
                print(f"{names[scenario]:<36} {clients:>7}   (no result)")
                continue
            print(
                f"{names[scenario]:<36} {clients:>7} {row['requests']:>9} {row['failures']:>5} {row['rps']:>8.1f}"
                f" {row['p50']:>7} {row['p95']:>7} {row['p99']:>7}"
            )
        cores = os.cpu_count() or 1
        print(
            f"\nCPU per request, ms (gunicorn / PostgreSQL `{args.database}` backends / locust); machine busy of {cores} cores:"
        )
        for (scenario, clients), row in results.items():
            if not row or not row["requests"]:
                continue
            used = cpu[scenario, clients]
            ours = used["gunicorn"] + used["postgres"] + used["locust"]
            per_request = {key: used[key] / row["requests"] * 1000 for key in ("gunicorn", "postgres", "locust")}
            print(
                f"  {scenario:<4} {clients:>3} clients: {per_request['gunicorn']:5.1f} / {per_request['postgres']:4.1f} /"
                f" {per_request['locust']:4.1f};  busy {used['busy'] / used['wall'] / cores:4.0%},"
                f" other processes {max(used['busy'] - ours, 0) / used['wall'] / cores:4.0%}"
            )
        target = results.get(("list", 16))
        if target is not None:
            met = target["rps"] >= TARGET_RPS and float(target["p95"]) <= TARGET_P95_MS and target["failures"] == 0
            print(
                f"\ntarget (job list at 16 clients: >= {TARGET_RPS} req/s, p95 <= {TARGET_P95_MS} ms): "
                f"{'MET' if met else 'NOT MET'} ({target['rps']:.1f} req/s, p95 {target['p95']} ms)"
            )
        if not args.no_profile:
            profile_one_list_request(seeded["list_engineer_tokens"][0])
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep_db:
            database_recreate(args, drop_only=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
