"""Two admins accept two different bids at the same moment, in real PostgreSQL transactions."""

import threading

import pytest
from django.db import connection

from common.errors import IllegalTransition
from jobs.models import Bid, Contract, Job
from jobs.services.bids import bid_accept, bid_place
from tests.factories import CompanyAdminFactory, EngineerFactory, open_job


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("attempt", range(3))
def test_racing_accepts_end_with_exactly_one_contract(attempt):
    first_admin = CompanyAdminFactory()
    organization = first_admin.memberships.get().organization
    second_admin = CompanyAdminFactory(organization=organization)
    job = open_job(admin=first_admin)
    bids = [
        bid_place(actor=EngineerFactory(), job=job, amount=100_000 + i, estimated_days=3, proposal="p")
        for i in range(2)
    ]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def accept(admin, bid):
        try:
            barrier.wait()
            bid_accept(actor=admin, bid=bid)
            outcomes.append("accepted")
        except IllegalTransition:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=accept, args=pair) for pair in zip((first_admin, second_admin), bids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["accepted", "refused"]
    assert Contract.objects.filter(job=job).count() == 1
    assert Bid.objects.filter(job=job, status=Bid.Status.ACCEPTED).count() == 1
    assert Job.objects.get(pk=job.pk).status == Job.Status.AWARDED
