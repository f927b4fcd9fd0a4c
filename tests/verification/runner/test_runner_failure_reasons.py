"""A failed run's error is a fixed category (it reaches the certified reason the engineer reads); what the
implementation said goes to the owner-only logs. Real sandboxes."""

from __future__ import annotations

import json

import pytest
from runner_testlib import candidate_with, hidden_input_leaker

from verification.runner import run_verification

# Runs real sandboxes (uid 65534, whose RLIMIT_NPROC is shared machine-wide): `make check` runs these one at a time.
pytestmark = pytest.mark.sandbox

MARKER = "said-by-the-candidate-7d3f"

# Answers every request (the public warm-up ones first) in the way HOW names, quoting MARKER.
MISBEHAVING = """
import json, sys
sys.stdout.write('{"ready": true}\\n'); sys.stdout.flush()
for line in sys.stdin:
    request = json.loads(line)
    answers = {
        "error": json.dumps({"id": request["id"], "error": "MARKER"}),
        "unknown_id": json.dumps({"id": "MARKER"}),
        "list_id": json.dumps({"id": ["MARKER"]}),
        "no_id": json.dumps({"data": "MARKER"}),
        "not_json": "MARKER {",
        "not_utf8": "MARKER \\udcff",
    }
    sys.stdout.buffer.write(answers["HOW"].encode("utf-8", "surrogateescape") + b"\\n")
    sys.stdout.flush()
""".replace("MARKER", MARKER)


@pytest.mark.parametrize(
    ("how", "category", "names_the_input"),
    [
        ("error", "the implementation reported an error", True),
        ("unknown_id", "protocol error: response to an unknown request id", False),
        ("list_id", "protocol error: response to an unknown request id", False),
        ("no_id", "protocol error: a response lacks an 'id'", False),
        ("not_json", "protocol error: a response is not JSON", False),
        ("not_utf8", "protocol error: a response is not JSON", False),
    ],
)
def test_a_failed_warm_up_gives_the_category_and_logs_what_the_candidate_said(
    tmp_path, example_package, hidden_inputs, criteria, how, category, names_the_input
):
    candidate = candidate_with(tmp_path / "candidate", MISBEHAVING.replace("HOW", how))
    report = run_verification(example_package, candidate, hidden_inputs, criteria, budget=4, seed=3)
    assert report.decision == "FAIL"
    prefix = f"the candidate failed in warm-up on the public inputs: {category}"
    if names_the_input:
        # Public inputs may be named: the engineer has them.
        assert report.reason.startswith(f"{prefix} (input 'in-1-00"), report.reason
    else:
        assert report.reason == prefix
    assert MARKER not in json.dumps(report.to_dict()["measurements"])
    logged = next(log for log in report.logs if log["role"] == "candidate")
    assert logged["error"].startswith(category) and MARKER in logged["error"]


def test_a_failed_run_on_hidden_inputs_names_neither_the_input_nor_quotes_the_candidate(
    tmp_path, example_package, hidden_inputs, criteria
):
    candidate = hidden_input_leaker(tmp_path / "candidate", example_package, "error")
    report = run_verification(example_package, candidate, hidden_inputs, criteria, budget=4, seed=3)
    assert report.decision == "FAIL"
    assert report.reason == "a candidate run failed: the implementation reported an error"
    failed = [m for m in report.measurements if m["error"] is not None]
    assert [(m["phase"], m["error"]) for m in failed] == [("measure", "the implementation reported an error")]
    logged = next(log for log in report.logs if log["role"] == "candidate" and log["phase"] == "measure")
    # The owner sees which hidden input it was and what the candidate said about it.
    names = {path.stem: json.dumps(json.loads(path.read_text()))[:40] for path in hidden_inputs.glob("*.json")}
    assert any(
        logged["error"].startswith(f"the implementation reported an error: input {name!r}: {quoted}")
        for name, quoted in names.items()
    ), logged["error"]
