"""Disputes raced for real on PostgreSQL: both parties open at the same moment, two operators rule at once."""

import pytest

from jobs.models import Dispute
from jobs.services.disputes import dispute_open, dispute_rule
from tests.factories import StaffFactory, funded_contract
from tests.factories.disputes import Host, submit_and_verify
from tests.factories.jobs import onboard
from tests.races import race

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def contract_with_a_fail_and_a_pass(dispatched, django_capture_on_commit_callbacks):
    contract = funded_contract(review_window_hours=48, max_submissions=3)
    onboard(contract.engineer)
    host = Host("host-a")
    for decision, fraction in (("FAIL", 0.0), ("PASS", 0.5)):
        submit_and_verify(
            contract,
            host=host,
            dispatched=dispatched,
            capture=django_capture_on_commit_callbacks,
            decision=decision,
            fraction=fraction,
        )
    return contract


def test_both_parties_opening_at_once_leave_one_dispute(contract_with_a_fail_and_a_pass):
    contract = contract_with_a_fail_and_a_pass
    outcomes = race(
        lambda: dispute_open(actor=contract.job.created_by, contract_id=contract.pk, reason="cached"),
        lambda: dispute_open(actor=contract.engineer, contract_id=contract.pk, reason="noisy"),
    )
    assert outcomes == ["dispute_already_open", "done"]
    assert Dispute.objects.filter(contract=contract).count() == 1


def test_two_operators_ruling_at_once_rule_once(contract_with_a_fail_and_a_pass):
    contract = contract_with_a_fail_and_a_pass
    dispute = dispute_open(actor=contract.job.created_by, contract_id=contract.pk, reason="cached")
    operators = StaffFactory(), StaffFactory()
    outcomes = race(
        *(
            lambda operator=operator: dispute_rule(
                dispute_id=dispute.pk, actor=operator, ruling="overturn_withhold", note="cached"
            )
            for operator in operators
        )
    )
    assert outcomes == ["dispute_resolved", "done"]
    dispute.refresh_from_db()
    assert dispute.status == "resolved"
