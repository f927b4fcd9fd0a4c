"""Where one job-list request's CPU goes, in-process: a cache hit and a miss, as CPU per request and cProfile.

Run after `bench/job_list_load.py --keep-db` (it profiles that database, `bench_list`):
    .venv/bin/python bench/job_list_profile.py [--requests 300] [--viewer engineer|company] [--top 25]

It serves `GET /api/v1/jobs/?page_size=25` through Django's test client (the whole middleware stack, no network,
no gunicorn) with production settings and the bench's Redis database, and prints:
- the SQL queries of one warm request;
- CPU per request over `--requests` requests, with the response cache on (hits) and off (every request builds
  its page: queries, model construction, serialization);
- for each, cProfile's functions by own CPU, with their cumulative CPU (inflated by the profiler; compare rows).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIST_PATH = "/api/v1/jobs/?page_size=25"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--viewer", choices=["engineer", "company"], default="engineer")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--database", default="bench_list")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "marketplace.settings.production",
            "DJANGO_SECRET_KEY": "bench-only-not-secret",
            "DJANGO_ALLOWED_HOSTS": "testserver",
            "DJANGO_SECURE_SSL_REDIRECT": "false",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{args.database}",
            "DATABASE_CONN_MAX_AGE": "600",
            "REDIS_URL": args.redis_url,
            "CELERY_BROKER_URL": args.redis_url,
            "PAYMENT_PROVIDER": "offline",
            "OFFLINE_PAYMENTS_ALLOWED_IN_PRODUCTION": "true",
            "THROTTLE_USER": "10000000/min",
            "THROTTLE_ANON": "10000000/min",
            "LOG_LEVEL": "WARNING",
        }
    )
    warnings.filterwarnings("ignore", message="No directory at")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection
    from django.test import Client, override_settings

    from accounts.models import User
    from accounts.services import api_token_create

    kind = User.AccountType.ENGINEER if args.viewer == "engineer" else User.AccountType.COMPANY
    user = User.objects.filter(account_type=kind).order_by("id").first()
    if user is None:
        raise SystemExit(f"no {args.viewer} in `{args.database}`: run bench/job_list_load.py --keep-db first")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user, name='profile').secret}")

    for label, cache_seconds in (("cache hit", 300), ("cache off", 0)):
        with override_settings(API_RESPONSE_CACHE_SECONDS=cache_seconds):
            for _ in range(30):
                assert client.get(LIST_PATH).status_code == 200
            captured: list[str] = []

            def record(execute, sql, params, many, context, _captured=captured):
                _captured.append(sql)
                return execute(sql, params, many, context)

            # execute_wrapper, not CaptureQueriesContext: each request's start resets Django's query log.
            with connection.execute_wrapper(record):
                client.get(LIST_PATH)
            started = time.process_time()
            for _ in range(args.requests):
                client.get(LIST_PATH)
            cpu_ms = (time.process_time() - started) / args.requests * 1000
            print(f"\n{args.viewer}, {label}: {cpu_ms:.2f} ms CPU per request, {len(captured)} queries:")
            for sql in captured:
                print(f"  {sql[:140]}")
            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
            for _ in range(args.requests):
                client.get(LIST_PATH)
            profiler.disable()
            print(f"  cProfile, {args.requests} requests, by own CPU (cumulative beside it):")
            stats = pstats.Stats(profiler)
            rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[: args.top]
            for (filename, line, name), (_, calls, own, cumulative, _) in rows:
                short = filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
                print(f"    {own:7.3f} s {cumulative:7.3f} s {calls:>8}x  {short}:{line} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
