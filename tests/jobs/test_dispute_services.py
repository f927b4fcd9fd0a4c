"""Disputes decided on evidence: who may open one and until when, the one answer, the re-verification on a
different host, the recommendation, each ruling's effect on the money, escalation, and every illegal move."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from accounts.models import User
from accounts.operators import PAYMENTS_OPERATOR, SUPPORT
from common.errors import IllegalTransition, NotFound, NotPermitted, ValidationFailed
from common.models import AuditEvent
from jobs.models import Contract, Dispute
from jobs.services import contracts as contract_services
from jobs.services.disputes import (
    dispute_answer,
    dispute_open,
    dispute_reverify,
    dispute_rule,
)
from jobs.tasks import contracts_release_due, contracts_settle_due, disputes_escalate_overdue
from notifications.models import EmailNotification
from payments.models import Escrow
from tests.factories import CompanyAdminFactory, EngineerFactory, StaffFactory, funded_contract
from tests.factories.accounts import UserFactory
from tests.factories.disputes import Host, submit_and_verify, token_of
from tests.factories.jobs import onboard
from verification.models import VerificationRun
from verification.services import HostExcluded, verification_watchdog

pytestmark = pytest.mark.django_db


@pytest.fixture
def settle(django_capture_on_commit_callbacks):
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
def contract():
    contract = funded_contract(review_window_hours=48, max_submissions=4)
    onboard(contract.engineer)
    return contract


@pytest.fixture
def hosts(db):
    return Host("host-a"), Host("host-b")


@pytest.fixture
def verify(hosts, dispatched, django_capture_on_commit_callbacks):
    """The engineer submits; host-a verifies."""

    def run(contract, **result):
        return submit_and_verify(
            contract, host=hosts[0], dispatched=dispatched, capture=django_capture_on_commit_callbacks, **result
        )

    return run


def _operator(role: str) -> User:
    user = UserFactory(account_type=User.AccountType.OPERATOR, is_staff=True)
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def _admin(contract) -> User:
    return contract.job.created_by


def _escrow(contract) -> Escrow:
    return Escrow.objects.get(pk=contract.escrow_id)


def _finish_rerun(settle, dispute, host, dispatched, **result) -> Dispute:
    rerun = dispute.reverification_run
    settle(host.finish, rerun, token_of(dispatched, rerun), **result)
    dispute.refresh_from_db()
    return dispute


# Opening: who, what, and until when


def test_company_disputes_a_pass_inside_its_review_window_and_the_release_freezes(contract, verify, settle):
    run = verify(contract, fraction=0.5)
    dispute = settle(
        dispute_open, actor=_admin(contract), contract_id=contract.pk, reason="outputs look cached", evidence_text="x"
    )
    contract.refresh_from_db()
    assert (dispute.side, dispute.disputed_run_id, dispute.status) == ("company", run.pk, "reverifying")
    assert contract.review_disputed
    Contract.objects.filter(pk=contract.pk).update(release_due_at=timezone.now() - timedelta(seconds=1))
    settle(contracts_release_due)
    assert _escrow(contract).released_bps == 0
    with pytest.raises(IllegalTransition) as refused:
        contract_services.contract_approve_early(actor=_admin(contract), contract=contract)
    assert refused.value.code == "dispute_open"


def test_company_cannot_dispute_once_the_review_window_closed(contract, verify):
    verify(contract, fraction=0.5)
    Contract.objects.filter(pk=contract.pk).update(release_due_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(IllegalTransition) as refused:
        dispute_open(actor=_admin(contract), contract_id=contract.pk, reason="late")
    assert refused.value.code == "review_window_closed"


@pytest.mark.parametrize("decision", ["FAIL", "INCONCLUSIVE"])
def test_engineer_disputes_a_fail_or_inconclusive_inside_the_window(contract, verify, settle, decision):
    run = verify(contract, decision=decision, fraction=0.0, estimate=1.2)
    dispute = settle(dispute_open, actor=contract.engineer, contract_id=contract.pk, reason="noisy neighbour")
    assert (dispute.side, dispute.disputed_run_id) == ("engineer", run.pk)


def test_engineer_window_is_counted_from_the_runs_decision(contract, verify):
    run = verify(contract, decision="FAIL", fraction=0.0)
    VerificationRun.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(hours=48, seconds=1))
    with pytest.raises(IllegalTransition) as refused:
        dispute_open(actor=contract.engineer, contract_id=contract.pk, reason="late", run_id=run.pk)
    assert refused.value.code == "review_window_closed"


def test_each_side_disputes_only_its_kind_of_result(contract, verify):
    passed = verify(contract, fraction=0.5)
    with pytest.raises(IllegalTransition) as refused:
        dispute_open(actor=contract.engineer, contract_id=contract.pk, reason="more", run_id=passed.pk)
    assert refused.value.code == "run_not_disputable"
    failed = verify(contract, decision="FAIL", fraction=0.0)
    with pytest.raises(IllegalTransition) as refused:
        dispute_open(actor=_admin(contract), contract_id=contract.pk, reason="x", run_id=failed.pk)
    assert refused.value.code == "run_not_disputable"


def test_outsiders_cannot_open_and_unknown_runs_are_not_found(contract, verify):
    verify(contract, fraction=0.5)
    for outsider in (EngineerFactory(), CompanyAdminFactory()):
        with pytest.raises(NotPermitted):
            dispute_open(actor=outsider, contract_id=contract.pk, reason="x")
    with pytest.raises(NotFound):
        dispute_open(actor=_admin(contract), contract_id=contract.pk, reason="x", run_id=10**9)


def test_one_open_dispute_per_contract_and_one_per_run_and_side(contract, verify, settle, hosts, dispatched):
    failed = verify(contract, decision="FAIL", fraction=0.0)
    verify(contract, fraction=0.5)
    dispute = settle(dispute_open, actor=_admin(contract), contract_id=contract.pk, reason="cached")
    with pytest.raises(IllegalTransition) as refused:
        dispute_open(actor=contract.engineer, contract_id=contract.pk, reason="x", run_id=failed.pk)
    assert refused.value.code == "dispute_already_open"
    _finish_rerun(settle, dispute, hosts[1], dispatched, fraction=0.5)
    settle(dispute_rule, dispute_id=dispute.pk, actor=StaffFactory(), ruling="uphold", note="agrees")
    with pytest.raises(IllegalTransition) as refused:
        dispute_open(actor=_admin(contract), contract_id=contract.pk, reason="again")
    assert refused.value.code in ("run_already_disputed", "review_window_closed")
    # The re-verification itself is not a result of its own to dispute.
    with pytest.raises(NotFound):
        dispute_open(actor=contract.engineer, contract_id=contract.pk, reason="x", run_id=dispute.reverification_run_id)


def test_reason_is_required(contract, verify):
    verify(contract, fraction=0.5)
    with pytest.raises(ValidationFailed) as refused:
        dispute_open(actor=_admin(contract), contract_id=contract.pk, reason="  ")
    assert refused.value.code == "reason_required"


# The answer


def test_the_other_party_answers_once(contract, verify, settle):
    verify(contract, fraction=0.5)
    dispute = settle(dispute_open, actor=_admin(contract), contract_id=contract.pk, reason="cached")
    with pytest.raises(NotPermitted):
        dispute_answer(actor=_admin(contract), dispute_id=dispute.pk, text="answering myself")
    with pytest.raises(NotPermitted):
        dispute_answer(actor=EngineerFactory(), dispute_id=dispute.pk, text="outsider")
    settle(dispute_answer, actor=contract.engineer, dispute_id=dispute.pk, text="not cached: see the plot")
    with pytest.raises(IllegalTransition) as refused:
        dispute_answer(actor=contract.engineer, dispute_id=dispute.pk, text="and another thing")
    assert refused.value.code == "dispute_already_answered"
    dispute.refresh_from_db()
    assert dispute.answer_text == "not cached: see the plot"


# The re-verification on a different host


def test_rerun_is_refused_to_the_original_host_and_taken_by_another(contract, verify, settle, hosts, dispatched):
    first, second = hosts
    original = verify(contract, fraction=0.5)
    assert (original.host_id, original.host_key_id) == ("host-a", first.key_id)
    dispute = settle(dispute_open, actor=_admin(contract), contract_id=contract.pk, reason="cached")
    rerun = dispute.reverification_run
    assert (rerun.subject, rerun.candidate_id, rerun.exclude_host, rerun.exclude_key_id) == (
        original.subject,
        original.candidate_id,
        "host-a",
        first.key_id,
    )
    token = token_of(dispatched, rerun)
    for claim in ({"host_id": "host-a", "key_id": first.key_id}, {"host_id": "renamed", "key_id": first.key_id}, {}):
        with pytest.raises(HostExcluded):
            from verification.services import verification_run_start

            verification_run_start(run_id=rerun.pk, token=token, **claim)
    rerun.refresh_from_db()
    assert (rerun.status, rerun.declined_count) == ("queued", 3)
    assert rerun.waiting_for_another_host
    second.start(rerun, token)
    rerun.refresh_from_db()
    assert (rerun.status, rerun.host_id, rerun.host_key_id) == ("running", "host-b", second.key_id)
    # A result signed by the excluded host's key is refused, even from a host that claimed another identity.
    from tests.factories.verification import signed
    from verification.services import verification_record_result

    report, certificate = signed(rerun, first.key)
    with pytest.raises(ValidationFailed) as refused:
        verification_record_result(run_id=rerun.pk, token=token, report=report, certificate=certificate)
    assert refused.value.code == "certificate_key_excluded"


def test_a_rerun_with_only_the_excluded_host_waits_and_is_escalated(contract, verify, settle, hosts, dispatched):
    verify(contract, fraction=0.5)
    dispute = settle(dispute_open, actor=_admin(contract), contract_id=contract.pk, reason="cached")
    rerun = dispute.reverification_run
    with pytest.raises(HostExcluded):
        hosts[0].start(rerun, token_of(dispatched, rerun))
    # Its token ages out: the watchdog renews the message and counts no failure.
    VerificationRun.objects.filter(pk=rerun.pk).update(token_expires_at=timezone.now() - timedelta(seconds=1))
    sent_before = len(dispatched)
    assert rerun.pk in settle(verification_watchdog)
    rerun.refresh_from_db()
    assert (rerun.status, rerun.infrastructure_failures, len(dispatched)) == ("queued", 0, sent_before + 1)
    Dispute.objects.filter(pk=dispute.pk).update(created_at=timezone.now() - timedelta(hours=73))
    assert disputes_escalate_overdue() == [dispute.pk]
    assert disputes_escalate_overdue() == []  # twice: once
    event = AuditEvent.objects.get(verb="dispute_escalated", object_id=str(dispute.pk))
    assert event.data["waiting_for_another_host"] is True


@pytest.mark.parametrize(
    ("rerun_result", "recommendation"),
    [
        ({"fraction": 0.5}, "agree"),
        ({"fraction": 1.0}, "disagree"),
        ({"decision": "FAIL", "fraction": 0.0}, "disagree"),
    ],
)
def test_recommendation_compares_decision_and_tier(
    contract, verify, settle, hosts, dispatched, rerun_result, recommendation
):
    verify(contract, fraction=0.5)
    dispute = settle(dispute_open, actor=_admin(contract), contract_id=contract.pk, reason="cached")
    dispute = _finish_rerun(settle, dispute, hosts[1], dispatched, **rerun_result)
    assert (dispute.status, dispute.recommendation) == ("awaiting_ruling", recommendation)
    contract.refresh_from_db()
    assert contract.review_disputed  # a recommendation is not a ruling


def test_an_errored_rerun_recommends_nothing_and_support_may_ask_again(contract, verify, settle, hosts, dispatched):
    verify(contract, fraction=0.5)
    dispute = settle(dispute_open, actor=_admin(contract), contract_id=contract.pk, reason="cached")
    for _ in range(3):
        rerun = VerificationRun.objects.get(pk=dispute.reverification_run_id)
        settle(hosts[1].finish, rerun, token_of(dispatched, rerun), decision="ERROR", fraction=0.0)
    dispute.refresh_from_db()
    assert (dispute.status, dispute.recommendation) == ("awaiting_ruling", "unavailable")
    with pytest.raises(NotPermitted):
        dispute_reverify(actor=contract.engineer, dispute_id=dispute.pk)
    settle(dispute_reverify, actor=_operator(SUPPORT), dispute_id=dispute.pk)
    dispute.refresh_from_db()
    assert dispute.status == "reverifying" and dispute.reverification_run_id != rerun.pk
    with pytest.raises(IllegalTransition):
        dispute_reverify(actor=_operator(SUPPORT), dispute_id=dispute.pk)  # one is running


# Rulings


def _company_dispute(contract, verify, settle, hosts, dispatched, fraction=1.0) -> Dispute:
    verify(contract, fraction=fraction)
    dispute = settle(dispute_open, actor=_admin(contract), contract_id=contract.pk, reason="cached")
    return _finish_rerun(settle, dispute, hosts[1], dispatched, fraction=fraction)


def test_support_cannot_rule_and_a_note_is_required(contract, verify, settle, hosts, dispatched):
    dispute = _company_dispute(contract, verify, settle, hosts, dispatched)
    for actor in (_operator(SUPPORT), _admin(contract), contract.engineer):
        with pytest.raises(NotPermitted):
            dispute_rule(dispute_id=dispute.pk, actor=actor, ruling="uphold", note="fine")
    with pytest.raises(ValidationFailed) as refused:
        dispute_rule(dispute_id=dispute.pk, actor=_operator(PAYMENTS_OPERATOR), ruling="uphold", note=" ")
    assert refused.value.code == "note_required"
    with pytest.raises(IllegalTransition) as refused:
        dispute_rule(dispute_id=dispute.pk, actor=_operator(PAYMENTS_OPERATOR), ruling="overturn_release", note="x")
    assert refused.value.code == "ruling_not_applicable"
    with pytest.raises(ValidationFailed):
        dispute_rule(dispute_id=dispute.pk, actor=_operator(PAYMENTS_OPERATOR), ruling="coin_flip", note="x")
    dispute.refresh_from_db()
    assert dispute.status == "awaiting_ruling"


def test_uphold_releases_the_disputed_pass_and_notifies_both(contract, verify, settle, hosts, dispatched):
    dispute = _company_dispute(contract, verify, settle, hosts, dispatched, fraction=0.5)
    settle(dispute_rule, dispute_id=dispute.pk, actor=_operator(PAYMENTS_OPERATOR), ruling="uphold", note="agrees")
    contract.refresh_from_db()
    dispute.refresh_from_db()
    assert (dispute.status, dispute.ruling, dispute.ruling_note) == ("resolved", "uphold", "agrees")
    assert not contract.review_disputed
    assert _escrow(contract).released_bps == 5_000
    emailed = EmailNotification.objects.filter(template="dispute_resolved").values_list("user_id", flat=True)
    assert set(emailed) == {_admin(contract).pk, contract.engineer_id}
    assert AuditEvent.objects.filter(verb="dispute_resolved", object_id=str(dispute.pk)).get().actor_id
    with pytest.raises(IllegalTransition) as refused:
        dispute_rule(dispute_id=dispute.pk, actor=_operator(PAYMENTS_OPERATOR), ruling="uphold", note="again")
    assert refused.value.code == "dispute_resolved"


def test_withholding_a_higher_tier_falls_back_to_the_earlier_unreleased_tier(
    contract, verify, settle, hosts, dispatched
):
    lower = verify(contract, fraction=0.5)  # earned, still in its review window: nothing released
    dispute = _company_dispute(contract, verify, settle, hosts, dispatched, fraction=1.0)
    assert _escrow(contract).released_bps == 0
    settle(
        dispute_rule, dispute_id=dispute.pk, actor=_operator(PAYMENTS_OPERATOR), ruling="overturn_withhold", note="x"
    )
    contract.refresh_from_db()
    assert (contract.earned_bps, contract.earned_run_id) == (5_000, lower.pk)
    assert _escrow(contract).released_bps == 5_000  # the earlier tier is paid; the withheld one never


def test_withholding_with_nothing_earned_before_earns_nothing(contract, verify, settle, hosts, dispatched):
    dispute = _company_dispute(contract, verify, settle, hosts, dispatched, fraction=1.0)
    settle(
        dispute_rule, dispute_id=dispute.pk, actor=_operator(PAYMENTS_OPERATOR), ruling="overturn_withhold", note="x"
    )
    contract.refresh_from_db()
    assert (contract.earned_bps, contract.release_due_at, contract.status) == (0, None, Contract.Status.ACTIVE)
    assert _escrow(contract).released_bps == 0


def test_split_releases_a_lower_tier(contract, verify, settle, hosts, dispatched):
    dispute = _company_dispute(contract, verify, settle, hosts, dispatched, fraction=1.0)
    with pytest.raises(ValidationFailed) as refused:
        dispute_rule(dispute_id=dispute.pk, actor=_operator(PAYMENTS_OPERATOR), ruling="split", note="x", tier=1)
    assert refused.value.code == "split_tier_invalid"  # the disputed tier itself
    with pytest.raises(ValidationFailed):
        dispute_rule(dispute_id=dispute.pk, actor=_operator(PAYMENTS_OPERATOR), ruling="split", note="x")
    settle(dispute_rule, dispute_id=dispute.pk, actor=_operator(PAYMENTS_OPERATOR), ruling="split", note="x", tier=0)
    contract.refresh_from_db()
    dispute.refresh_from_db()
    assert (dispute.ruling_tier, dispute.ruling_bps, contract.earned_bps) == (0, 5_000, 5_000)
    assert _escrow(contract).released_bps == 5_000


def test_engineer_overturn_pays_the_tier_the_rerun_reached(contract, verify, settle, hosts, dispatched):
    verify(contract, decision="FAIL", fraction=0.0)
    dispute = settle(dispute_open, actor=contract.engineer, contract_id=contract.pk, reason="noisy host")
    dispute = _finish_rerun(settle, dispute, hosts[1], dispatched, fraction=0.5)
    assert dispute.recommendation == "disagree"
    with pytest.raises(IllegalTransition):
        dispute_rule(dispute_id=dispute.pk, actor=_operator(PAYMENTS_OPERATOR), ruling="overturn_withhold", note="x")
    settle(
        dispute_rule,
        dispute_id=dispute.pk,
        actor=_operator(PAYMENTS_OPERATOR),
        ruling="overturn_release",
        note="the second host passes it",
        tier=0,
    )
    contract.refresh_from_db()
    assert contract.earned_bps == 5_000 and not contract.review_disputed
    assert _escrow(contract).released_bps == 5_000


def test_engineer_uphold_on_the_last_attempt_settles_after_the_ruling(
    settle, hosts, dispatched, django_capture_on_commit_callbacks
):
    contract = funded_contract(review_window_hours=48, max_submissions=1)
    onboard(contract.engineer)
    submit_and_verify(
        contract,
        host=hosts[0],
        dispatched=dispatched,
        capture=django_capture_on_commit_callbacks,
        decision="FAIL",
        fraction=0.0,
    )
    dispute = settle(dispute_open, actor=contract.engineer, contract_id=contract.pk, reason="noisy")
    Contract.objects.filter(pk=contract.pk).update(settle_due_at=timezone.now() - timedelta(seconds=1))
    settle(contracts_settle_due)
    contract.refresh_from_db()
    assert contract.status == Contract.Status.ACTIVE  # held by the dispute
    settle(dispute_rule, dispute_id=dispute.pk, actor=_operator(PAYMENTS_OPERATOR), ruling="uphold", note="it fails")
    settle(contracts_settle_due)
    contract.refresh_from_db()
    assert contract.status == Contract.Status.FAILED
    assert _escrow(contract).status == Escrow.Status.REFUNDED


def test_earning_a_higher_tier_does_not_clear_an_open_dispute(contract, verify, settle, hosts, dispatched):
    verify(contract, fraction=0.5)
    dispute = settle(dispute_open, actor=_admin(contract), contract_id=contract.pk, reason="cached")
    higher = verify(contract, fraction=1.0)
    contract.refresh_from_db()
    dispute.refresh_from_db()
    assert (contract.earned_bps, contract.earned_run_id) == (10_000, higher.pk)
    assert contract.review_disputed and dispute.is_unresolved
    Contract.objects.filter(pk=contract.pk).update(release_due_at=timezone.now() - timedelta(seconds=1))
    settle(contracts_release_due)
    assert _escrow(contract).released_bps == 0
    # Withholding the disputed lower tier leaves the higher one, earned on another run, alone.
    settle(
        dispute_rule, dispute_id=dispute.pk, actor=_operator(PAYMENTS_OPERATOR), ruling="overturn_withhold", note="x"
    )
    contract.refresh_from_db()
    assert (contract.earned_bps, contract.earned_run_id) == (10_000, higher.pk)


def test_escalation_task_marks_old_unruled_disputes_once(contract, verify, settle):
    verify(contract, fraction=0.5)
    dispute = settle(dispute_open, actor=_admin(contract), contract_id=contract.pk, reason="cached")
    assert disputes_escalate_overdue() == []
    Dispute.objects.filter(pk=dispute.pk).update(created_at=timezone.now() - timedelta(hours=72, seconds=1))
    assert disputes_escalate_overdue() == [dispute.pk]
    assert disputes_escalate_overdue() == []
    dispute.refresh_from_db()
    assert dispute.escalated_at is not None


def test_legacy_dispute_and_resolve_go_through_disputes(contract, verify, settle):
    verify(contract, fraction=0.5)
    contract_services.contract_dispute_review(actor=_admin(contract), contract=contract, reason="cached")
    dispute = Dispute.objects.get(contract=contract)
    assert dispute.side == "company" and dispute.reverification_run_id
    settle(
        contract_services.contract_dispute_resolve,
        actor=StaffFactory(),
        contract_id=contract.pk,
        release=True,
        note="ok",
    )
    dispute.refresh_from_db()
    assert (dispute.status, dispute.ruling) == ("resolved", "uphold")
    assert _escrow(contract).released_bps == 5_000


def test_a_resolved_dispute_takes_no_answer_no_rerun_and_no_second_ruling(contract, verify, settle, hosts, dispatched):
    dispute = _company_dispute(contract, verify, settle, hosts, dispatched, fraction=0.5)
    settle(dispute_rule, dispute_id=dispute.pk, actor=_operator(PAYMENTS_OPERATOR), ruling="uphold", note="agrees")
    with pytest.raises(IllegalTransition) as refused:
        dispute_answer(actor=contract.engineer, dispute_id=dispute.pk, text="late answer")
    assert refused.value.code == "dispute_resolved"
    with pytest.raises(IllegalTransition):
        dispute_reverify(actor=_operator(SUPPORT), dispute_id=dispute.pk)
    for ruling in Dispute.Ruling.values:
        with pytest.raises(IllegalTransition):
            dispute_rule(dispute_id=dispute.pk, actor=_operator(PAYMENTS_OPERATOR), ruling=ruling, note="again")


@pytest.mark.parametrize("current", Dispute.Status.values)
@pytest.mark.parametrize("to", Dispute.Status.values)
def test_every_move_outside_the_transition_map_is_refused(contract, verify, settle, current, to):
    from django.db import transaction

    from common.transitions import transition_apply
    from jobs.states import DISPUTE_TRANSITIONS

    verify(contract, fraction=0.5)
    dispute = settle(dispute_open, actor=_admin(contract), contract_id=contract.pk, reason="cached")
    Dispute.objects.filter(pk=dispute.pk).update(status=current, ruled_at=timezone.now())
    dispute.refresh_from_db()
    allowed = to in DISPUTE_TRANSITIONS.get(current, ())
    with transaction.atomic():
        if allowed:
            transition_apply(dispute, to=to, allowed=DISPUTE_TRANSITIONS, actor=None, verb="test_move")
        else:
            with pytest.raises(IllegalTransition):
                transition_apply(dispute, to=to, allowed=DISPUTE_TRANSITIONS, actor=None, verb="test_move")
    assert (Dispute.objects.get(pk=dispute.pk).status == to) is allowed or current == to
