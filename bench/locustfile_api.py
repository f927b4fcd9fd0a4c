"""Locust users for bench/api_load.py (not run on its own): closed-loop clients, no think time.

Environment (set by api_load.py):
  BENCH_SEED_FILE  JSON with engineer API tokens and open job ids, written after seeding
  BENCH_SCENARIO   "list": GET /api/v1/jobs/?page_size=25 as an engineer
                   "bid":  POST /api/v1/jobs/{id}/bids/, every request a new (engineer, job) pair
  BENCH_BID_RUN    "i/n": this bid run uses the i-th of n disjoint slices of the bidding engineers
"""

import itertools
import json
import os
import random

from locust import FastHttpUser, constant, task

SCENARIO = os.environ.get("BENCH_SCENARIO", "list")
with open(os.environ["BENCH_SEED_FILE"]) as seed_file:
    SEED = json.load(seed_file)

# Bids: every (engineer, job) pair at most once, so each POST is a real placement (201), never a duplicate.
# Only engineers without seeded bids bid here, each run with its own engineers; consecutive pairs go to
# different jobs, so concurrent bids rarely queue on one job's row lock.
_rng = random.Random(7)
_run, _runs = (int(part) for part in os.environ.get("BENCH_BID_RUN", "0/1").split("/"))
_engineers = list(SEED["bid_engineer_tokens"])[_run::_runs]
_jobs = list(SEED["open_job_ids"])
_rng.shuffle(_jobs)
_pairs = (
    (token, job_id)
    for offset in itertools.count()
    for index, token in enumerate(_engineers)
    for job_id in [_jobs[(index + offset) % len(_jobs)]]
)
_list_tokens = itertools.cycle(SEED["list_engineer_tokens"])


class ApiClient(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.list_token = next(_list_tokens)

    @task
    def call(self) -> None:
        if SCENARIO == "list":
            self.client.get(
                "/api/v1/jobs/?page_size=25",
                headers={"Authorization": f"Bearer {self.list_token}"},
                name="GET /api/v1/jobs/?page_size=25",
            )
            return
        token, job_id = next(_pairs)
        with self.client.post(
            f"/api/v1/jobs/{job_id}/bids/",
            json={
                "amount": 150_000,
                "estimated_days": 7,
                "proposal": "Vectorize the hot loop.",
                "predicted_speedup": 1.8,
            },
            headers={"Authorization": f"Bearer {token}"},
            name="POST /api/v1/jobs/{id}/bids/",
            catch_response=True,
        ) as response:
            if response.status_code != 201:
                response.failure(f"{response.status_code}: {response.text[:200]}")
