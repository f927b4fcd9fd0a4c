"""The job list under load beside two peers, at two table sizes, with gunicorn set up as deployed.

Run (PostgreSQL on 127.0.0.1:5432 with trust auth, Redis on 127.0.0.1:6379; dev requirements; Debian's wrk):
    .venv/bin/python bench/job_list_load.py                     # the whole run, about 12 minutes
    .venv/bin/python bench/job_list_load.py --sizes 2000 --rounds 1 --duration 5 --configs --explain-sizes

What it does, all on loopback:
1. (re)creates the PostgreSQL database `bench_list`, migrates it and seeds 20 organizations (an owner with an
   API token each), 200 engineers with API tokens, open public jobs with criteria (plus one draft per ten),
   and 5 bids per job;
2. gunicorn settings (first size only): the job list for engineers and companies under each candidate
   configuration in `GUNICORN_CONFIGS` (the docker-compose one included), one config after another;
3. for each size: gunicorn with the chosen configuration serves the project's job list as engineers and as
   companies, a plain DRF `ListAPIView` + `ModelSerializer` peer and a raw Django `.values()` peer (both
   only in the bench's URLconf, `bench/peer_urls.py`), interleaved in `--rounds` rounds of `--duration`
   seconds each, through wrk (closed loop, `--clients` connections, one thread; every request carries the next
   of 64 engineer or 20 company tokens);
4. query plans: at each of `--explain-sizes` it runs the job list in-process with the response cache off,
   captures its SQL and prints each query's plan nodes and execution time (EXPLAIN ANALYZE), flagging
   sequential scans of jobs or bids;
5. stops gunicorn and drops the database (unless --keep-db).

Printed per endpoint and size: req/s, p50/p95/p99 (wrk's latency histogram), gunicorn and PostgreSQL CPU per
request, the ratios to the plain-DRF and raw peers, the load average during the runs, and the goal: the
project's list >= 400 req/s, p95 <= 40 ms and never slower than the plain-DRF peer. wrk, gunicorn and
PostgreSQL share the machine's cores, so these figures are lower than a deployment whose clients run elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api_load import (  # noqa: E402
    _bench_postgres_cpu,
    _tree_cpu,
    bench_env,
    database_recreate,
    free_port,
    gunicorn,
)

WRK_SCRIPT = ROOT / "bench" / "wrk_report.lua"
LIST_PATH = "/api/v1/jobs/?page_size=25"
GOAL_RPS, GOAL_P95_MS = 400, 40
BIDS_PER_JOB = 5

# name -> gunicorn worker options. "compose" is what docker-compose.yml ran before this bench chose sync-3.
GUNICORN_CONFIGS = {
    "compose": ["--workers=3", "--worker-class=sync", "--max-requests=2000", "--max-requests-jitter=200"],
    "sync-3": ["--workers=3", "--worker-class=sync"],
    "sync-4": ["--workers=4", "--worker-class=sync"],
    "gthread-2x4": ["--workers=2", "--worker-class=gthread", "--threads=4"],
    "gthread-3x4": ["--workers=3", "--worker-class=gthread", "--threads=4"],
}
CHOSEN_CONFIG = "sync-3"

# endpoint name -> (path, whose tokens)
ENDPOINTS = {
    "project, engineers": (LIST_PATH, "engineer"),
    "project, companies": (LIST_PATH, "company"),
    "plain DRF peer": ("/bench/peers/plain-drf/jobs/", "engineer"),
    "raw Django peer": ("/bench/peers/raw/jobs/", "engineer"),
}
PROJECT_ENDPOINTS = ("project, engineers", "project, companies")


def seed_people() -> dict[str, list[str]]:
    from django.contrib.auth.hashers import make_password

    from accounts.models import Membership, Organization, User
    from accounts.services import api_token_create

    unusable = make_password(None)
    organizations = Organization.objects.bulk_create(
        Organization(name=f"Bench company {i}", slug=f"bench-company-{i}") for i in range(20)
    )
    owners = User.objects.bulk_create(
        User(email=f"owner{i}@bench.test", name=f"Owner {i}", account_type=User.AccountType.COMPANY, password=unusable)
        for i in range(len(organizations))
    )
    Membership.objects.bulk_create(
        Membership(organization=org, user=user, role=Membership.Role.OWNER) for org, user in zip(organizations, owners)
    )
    engineers = User.objects.bulk_create(
        User(
            email=f"engineer{i}@bench.test",
            name=f"Engineer {i}",
            account_type=User.AccountType.ENGINEER,
            password=unusable,
        )
        for i in range(200)
    )
    return {
        "engineer": [api_token_create(user=user, name="bench").secret for user in engineers[:64]],
        "company": [api_token_create(user=user, name="bench").secret for user in owners],
    }


def seed_jobs_up_to(total: int) -> None:
    """Open public jobs (and one draft per ten) until there are `total` open ones, with BIDS_PER_JOB bids each.

    Rows are copied in SQL from one template job and one template bid made with the ORM, so 200,000 jobs take
    seconds; every column the ORM would fill is copied, titles and budgets vary per row.
    """
    from django.db import connection
    from django.utils import timezone

    from accounts.models import Membership, User
    from jobs.criteria import criteria_validate
    from jobs.models import Bid, Job

    have = Job.objects.filter(status=Job.Status.OPEN).count()
    if have >= total:
        return
    memberships = list(Membership.objects.order_by("organization_id").values_list("organization_id", "user_id"))
    engineer_ids = list(
        User.objects.filter(account_type=User.AccountType.ENGINEER).order_by("id").values_list("id", flat=True)
    )
    criteria = criteria_validate(
        {
            "criteria": [{"metric": "wall_time", "statistic": "median", "kind": "speedup", "threshold": 1.5}],
            "correctness": {"mode": "numeric", "rtol": 1e-4, "atol": 1e-6},
            "tiers": [{"speedup": 1.5, "fraction": 0.5}, {"speedup": 2.0, "fraction": 1.0}],
        }
    )
    now = timezone.now()
    template = Job.objects.create(
        organization_id=memberships[0][0],
        created_by_id=memberships[0][1],
        title="template",
        description="Make the inference path faster on the reference machine. " * 4,
        hardware_class="cpu-x86",
        currency="USD",
        budget_min=100_000,
        budget_max=500_000,
        bidding_deadline=now + timedelta(days=30),
        criteria=criteria,
        status=Job.Status.OPEN,
        published_at=now,
    )
    bid_template = Bid.objects.create(
        job=template, engineer_id=engineer_ids[0], amount=120_000, estimated_days=10, proposal="Fuse kernels."
    )
    job_columns = [f.column for f in Job._meta.concrete_fields if f.column != "id"]
    bid_columns = [f.column for f in Bid._meta.concrete_fields if f.column != "id"]
    orgs = len(memberships)
    varied_job = {
        "organization_id": f"(ARRAY{[m[0] for m in memberships]})[1 + g %% {orgs}]",
        "created_by_id": f"(ARRAY{[m[1] for m in memberships]})[1 + g %% {orgs}]",
        "title": "CASE WHEN g %% 11 = 10 THEN 'Draft ' ELSE 'Speed up model ' END || g",
        "status": "CASE WHEN g %% 11 = 10 THEN 'draft' ELSE 'open' END",
        "published_at": "CASE WHEN g %% 11 = 10 THEN NULL ELSE t.published_at END",
        "budget_max": "500000 + 1000 * (g %% 1000)",
    }
    start = Job.objects.order_by("-id").values_list("id", flat=True).first() + 1
    # Ten open jobs per eleven rows: enough rows for `total` open jobs.
    rows = (total - have) * 11 // 10 + 11
    with connection.cursor() as cursor:
        select = ", ".join(varied_job.get(column, f"t.{column}") for column in job_columns)
        cursor.execute(
            f"INSERT INTO jobs_job ({', '.join(job_columns)}) SELECT {select} FROM jobs_job t,"
            f" generate_series(%s, %s) g WHERE t.id = %s",
            [start, start + rows - 1, template.pk],
        )
        engineers = len(engineer_ids)
        varied_bid = {
            "job_id": "j.id",
            "engineer_id": f"(ARRAY{engineer_ids})[1 + (j.id * {BIDS_PER_JOB} + k) %% {engineers}]",
            "amount": "120000 + k",
        }
        select = ", ".join(varied_bid.get(column, f"b.{column}") for column in bid_columns)
        cursor.execute(
            f"INSERT INTO jobs_bid ({', '.join(bid_columns)}) SELECT {select} FROM jobs_bid b, jobs_job j,"
            f" generate_series(0, {BIDS_PER_JOB - 1}) k WHERE b.id = %s AND j.id > %s AND j.status = 'open'",
            [bid_template.pk, template.pk],
        )
        cursor.execute("DELETE FROM jobs_bid WHERE id = %s", [bid_template.pk])
        cursor.execute("DELETE FROM jobs_job WHERE id = %s", [template.pk])
        cursor.execute(
            "DELETE FROM jobs_bid WHERE job_id IN (SELECT id FROM jobs_job WHERE status = 'open' ORDER BY id DESC"
            " OFFSET %s)",
            [total],
        )
        cursor.execute(
            "DELETE FROM jobs_job WHERE id IN (SELECT id FROM jobs_job WHERE status = 'open' ORDER BY id DESC"
            " OFFSET %s)",
            [total],
        )
        cursor.execute("ANALYZE")


def table_counts() -> dict[str, int]:
    from jobs.models import Bid, Job

    return {
        "open jobs": Job.objects.filter(status=Job.Status.OPEN).count(),
        "drafts": Job.objects.filter(status=Job.Status.DRAFT).count(),
        "bids": Bid.objects.count(),
    }


def wrk_run(*, port: int, path: str, tokens: list[str], clients: int, duration: int) -> dict:
    completed = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{clients}",
            f"-d{duration}s",
            "--timeout=5s",
            "-s",
            str(WRK_SCRIPT),
            f"http://127.0.0.1:{port}{path}",
        ],
        env={**os.environ, "BENCH_TOKENS": ",".join(tokens)},
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise SystemExit(f"wrk failed ({completed.returncode}): {completed.stdout[-500:]} {completed.stderr[-500:]}")
    result = json.loads(lines[-1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def measured_run(*, server_pid: int, database: str, **wrk_options) -> dict:
    cpu = (_tree_cpu(server_pid), _bench_postgres_cpu(database))
    result = wrk_run(**wrk_options)
    requests = max(result["requests"], 1)
    result["gunicorn_cpu_ms"] = (_tree_cpu(server_pid) - cpu[0]) / requests * 1000
    result["postgres_cpu_ms"] = (_bench_postgres_cpu(database) - cpu[1]) / requests * 1000
    result["load"] = os.getloadavg()[0]
    return result


def summarise(runs: list[dict]) -> dict:
    """Median over rounds of each figure (rounds are interleaved, so a noisy moment hits every endpoint)."""
    keys = ("rps", "p50", "p95", "p99", "gunicorn_cpu_ms", "postgres_cpu_ms", "load")
    summary = {key: statistics.median(run[key] for run in runs) for key in keys}
    summary["rps_range"] = (min(run["rps"] for run in runs), max(run["rps"] for run in runs))
    summary["errors"] = sum(run["non_2xx"] + run["socket_errors"] for run in runs)
    return summary


def print_table(title: str, rows: dict[str, dict]) -> None:
    print(f"\n{title}")
    print(
        f"  {'endpoint':<22} {'req/s':>7} {'(range)':>13} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
        f" {'CPU ms/req gunicorn+pg':>24} {'errors':>6} {'load':>5}"
    )
    for name, row in rows.items():
        low, high = row["rps_range"]
        print(
            f"  {name:<22} {row['rps']:7.1f} {f'{low:.0f}-{high:.0f}':>13} {row['p50'] / 1000:7.1f}"
            f" {row['p95'] / 1000:7.1f} {row['p99'] / 1000:7.1f}"
            f" {row['gunicorn_cpu_ms']:13.2f} + {row['postgres_cpu_ms']:5.2f}    {row['errors']:>6} {row['load']:5.1f}"
        )


def warm_up(port: int, tokens: dict[str, list[str]], clients: int) -> None:
    for path, whose in ENDPOINTS.values():
        wrk_run(port=port, path=path, tokens=tokens[whose], clients=clients, duration=2)


def compare_configs(env: dict, args, tokens: dict[str, list[str]], out_dir: Path) -> None:
    rows = {}
    for name in args.configs:
        port = free_port()
        with gunicorn(env, port, 0, out_dir / f"gunicorn-{name}.log", GUNICORN_CONFIGS[name]) as server:
            warm_up(port, tokens, args.clients)
            for endpoint in PROJECT_ENDPOINTS:
                path, whose = ENDPOINTS[endpoint]
                runs = [
                    measured_run(
                        server_pid=server.pid,
                        database=args.database,
                        port=port,
                        path=path,
                        tokens=tokens[whose],
                        clients=args.clients,
                        duration=args.duration,
                    )
                    for _ in range(args.config_rounds)
                ]
                rows[f"{name}: {endpoint.split(', ')[1]}"] = summarise(runs)
    print_table(
        f"gunicorn configurations, project job list, {args.clients} clients"
        f" ({args.config_rounds} x {args.duration} s each; median of runs):",
        rows,
    )


def compare_endpoints(env: dict, args, tokens: dict[str, list[str]], out_dir: Path, size: int) -> dict[str, dict]:
    runs: dict[str, list[dict]] = defaultdict(list)
    port = free_port()
    with gunicorn(env, port, 0, out_dir / f"gunicorn-{size}.log", GUNICORN_CONFIGS[args.config]) as server:
        warm_up(port, tokens, args.clients)
        names = list(ENDPOINTS)
        for round_number in range(args.rounds):
            # Each round starts one endpoint later, so no endpoint always follows the same one.
            for name in names[round_number % len(names) :] + names[: round_number % len(names)]:
                path, whose = ENDPOINTS[name]
                runs[name].append(
                    measured_run(
                        server_pid=server.pid,
                        database=args.database,
                        port=port,
                        path=path,
                        tokens=tokens[whose],
                        clients=args.clients,
                        duration=args.duration,
                    )
                )
    rows = {name: summarise(runs[name]) for name in ENDPOINTS}
    print_table(
        f"{size:,} open jobs, gunicorn `{args.config}` ({' '.join(GUNICORN_CONFIGS[args.config])}), {args.clients}"
        f" clients, {args.rounds} interleaved rounds x {args.duration} s, median of rounds:",
        rows,
    )
    plain, raw = rows["plain DRF peer"], rows["raw Django peer"]
    for name in PROJECT_ENDPOINTS:
        row = rows[name]
        met = row["rps"] >= GOAL_RPS and row["p95"] / 1000 <= GOAL_P95_MS and row["rps"] >= plain["rps"]
        print(
            f"  {name}: project / plain DRF = {row['rps'] / plain['rps']:.2f}, project / raw = {row['rps'] / raw['rps']:.2f};"
            f" goal (>= {GOAL_RPS} req/s, p95 <= {GOAL_P95_MS} ms, >= plain DRF): {'MET' if met else 'NOT MET'}"
        )
    return rows


def plan_nodes(plan: dict) -> list[str]:
    node = plan["Node Type"] + (f" on {plan['Relation Name']}" if "Relation Name" in plan else "")
    if "Index Name" in plan:
        node += f" using {plan['Index Name']}"
    return [node] + [child for sub in plan.get("Plans", []) for child in plan_nodes(sub)]


def explain_list_queries(tokens: dict[str, list[str]]) -> None:
    """The job list's SQL (cache off: every query runs), first page and a cursor page, with each plan."""
    from django.db import connection
    from django.test import Client, override_settings
    from django.test.utils import CaptureQueriesContext

    size = table_counts()
    print(f"\nquery plans at {size['open jobs']:,} open jobs, {size['drafts']:,} drafts, {size['bids']:,} bids:")
    with override_settings(API_RESPONSE_CACHE_SECONDS=0):
        for whose in ("engineer", "company"):
            client = Client(HTTP_AUTHORIZATION=f"Bearer {tokens[whose][0]}")
            first = client.get(f"{LIST_PATH}&cursor=")
            assert first.status_code == 200, first.content[:300]
            next_url = first.json()["next"]
            cursor_path = next_url[next_url.index("/api/") :] if next_url else None
            pages = (("page numbers, page 2", f"{LIST_PATH}&page=2"), ("cursor, second page", cursor_path))
            for label, path in pages:
                if path is None:
                    continue
                with CaptureQueriesContext(connection) as captured:
                    assert client.get(path).status_code == 200
                print(f"  {whose}, {label}:")
                for query in captured.captured_queries:
                    sql = query["sql"]
                    if "jobs_job" not in sql:
                        continue
                    if sql.startswith("EXPLAIN"):  # the cursor page's estimated total: shown as what it plans
                        print(f"    {'':7}     planner estimate of the total: {sql[:60]}...")
                        continue
                    with connection.cursor() as cursor:
                        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
                        plan = cursor.fetchone()[0]
                    plan = plan[0] if isinstance(plan, list) else json.loads(plan)[0]
                    nodes = plan_nodes(plan["Plan"])
                    seq = [node for node in nodes if node in ("Seq Scan on jobs_job", "Seq Scan on jobs_bid")]
                    what = "count, once per scope and version with the cache on: " if "COUNT(" in sql[:20] else ""
                    print(
                        f"    {plan['Execution Time']:7.2f} ms  {what}{'SEQUENTIAL SCAN ' if seq else ''}"
                        f"{' > '.join(dict.fromkeys(nodes))[:200]}"
                    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[2_000, 20_000], help="open jobs per measured size")
    parser.add_argument("--explain-sizes", type=int, nargs="*", default=[20_000, 200_000])
    parser.add_argument("--configs", nargs="*", default=list(GUNICORN_CONFIGS), choices=list(GUNICORN_CONFIGS))
    parser.add_argument("--config", default=CHOSEN_CONFIG, choices=list(GUNICORN_CONFIGS), help="for the sizes")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--config-rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--settings", default="marketplace.settings.production")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="bench_list")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for url in (args.postgres_url, args.redis_url):
        if not any(host in url for host in ("127.0.0.1", "localhost", "[::1]")):
            raise SystemExit(f"loopback addresses only: {url}")
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        raise SystemExit("wrk is missing: apt-get install wrk (Debian)")

    env = bench_env(args)
    env.update({"DJANGO_SETTINGS_MODULE": "bench.peer_settings", "BENCH_BASE_SETTINGS": args.settings})
    os.environ.update(env)
    warnings.filterwarnings("ignore", message="No directory at")
    out_dir = Path(tempfile.mkdtemp(prefix="speedproof-list-bench-"))
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "?",
    )
    print(f"{os.cpu_count()} cores ({cpu_model}); settings {args.settings}; logs in {out_dir}")
    database_recreate(args)
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        import django

        django.setup()
        from django.core.cache import cache
        from django.db import connections

        cache.clear()
        tokens = seed_people()
        for number, size in enumerate(args.sizes):
            started = time.monotonic()
            seed_jobs_up_to(size)
            connections.close_all()
            cache.clear()  # cached totals and pages of the smaller table
            print(f"\nseeded {table_counts()} in {time.monotonic() - started:.0f} s")
            if number == 0 and args.configs:
                compare_configs(env, args, tokens, out_dir)
            compare_endpoints(env, args, tokens, out_dir, size)
        for size in args.explain_sizes:
            seed_jobs_up_to(size)
            explain_list_queries(tokens)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep_db:
            database_recreate(args, drop_only=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
