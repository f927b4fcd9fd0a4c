"""post → calibrate → bid → accept → fund → submit → verify → release or refund, with real processes:
the live web server, a default Celery worker and a verification worker on Redis, PostgreSQL, the offline
payment provider and real sandboxes."""

import signal
from datetime import timedelta

import pytest
import requests
from celery import current_app
from django.utils import timezone

from accounts.services import api_token_create
from jobs.examples import example_candidate, example_criteria, example_hidden_inputs, example_package
from jobs.models import Contract, Submission
from jobs.services.contracts import contracts_settle_due
from payments.ledger import ledger_invariant_violations
from payments.models import Escrow
from tests.factories import CompanyAdminFactory, EngineerFactory
from tests.factories.jobs import onboard
from verification.models import VerificationRun
from verification.services import verification_watchdog

from .conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


class Api:
    def __init__(self, base: str, user):
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api_token_create(user=user, name='e2e').secret}"

    def __call__(self, method: str, path: str, expect: int = 200, **kwargs) -> dict:
        response = self.session.request(method, f"{self.base}/api/v1/{path}", timeout=30, **kwargs)
        assert response.status_code == expect, (path, response.status_code, response.text[:2000])
        return response.json() if response.content else {}


def _post_job(company: Api, *, max_submissions: int = 2, review_window_hours: int = 1) -> dict:
    job = company(
        "post",
        "jobs/",
        201,
        json={
            "title": "MLP inference 2x",
            "hardware_class": "cpu-x86",
            "currency": "USD",
            "budget_min": 50_000,
            "budget_max": 150_000,
            "bidding_deadline": (timezone.now() + timedelta(days=3)).isoformat(),
            "criteria": example_criteria(),
            "max_submissions": max_submissions,
            "review_window_hours": review_window_hours,
        },
    )
    company("put", f"jobs/{job['id']}/package/", files={"file": ("package.tar.gz", example_package())})
    company("put", f"jobs/{job['id']}/hidden-inputs/", files={"file": ("hidden.tar.gz", example_hidden_inputs())})
    return company("post", f"jobs/{job['id']}/publish/")


def _award_and_fund(company: Api, engineer: Api, job: dict) -> dict:
    bid = engineer(
        "post", f"jobs/{job['id']}/bids/", 201, json={"amount": 100_000, "estimated_days": 5, "proposal": "Vectorize."}
    )
    contract = company("post", f"bids/{bid['id']}/accept/", 201)
    funding = company("post", f"contracts/{contract['id']}/fund/")
    company(
        "post", f"payments/offline/payment-intents/{funding['payment_intent_id']}/confirm/", json={"outcome": "succeed"}
    )
    wait_for(lambda: company("get", f"contracts/{contract['id']}/")["status"] == "active", what="funding")
    return contract


def _submit(engineer: Api, contract: dict, candidate: str) -> dict:
    return engineer(
        "post",
        f"contracts/{contract['id']}/submissions/",
        201,
        files={"file": (f"{candidate}.tar.gz", example_candidate(candidate))},
        data={"notes": candidate},
    )


def _verified(engineer: Api, submission: dict, timeout: float = 180) -> dict:
    return wait_for(
        lambda: (
            (body := engineer("get", f"submissions/{submission['id']}/"))["status"] not in ("received", "verifying")
            and body
        ),
        timeout=timeout,
        what=f"verification of submission {submission['id']}",
    )


def test_fast_candidate_passes_and_is_paid_after_the_review_window(stack):
    admin, engineer_user = CompanyAdminFactory(), EngineerFactory()
    company, engineer = Api(stack.url, admin), Api(stack.url, engineer_user)
    onboard(engineer_user)

    host_environment = stack.verifier.environment()
    assert not {"DATABASE_URL", "STRIPE_SECRET_KEY", "DJANGO_SECRET_KEY", "DJANGO_SETTINGS_MODULE"} & set(
        host_environment
    )

    job = _post_job(company)
    calibrated = wait_for(
        lambda: (body := company("get", f"jobs/{job['id']}/"))["calibration"].get("status") == "done" and body,
        what="calibration",
    )
    assert calibrated["calibration"]["criteria"][0]["smallest_verifiable_speedup"] > 1

    contract = _award_and_fund(company, engineer, job)
    submission = _verified(engineer, _submit(engineer, contract, "fast"))
    assert submission["status"] == "passed", submission
    runs = wait_for(
        lambda: (r := engineer("get", f"submissions/{submission['id']}/verification/")["results"])[0]["has_plot"] and r,
        what="the plot, drawn by the default worker",
    )
    assert runs[0]["decision"] == "PASS" and runs[0]["certificate"]["key_id"]
    plot = engineer.session.get(
        f"{stack.url}/api/v1/submissions/{submission['id']}/verification/{runs[0]['id']}/plot.png"
    )
    assert plot.content.startswith(b"\x89PNG")

    contract_row = Contract.objects.get(pk=contract["id"])
    assert contract_row.earned_bps == 10_000 and contract_row.release_due_at > timezone.now()
    # The review window elapses: time is moved, and beat's task runs on the real worker.
    Contract.objects.filter(pk=contract["id"]).update(release_due_at=timezone.now() - timedelta(seconds=1))
    current_app.send_task("jobs.tasks.contracts_release_due", queue="default")
    escrow = wait_for(
        lambda: (
            (e := Escrow.objects.get(pk=contract_row.escrow_id))
            .operations.filter(kind="transfer", status="succeeded")
            .exists()
            and e
        ),
        what="the transfer",
    )
    assert escrow.released_bps == 10_000 and escrow.operations.get(kind="transfer").amount == 100_000
    assert Contract.objects.get(pk=contract["id"]).status == Contract.Status.COMPLETED
    assert ledger_invariant_violations() == []


