from datetime import timedelta

import pytest
from django.utils import timezone

from common.errors import IllegalTransition, NotPermitted, ValidationFailed
from common.models import AuditEvent
from jobs.models import Bid, Contract, Job
from jobs.services.bids import bid_place
from jobs.services.jobs import job_cancel, job_create, job_expire, job_publish, job_update
from jobs.tasks import jobs_expire_overdue
from tests.factories import (
    CompanyAdminFactory,
    CompanyMemberFactory,
    EngineerFactory,
    JobFactory,
    awarded_contract,
    funded_contract,
    open_job,
)
from tests.factories.jobs import CRITERIA

pytestmark = pytest.mark.django_db


def _create(actor, **overrides):
    fields = dict(
        organization=actor.memberships.get().organization,
        title="Faster attention",
        hardware_class="gpu-h100",
        currency="jpy",
        budget_min=10_000,
        budget_max=90_000,
        bidding_deadline=timezone.now() + timedelta(days=5),
        criteria=CRITERIA,
    )
    fields.update(overrides)
    return job_create(actor=actor, **fields)


def test_member_creates_a_draft_with_an_audit_event():
    member = CompanyMemberFactory()
    job = _create(member)
    assert job.status == Job.Status.DRAFT
    assert job.currency == "JPY"
    event = AuditEvent.objects.get(object_type="jobs.job", object_id=str(job.pk))
    assert (event.actor, event.verb, event.to_state) == (member, "job_created", "draft")


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"hardware_class": "tpu-v9"}, "hardware_class"),
        ({"currency": "XXX"}, "currency"),
        ({"budget_min": 0}, "budget_min"),
        ({"budget_min": 5_000, "budget_max": 100}, "budget_max"),
        ({"bidding_deadline": timezone.now() - timedelta(minutes=1)}, "bidding_deadline"),
        ({"max_submissions": 0}, "max_submissions"),
    ],
)
def test_create_rejects_bad_fields_by_name(overrides, field):
    with pytest.raises(ValidationFailed) as error:
        _create(CompanyAdminFactory(), **overrides)
    assert field in error.value.fields


def test_non_member_cannot_create_for_an_organization():
    outsider = CompanyAdminFactory()
    with pytest.raises(NotPermitted):
        _create(outsider, organization=CompanyAdminFactory().memberships.get().organization)


def test_publish_needs_package_inputs_and_criteria():
    admin = CompanyAdminFactory()
    job = _create(admin, criteria={})
    with pytest.raises(ValidationFailed) as error:
        job_publish(actor=admin, job=job)
    assert error.value.code == "job_incomplete"
    assert set(error.value.fields) == {"package", "hidden_inputs", "criteria"}


def test_only_admins_publish():
    job = open_job()
    member = CompanyMemberFactory(organization=job.organization)
    draft = JobFactory(organization=job.organization, created_by=member)
    with pytest.raises(NotPermitted):
        job_publish(actor=member, job=draft)


@pytest.mark.parametrize("status", [Job.Status.OPEN, Job.Status.CANCELLED, Job.Status.EXPIRED, Job.Status.COMPLETED])
def test_publish_is_illegal_unless_draft(status):
    admin = CompanyAdminFactory()
    job = JobFactory(organization=admin.memberships.get().organization, created_by=admin, status=status)
    with pytest.raises(IllegalTransition):
        job_publish(actor=admin, job=job)


def test_criteria_freeze_once_a_bid_exists():
    admin = CompanyAdminFactory()
    job = open_job(admin=admin)
    job_update(actor=admin, job=job, criteria={**CRITERIA, "tiers": [{"speedup": 1.6, "fraction": 1.0}]})
    bid_place(actor=EngineerFactory(), job=job, amount=1000, estimated_days=3, proposal="x")
    with pytest.raises(IllegalTransition) as error:
        job_update(actor=admin, job=job, criteria=CRITERIA)
    assert error.value.code == "criteria_frozen"
    job_update(actor=admin, job=job, title="Still editable")


@pytest.mark.parametrize(
    "status", [Job.Status.AWARDED, Job.Status.IN_PROGRESS, Job.Status.COMPLETED, Job.Status.CANCELLED]
)
def test_update_is_illegal_after_award_or_close(status):
    admin = CompanyAdminFactory()
    job = JobFactory(organization=admin.memberships.get().organization, created_by=admin, status=status)
    with pytest.raises(IllegalTransition):
        job_update(actor=admin, job=job, title="Too late")


def test_cancel_declines_pending_bids():
    admin = CompanyAdminFactory()
    job = open_job(admin=admin)
    bid = bid_place(actor=EngineerFactory(), job=job, amount=1000, estimated_days=3, proposal="x")
    job_cancel(actor=admin, job=job, reason="budget cut")
    job.refresh_from_db()
    bid.refresh_from_db()
    assert (job.status, bid.status) == (Job.Status.CANCELLED, Bid.Status.DECLINED)


def test_cancel_of_an_awarded_job_cancels_its_unfunded_contract():
    admin = CompanyAdminFactory()
    contract = awarded_contract(admin=admin)
    job_cancel(actor=admin, job=contract.job)
    contract.refresh_from_db()
    assert contract.status == Contract.Status.CANCELLED


def test_cancel_of_a_funded_job_is_refused():
    admin = CompanyAdminFactory()
    contract = funded_contract(admin=admin)
    with pytest.raises(IllegalTransition) as error:
        job_cancel(actor=admin, job=contract.job)
    assert error.value.code == "job_funded"


@pytest.mark.parametrize("status", [Job.Status.CANCELLED, Job.Status.EXPIRED, Job.Status.COMPLETED])
def test_cancel_is_illegal_when_closed(status):
    admin = CompanyAdminFactory()
    job = JobFactory(organization=admin.memberships.get().organization, created_by=admin, status=status)
    with pytest.raises(IllegalTransition):
        job_cancel(actor=admin, job=job)


def test_expiry_waits_for_the_award_window(settings):
    settings.JOB_AWARD_WINDOW_DAYS = 2
    job = open_job()
    Job.objects.filter(pk=job.pk).update(bidding_deadline=timezone.now() - timedelta(days=1))
    assert job_expire(job_id=job.pk) is None
    Job.objects.filter(pk=job.pk).update(bidding_deadline=timezone.now() - timedelta(days=3))
    assert job_expire(job_id=job.pk).status == Job.Status.EXPIRED


def test_expire_task_twice_changes_nothing_the_second_time(settings):
    settings.JOB_AWARD_WINDOW_DAYS = 0
    job = open_job()
    Job.objects.filter(pk=job.pk).update(bidding_deadline=timezone.now() - timedelta(minutes=1))
    assert jobs_expire_overdue() == 1
    events = AuditEvent.objects.count()
    assert jobs_expire_overdue() == 0
    assert AuditEvent.objects.count() == events
    job.refresh_from_db()
    assert job.status == Job.Status.EXPIRED
