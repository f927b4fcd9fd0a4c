"""`make run`'s own process set (scripts/run_local.sh: web, worker, verification worker and beat on one SQLite file,
the filesystem broker, the file cache and offline payments) under concurrent API load and real verifications:
no 5xx, no run left behind, and a chargeback that arrives while a release waits freezes the escrow first.

Nothing here touches the suite's PostgreSQL or Redis: the stack gets a fresh var/ folder and talks only HTTP.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.examples import example_candidate, example_criteria, example_hidden_inputs, example_package

from .conftest import Client, MakeRun, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

TERMINAL_RUN_STATES = {"passed", "failed", "inconclusive", "error"}


ADMIN, MEMBER, ADA, GRACE = (
    "admin@acme.example",
    "member@acme.example",
    "ada@engineers.example",
    "grace@engineers.example",
)


def _post_job(company: Client, *, review_window_hours: int) -> dict:
    job = company(
        "post",
        "jobs/",
        201,
        json={
            "title": "MLP inference under load",
            "hardware_class": "cpu-x86",
            "currency": "USD",
            "budget_min": 50_000,
            "budget_max": 150_000,
            "bidding_deadline": (timezone.now() + timedelta(days=3)).isoformat(),
            "criteria": example_criteria(),
            "max_submissions": 2,
            "review_window_hours": review_window_hours,
        },
    )
    company("put", f"jobs/{job['id']}/package/", files={"file": ("package.tar.gz", example_package())})
    company("put", f"jobs/{job['id']}/hidden-inputs/", files={"file": ("hidden.tar.gz", example_hidden_inputs())})
    return company("post", f"jobs/{job['id']}/publish/")


def _onboard(stack: MakeRun, email: str) -> None:
    engineer = stack.client(email)
    status = engineer("post", "payments/onboarding/", json={"country": "US"})
    browser = stack.client()
    browser.login(email, stack.password)
    page = status["onboarding_url"].removeprefix(stack.url)
    assert browser.post_page(page, {}).status_code == 200
    wait_for(lambda: engineer("get", "payments/onboarding/")["transfers_active"], what=f"{email}'s payout account")


def _award_and_fund(stack: MakeRun, job: dict, engineer_email: str, *, outcome: str = "succeed") -> dict:
    company, engineer = stack.client(ADMIN), stack.client(engineer_email)
    bid = engineer(
        "post", f"jobs/{job['id']}/bids/", 201, json={"amount": 100_000, "estimated_days": 5, "proposal": "Vectorize."}
    )
    contract = company("post", f"bids/{bid['id']}/accept/", 201)
    funding = company("post", f"contracts/{contract['id']}/fund/")
    company(
        "post", f"payments/offline/payment-intents/{funding['payment_intent_id']}/confirm/", json={"outcome": outcome}
    )
    wait_for(lambda: company("get", f"contracts/{contract['id']}/")["status"] == "active", what="funding")
    return {**contract, "payment_intent_id": funding["payment_intent_id"]}


def _verified_submission(stack: MakeRun, contract: dict, engineer_email: str) -> dict:
    engineer = stack.client(engineer_email)
    submission = engineer(
        "post",
        f"contracts/{contract['id']}/submissions/",
        201,
        files={"file": ("fast.tar.gz", example_candidate("fast"))},
        data={"notes": "fast"},
    )
    return wait_for(
        lambda: (
            (body := engineer("get", f"submissions/{submission['id']}/"))["status"] not in ("received", "verifying")
            and body
        ),
        timeout=300,
        interval=0.5,
        what=f"verification of submission {submission['id']}",
    )


def _load(stack: MakeRun, stop: threading.Event, job_ids: list[int]) -> None:
    """Readers and writers at once: lists, details, signups, bids and withdrawals, until told to stop."""
    company, member, grace = stack.client(ADMIN), stack.client(MEMBER), stack.client(GRACE)
    anonymous = stack.client()
    round_ = 0
    while not stop.is_set():
        round_ += 1
        company.request("get", "/api/v1/jobs/?page_size=25")
        member.request("get", "/api/v1/contracts/")
        grace.request("get", "/api/v1/jobs/?status=open")
        for job_id in list(job_ids):
            grace.request("get", f"/api/v1/jobs/{job_id}/")
        suffix = f"{threading.get_ident()}-{round_}-{time.monotonic_ns()}"
        signup = anonymous.request(
            "post",
            "/api/v1/auth/signup/engineer/",
            json={"email": f"load-{suffix}@engineers.example", "password": "load-test-password-1", "name": "Load"},
        )
        if signup.status_code == 201 and job_ids:
            newcomer = Client(stack.url, stack.recorder, signup.json()["token"]["token"])
            bid = newcomer.request(
                "post",
                f"/api/v1/jobs/{job_ids[round_ % len(job_ids)]}/bids/",
                json={"amount": 90_000, "estimated_days": 4, "proposal": "Load."},
            )
            if bid.status_code == 201:
                newcomer.request("post", f"/api/v1/bids/{bid.json()['id']}/withdraw/")
        company.request("get", "/health/?format=json")


def test_make_run_holds_up_under_concurrent_load_and_verifications(make_run):
    stack = make_run
    company = stack.client(ADMIN)
    demo_job = company("get", "jobs/?status=open")["results"][0]
    job_ids = [demo_job["id"]]

    stop = threading.Event()
    loaders = [threading.Thread(target=_load, args=(stack, stop, job_ids), daemon=True) for _ in range(4)]
    for loader in loaders:
        loader.start()
    try:
        # Jobs published while the load runs, each calibrated by the verification worker; bids right after publish.
        for _ in range(2):
            job = _post_job(company, review_window_hours=0)
            job_ids.append(job["id"])
            stack.client(GRACE)(
                "post",
                f"jobs/{job['id']}/bids/",
                201,
                json={"amount": 80_000, "estimated_days": 3, "proposal": "Cache."},
            )
        _onboard(stack, ADA)
        contract = _award_and_fund(stack, demo_job, ADA)
        submission = _verified_submission(stack, contract, ADA)
        assert submission["status"] == "passed", submission
        wait_for(
            lambda: stack.client(ADA)("get", f"payments/escrows/{contract['escrow']}/")["paid"] > 0,
            timeout=120,
            what="the transfer to the engineer",
        )
        for job_id in job_ids:
            wait_for(
                lambda job_id=job_id: company("get", f"jobs/{job_id}/")["calibration"].get("status") == "done",
                timeout=300,
                interval=0.5,
                what=f"calibration of job {job_id}",
            )
    finally:
        stop.set()
        for loader in loaders:
            loader.join(timeout=120)

    statuses = dict(stack.recorder.statuses)
    print(f"make run under load: responses by status {statuses}")
    assert sum(statuses.values()) > 200, statuses
    assert stack.recorder.server_errors == [], "\n".join(stack.recorder.server_errors[:20])
    stuck = stack.query(
        "SELECT id, kind, status FROM verification_verificationrun WHERE status NOT IN "
        f"({', '.join(repr(state) for state in TERMINAL_RUN_STATES)})"
    )
    assert stuck == [], f"runs left behind: {stuck}"
    assert "database is locked" not in stack.log.read_text()


def test_a_chargeback_during_a_pending_release_freezes_the_escrow_before_the_transfer(make_run):
    stack = make_run
    company = stack.client(ADMIN)
    job = _post_job(company, review_window_hours=24)
    wait_for(
        lambda: company("get", f"jobs/{job['id']}/")["calibration"].get("status") == "done",
        timeout=300,
        what="calibration",
    )
    if not stack.client(GRACE)("get", "payments/onboarding/")["transfers_active"]:
        _onboard(stack, GRACE)
    contract = _award_and_fund(stack, job, GRACE)
    submission = _verified_submission(stack, contract, GRACE)
    assert submission["status"] == "passed", submission
    assert company("get", f"contracts/{contract['id']}/")["release_due_at"], "the release should wait for review"

    # Two events within the debounce window: the second one's drain must still be scheduled for every process.
    company(
        "post",
        f"payments/offline/payment-intents/{contract['payment_intent_id']}/confirm/",
        json={"outcome": "dispute"},
    )
    escrow_path = f"payments/escrows/{contract['escrow']}/"
    wait_for(lambda: company("get", escrow_path)["frozen"], timeout=20, what="the chargeback to freeze the escrow")

    company("post", f"contracts/{contract['id']}/approve/")
    time.sleep(3)  # the release is attempted after commit, by the worker
    escrow = company("get", escrow_path)
    assert escrow["frozen"] and escrow["paid"] == 0, escrow
    assert stack.recorder.server_errors == [], "\n".join(stack.recorder.server_errors[:20])