def test_wrong_candidate_fails_until_attempts_run_out_and_the_company_is_refunded(stack):
    admin, engineer_user = CompanyAdminFactory(), EngineerFactory()
    company, engineer = Api(stack.url, admin), Api(stack.url, engineer_user)
    job = _post_job(company, max_submissions=2)
    contract = _award_and_fund(company, engineer, job)

    first = _verified(engineer, _submit(engineer, contract, "wrong"))
    assert first["status"] == "failed"
    run = engineer("get", f"submissions/{first['id']}/verification/")["results"][0]
    assert run["report"]["correctness"]["passed"] is False
    assert run["host_id"]  # the host named itself when it claimed the run (its hostname by default)
    second = _verified(engineer, _submit(engineer, contract, "unchanged"))
    assert second["status"] == "failed" and second["attempts_left"] == 0
    # The refund waits for the engineer's window to dispute the last FAIL (the job's review window); it closes.
    due = wait_for(lambda: Contract.objects.get(pk=contract["id"]).settle_due_at, what="the settlement date")
    assert due > timezone.now() + timedelta(minutes=50)
    Contract.objects.filter(pk=contract["id"]).update(settle_due_at=timezone.now() - timedelta(seconds=1))
    contracts_settle_due()

    escrow = wait_for(
        lambda: (
            (e := Escrow.objects.get(pk=Contract.objects.get(pk=contract["id"]).escrow_id))
            .operations.filter(kind="refund", status="succeeded")
            .exists()
            and e
        ),
        what="the refund",
    )
    assert escrow.status == Escrow.Status.REFUNDED and escrow.operations.get(kind="refund").amount == 110_000
    assert company("get", f"contracts/{contract['id']}/")["status"] == "failed"
    assert ledger_invariant_violations() == []


def test_killed_verification_worker_is_requeued_and_the_attempt_is_not_consumed(stack, settings):
    admin, engineer_user = CompanyAdminFactory(), EngineerFactory()
    company, engineer = Api(stack.url, admin), Api(stack.url, engineer_user)
    job = _post_job(company, max_submissions=3)
    wait_for(lambda: company("get", f"jobs/{job['id']}/")["calibration"].get("status") == "done", what="calibration")
    contract = _award_and_fund(company, engineer, job)
    submission = _submit(engineer, contract, "unchanged")
    run = wait_for(
        lambda: (
            (r := VerificationRun.objects.get(subject=f"submission:{submission['id']}")).status == "running"
            and (r.progress or {}).get("runs_done", 0) >= 1
            and r
        ),
        what="the run to be measuring",
    )
    stack.verifier.kill(signal.SIGKILL)

    settings.VERIFICATION_HEARTBEAT_TIMEOUT_SECONDS = 1
    wait_for(lambda: verification_watchdog() == [run.pk], timeout=30, what="the watchdog")
    stack.verifier = stack.verification_worker()
    final = _verified(engineer, submission)
    run.refresh_from_db()
    # What matters here is the requeue, not the verdict, which host load may leave inconclusive.
    assert final["status"] in ("failed", "inconclusive"), run.reason
    assert run.infrastructure_failures == 1 and run.dispatch_count == 2
    assert VerificationRun.objects.filter(subject=f"submission:{submission['id']}").count() == 1
    assert Contract.objects.get(pk=contract["id"]).submissions_used == 1
    assert Submission.objects.get(pk=submission["id"]).status == final["status"]
