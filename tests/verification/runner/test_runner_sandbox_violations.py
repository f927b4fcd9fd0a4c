"""Sandbox violations decide: real sandboxes observe each category, the job's ``sandbox_policy`` fails or
only reports it, and the certificate signs the categories and the policy."""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from pathlib import Path

import pytest
from runner_testlib import EXAMPLE, candidate_with, processes_matching

from verification.runner import CriteriaError, calibrate, generate_signing_key, run_verification, verify_certificate
from verification.runner import sandbox as sb
from verification.runner.criteria import Criteria

# Runs real sandboxes (uid 65534, whose RLIMIT_NPROC is shared machine-wide): `make check` runs these one at a time.
pytestmark = pytest.mark.sandbox

PYTHON = sys.executable
FAST = (EXAMPLE / "candidates" / "fast" / "serve.py").read_text()
# Each run of these candidates does one thing the sandbox forbids, then serves correctly and fast.
NETWORK_PROBE = (
    "import socket\ntry:\n    socket.create_connection(('198.51.100.7', 443), timeout=1)\nexcept OSError:\n    pass\n"
)
DAEMON_SECONDS = f"30.{uuid.uuid4().int % 10**9:09d}"  # a marker no other process on the host has
DAEMON = f"import subprocess\nsubprocess.Popen(['sleep', '{DAEMON_SECONDS}'], start_new_session=True)\n"


def _sandboxed(tmp_path: Path, code: str) -> sb.RunOutcome:
    implementation = tmp_path / "impl"
    implementation.mkdir(exist_ok=True)
    implementation.chmod(0o755)
    (implementation / "main.py").write_text(code)
    (implementation / "main.py").chmod(0o644)
    spec = sb.SandboxSpec(
        command=[PYTHON, "main.py"], implementation=implementation, runtime_paths=sb.default_runtime_paths()
    )
    with sb.SandboxProcess(spec) as process:
        return process.finish()


def _attempt(code: str) -> str:
    return f"import socket\ntry:\n    {code}\nexcept OSError:\n    pass\n"


@pytest.mark.parametrize(
    "code,attempts",
    [
        (_attempt("socket.create_connection(('198.51.100.7', 443), timeout=1)"), 1),  # no route out
        (_attempt("socket.create_connection(('2001:db8::1', 443), timeout=1)"), 1),  # IPv6 too
        (_attempt("socket.create_connection(('127.0.0.1', 9), timeout=1)"), 1),  # the isolated loopback
        (_attempt("socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 9))"), 1),
        (_attempt("socket.getaddrinfo('example.com', 443)"), None),  # a DNS lookup: UDP to a resolver
        ("\n".join(_attempt("socket.create_connection(('198.51.100.7', 443), timeout=1)") for _ in range(3)), 3),
    ],
    ids=["ipv4-unroutable", "ipv6-unroutable", "loopback-tcp", "loopback-udp", "dns", "three"],
)
def test_network_attempts_are_counted(tmp_path, code, attempts):
    outcome = _sandboxed(tmp_path, code)
    assert outcome.exit_code == 0, outcome.stderr
    assert set(outcome.violations) == {"network"}
    assert outcome.violations["network"] == attempts if attempts else outcome.violations["network"] >= 1


def test_processes_left_running_are_counted(tmp_path):
    outcome = _sandboxed(tmp_path, "import subprocess\nfor _ in range(2):\n    subprocess.Popen(['sleep', '30'])\n")
    assert outcome.violations == {"leftover_processes": 2}


def test_a_plain_python_run_with_numpy_violates_nothing(tmp_path):
    outcome = _sandboxed(tmp_path, "import numpy, os\nprint(numpy.ones(3).sum(), os.listdir('/'))\n")
    assert outcome.ok and outcome.violations == {}


def test_the_example_cheater_fails_by_default_with_signed_categories(
    example_package, candidates, hidden_inputs, criteria
):
    key = generate_signing_key()
    report = run_verification(
        example_package, candidates / "cheater", hidden_inputs, criteria, budget=4, seed=3, signing_key=key
    )
    data = json.loads(report.to_json())
    assert (data["decision"], data["reason_code"]) == ("FAIL", "sandbox_violation")
    assert (
        data["reason"].startswith("sandbox_violation: ")
        and "(network, leftover_processes, privileged_call)" in data["reason"]
    )
    assert data["payout_fraction"] == 0.0
    observed = {(o["role"], o["category"]): o for o in data["sandbox_violations"]["observed"]}
    assert set(observed) == {
        ("candidate", "network"),
        ("candidate", "leftover_processes"),
        ("candidate", "privileged_call"),
    }
    assert all(o["action"] == "fail" and o["runs"] == 1 and o["events"] >= 1 for o in observed.values())
    # It stopped at its first run (the warm-up): nothing of the hidden inputs was ever sent to it.
    assert [m["phase"] for m in data["measurements"] if m["role"] == "candidate"] == ["warmup"]
    payload = verify_certificate(data["certificate"], key.public_key(), report=data)
    assert payload["reason_code"] == "sandbox_violation"
    assert payload["criteria_spec"]["sandbox_policy"] == {
        "network": "fail",
        "leftover_processes": "fail",
        "privileged_call": "fail",
    }
    assert {o["category"] for o in payload["sandbox_violations"]["observed"]} == {
        "network",
        "leftover_processes",
        "privileged_call",
    }
    assert processes_matching("while True: time.sleep(0.1)") == []


