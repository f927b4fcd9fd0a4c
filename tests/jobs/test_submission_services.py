from datetime import timedelta

import pytest
from django.utils import timezone

from common.archives import ArchiveRejected
from common.errors import IllegalTransition, NotPermitted
from jobs.models import Contract, Submission
from jobs.services.submissions import submission_create
from tests.factories import EngineerFactory, awarded_contract, funded_contract
from tests.factories.archives import upload

from .conftest import candidate_upload

pytestmark = pytest.mark.django_db


def test_attempts_are_counted_and_numbered():
    contract = funded_contract(max_submissions=2)
    first = submission_create(actor=contract.engineer, contract=contract, upload=candidate_upload())
    second = submission_create(actor=contract.engineer, contract=contract, upload=candidate_upload(), notes="v2")
    contract.refresh_from_db()
    assert (first.number, second.number) == (1, 2)
    assert contract.attempts_left == 0
    assert first.candidate == second.candidate  # same bytes, stored once
    with pytest.raises(IllegalTransition) as error:
        submission_create(actor=contract.engineer, contract=contract, upload=candidate_upload())
    assert error.value.code == "attempts_exhausted"


def test_only_the_contracts_engineer_submits():
    contract = funded_contract()
    with pytest.raises(NotPermitted):
        submission_create(actor=EngineerFactory(), contract=contract, upload=candidate_upload())


def test_no_submission_before_funding():
    contract = awarded_contract()
    with pytest.raises(IllegalTransition) as error:
        submission_create(actor=contract.engineer, contract=contract, upload=candidate_upload())
    assert error.value.code == "contract_not_active"


def test_no_submission_after_the_deadline():
    contract = funded_contract()
    Contract.objects.filter(pk=contract.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    with pytest.raises(IllegalTransition) as error:
        submission_create(actor=contract.engineer, contract=contract, upload=candidate_upload())
    assert error.value.code == "contract_deadline_passed"


def test_a_bad_archive_consumes_no_attempt():
    contract = funded_contract()
    with pytest.raises(ArchiveRejected):
        submission_create(actor=contract.engineer, contract=contract, upload=upload(b"not an archive"))
    contract.refresh_from_db()
    assert contract.submissions_used == 0
    assert not Submission.objects.exists()
