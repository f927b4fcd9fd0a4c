"""Every report the real runner writes has the shape the platform's result endpoint requires
(verification/report_schema.py): a report the platform refuses would turn a finished verification into an
infrastructure failure, and the engineer's attempt would be run again and again."""

from __future__ import annotations

import json

import pytest

from verification.report_schema import report_shape_errors
from verification.runner import generate_signing_key, run_verification

# Runs real sandboxes (uid 65534, whose RLIMIT_NPROC is shared machine-wide): `make check` runs these one at a time.
pytestmark = pytest.mark.sandbox


@pytest.mark.parametrize("candidate", ["fast", "wrong", "unchanged", "cheater"])
def test_verification_reports_have_the_shape_the_platform_accepts(
    example_package, candidates, hidden_inputs, criteria, candidate
):
    report = run_verification(
        example_package,
        candidates / candidate,
        hidden_inputs,
        criteria,
        budget=6,
        seed=5,
        signing_key=generate_signing_key(),
    )
    assert report_shape_errors(json.loads(report.to_json())) == {}, report.decision


def test_calibration_and_error_reports_have_the_shape_the_platform_accepts(
    example_package, hidden_inputs, criteria, tmp_path
):
    calibration = run_verification(
        example_package, example_package / "implementation", hidden_inputs, criteria, budget=3, stop_early=False
    )
    assert report_shape_errors(json.loads(calibration.to_json())) == {}
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not an archive")
    error = run_verification(example_package, broken, hidden_inputs, criteria, budget=3)
    assert error.decision == "ERROR"
    assert report_shape_errors(json.loads(error.to_json())) == {}


def test_a_violating_candidates_report_has_the_shape_and_a_bad_violation_summary_is_refused(
    example_package, candidates, hidden_inputs, criteria
):
    criteria["sandbox_policy"] = {"network": "report", "leftover_processes": "report", "privileged_call": "report"}
    report = run_verification(
        example_package,
        candidates / "cheater",
        hidden_inputs,
        criteria,
        budget=4,
        seed=5,
        signing_key=generate_signing_key(),
    )
    data = json.loads(report.to_json())
    assert {o["inputs"] for o in data["sandbox_violations"]["observed"]} == {"public", "hidden"}
    assert report_shape_errors(data) == {}
    data["sandbox_violations"]["observed"][0]["events"] = -1
    data["sandbox_violations"]["policy"]["network"] = "ignore"
    assert set(report_shape_errors(data)) == {
        "report.sandbox_violations.observed[0].events",
        "report.sandbox_violations.policy.network",
    }