def _probing(tmp_path: Path, prelude: str) -> Path:
    return candidate_with(
        tmp_path / "candidate", FAST.replace("def main() -> None:\n", f"{prelude}\ndef main() -> None:\n")
    )


def test_a_network_probe_fails_by_default_naming_only_its_category(tmp_path, example_package, hidden_inputs, criteria):
    report = run_verification(example_package, _probing(tmp_path, NETWORK_PROBE), hidden_inputs, criteria, budget=4)
    assert (report.decision, report.reason_code) == ("FAIL", "sandbox_violation")
    assert "(network)" in report.reason
    assert [o["category"] for o in report.sandbox_violations["observed"]] == ["network"]


def test_a_daemon_fails_by_default_as_leftover_processes(tmp_path, example_package, hidden_inputs, criteria):
    report = run_verification(example_package, _probing(tmp_path, DAEMON), hidden_inputs, criteria, budget=4)
    assert (report.decision, report.reason_code) == ("FAIL", "sandbox_violation")
    assert "(leftover_processes)" in report.reason
    assert [o["category"] for o in report.sandbox_violations["observed"]] == ["leftover_processes"]
    assert processes_matching(f"sleep {DAEMON_SECONDS}") == []


def test_report_lets_an_otherwise_good_candidate_pass_and_still_counts(
    tmp_path, example_package, hidden_inputs, criteria
):
    criteria["sandbox_policy"] = {"network": "report"}
    key = generate_signing_key()
    report = run_verification(
        example_package, _probing(tmp_path, NETWORK_PROBE), hidden_inputs, criteria, budget=8, seed=2, signing_key=key
    )
    data = json.loads(report.to_json())
    assert data["decision"] == "PASS", data["reason"]
    assert data["reason_code"] is None
    observed = {o["inputs"]: o for o in data["sandbox_violations"]["observed"]}
    assert set(observed) == {"public", "hidden"}
    measured = [m for m in data["measurements"] if m["role"] == "candidate" and m["phase"] == "measure"]
    assert observed["hidden"] == {
        "role": "candidate",
        "category": "network",
        "inputs": "hidden",
        "action": "report",
        "runs": len(measured),
        "events": len(measured),  # one attempt a run
    }
    payload = verify_certificate(data["certificate"], key.public_key(), report=data)
    assert payload["criteria_spec"]["sandbox_policy"] == {
        "network": "report",
        "leftover_processes": "fail",
        "privileged_call": "fail",
    }
    signed = {o["inputs"]: o for o in payload["sandbox_violations"]["observed"]}
    # A count of attempts in runs on hidden inputs is the candidate's to choose: signed as runs only.
    assert "events" not in signed["hidden"] and signed["hidden"]["runs"] == len(measured)
    assert signed["public"]["events"] == 1


@pytest.mark.parametrize(
    "policy,field",
    [
        ("fail", "sandbox_policy"),
        ({"network": "ignore"}, "sandbox_policy.network"),
        ({"host_files": "report"}, "sandbox_policy"),
    ],
)
def test_the_policy_is_validated(criteria, policy, field):
    criteria["sandbox_policy"] = policy
    with pytest.raises(CriteriaError) as error:
        Criteria.from_dict(criteria)
    assert error.value.field == field


def test_no_policy_fails_every_category(criteria):
    assert Criteria.from_dict(criteria).to_dict()["sandbox_policy"] == {
        "network": "fail",
        "leftover_processes": "fail",
        "privileged_call": "fail",
    }


def test_calibration_of_a_violating_baseline_measures_and_flags_it(tmp_path, example_package, hidden_inputs, criteria):
    package = tmp_path / "package"
    shutil.copytree(example_package, package)
    serve = package / "implementation" / "serve.py"
    serve.write_text(serve.read_text().replace("def main() -> None:\n", f"{NETWORK_PROBE}\ndef main() -> None:\n"))
    result = calibrate(package, hidden_inputs, criteria, pairs=3, budget=8, seed=1)
    assert result.report.decision != "ERROR", result.report.reason
    assert result.pairs == 3  # the A/A was not stopped by the baseline's own probe
    assert result.sandbox_violations == [
        {"category": "network", "runs": 8, "events": 8, "job_action": "fail"}
    ]  # 1 + 1 warm-up, 3 pairs
    assert result.to_dict()["sandbox_violations"] == result.sandbox_violations
