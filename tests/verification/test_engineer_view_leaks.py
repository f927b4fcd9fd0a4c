"""A candidate run on the hidden inputs cannot carry them into what its engineer reads: the certified
reason, the certificate, the verification as the platform shows it to the engineer. The job's owner
still gets the details. Real sandboxes, as on a verification host."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.verification.runner.runner_testlib import CRITERIA, EXAMPLE, hidden_input_leaker, public_input_digests
from verification.models import VerificationRun
from verification.runner import generate_signing_key, run_verification
from verification.serializers import VerificationRunSerializer, report_for_engineer

# Runs real sandboxes (uid 65534, whose RLIMIT_NPROC is shared machine-wide): `make check` runs these one at a time.
pytestmark = pytest.mark.sandbox

# Hidden inputs' names are the company's choice and hidden too.
HIDDEN_NAMES = ("acme-q3-churn-forecast", "acme-q4-churn-forecast", "acme-board-deck-figures")

NPY_BASELINE = """
import base64, io, json, sys
import numpy as np
from json_serve import infer_row

sys.stdout.write('{"ready": true}\\n'); sys.stdout.flush()
for line in sys.stdin:
    request = json.loads(line)
    logits = np.asarray([infer_row(row) for row in np.asarray(request["data"]["x"], dtype=np.float64)])
    buffer = io.BytesIO()
    np.save(buffer, logits, allow_pickle=False)
    sys.stdout.write(json.dumps({"id": request["id"], "data": base64.b64encode(buffer.getvalue()).decode()}) + "\\n")
    sys.stdout.flush()
"""

# Its outputs' keys come from its input: a baseline's output on a hidden input is hidden too.
KEYED_BASELINE = """
import json, sys
sys.stdout.write('{"ready": true}\\n'); sys.stdout.flush()
for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.write(json.dumps({"id": request["id"], "data": {json.dumps(request["data"])[:40]: 1.0}}) + "\\n")
    sys.stdout.flush()
"""

REPORTED_LEAK_METRIC = '\n[[reported_metrics]]\nname = "leak"\nhigher_is_better = true\n'

PROCESS_MANIFEST = (
    'format = 1\nname = "row-sums"\nmode = "process"\ncommand = ["python", "run.py"]\nwarmup_runs = 1\n'
    '[outputs]\nformat = "npy"\n[limits]\nwall_seconds = 20\n' + REPORTED_LEAK_METRIC
)
PROCESS_RUN = """
import hashlib, json, struct
import numpy as np

PUBLIC = set(PUBLIC_DIGESTS)
HOW = "HOW_TO_LEAK"
for name in open("/inputs/ORDER").read().split():
    data = json.load(open("/inputs/" + name + ".json"))
    public = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest() in PUBLIC
    target = "/outputs/" + name + ".npy"
    if public or HOW in ("answer", "metric"):  # "answer": the baseline
        np.save(target, np.asarray([sum(row) for row in data["x"]]), allow_pickle=False)
    elif HOW == "npy_header":
        header = ("LEAK:" + json.dumps(data)).encode()
        open(target, "wb").write(b"\\x93NUMPY\\x01\\x00" + struct.pack("<H", len(header)) + header)
    # "missing": no output at all for a hidden input
    if HOW == "metric" and not public:
        json.dump({"leak": data["x"][0][0]}, open("/outputs/metrics.json", "w"))
