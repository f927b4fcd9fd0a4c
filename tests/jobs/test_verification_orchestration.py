"""From a recorded verification result to the contract's money: earnings, review, release, settlement."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import EngineerProfile
from common.errors import IllegalTransition, NotPermitted
from common.models import AuditEvent
from jobs.models import Contract, Job, Submission
from jobs.services import contracts as contract_services
from jobs.services.submissions import submission_accept_inconclusive, submission_create
from jobs.tasks import contracts_release_due, contracts_settle_due
from payments.models import Escrow
from tests.factories import StaffFactory, funded_contract
from tests.factories.jobs import onboard
from tests.verification.conftest import fake_report
from verification.models import VerificationRun
from verification.runner.certificate import sign_report
from verification.services import verification_record_result, verification_run_start

from .conftest import candidate_upload

pytestmark = pytest.mark.django_db


class Verifier:
    """Plays the verification host: starts the queued run and posts a signed result."""

    def __init__(self, key, dispatched):
        self.key, self.dispatched = key, dispatched

    def submit(self, contract, settle) -> Submission:
        return settle(submission_create, actor=contract.engineer, contract=contract, upload=candidate_upload())

    def finish(self, submission, decision="PASS", fraction=1.0, estimate=2.2) -> VerificationRun:
        run = VerificationRun.objects.get(subject=f"submission:{submission.pk}")
        token = next(d.token for d in reversed(self.dispatched) if d.run_id == run.pk)
        verification_run_start(run_id=run.pk, token=token)
        report = fake_report(run, decision=decision, fraction=fraction, estimate=estimate)
        return verification_record_result(
            run_id=run.pk, token=token, report=report, certificate=sign_report(report, self.key)
        )


@pytest.fixture
def settle(django_capture_on_commit_callbacks, monkeypatch):
    """Run a block and the on-commit work it schedules; tasks run in-process, as a worker would run them."""
    from marketplace.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True

    def run(fn, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    yield run
    app.conf.task_always_eager = previous


@pytest.fixture
def verifier(signing_key, dispatched):
    return Verifier(signing_key, dispatched)


@pytest.fixture
def contract():
    contract = funded_contract(review_window_hours=48, max_submissions=3)
    onboard(contract.engineer)
    return contract


def _escrow(contract) -> Escrow:
    return Escrow.objects.get(pk=contract.escrow_id)


def test_submission_queues_a_verification_of_the_right_files(contract, verifier, settle, dispatched):
    submission = verifier.submit(contract, settle)
    run = VerificationRun.objects.get(subject=f"submission:{submission.pk}")
    assert submission.status == Submission.Status.VERIFYING
    assert (run.hardware_class, run.criteria) == (contract.job.hardware_class, contract.job.criteria)
    assert (run.package, run.hidden_inputs, run.candidate) == (
        contract.job.package,
        contract.job.hidden_inputs,
        submission.candidate,
    )
    assert dispatched[-1].queue == "verify.cpu-x86"


def test_pass_waits_for_the_review_window_then_releases_once(contract, verifier, settle):
    submission = verifier.submit(contract, settle)
    settle(verifier.finish, submission, fraction=0.5)
    contract.refresh_from_db()
    assert contract.earned_bps == 5_000
    assert contract.release_due_at > timezone.now() + timedelta(hours=47)
    assert settle(contracts_release_due) == []
    assert _escrow(contract).released_bps == 0
    Contract.objects.filter(pk=contract.pk).update(release_due_at=timezone.now() - timedelta(seconds=1))
    assert settle(contracts_release_due) == [contract.pk]
    assert settle(contracts_release_due) == []
    escrow = _escrow(contract)
    assert (escrow.released_bps, escrow.status) == (5_000, Escrow.Status.PARTIALLY_RELEASED)
    assert escrow.operations.filter(kind="transfer").count() == 1
    contract.refresh_from_db()
    assert contract.status == Contract.Status.ACTIVE


def test_a_higher_tier_later_releases_the_difference_and_completes(contract, verifier, settle):
    settle(verifier.finish, verifier.submit(contract, settle), fraction=0.5)
    contract_services.contract_approve_early(actor=contract.job.created_by, contract=contract)
    settle(contracts_release_due)
    settle(verifier.finish, verifier.submit(contract, settle), fraction=1.0)
    Contract.objects.filter(pk=contract.pk).update(release_due_at=timezone.now())
    settle(contracts_release_due)
    contract.refresh_from_db()
    escrow = _escrow(contract)
    assert (contract.status, contract.job.status) == (Contract.Status.COMPLETED, Job.Status.COMPLETED)
    assert (escrow.released_bps, escrow.status) == (10_000, Escrow.Status.RELEASED)
    assert sorted(escrow.operations.filter(kind="transfer").values_list("amount", flat=True)) == [100_000, 100_000]


def test_failures_until_attempts_run_out_refund_the_company(contract, verifier, settle):
    for _ in range(3):
        settle(verifier.finish, verifier.submit(contract, settle), decision="FAIL", fraction=0.0)
    contract.refresh_from_db()
    # The engineer may dispute the last FAIL within the review window: the refund waits for it.
    assert contract.status == Contract.Status.ACTIVE
    assert contract.settle_due_at > timezone.now() + timedelta(hours=47)
    Contract.objects.filter(pk=contract.pk).update(settle_due_at=timezone.now() - timedelta(seconds=1))
    settle(contracts_settle_due)
    contract.refresh_from_db()
    escrow = _escrow(contract)
    assert (contract.status, contract.job.status) == (Contract.Status.FAILED, Job.Status.CANCELLED)
    assert escrow.status == Escrow.Status.REFUNDED
    assert escrow.operations.get(kind="refund").amount == 220_000
    with pytest.raises(IllegalTransition):
        verifier.submit(contract, settle)


def test_settlement_pays_what_was_earned_and_refunds_the_rest(contract, verifier, settle):
    settle(verifier.finish, verifier.submit(contract, settle), fraction=0.5)
    for _ in range(2):
        settle(verifier.finish, verifier.submit(contract, settle), decision="FAIL", fraction=0.0)
    contract.refresh_from_db()
    # Attempts ran out inside the earned tier's review window, and the last FAIL's window to dispute it opened
    # after it: settlement waits for the later one.
    assert contract.status == Contract.Status.ACTIVE
    assert contract.settle_due_at > contract.release_due_at
    assert not _escrow(contract).operations.filter(kind__in=["transfer", "refund"]).exists()
    _close_review_window(contract)
    settle(contracts_settle_due)
    _assert_half_paid_half_refunded(contract)


def _assert_half_paid_half_refunded(contract) -> None:
    contract.refresh_from_db()
    escrow = _escrow(contract)
    assert (contract.status, escrow.status) == (Contract.Status.COMPLETED, Escrow.Status.CLOSED)
    assert escrow.operations.get(kind="transfer").amount == 100_000
    assert escrow.operations.get(kind="refund").amount == 110_000  # half the amount and half the fee


def _one_attempt_contract() -> Contract:
    contract = funded_contract(review_window_hours=48, max_submissions=1)
    onboard(contract.engineer)
    return contract


def _inconclusive(contract, verifier, settle) -> Submission:
    """A submitted candidate whose verification came back inconclusive, its estimate reaching the first tier."""
    submission = verifier.submit(contract, settle)
    settle(verifier.finish, submission, decision="INCONCLUSIVE", fraction=0.0, estimate=1.7)
    return submission


def _close_review_window(contract) -> None:
    past = timezone.now() - timedelta(seconds=1)
    Contract.objects.filter(pk=contract.pk).update(release_due_at=past, settle_due_at=past)


def test_a_pass_on_the_last_attempt_keeps_its_review_window(verifier, settle):
    contract = _one_attempt_contract()
    settle(verifier.finish, verifier.submit(contract, settle), fraction=0.5)
    settle(contracts_settle_due)
    settle(contracts_release_due)
    contract.refresh_from_db()
    assert contract.status == Contract.Status.ACTIVE
    assert _escrow(contract).released_bps == 0
    assert not _escrow(contract).operations.filter(kind="refund").exists()
    # The company can still dispute the result it has not reviewed yet.
    contract_services.contract_dispute_review(actor=contract.job.created_by, contract=contract, reason="cached outputs")
    contract.refresh_from_db()
    assert contract.review_disputed


def test_deadline_inside_a_review_window_settles_when_the_window_closes(contract, verifier, settle):
    settle(verifier.finish, verifier.submit(contract, settle), fraction=0.5)
    Contract.objects.filter(pk=contract.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    for _ in range(2):
        settle(contracts_settle_due)
    contract.refresh_from_db()
    assert contract.status == Contract.Status.ACTIVE
    assert contract.settle_due_at == contract.release_due_at
    assert _escrow(contract).operations.filter(kind__in=["transfer", "refund"]).count() == 0
    _close_review_window(contract)
    settle(contracts_settle_due)
    settle(contracts_release_due)
    _assert_half_paid_half_refunded(contract)


def test_accepting_an_inconclusive_last_attempt_settles_at_once(verifier, settle):
    contract = _one_attempt_contract()
    submission = _inconclusive(contract, verifier, settle)
    contract.refresh_from_db()
    assert contract.status == Contract.Status.ACTIVE and contract.settle_due_at > timezone.now()
    settle(submission_accept_inconclusive, actor=contract.job.created_by, submission=submission)
    _assert_half_paid_half_refunded(contract)


def test_an_inconclusive_last_result_near_the_deadline_keeps_its_acceptance_window(verifier, settle):
    contract = _one_attempt_contract()
    submission = _inconclusive(contract, verifier, settle)
    Contract.objects.filter(pk=contract.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    settle(contracts_settle_due)
    contract.refresh_from_db()
    assert contract.status == Contract.Status.ACTIVE
    assert not _escrow(contract).operations.filter(kind="refund").exists()
    settle(submission_accept_inconclusive, actor=contract.job.created_by, submission=submission)
    _assert_half_paid_half_refunded(contract)


def test_deadline_settles_and_running_it_twice_changes_nothing(contract, settle):
    Contract.objects.filter(pk=contract.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    assert settle(contracts_settle_due) == [contract.pk]
    assert settle(contracts_settle_due) == []
    contract.refresh_from_db()
    assert contract.status == Contract.Status.FAILED
    assert _escrow(contract).operations.filter(kind="refund").count() == 1


def test_platform_error_gives_the_attempt_back(contract, verifier, settle):
    submission = verifier.submit(contract, settle)
    run = VerificationRun.objects.get(subject=f"submission:{submission.pk}")
    VerificationRun.objects.filter(pk=run.pk).update(infrastructure_failures=2)
    settle(verifier.finish, submission, decision="ERROR", fraction=0.0)
    submission.refresh_from_db()
    contract.refresh_from_db()
    assert submission.status == Submission.Status.ERROR
    assert contract.submissions_used == 0


def test_company_may_accept_an_inconclusive_result(contract, verifier, settle):
    submission = _inconclusive(contract, verifier, settle)
    settle(submission_accept_inconclusive, actor=contract.job.created_by, submission=submission)
    contract.refresh_from_db()
    assert contract.earned_bps == 5_000  # the estimate 1.7x reaches the first tier (1.5x)
    assert _escrow(contract).released_bps == 5_000


def test_dispute_holds_the_release(contract, verifier, settle):
    settle(verifier.finish, verifier.submit(contract, settle), fraction=1.0)
    admin = contract.job.created_by
    contract_services.contract_dispute_review(actor=admin, contract=contract, reason="outputs look cached")
    Contract.objects.filter(pk=contract.pk).update(release_due_at=timezone.now() - timedelta(seconds=1))
    settle(contracts_release_due)
    assert _escrow(contract).released_bps == 0


def _disputed(contract, verifier, settle, fraction=0.5):
    settle(verifier.finish, verifier.submit(contract, settle), fraction=fraction)
    contract_services.contract_dispute_review(
        actor=contract.job.created_by, contract=contract, reason="outputs look cached"
    )


def test_an_operator_may_release_a_disputed_result(contract, verifier, settle):
    _disputed(contract, verifier, settle)
    settle(
        contract_services.contract_dispute_resolve,
        actor=StaffFactory(),
        contract_id=contract.pk,
        release=True,
        note="checked",
    )
    contract.refresh_from_db()
    assert not contract.review_disputed and contract.release_due_at is None
    assert _escrow(contract).released_bps == 5_000
    assert (
        AuditEvent.objects.filter(verb="contract_dispute_resolved", object_id=str(contract.pk)).get().data["outcome"]
        == "released"
    )
    with pytest.raises(IllegalTransition):
        contract_services.contract_dispute_resolve(
            actor=StaffFactory(), contract_id=contract.pk, release=True, note="again"
        )


def test_a_withheld_result_earns_nothing_and_a_contract_out_of_attempts_is_refunded(verifier, settle):
    contract = _one_attempt_contract()
    _disputed(contract, verifier, settle)
    settle(
        contract_services.contract_dispute_resolve,
        actor=StaffFactory(),
        contract_id=contract.pk,
        release=False,
        note="cached",
    )
    contract.refresh_from_db()
    escrow = _escrow(contract)
    assert (contract.earned_bps, contract.status) == (0, Contract.Status.FAILED)
    assert escrow.released_bps == 0
    assert escrow.operations.get(kind="refund").amount == 220_000


def test_a_released_ruling_on_the_last_attempt_settles_the_contract(verifier, settle):
    contract = _one_attempt_contract()
    _disputed(contract, verifier, settle)
    settle(contracts_settle_due)
    assert not _escrow(contract).operations.filter(kind__in=["transfer", "refund"]).exists()  # held by the dispute
    settle(
        contract_services.contract_dispute_resolve,
        actor=StaffFactory(),
        contract_id=contract.pk,
        release=True,
        note="fine",
    )
    _assert_half_paid_half_refunded(contract)


def test_a_withheld_higher_tier_falls_back_to_what_was_paid(contract, verifier, settle):
    settle(verifier.finish, verifier.submit(contract, settle), fraction=0.5)
    contract_services.contract_approve_early(actor=contract.job.created_by, contract=contract)
    settle(contracts_release_due)
    _disputed(contract, verifier, settle, fraction=1.0)
    settle(
        contract_services.contract_dispute_resolve,
        actor=StaffFactory(),
        contract_id=contract.pk,
        release=False,
        note="cached",
    )
    contract.refresh_from_db()
    assert (contract.earned_bps, contract.status, contract.release_due_at) == (5_000, Contract.Status.ACTIVE, None)
    assert _escrow(contract).released_bps == 5_000


def test_only_operators_resolve_disputes(contract, verifier, settle):
    _disputed(contract, verifier, settle)
    for outsider in (contract.job.created_by, contract.engineer):
        with pytest.raises(NotPermitted):
            contract_services.contract_dispute_resolve(actor=outsider, contract_id=contract.pk, release=True, note="")
    contract.refresh_from_db()
    assert contract.review_disputed


def test_zero_review_window_releases_at_once(verifier, settle):
    contract = funded_contract(review_window_hours=0)
    onboard(contract.engineer)
    settle(verifier.finish, verifier.submit(contract, settle), fraction=1.0)
    contract.refresh_from_db()
    assert contract.status == Contract.Status.COMPLETED
    assert _escrow(contract).released_bps == 10_000


def test_track_record_counts_signed_passes(contract, verifier, settle):
    settle(verifier.finish, verifier.submit(contract, settle), fraction=0.5, estimate=1.8)
    settle(verifier.finish, verifier.submit(contract, settle), fraction=1.0, estimate=2.4)
    profile = EngineerProfile.objects.get(user=contract.engineer)
    assert profile.jobs_passed == 1
    assert profile.best_certified_speedup == 2.4
    assert len(profile.certified_results) == 2


def test_engineer_never_sees_hidden_outputs_or_logs_the_company_does(contract, verifier, settle, api_client_for):
    submission = verifier.submit(contract, settle)
    run = VerificationRun.objects.get(subject=f"submission:{submission.pk}")
    token = next(d.token for d in reversed(verifier.dispatched) if d.run_id == run.pk)
    verification_run_start(run_id=run.pk, token=token)
    report = fake_report(run, decision="FAIL", fraction=0.0)
    report["correctness"] = {
        "passed": False,
        "outputs_compared": 8,
        "mismatched_outputs": 1,
        "first_differences": [{"input_id": "h-1", "where": "$[0]", "expected": "0.123456789", "actual": "9.9"}],
    }
    report["measurements"] = [{"role": "candidate", "error": "output for input 'h-1': 0.123456789 leaked"}]
    settle(
        verification_record_result,
        run_id=run.pk,
        token=token,
        report=report,
        certificate=sign_report(report, verifier.key),
    )

    engineer_view = api_client_for(contract.engineer).get(f"/api/v1/submissions/{submission.pk}/verification/")
    assert engineer_view.status_code == 200
    assert "0.123456789" not in engineer_view.content.decode()
    assert "secret stderr" not in engineer_view.content.decode()
    assert engineer_view.json()["results"][0]["report"]["correctness"]["first_differences"] == [
        {"inputs": "hidden", "where": "$[0]"}
    ]
    assert "h-1" not in engineer_view.content.decode()  # the company named its hidden inputs
    company_view = api_client_for(contract.job.created_by).get(f"/api/v1/submissions/{submission.pk}/verification/")
    assert "0.123456789" in company_view.content.decode()


def test_chargeback_postpones_release_until_it_is_won(contract, verifier, settle):
    from payments.services import offline_payment_confirm
    from tests.factories.jobs import payment_events_process

    admin = contract.job.created_by
    payment_intent = _escrow(contract).payment_intent_id
    offline_payment_confirm(payment_intent_id=payment_intent, outcome="dispute", actor=admin)
    payment_events_process()
    assert _escrow(contract).frozen
    settle(verifier.finish, verifier.submit(contract, settle), fraction=1.0)
    Contract.objects.filter(pk=contract.pk).update(release_due_at=timezone.now() - timedelta(seconds=1))
    settle(contracts_release_due)
    contract.refresh_from_db()
    assert _escrow(contract).released_bps == 0 and contract.release_due_at is not None
    offline_payment_confirm(payment_intent_id=payment_intent, outcome="dispute_won", actor=admin)
    payment_events_process()
    settle(contracts_release_due)
    contract.refresh_from_db()
    assert _escrow(contract).released_bps == 10_000 and contract.status == Contract.Status.COMPLETED
