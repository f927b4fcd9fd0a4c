"""A submission's verification runs: paginated like every other list; each run's tier is the one its signed report
reached; a submission's `next_steps` names only actions the contract still allows."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Contract, Submission
from jobs.selectors import submission_next_steps
from jobs.services.submissions import submission_create
from tests.factories import funded_contract
from tests.verification.conftest import fake_report
from verification.models import VerificationRun
from verification.runner.certificate import sign_report
from verification.services import verification_record_result, verification_run_create, verification_run_start

from .conftest import candidate_upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def contract():
    return funded_contract(review_window_hours=48, max_submissions=3)


@pytest.fixture
def submit(contract, django_capture_on_commit_callbacks, dispatched):
    def run() -> Submission:
        with django_capture_on_commit_callbacks(execute=True):
            return submission_create(actor=contract.engineer, contract=contract, upload=candidate_upload())

    return run


def _finish(run: VerificationRun, key, dispatched, **report_changes) -> VerificationRun:
    token = next(d.token for d in reversed(dispatched) if d.run_id == run.pk)
    verification_run_start(run_id=run.pk, token=token)
    report = fake_report(run, decision=report_changes.pop("decision", "PASS"), fraction=1.0)
    report.update(report_changes)
    return verification_record_result(run_id=run.pk, token=token, report=report, certificate=sign_report(report, key))


def _url(submission) -> str:
    return f"/api/v1/submissions/{submission.pk}/verification/"


def test_the_verification_runs_are_a_paginated_list(
    contract, submit, api_client_for, django_capture_on_commit_callbacks
):
    submission = submit()
    first = VerificationRun.objects.get(subject=f"submission:{submission.pk}")
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):  # as a re-run would add
            verification_run_create(
                kind=first.kind,
                subject=first.subject,
                hardware_class=first.hardware_class,
                package=first.package,
                candidate=first.candidate,
                hidden_inputs=first.hidden_inputs,
                criteria=first.criteria,
            )
    client = api_client_for(contract.engineer)
    whole = client.get(_url(submission)).json()
    assert set(whole) >= {"count", "next", "previous", "results"} and whole["count"] == 3
    ids = [run["id"] for run in whole["results"]]
    assert ids == sorted(ids, reverse=True) and ids[-1] == first.pk
    page_one = client.get(_url(submission), {"page_size": 2}).json()
    page_two = client.get(_url(submission), {"page_size": 2, "page": 2}).json()
    assert [r["id"] for r in page_one["results"] + page_two["results"]] == ids
    assert page_one["next"] and page_two["next"] is None
    refused = client.get(_url(submission), {"page": 9})
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    # Still a conditional GET: an unchanged page costs a 304.
    tagged = client.get(_url(submission))
    assert client.get(_url(submission), HTTP_IF_NONE_MATCH=tagged["ETag"]).status_code == 304


@pytest.mark.parametrize(
    ("reached", "expected_index", "fraction_bps"),
    [({"speedup": 1.5, "fraction": 0.5}, 0, 5000), ({"speedup": 2.0, "fraction": 1.0}, 1, 10_000)],
)
def test_the_runs_tier_is_the_one_its_report_reached(
    contract, submit, signing_key, dispatched, api_client_for, reached, expected_index, fraction_bps
):
    """The runner names the reached tier by speedup and fraction (no index): the run's tier is its position."""
    assert contract.job.criteria["tiers"] == [{"speedup": 1.5, "fraction": 0.5}, {"speedup": 2.0, "fraction": 1.0}]
    submission = submit()
    run = VerificationRun.objects.get(subject=f"submission:{submission.pk}")
    tiers = [
        {**tier, "decision": "PASS" if tier["speedup"] <= reached["speedup"] else "FAIL"}
        for tier in run.criteria["tiers"]
    ]
    run = _finish(run, signing_key, dispatched, tier=dict(reached), tiers=tiers, payout_fraction=reached["fraction"])
    assert (run.tier, run.payout_fraction_bps) == (expected_index, fraction_bps)
    for viewer in (contract.engineer, contract.job.created_by):
        shown = api_client_for(viewer).get(_url(submission)).json()["results"][0]
        assert shown["tier"] == expected_index and shown["payout_fraction_bps"] == fraction_bps
        assert shown["report"]["tier"] == reached
        assert contract.job.criteria["tiers"][shown["tier"]] == {
            "speedup": shown["report"]["tier"]["speedup"],
            "fraction": shown["report"]["tier"]["fraction"],
        }


