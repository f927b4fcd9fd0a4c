"""Sandbox violations on the platform: the job's policy is validated by the runner's rule, a violating
candidate's FAIL is recorded with its categories for both parties, and a baseline that violates is
flagged on the job's calibration."""

import copy
import json
import sys
from pathlib import Path

import pytest

from common.errors import ValidationFailed
from jobs.criteria import criteria_validate
from jobs.services.jobs import job_record_calibration
from jobs.services.submissions import submission_create
from tests.factories import funded_contract
from tests.factories.jobs import CRITERIA, onboard, open_job
from verification.models import VerificationRun
from verification.runner import run_verification
from verification.runner.certificate import sign_report
from verification.serializers import report_for_engineer
from verification.services import verification_record_result, verification_run_start

from .conftest import candidate_upload

# Runs real sandboxes (uid 65534, whose RLIMIT_NPROC is shared machine-wide): `make check` runs these one at a time.
pytestmark = pytest.mark.sandbox

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mlp"


def _criteria(**changes):
    return {**copy.deepcopy(CRITERIA), **changes}


def test_the_policy_is_frozen_with_the_criteria_every_category_named():
    assert criteria_validate(CRITERIA)["sandbox_policy"] == {
        "network": "fail",
        "leftover_processes": "fail",
        "privileged_call": "fail",
    }
    chosen = criteria_validate(_criteria(sandbox_policy={"network": "report", "privileged_call": "report"}))
    assert chosen["sandbox_policy"] == {"network": "report", "leftover_processes": "fail", "privileged_call": "report"}


@pytest.mark.parametrize(
    "policy,field",
    [
        ("report", "criteria.sandbox_policy"),
        ({"network": "allow"}, "criteria.sandbox_policy.network"),
        ({"filesystem": "report"}, "criteria.sandbox_policy"),
    ],
)
def test_a_bad_policy_is_a_field_error(policy, field):
    with pytest.raises(ValidationFailed) as error:
        criteria_validate(_criteria(sandbox_policy=policy))
    assert error.value.code == "invalid_criteria"
    assert list(error.value.fields) == [field]


@pytest.mark.django_db
def test_a_violating_candidates_fail_is_recorded_with_its_categories_for_both_parties(
    signing_key, dispatched, api_client_for, django_capture_on_commit_callbacks, tmp_path
):
    contract = funded_contract(review_window_hours=48, max_submissions=3)
    onboard(contract.engineer)
    with django_capture_on_commit_callbacks(execute=True):
        submission = submission_create(actor=contract.engineer, contract=contract, upload=candidate_upload())
    run = VerificationRun.objects.get(subject=f"submission:{submission.pk}")
    token = next(d.token for d in reversed(dispatched) if d.run_id == run.pk)
    verification_run_start(run_id=run.pk, token=token)
    sys.path.insert(0, str(EXAMPLE))
    from generate_inputs import generate

    generate(tmp_path / "hidden", count=4, rows=8, seed=3)
    report = run_verification(
        EXAMPLE / "package",
        EXAMPLE / "candidates" / "cheater",
        tmp_path / "hidden",
        json.loads((EXAMPLE / "criteria.json").read_text()),
        budget=4,
    ).to_dict()
    report["sha256"] = {
        "package": run.package.sha256,
        "candidate": run.candidate.sha256,
        "hidden_inputs": run.hidden_inputs.sha256,
    }
    verification_record_result(run_id=run.pk, token=token, report=report, certificate=sign_report(report, signing_key))

    run.refresh_from_db()
    assert (run.status, run.decision, run.payout_fraction_bps) == (VerificationRun.Status.FAILED, "FAIL", 0)
    assert run.reason.startswith("sandbox_violation:")
    assert run.certificate["payload"]["reason_code"] == "sandbox_violation"
    for viewer in (contract.engineer, contract.job.created_by):
        view = api_client_for(viewer).get(f"/api/v1/submissions/{submission.pk}/verification/").json()["results"][0]
        categories = {o["category"] for o in view["report"]["sandbox_violations"]["observed"]}
        assert categories == {"network", "leftover_processes", "privileged_call"}, viewer
        assert view["report"]["reason_code"] == "sandbox_violation"


def test_the_engineer_sees_categories_and_runs_but_not_counts_chosen_on_hidden_inputs():
    violations = {
        "policy": {"network": "report", "leftover_processes": "fail"},
        "observed": [
            {
                "role": "candidate",
                "category": "network",
                "inputs": "hidden",
                "action": "report",
                "runs": 6,
                "events": 1105,
            },
            {
                "role": "candidate",
                "category": "network",
                "inputs": "public",
                "action": "report",
                "runs": 1,
                "events": 3,
            },
        ],
    }
    measurement = {
        "role": "candidate",
        "phase": "measure",
        "violations": {"network": 1105, "privileged_call": 1105},
        "privileged_calls": {"mount": 1105},  # which calls, too, are the candidate's to choose
        "blocked": [],
    }
    warmup = {**measurement, "phase": "warmup"}  # public inputs: nothing hidden to spell
    view = report_for_engineer(
        {"sandbox_violations": violations, "measurements": [measurement, warmup], "settings": {}}
    )
    assert "privileged_calls" not in view["measurements"][0]
    assert view["measurements"][1]["privileged_calls"] == {"mount": 1105}
    view["measurements"].pop()
    assert view["sandbox_violations"] == {
        "policy": {"network": "report", "leftover_processes": "fail"},
        "observed": [
            {"role": "candidate", "category": "network", "inputs": "hidden", "action": "report", "runs": 6},
            {
                "role": "candidate",
                "category": "network",
                "inputs": "public",
                "action": "report",
                "runs": 1,
                "events": 3,
            },
        ],
    }
    assert "1105" not in json.dumps(view)


@pytest.mark.django_db
def test_a_baseline_that_violates_is_flagged_on_the_calibration(dispatched):
    job = open_job()
    report = {
        "calibration": {
            "criteria": [],
            "sandbox_violations": [{"category": "network", "runs": 8, "events": 8, "job_action": "fail"}],
        }
    }
    job = job_record_calibration(job_id=job.pk, run_id=1, run_status=VerificationRun.Status.PASSED, report=report)
    assert job.calibration["status"] == "done"
    assert job.calibration["sandbox_violations"][0]["category"] == "network"
    assert any(
        "baseline itself triggered the sandbox's network check in 8 run(s)" in f for f in job.calibration["flags"]
    )
    assert any('sandbox_policy.network to "report"' in f for f in job.calibration["flags"])
