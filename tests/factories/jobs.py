from datetime import timedelta

import factory
from django.utils import timezone

from jobs.models import Bid, Job
from jobs.services.bids import bid_accept, bid_place
from jobs.services.contracts import contract_activate
from jobs.services.jobs import job_attach_hidden_inputs, job_attach_package, job_publish

from .accounts import CompanyAdminFactory, EngineerFactory, OrganizationFactory, UserFactory
from .archives import make_tar_gz, package_archive, upload

CRITERIA = {
    "criteria": [{"metric": "wall_time", "statistic": "median", "kind": "speedup", "threshold": 1.5}],
    "correctness": {"mode": "numeric", "rtol": 1e-4, "atol": 1e-6},
    "tiers": [{"speedup": 1.5, "fraction": 0.5}, {"speedup": 2.0, "fraction": 1.0}],
}


class JobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Job

    organization = factory.SubFactory(OrganizationFactory)
    created_by = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Speed up model {n}")
    description = "Make inference faster."
    hardware_class = "cpu-x86"
    currency = "USD"
    budget_min = 100_000
    budget_max = 500_000
    bidding_deadline = factory.LazyFunction(lambda: timezone.now() + timedelta(days=7))
    criteria = factory.LazyFunction(lambda: dict(CRITERIA))


class BidFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Bid

    job = factory.SubFactory(JobFactory, status=Job.Status.OPEN)
    engineer = factory.SubFactory(EngineerFactory)
    amount = 200_000
    estimated_days = 10
    proposal = "Fuse the layers."


def open_job(*, admin=None, **fields) -> Job:
    """A job published through the services, with its package and hidden inputs attached."""
    admin = admin or CompanyAdminFactory()
    organization = admin.memberships.first().organization
    job = JobFactory(organization=organization, created_by=admin, **fields)
    job_attach_package(actor=admin, job=job, upload=package_archive())
    job_attach_hidden_inputs(actor=admin, job=job, upload=upload(make_tar_gz({"inputs/0.json": b"[1,2,3]"})))
    return job_publish(actor=admin, job=job)


def awarded_contract(*, admin=None, engineer=None, amount: int = 200_000, **job_fields):
    admin = admin or CompanyAdminFactory()
    job = open_job(admin=admin, **job_fields)
    engineer = engineer or EngineerFactory()
    bid = bid_place(actor=engineer, job=job, amount=amount, estimated_days=10, proposal="Fuse the layers.")
    return bid_accept(actor=admin, bid=bid)


def funded_contract(**kwargs):
    contract = awarded_contract(**kwargs)
    return contract_activate(contract_id=contract.pk, reason="funded in test")
