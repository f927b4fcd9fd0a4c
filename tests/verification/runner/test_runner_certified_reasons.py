"""Reasons an engineer can act on, in real sandboxes: a program that never announces it is ready, a
package whose shell hides the job's Python, and criteria left undecided under an overall FAIL/ERROR."""

from __future__ import annotations

import json

import pytest
from runner_testlib import candidate_with, package_with

from verification.runner import run_verification
from verification.runner.cli import main
from verification.runner.measure import SHELL_WRAPPED_PYTHON, wraps_python_in_shell

# Runs real sandboxes (uid 65534, whose RLIMIT_NPROC is shared machine-wide): `make check` runs these one at a time.
pytestmark = pytest.mark.sandbox

SILENT = """
import sys
for line in sys.stdin:
    pass
"""


def test_a_candidate_that_never_announces_ready_is_told_to(tmp_path, example_package, criteria):
    package = package_with(example_package, tmp_path / "package", wall_seconds="3")
    candidate = candidate_with(tmp_path / "candidate", SILENT)
    report = run_verification(package, candidate, None, criteria, budget=4, seed=1)
    assert report.decision == "FAIL"
    assert report.reason == (
        'the candidate failed in warm-up on the public inputs: never announced ready: print {"ready": true} after start-up'
    )


def test_a_shell_around_python_is_named_as_the_reason(tmp_path, example_package, candidates, criteria):
    package = package_with(example_package, tmp_path / "package", command='["sh", "-c", "exec python serve.py"]')
    report = run_verification(package, candidates / "fast", None, criteria, budget=4, seed=1)
    assert report.decision == "ERROR"
    assert report.reason.endswith(SHELL_WRAPPED_PYTHON), report.reason


@pytest.mark.parametrize(
    ("command", "wrapped"),
    [
        (["sh", "-c", "python serve.py"], True),
        (["/bin/bash", "-lc", "cd x && /usr/bin/python3.11 serve.py"], True),
        (["python", "serve.py"], False),
        (["sh", "-c", "./serve --pythonic"], False),
        (["./run.sh", "python"], False),
    ],
)
def test_shell_wrapping_is_recognised(command, wrapped):
    assert wraps_python_in_shell(command) is wrapped


def test_criteria_read_not_decided_under_a_fail_in_the_report_and_the_command_line(
    tmp_path, example_package, criteria, capsys
):
    package = package_with(example_package, tmp_path / "package", wall_seconds="3")
    candidate = candidate_with(tmp_path / "candidate", SILENT)
    (tmp_path / "criteria.json").write_text(json.dumps(criteria))
    exit_code = main(
        [
            "check",
            "--package",
            str(package),
            "--candidate",
            str(candidate),
            "--criteria",
            str(tmp_path / "criteria.json"),
            "--report",
            str(tmp_path / "report.json"),
            "--budget",
            "4",
            "--seed",
            "1",
            "--quiet",
        ]
    )
    assert exit_code == 1
    printed = capsys.readouterr().out
    assert printed.startswith("FAIL: ") and "INCONCLUSIVE" not in printed
    assert printed.count(": not decided") == len(criteria["criteria"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert {c["decision"] for c in report["criteria"]} == {"not decided"}
    assert {t["decision"] for t in report["tiers"]} == {"not decided"}
