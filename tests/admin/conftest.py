"""Rows of every kind the admin shows, made through the services (the way production data is made)."""

import os
import re
import shutil
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Group
from django.db import connections
from django.utils import timezone
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule
from playwright.sync_api import sync_playwright

from accounts.operators import PAYMENTS_OPERATOR, SUPPORT
from accounts.services import api_token_create
from common.models import IdempotencyRecord
from jobs.models import Dispute
from jobs.services import contracts as contract_services
from jobs.services.bids import bid_place
from jobs.services.submissions import submission_create
from notifications.models import Delivery
from payments.models import ReconciliationIssue
from payments.services import escrow_release
from tests.factories import CompanyAdminFactory, EngineerFactory, JobFactory, StaffFactory, funded_contract, open_job
from tests.factories.archives import make_tar_gz, upload
from tests.factories.disputes import Host, token_of
from tests.factories.jobs import onboard
from verification.models import VerificationRun
from verification.runner.certificate import generate_signing_key, public_key_pem
from verification.services import (
    signing_key_register,
    verification_plot_render,
)

OPERATOR_PASSWORD = "correct horse battery"


def build_admin_data(*, round_: int = 0) -> SimpleNamespace:
    """One funded contract with a submission, one open job with a pending bid, a draft, tokens and schedules."""
    staff = StaffFactory(email=f"operator{round_}@example.test")
    company_admin = CompanyAdminFactory()
    engineer = EngineerFactory()
    contract = funded_contract(
        admin=company_admin, engineer=engineer, amount=250_000, title=f"Vectorize the tokenizer {round_}"
    )
    candidate = upload(make_tar_gz({"solution/run.py": f"print({round_})\n".encode()}), "candidate.tar.gz")
    submission = submission_create(actor=engineer, contract=contract, upload=candidate, notes="first try")
    open_one = open_job(title=f"Quantize the ranker {round_}", currency="JPY", budget_min=50_000, budget_max=90_000)
    bidder = EngineerFactory()
    bid = bid_place(actor=bidder, job=open_one, amount=70_000, estimated_days=5, proposal="int8 kernels")
    onboard(engineer)
    signing_key_register(public_key_pem=public_key_pem(generate_signing_key()).decode())
    # A half release (a transfer the operator sees) and a reconciliation difference to look at.
    escrow_release(escrow_id=contract.escrow_id, fraction_bps=5_000, reason="admin test", verification_run_id="0")
    ReconciliationIssue.objects.create(escrow_id=contract.escrow_id, kind="transfers", expected=125_000, actual=0)
    issued = api_token_create(user=engineer, name=f"ci-{round_}")
    IdempotencyRecord.objects.create(
        user=bidder,
        key=f"key-{round_}",
        endpoint=f"/api/v1/jobs/{open_one.pk}/bids/",
        request_fingerprint="0" * 64,
        response_status=201,
        response_body={"id": bid.pk},
    )
    draft = JobFactory(title=f"Draft job {round_}")
    _failing_delivery(contract)
    # A ruled dispute row as the disputes list shows it (its flows are tested in tests/jobs/test_dispute_services.py).
    Dispute.objects.create(
        contract=contract,
        submission=submission,
        disputed_run=VerificationRun.objects.get(subject=f"submission:{submission.pk}"),
        side=Dispute.Side.COMPANY,
        opened_by=company_admin,
        reason=f"The speedup did not reproduce on our machines ({round_})",
        status=Dispute.Status.RESOLVED,
        recommendation=Dispute.Recommendation.AGREE,
        ruling=Dispute.Ruling.UPHOLD,
        ruling_note="The re-run agreed.",
        ruled_by=staff,
        ruled_at=timezone.now(),
    )
    interval = IntervalSchedule.objects.create(every=5 + round_, period=IntervalSchedule.MINUTES)
    PeriodicTask.objects.create(name=f"expire-{round_}", task="jobs.tasks.jobs_expire_overdue", interval=interval)
    CrontabSchedule.objects.create(minute=str(round_))
    SolarSchedule.objects.create(event="sunrise", latitude=round_, longitude=0)
    ClockedSchedule.objects.create(clocked_time=timezone.now() + timedelta(days=1 + round_))
    Group.objects.create(name=f"operators-{round_}")
    return SimpleNamespace(
        staff=staff,
        company_admin=company_admin,
        engineer=engineer,
        contract=contract,
        submission=submission,
        open_job=open_one,
        bid=bid,
        token=issued.token,
        token_secret=issued.secret,
        draft=draft,
    )


def _failing_delivery(contract) -> None:
    """A webhook delivery of one of the contract's events, failing (its endpoint answers 500)."""
    from notifications.models import OutboundEvent, WebhookEndpoint

    endpoint = WebhookEndpoint.objects.create(
        organization=contract.organization,
        url=f"https://hooks.example.test/speedproof?token=endpoint-query-secret-{contract.pk}",
        event_types=["*"],
        secret=f"whsec_admin_test_{contract.pk}",
    )
    event = OutboundEvent.objects.create(
        public_id=f"evt_admin_{contract.pk}",
        type="contract.funded",
        api_version="2026-01-01",
        organization=contract.organization,
        data={"id": contract.pk},
    )
    Delivery.objects.create(
        event=event,
        endpoint=endpoint,
        status=Delivery.Status.PENDING,
        attempt_count=2,
        next_attempt_at=timezone.now() + timedelta(minutes=5),
        retry_until=timezone.now() + timedelta(days=3),
    )


