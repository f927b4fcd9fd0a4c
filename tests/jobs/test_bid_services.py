from datetime import timedelta

import pytest
from django.utils import timezone

from common.errors import Conflict, IllegalTransition, NotPermitted, ValidationFailed
from common.models import AuditEvent
from jobs.models import Bid, Contract, Job
from jobs.services.bids import bid_accept, bid_place, bid_update, bid_withdraw
from tests.factories import CompanyAdminFactory, CompanyMemberFactory, EngineerFactory, JobFactory, open_job

pytestmark = pytest.mark.django_db


def _place(job, engineer=None, **overrides):
    fields = {"amount": 150_000, "estimated_days": 5, "proposal": "Vectorize."}
    fields.update(overrides)
    return bid_place(actor=engineer or EngineerFactory(), job=job, **fields)


def test_place_update_withdraw_and_place_again():
    job, engineer = open_job(), EngineerFactory()
    bid = _place(job, engineer)
    bid = bid_update(actor=engineer, bid=bid, amount=120_000, predicted_speedup=2.5)
    assert (bid.amount, bid.predicted_speedup) == (120_000, 2.5)
    bid_withdraw(actor=engineer, bid=bid)
    assert _place(job, engineer).status == Bid.Status.PENDING


def test_one_active_bid_per_engineer_per_job():
    job, engineer = open_job(), EngineerFactory()
    _place(job, engineer)
    with pytest.raises(Conflict) as error:
        _place(job, engineer)
    assert error.value.code == "bid_exists"


def test_no_bid_on_own_organizations_job():
    job = open_job()
    colleague = CompanyMemberFactory(organization=job.organization)
    with pytest.raises(NotPermitted):
        _place(job, colleague)


@pytest.mark.parametrize("status", [Job.Status.DRAFT, Job.Status.AWARDED, Job.Status.CANCELLED, Job.Status.EXPIRED])
def test_no_bid_on_a_job_that_is_not_open(status):
    job = JobFactory(status=status)
    with pytest.raises(IllegalTransition) as error:
        _place(job)
    assert error.value.code == "job_not_open"


def test_no_bid_after_the_deadline():
    job = open_job()
    Job.objects.filter(pk=job.pk).update(bidding_deadline=timezone.now() - timedelta(seconds=1))
    with pytest.raises(IllegalTransition) as error:
        _place(job)
    assert error.value.code == "bidding_closed"


def test_invited_only_jobs_take_invited_engineers():
    job = open_job(visibility=Job.Visibility.INVITED)
    invited = EngineerFactory()
    job.invited_engineers.add(invited)
    with pytest.raises(NotPermitted):
        _place(job)
    assert _place(job, invited).status == Bid.Status.PENDING


@pytest.mark.parametrize(
    "field,value", [("amount", 0), ("estimated_days", 0), ("proposal", "  "), ("predicted_speedup", -1)]
)
def test_bad_bid_fields(field, value):
    with pytest.raises(ValidationFailed) as error:
        _place(open_job(), **{field: value})
    assert field in error.value.fields


def test_accept_creates_one_contract_declines_the_rest_and_audits():
    admin = CompanyAdminFactory()
    job = open_job(admin=admin)
    winner, loser = _place(job, amount=100_000), _place(job, amount=90_000)
    contract = bid_accept(actor=admin, bid=winner)
    loser.refresh_from_db()
    job.refresh_from_db()
    assert loser.status == Bid.Status.DECLINED
    assert job.status == Job.Status.AWARDED
    assert contract.status == Contract.Status.AWAITING_FUNDING
    assert (contract.amount, contract.platform_fee, contract.currency) == (100_000, 10_000, job.currency)
    assert contract.submission_limit == job.max_submissions
    verbs = set(AuditEvent.objects.values_list("verb", flat=True))
    assert {"bid_accepted", "bid_declined", "job_awarded", "contract_created"} <= verbs


def test_platform_fee_rounds_half_up_in_minor_units(settings):
    settings.PLATFORM_FEE_BPS = 750
    admin = CompanyAdminFactory()
    contract = bid_accept(actor=admin, bid=_place(open_job(admin=admin), amount=1_001))
    assert contract.platform_fee == 75  # 75.075 rounds to 75


def test_only_admins_accept():
    job = open_job()
    member = CompanyMemberFactory(organization=job.organization)
    with pytest.raises(NotPermitted):
        bid_accept(actor=member, bid=_place(job))


def test_second_accept_on_the_same_job_is_illegal():
    admin = CompanyAdminFactory()
    job = open_job(admin=admin)
    first, second = _place(job), _place(job)
    bid_accept(actor=admin, bid=first)
    with pytest.raises(IllegalTransition):
        bid_accept(actor=admin, bid=second)
    assert Contract.objects.filter(job=job).count() == 1


@pytest.mark.parametrize("final_status", [Bid.Status.WITHDRAWN, Bid.Status.DECLINED, Bid.Status.ACCEPTED])
def test_a_settled_bid_cannot_change(final_status):
    job, engineer = open_job(), EngineerFactory()
    bid = _place(job, engineer)
    Bid.objects.filter(pk=bid.pk).update(status=final_status)
    with pytest.raises(IllegalTransition):
        bid_update(actor=engineer, bid=bid, amount=1)
    with pytest.raises(IllegalTransition):
        bid_withdraw(actor=engineer, bid=bid)


def test_withdrawn_bid_cannot_be_accepted():
    admin = CompanyAdminFactory()
    job, engineer = open_job(admin=admin), EngineerFactory()
    bid = _place(job, engineer)
    bid_withdraw(actor=engineer, bid=bid)
    with pytest.raises(IllegalTransition):
        bid_accept(actor=admin, bid=bid)


def test_only_the_bidder_updates():
    bid = _place(open_job())
    with pytest.raises(NotPermitted):
        bid_update(actor=EngineerFactory(), bid=bid, amount=1)