"""
PROCESS_CRITERIA = {
    "criteria": [
        {"metric": "wall_time", "statistic": "median", "kind": "no_worse", "threshold": 1.0, "tolerance": 0.9}
    ],
    "correctness": {"mode": "numeric", "rtol": 1e-9, "atol": 1e-12},
    "tiers": [],
}


@pytest.fixture(scope="module")
def hidden_inputs(tmp_path_factory) -> Path:
    """Values with ten decimals: as they are written, no timing or statistic in a report matches them."""
    directory = tmp_path_factory.mktemp("hidden")
    rng = np.random.default_rng(20240611)
    for name in HIDDEN_NAMES:
        x = np.round(rng.normal(0.0, 1.0, size=(4, 64)), 10)
        (directory / f"{name}.json").write_text(json.dumps({"x": x.tolist()}))
    return directory


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("packages")
    built = {}
    for kind in ("json", "npy", "keyed"):
        package = built[kind] = root / kind
        shutil.copytree(EXAMPLE / "package", package)
        manifest = package / "speedproof.toml"
        manifest.write_text(manifest.read_text() + REPORTED_LEAK_METRIC)
    manifest = built["npy"] / "speedproof.toml"
    manifest.write_text(manifest.read_text().replace('[outputs]\nformat = "json"', '[outputs]\nformat = "npy"'))
    (built["npy"] / "implementation" / "serve.py").rename(built["npy"] / "implementation" / "json_serve.py")
    (built["npy"] / "implementation" / "serve.py").write_text(NPY_BASELINE)
    (built["keyed"] / "implementation" / "serve.py").write_text(KEYED_BASELINE)
    process = built["process"] = root / "process"
    (process / "implementation").mkdir(parents=True)
    shutil.copytree(EXAMPLE / "package" / "inputs", process / "inputs")
    (process / "speedproof.toml").write_text(PROCESS_MANIFEST)
    (process / "implementation" / "run.py").write_text(_process_run(process, "answer"))
    return built


def _process_run(package: Path, how: str) -> str:
    return PROCESS_RUN.replace("PUBLIC_DIGESTS", repr(public_input_digests(package))).replace("HOW_TO_LEAK", how)


def hidden_needles(directory: Path) -> set[str]:
    """Text only a leak could put in a report: the hidden inputs' names, the start of their data
    serialized (as the runner sends it and as a candidate re-serializes it), every value as written."""
    needles = set()
    for path in directory.glob("*.json"):
        data = json.loads(path.read_text())
        needles.add(path.stem)
        for serialized in (json.dumps(data), json.dumps(data, separators=(",", ":"))):
            needles.add(serialized[:16])
        needles.update(text for text in (repr(v) for row in data["x"] for v in row) if len(text.lstrip("-")) >= 11)
    return needles


def readable(value: object) -> str:
    """JSON as sent, and each string and key in it as a reader sees it (unescaped)."""
    strings: list[str] = []

    def walk(item: object) -> None:
        if isinstance(item, dict):
            for key, inner in item.items():
                strings.append(str(key))
                walk(inner)
        elif isinstance(item, list):
            for inner in item:
                walk(inner)
        elif isinstance(item, str):
            strings.append(item)

    walk(value)
    return json.dumps(value) + "\n" + "\n".join(strings)


def leaked(text: str, needles: set[str]) -> list[str]:
    return sorted(needle for needle in needles if needle in text)


def as_platform_sees(report) -> VerificationRun:
    data = json.loads(report.to_json())
    return VerificationRun(
        kind=VerificationRun.Kind.SUBMISSION,
        decision=data["decision"],
        reason=data["reason"][:2000],
        report=data,
        certificate=data["certificate"],
    )


@pytest.mark.parametrize(
    ("package_kind", "how", "reason"),
    [
        ("json", "id", "a candidate run failed: protocol error: response to an unknown request id"),
        ("json", "error", "a candidate run failed: the implementation reported an error"),
        ("json", "not_json", "a candidate run failed: protocol error: a response is not JSON"),
        ("npy", "npy_header", "a candidate run failed: output could not be decoded as npy"),
        ("json", "metric", None),
        (
            "keyed",
            "wrong_value_under_input_keys",
            "correctness criterion failed (numeric): an output for a hidden input differs at $.<key 0>",
        ),
        ("process", "npy_header", "a candidate run failed: output could not be decoded as npy"),
        ("process", "missing", "a candidate run failed: no output for an input in /outputs"),
        ("process", "metric", None),
    ],
    ids=[
        "echo-in-id",
        "echo-in-error",
        "not-json",
        "npy-header",
        "reported-metric",
        "baseline-keys",
        "process-npy-header",
        "process-missing-output",
        "process-reported-metric",
    ],
)
def test_hidden_inputs_stay_out_of_what_the_engineer_reads(
    tmp_path, packages, hidden_inputs, package_kind, how, reason
):
    package = packages[package_kind]
    if package_kind == "process":
        candidate = tmp_path / "candidate"
        candidate.mkdir()
        (candidate / "run.py").write_text(_process_run(package, how))
        criteria = PROCESS_CRITERIA
    else:
        candidate = hidden_input_leaker(
            tmp_path / "candidate", package, how, output_format="npy" if package_kind == "npy" else "json"
        )
        criteria = json.loads(json.dumps(CRITERIA))
    report = run_verification(
        package, candidate, hidden_inputs, criteria, budget=2, seed=5, signing_key=generate_signing_key()
    )
    needles = hidden_needles(hidden_inputs)
    if reason is not None:
        assert report.decision == "FAIL"
        assert report.reason == reason
    else:
        assert report.decision != "ERROR", report.reason

    assert leaked(report.reason, needles) == []
    assert leaked(readable(report.certificate["payload"]), needles) == []
    run = as_platform_sees(report)
    engineer_view = VerificationRunSerializer(run).data
    assert leaked(readable(engineer_view), needles) == []
    assert engineer_view["certificate"] == report.certificate and engineer_view["reason"] == report.reason

    # The job's owner still sees what happened, quoted.
    owner_view = VerificationRunSerializer(run, context={"hidden_inputs_owner": True}).data
    if how == "metric":
        evidence = [m["reported"] for m in owner_view["report"]["measurements"] if m["reported"].get("leak")]
    elif how == "wrong_value_under_input_keys":
        evidence = owner_view["report"]["correctness"]["first_differences"]
        assert engineer_view["report"]["correctness"]["first_differences"][0] == {
            "inputs": "hidden",
            "where": "$.<key 0>",
        }
    else:
        evidence = [log["error"] for log in owner_view["report"]["logs"] if log.get("phase") == "measure"]
    assert leaked(readable(evidence), needles), evidence


def test_the_engineer_does_not_see_what_a_run_reported_about_itself():
    report = {
        "decision": "PASS",
        "settings": {"inputs": "hidden"},
        "criteria": [{"label": "reported:gflops mean no_worse", "estimate": 1.02, "self_reported": True}],
        "measurements": [
            {
                "role": "candidate",
                "phase": "warmup",
                "wall_seconds": 0.5,
                "reported": {"gflops": [1.5]},
                "error": None,
                "exit_code": 0,
                "blocked": [],
            },
            {
                "role": "candidate",
                "phase": "measure",
                "wall_seconds": 0.4,
                "reported": {"gflops": [0.3141592653]},
                "error": None,
                "exit_code": 42,
                "blocked": ["network: 17 TCP connection attempt(s), loopback only"],
            },
        ],
        "logs": [{"role": "candidate", "phase": "measure", "stderr": "0.3141592653"}],
    }
    view = report_for_engineer(report)
    assert [sorted(m) for m in view["measurements"]] == [
        ["blocked", "exit_code", "phase", "role", "wall_seconds"],  # warm-up: the public inputs
        ["phase", "requests", "role", "wall_seconds"],
    ]
    assert "0.3141592653" not in json.dumps(view) and "logs" not in view
    assert view["criteria"] == report["criteria"]  # aggregated per criterion: stays
    assert report["measurements"][1]["reported"] == {"gflops": [0.3141592653]}  # the owner's copy is untouched


def test_the_engineer_sees_a_hidden_run_s_latencies_summarised_not_per_request():
    latencies = [0.010, 0.0123456789, 0.011, 0.012, 0.013]
    report = {
        "decision": "FAIL",
        "settings": {"inputs": "hidden"},
        "measurements": [
            {"role": "candidate", "phase": "warmup", "latencies_seconds": [0.02, 0.03]},
            {
                "role": "candidate",
                "phase": "measure",
                "latencies_seconds": latencies,
                "repeat_latencies_seconds": [0.0198765432],
            },
        ],
    }
    warmup, measured = report_for_engineer(report)["measurements"]
    assert warmup["latencies_seconds"] == [0.02, 0.03]  # the public inputs
    assert measured == {
        "role": "candidate",
        "phase": "measure",
        "requests": 5,
        "latency_median_seconds": 0.012,
        "latency_p95_seconds": 0.013,
    }
    assert report["measurements"][1]["latencies_seconds"] == latencies  # the owner's copy is untouched


def test_differences_on_hidden_inputs_show_positions_only_and_on_public_ones_everything():
    hidden = {
        "inputs": "hidden",
        "input_id": "acme-q3",
        "where": "$.revenue_acme[3]",
        "position": "$.<key 0>[3]",
        "expected": "1.25",
        "actual": "9.0",
    }
    public = {
        "inputs": "public",
        "input_id": "in-1-0000",
        "where": "$.logits[0,2]",
        "position": "$.<key 0>[0,2]",
        "expected": "0.5",
        "actual": "0.7",
    }
    older_with_keys = {"input_id": "acme-q4", "where": "$.revenue_acme", "expected": "1", "actual": "2"}
    older_positional = {"input_id": "acme-q4", "where": "$[0,3]", "expected": "1", "actual": "2"}
    report = {
        "correctness": {
            "passed": False,
            "first_differences": [hidden, public, older_with_keys, older_positional],
            "scores": {
                "hidden": {"baseline": 0.9, "candidate": [0.3141592653]},
                "public": {"baseline": 1.0, "candidate": [0.5]},
            },
        }
    }
    view = report_for_engineer(report)["correctness"]
    assert view["first_differences"] == [
        {"inputs": "hidden", "where": "$.<key 0>[3]"},
        {"inputs": "public", "input_id": "in-1-0000", "where": "$.logits[0,2]", "expected": "0.5", "actual": "0.7"},
        {"inputs": "hidden", "where": None},
        {"inputs": "hidden", "where": "$[0,3]"},
    ]
    assert view["scores"] == {"hidden": {"baseline": 0.9}, "public": {"baseline": 1.0, "candidate": [0.5]}}


def test_counts_in_blocked_actions_are_left_out_for_the_engineer():
    policy = {"role": "policy", "action": "privileges: unprivileged uid 65534, no capabilities", "runs": None}
    report = {
        "blocked_actions": [
            {"role": "candidate", "action": "network: 3 TCP connection attempt(s), loopback only", "runs": 1},
            {"role": "candidate", "action": "network: 250 TCP connection attempt(s), loopback only", "runs": 2},
            {"role": "candidate", "action": "limit enforced: memory", "runs": 1},
            policy,
        ]
    }
    assert report_for_engineer(report)["blocked_actions"] == [
        {"role": "candidate", "action": "network: N TCP connection attempt(s), loopback only", "runs": 3},
        {"role": "candidate", "action": "limit enforced: memory", "runs": 1},
        policy,
    ]
