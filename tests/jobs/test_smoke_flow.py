import pytest

from jobs.models import Contract, Job
from tests.factories import awarded_contract


@pytest.mark.django_db
def test_awarded_contract_waits_for_funding():
    contract = awarded_contract()
    assert contract.status == Contract.Status.AWAITING_FUNDING
    assert contract.job.status == Job.Status.AWARDED
    assert contract.platform_fee == 20_000
