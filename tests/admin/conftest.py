"""Rows of every kind the admin shows, made through the services (the way production data is made)."""

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule

from accounts.services import api_token_create
from common.models import IdempotencyRecord
from jobs.services.bids import bid_place
from jobs.services.submissions import submission_create
from payments.models import ReconciliationIssue
from payments.services import escrow_release
from tests.factories import CompanyAdminFactory, EngineerFactory, JobFactory, StaffFactory, funded_contract, open_job
from tests.factories.archives import make_tar_gz, upload
from tests.factories.jobs import onboard
from verification.runner.certificate import generate_signing_key, public_key_pem
from verification.services import signing_key_register

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


@pytest.fixture
def admin_data(db) -> SimpleNamespace:
    return build_admin_data()