@pytest.fixture
def admin_data(db) -> SimpleNamespace:
    return build_admin_data()


def operator_with_role(role: str | None, *, email: str):
    """A staff operator who is not a superuser, holding `role` (or none)."""
    user = StaffFactory(is_superuser=False, email=email)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def operators() -> SimpleNamespace:
    return SimpleNamespace(
        support=operator_with_role(SUPPORT, email="support@example.test"),
        payments=operator_with_role(PAYMENTS_OPERATOR, email="payments@example.test"),
    )


def _measurements(baseline_ms: float, candidate_ms: float, pairs: int = 8) -> list[dict]:
    rows = []
    for i in range(pairs):
        for role, ms in (("baseline", baseline_ms), ("candidate", candidate_ms)):
            rows.append({"phase": "measure", "role": role, "wall_seconds": (ms + i % 3) / 1000})
    return rows


HIDDEN_MARKER = "hidden-marker-7f3a"


def _call(fn, *args, **kwargs):
    return fn(*args, **kwargs)


def build_disputed_contract(
    *, dispatched: list, settle=_call, earlier_failed_attempt: bool = False, reverified: bool = False
) -> SimpleNamespace:
    """A funded contract whose submission passed (half the money, tier one) and that the company disputes;
    with `earlier_failed_attempt`, a first submission failed before it; with `reverified`, a second host has
    re-verified the disputed submission (it agrees), so the dispute awaits a ruling with a recommendation.

    Each run is recorded as a verification host would record it (a signed report with measurements), and its
    plot drawn as the platform's task draws it. Call with the `dispatched` fixture's list; `settle(fn, ...)` runs
    each step and the work it leaves for after its commit (needed where tests run inside one transaction).
    """
    first_host = Host("verify-cpu-3")
    contract = funded_contract(amount=250_000, review_window_hours=48, max_submissions=3, title="Disputed kernel")
    onboard(contract.engineer)
    runs = []
    # (decision, payout fraction, speedup estimate, candidate's milliseconds against the baseline's 12)
    attempts = ([("FAIL", 0.0, 1.1, 11.0)] if earlier_failed_attempt else []) + [("PASS", 0.5, 1.8, 6.5)]
    for number, (decision, fraction, estimate, candidate_ms) in enumerate(attempts, start=1):
        candidate = upload(make_tar_gz({"solution/run.py": f"print({number})\n".encode()}), "candidate.tar.gz")
        submission = settle(
            submission_create, actor=contract.engineer, contract=contract, upload=candidate, notes=f"v{number}"
        )
        run = VerificationRun.objects.get(subject=f"submission:{submission.pk}")
        settle(
            first_host.finish,
            run,
            token_of(dispatched, run),
            decision=decision,
            fraction=fraction,
            estimate=estimate,
            measurements=_measurements(12.0, candidate_ms),
            report_extra={
                "environment": {"host": "verify-cpu-3", "cpu_model": "Test CPU", "cpu_count": 4},
                "blocked_actions": [{"role": "candidate", "action": "network", "runs": 2}],
                "logs": [{"role": "candidate", "phase": "measure", "stderr": HIDDEN_MARKER}],
            },
        )
        runs.append(verification_plot_render(run_id=run.pk))
    settle(
        contract_services.contract_dispute_review,
        actor=contract.job.created_by,
        contract=contract,
        reason="outputs look cached",
    )
    contract.refresh_from_db()
    dispute = Dispute.objects.get(contract=contract)
    if reverified:
        rerun = dispute.reverification_run
        second_host = Host("verify-cpu-7")
        token = token_of(dispatched, rerun)
        settle(second_host.finish, rerun, token, fraction=0.5, estimate=1.76, measurements=_measurements(12.0, 6.8))
        verification_plot_render(run_id=rerun.pk)
        dispute.refresh_from_db()
    return SimpleNamespace(
        contract=contract, submission=submission, run=runs[-1], runs=runs, key=first_host.key, dispute=dispute
    )


@pytest.fixture
def eager_tasks():
    """Tasks run in-process when sent, as a worker would run them (the release after a ruling, the plot)."""
    from marketplace.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.fixture
def settle(eager_tasks, django_capture_on_commit_callbacks):
    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    return run


@pytest.fixture
def disputed(db, dispatched, settle) -> SimpleNamespace:
    return build_disputed_contract(dispatched=dispatched, settle=settle)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# Screenshots of the browser tests, kept after the run (CI can publish the folder): one folder per test.
SCREENSHOTS = Path(
    os.environ.get("SPEEDPROOF_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "test-artifacts"
)


@pytest.fixture
def screenshot(request, tmp_path):
    """``screenshot(page, name)``: a full-page PNG under test-artifacts/screenshots/<test>/ (and the test's
    tmp path); returns its path."""
    folder = SCREENSHOTS / "screenshots" / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000, f"{path} looks empty"
        shutil.copyfile(path, tmp_path / path.name)
        return path

    return take


@pytest.fixture
def page(monkeypatch):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium")
    # Playwright's sync API keeps an event loop running in this thread; the test's ORM calls stay synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(15_000)
        yield context.new_page()
        context.close()
        browser.close()
        # Inside this block the ORM runs in Playwright's context, with connections of its own: close them.
        connections.close_all()
