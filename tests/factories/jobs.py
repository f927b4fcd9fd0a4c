from datetime import timedelta

import factory
from django.utils import timezone

from jobs.models import Bid, Job
from jobs.services.bids import bid_accept, bid_place
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


def job_request_body(**overrides) -> dict:
    """What a client POSTs to /api/v1/jobs/ for a valid job, with `overrides` applied."""
    return {
        "title": "Speed up tokenizer",
        "hardware_class": "cpu-x86",
        "currency": "USD",
        "budget_min": 10_000,
        "budget_max": 20_000,
        "bidding_deadline": (timezone.now() + timedelta(days=2)).isoformat(),
        "criteria": CRITERIA,
        **overrides,
    }


def open_job(*, admin=None, **fields) -> Job:
    """A job published through the services, with its package and hidden inputs attached."""
    admin = admin or CompanyAdminFactory()
    organization = admin.memberships.first().organization
    job = JobFactory(organization=organization, created_by=admin, **fields)
    job_attach_package(actor=admin, job=job, upload=package_archive())
    job_attach_hidden_inputs(actor=admin, job=job, upload=upload(make_tar_gz({"in-0.json": b'{"x": [[1.0]]}'})))
    return job_publish(actor=admin, job=job)


def awarded_contract(*, admin=None, engineer=None, amount: int = 200_000, **job_fields):
    admin = admin or CompanyAdminFactory()
    job = open_job(admin=admin, **job_fields)
    engineer = engineer or EngineerFactory()
    bid = bid_place(actor=engineer, job=job, amount=amount, estimated_days=10, proposal="Fuse the layers.")
    return bid_accept(actor=admin, bid=bid)


def payment_events_process() -> None:
    """Process stored provider events now, as the payments worker would."""
    from payments.models import WebhookEvent
    from payments.services import webhook_event_process

    for event_id in (
        WebhookEvent.objects.filter(status=WebhookEvent.Status.PENDING).order_by("id").values_list("pk", flat=True)
    ):
        webhook_event_process(event_id=event_id)


def fund(contract, *, outcome: str = "succeed"):
    """Pay a contract's escrow through the offline provider, the way a company does."""
    from payments.services import escrow_funding_start, offline_payment_confirm

    admin = contract.organization.memberships.filter(role__in=["owner", "admin"]).first().user
    instructions = escrow_funding_start(escrow_id=contract.escrow_id, actor=admin)
    offline_payment_confirm(payment_intent_id=instructions.payment_intent_id, outcome=outcome, actor=admin)
    payment_events_process()
    contract.refresh_from_db()
    return contract


def onboard(engineer) -> None:
    """Make the engineer payable through the offline provider."""
    from payments.models import ConnectedAccount
    from payments.services import engineer_onboarding_start, offline_onboarding_complete

    engineer_onboarding_start(user=engineer, country="US")
    account = ConnectedAccount.objects.get(user=engineer)
    offline_onboarding_complete(account_id=account.provider_account_id, actor=engineer)
    payment_events_process()


def funded_contract(**kwargs):
    return fund(awarded_contract(**kwargs))