def test_a_run_recorded_without_its_tier_still_shows_the_reports_tier(
    contract, submit, signing_key, dispatched, api_client_for
):
    submission = submit()
    run = VerificationRun.objects.get(subject=f"submission:{submission.pk}")
    run = _finish(run, signing_key, dispatched, tier={"speedup": 2.0, "fraction": 1.0})
    VerificationRun.objects.filter(pk=run.pk).update(tier=None)  # as runs recorded before the fix were
    shown = api_client_for(contract.engineer).get(_url(submission)).json()["results"][0]
    assert shown["tier"] == 1  # found in the criteria the run was given


def test_a_run_without_a_tier_shows_none(contract, submit, signing_key, dispatched, api_client_for):
    submission = submit()
    run = VerificationRun.objects.get(subject=f"submission:{submission.pk}")
    run = _finish(run, signing_key, dispatched, decision="FAIL", tier=None, payout_fraction=0)
    shown = api_client_for(contract.engineer).get(_url(submission)).json()["results"][0]
    assert (run.tier, shown["tier"], shown["report"]["tier"]) == (None, None, None)
    queued = api_client_for(contract.engineer).get(_url(submit())).json()["results"][0]
    assert (queued["status"], queued["tier"]) == ("queued", None)


# next_steps: only actions the contract still allows.

SUBMIT = ("submit again", "submit an improved")


def _submission(status, *, contract_status=Contract.Status.ACTIVE, used=1, limit=3, deadline_in=timedelta(days=3)):
    contract = Contract(
        status=contract_status, submissions_used=used, submission_limit=limit, deadline=timezone.now() + deadline_in
    )
    return Submission(contract=contract, status=status)


@pytest.mark.parametrize("status", [Submission.Status.FAILED, Submission.Status.INCONCLUSIVE, Submission.Status.ERROR])
def test_next_steps_suggest_another_attempt_only_while_one_is_possible(status):
    possible = submission_next_steps(submission=_submission(status, used=1, limit=3))
    assert any(words in possible for words in SUBMIT) and "2 attempts left" in possible
    one_left = submission_next_steps(submission=_submission(status, used=2, limit=3))
    assert "1 attempt left" in one_left
    for impossible, reason in (
        (_submission(status, used=3, limit=3), "no attempts are left"),
        (_submission(status, deadline_in=-timedelta(minutes=1)), "deadline has passed"),
        (_submission(status, contract_status=Contract.Status.COMPLETED), "the contract is completed"),
        (_submission(status, contract_status=Contract.Status.CANCELLED), "the contract is cancelled"),
        (_submission(status, contract_status=Contract.Status.FAILED), "the contract is failed"),
    ):
        text = submission_next_steps(submission=impossible)
        assert not any(words in text for words in SUBMIT), text
        assert reason in text, text


def test_next_steps_offer_accepting_an_inconclusive_result_only_on_an_active_contract():
    exhausted = submission_next_steps(submission=_submission(Submission.Status.INCONCLUSIVE, used=3, limit=3))
    assert "the company may accept it" in exhausted and "submit again" not in exhausted
    for contract_status in (Contract.Status.COMPLETED, Contract.Status.CANCELLED, Contract.Status.FAILED):
        text = submission_next_steps(
            submission=_submission(Submission.Status.INCONCLUSIVE, contract_status=contract_status)
        )
        assert "may accept" not in text and "can no longer be accepted" in text


def test_next_steps_of_passed_and_pending_submissions_suggest_no_action():
    for status in (Submission.Status.RECEIVED, Submission.Status.VERIFYING, Submission.Status.PASSED):
        for contract_status in Contract.Status.values:
            text = submission_next_steps(submission=_submission(status, contract_status=contract_status, used=3))
            assert not any(words in text for words in (*SUBMIT, "may accept", "fund")), text


def test_the_api_shows_next_steps_for_the_contract_as_it_is(contract, submit, signing_key, dispatched, api_client_for):
    Contract.objects.filter(pk=contract.pk).update(submission_limit=1)
    submission = submit()
    run = VerificationRun.objects.get(subject=f"submission:{submission.pk}")
    _finish(run, signing_key, dispatched, decision="FAIL", tier=None, payout_fraction=0)
    shown = api_client_for(contract.engineer).get(f"/api/v1/submissions/{submission.pk}/").json()
    assert (shown["status"], shown["attempts_left"]) == ("failed", 0)
    assert not any(words in shown["next_steps"] for words in SUBMIT) and "no attempts are left" in shown["next_steps"]
