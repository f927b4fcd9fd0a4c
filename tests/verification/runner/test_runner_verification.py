"""Whole verifications of the example job, with real sandboxes and real subprocesses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid

import pytest
from runner_testlib import REPO, candidate_with, package_with, processes_matching

from tests.factories.archives import directory_tar_gz, make_tar_gz, make_zip
from verification.runner import generate_signing_key, run_verification, verify_certificate
from verification.runner.certificate import CertificateError

# Runs real sandboxes (uid 65534, whose RLIMIT_NPROC is shared machine-wide): `make check` runs these one at a time.
pytestmark = pytest.mark.sandbox

BUDGET = 12


def _verify(package, candidate, inputs, criteria, **kwargs):
    return run_verification(
        package, candidate, inputs, criteria, budget=kwargs.pop("budget", BUDGET), seed=kwargs.pop("seed", 11), **kwargs
    )


def test_fast_candidate_passes_with_the_top_tier_and_a_valid_certificate(
    example_package, candidates, hidden_inputs, criteria
):
    updates = []
    key = generate_signing_key()
    criteria["criteria"].append({"metric": "latency", "statistic": "median", "kind": "speedup", "threshold": 1.5})
    report = _verify(
        example_package, candidates / "fast", hidden_inputs, criteria, progress=updates.append, signing_key=key
    )
    data = json.loads(report.to_json())
    assert data["decision"] == "PASS", data["reason"]
    assert data["tier"] == {"speedup": 2.0, "fraction": 1.0}
    assert data["payout_fraction"] == 1.0
    speedup = data["criteria"][0]
    assert speedup["decision"] == "PASS" and speedup["estimate"] > 2.0
    assert speedup["interval"][0] <= speedup["estimate"] <= speedup["interval"][1]
    assert speedup["p_value_pass"] < 0.05
    latency = data["criteria"][2]
    assert latency["decision"] == "PASS" and latency["estimate"] > 2.0
    assert data["anti_gaming"]["caching_suspected"] is False
    assert data["correctness"]["passed"] and data["correctness"]["outputs_compared"] > 0
    assert data["runs"]["pairs"] >= 4 and data["runs"]["total"] == 2 * data["runs"]["pairs"]
    assert data["settings"]["inputs"] == "hidden"
    assert all(len(data["sha256"][k]) == 64 for k in ("package", "candidate", "hidden_inputs"))
    assert data["environment"]["cpu_count"] >= 1 and data["environment"]["kernel"]
    measured = [m for m in data["measurements"] if m["phase"] == "measure"]
    assert len(measured) == data["runs"]["total"] and all(m["wall_seconds"] > 0 for m in measured)
    assert {m["role"] for m in measured} == {"baseline", "candidate"}
    # Progress: monotone run counts against the budget, ending with "done".
    runs_seen = [u.runs_done for u in updates]
    assert runs_seen == sorted(runs_seen) and updates[-1].phase == "done"
    assert updates[-1].runs_budget == 2 * BUDGET and updates[-1].estimate is not None
    verify_certificate(data["certificate"], key.public_key(), report=data)
    data["criteria"][0]["estimate"] *= 1.01
    with pytest.raises(CertificateError):
        verify_certificate(data["certificate"], key.public_key(), report=data)


def test_unchanged_candidate_fails(example_package, candidates, hidden_inputs, criteria):
    report = _verify(example_package, candidates / "unchanged", hidden_inputs, criteria, budget=16)
    assert report.decision == "FAIL", (report.reason, report.criteria)
    assert report.exit_code == 1
    speedup = report.criteria[0]
    assert speedup["decision"] == "FAIL" and 0.6 < speedup["estimate"] < 1.4
    assert report.tier is None and report.payout_fraction == 0.0


def test_wrong_outputs_fail_naming_the_correctness_criterion(example_package, candidates, hidden_inputs, criteria):
    report = _verify(example_package, candidates / "wrong", hidden_inputs, criteria)
    assert report.decision == "FAIL"
    # It is already wrong on the public inputs of the warm-up, which may be named; the values stay in
    # the correctness section (the candidate's own are no part of a certified reason).
    assert re.fullmatch(
        r"correctness criterion failed \(numeric\): output for public input 'in-1-\d{4}' "
        r"differs at \$\.logits\[\d+,\d+\]",
        report.reason,
    ), report.reason
    assert report.correctness["passed"] is False
    first = report.correctness["first_differences"][0]
    assert first["where"].startswith("$.logits[") and first["expected"] != first["actual"]
    assert first["inputs"] == "public" and first["position"] == first["where"].replace("$.logits", "$.<key 0>")


def test_cheater_is_contained_and_its_attempts_are_reported(example_package, candidates, hidden_inputs, criteria):
    report = _verify(example_package, candidates / "cheater", hidden_inputs, criteria, budget=4)
    assert (report.decision, report.reason_code) == ("FAIL", "sandbox_violation")
    blocked = {(b["role"], b["action"].split(":")[0]) for b in report.blocked_actions}
    assert ("candidate", "network") in blocked
    assert ("candidate", "privileged calls") in blocked
    assert any(b["role"] == "candidate" and "still running" in b["action"] for b in report.blocked_actions)
    assert not any(b["role"] == "baseline" for b in report.blocked_actions)
    stderr = next(log["stderr"] for log in report.logs if log["role"] == "candidate")
    assert "cheater: network blocked" in stderr
    assert "cheater: setuid(0) refused: Operation not permitted" in stderr
    assert "cheater: unshare(CLONE_NEWUSER) refused: Operation not permitted" in stderr
    assert "cheater: cannot read /work/main/examples/mlp/package/implementation/serve.py" in stderr
    assert "cheater: read " not in stderr
    assert processes_matching("while True: time.sleep(0.1)") == []


CACHING = """
import json, sys, time
sys.path.insert(0, "/impl")
from serve import infer
import numpy as np
sys.stdout.write('{"ready": true}\\n'); sys.stdout.flush()
seen = {}
for line in sys.stdin:
    request = json.loads(line)
    key = json.dumps(request["data"])
    if key not in seen:
        time.sleep(0.02)  # pretend to work hard the first time
        seen[key] = infer(np.asarray(request["data"]["x"])).tolist()
    sys.stdout.write(json.dumps({"id": request["id"], "data": {"logits": seen[key]}}) + "\\n")
    sys.stdout.flush()
"""


def test_caching_of_repeated_requests_is_flagged(tmp_path, example_package, candidates, hidden_inputs, criteria):
    candidate = tmp_path / "candidate"
    shutil.copytree(candidates / "fast", candidate)
    (candidate / "serve.py").rename(candidate / "fast_serve.py")
    (candidate / "serve.py").write_text(CACHING.replace("from serve import", "from fast_serve import"))
    report = _verify(example_package, candidate, hidden_inputs, criteria, budget=4)
    assert report.anti_gaming["caching_suspected"] is True, report.anti_gaming
    assert report.anti_gaming["candidate_repeat_to_first_latency"] < 0.5


CRASHING = """
import sys
sys.stdout.write('{"ready": true}\\n'); sys.stdout.flush()
sys.stdin.readline()
raise SystemExit("candidate crashed on purpose")
"""

HANGING = """
import sys, time
sys.stdout.write('{"ready": true}\\n'); sys.stdout.flush()
for line in sys.stdin:
    time.sleep(600)
"""

MEMORY_HOG = """
import sys
sys.stdout.write('{"ready": true}\\n'); sys.stdout.flush()
blocks = []
for line in sys.stdin:
    while True:
        blocks.append(bytearray(32 << 20))
"""

FORK_BOMB = """
import os, sys, time
sys.stdout.write('{"ready": true}\\n'); sys.stdout.flush()
for line in sys.stdin:
    while True:
        if os.fork() == 0:
            time.sleep(60)
"""

HUGE_FILE = """
import sys
sys.stdout.write('{"ready": true}\\n'); sys.stdout.flush()
for line in sys.stdin:
    with open("/tmp/huge", "wb") as handle:
        while True:
            handle.write(b"x" * (1 << 20))
"""


@pytest.mark.parametrize(
    ("serve", "reason"),
    [
        (CRASHING, "exited before answering"),
        (HANGING, "timeout"),
        (MEMORY_HOG, "memory limit: the run needed more than limits.memory_mb (256 MiB)"),
        (FORK_BOMB, "limit exceeded: processes"),
        (HUGE_FILE, "limit exceeded: file size"),
    ],
    ids=["crash", "timeout", "memory", "fork-bomb", "huge-file"],
)
def test_misbehaving_candidates_fail_with_the_reason(tmp_path, example_package, hidden_inputs, criteria, serve, reason):
    package = package_with(
        example_package,
        tmp_path / "package",
        wall_seconds="4",
        memory_mb="256",
        max_processes="16",
        max_file_mb="4",
        scratch_mb="64",
    )
    candidate = candidate_with(tmp_path / "candidate", serve)
    report = _verify(package, candidate, hidden_inputs, criteria)
    assert report.decision == "FAIL"
    assert reason in report.reason
    assert report.exit_code == 1


def test_archives_and_process_mode(tmp_path, hidden_inputs):
    """A process-mode package delivered as .tar.gz and a candidate as .zip."""
    package = tmp_path / "pkg"
    (package / "implementation").mkdir(parents=True)
    (package / "inputs" / "public").mkdir(parents=True)
    (package / "speedproof.toml").write_text(
        'format = 1\nname = "sum"\nmode = "process"\ncommand = ["python", "run.py"]\nwarmup_runs = 1\n'
        "[limits]\nwall_seconds = 20\n"
    )
    shutil.copy(next(hidden_inputs.iterdir()), package / "inputs" / "public" / "p1.json")
    slow = (
        "import json, os, time\n"
        "for name in open('/inputs/ORDER').read().split():\n"
        "    x = json.load(open('/inputs/' + name + '.json'))['x']\n"
        "    time.sleep(DELAY)\n"
        "    json.dump({'sum': round(sum(map(sum, x)), 6)}, open('/outputs/' + name + '.json', 'w'))\n"
    )
    (package / "implementation" / "run.py").write_text(slow.replace("DELAY", "0.03"))
    candidate = tmp_path / "cand"
    candidate.mkdir()
    (candidate / "run.py").write_text(slow.replace("DELAY", "0.0"))
    (tmp_path / "pkg.tar.gz").write_bytes(directory_tar_gz(package, arcname="pkg"))
    (tmp_path / "cand.zip").write_bytes(make_zip({"run.py": (candidate / "run.py").read_bytes()}))
    criteria = {
        "criteria": [
            {"metric": "wall_time", "statistic": "median", "kind": "speedup", "threshold": 1.5},
            {"metric": "cpu_time", "statistic": "median", "kind": "no_worse", "threshold": 1.0, "tolerance": 0.5},
        ],
        "correctness": {"mode": "exact"},
        "tiers": [],
    }
    report = _verify(tmp_path / "pkg.tar.gz", tmp_path / "cand.zip", hidden_inputs, criteria)
    assert report.decision == "PASS", report.reason
    assert report.tier is None and report.payout_fraction == 1.0
    assert report.correctness["outputs_compared"] >= 8 * 4
    seeds = [m["seed"] for m in report.measurements]
    assert len(set(seeds)) == len(seeds)  # a fresh seed for every run


def test_archive_with_path_traversal_is_refused(tmp_path, hidden_inputs, criteria):
    evil = tmp_path / "evil.tar.gz"
    evil.write_bytes(make_tar_gz({"../../escaped.txt": b"x"}))
    report = _verify(evil, evil, hidden_inputs, criteria)
    assert report.decision == "ERROR" and "archive_path_traversal" in report.reason
    assert report.exit_code == 3


def test_links_in_a_candidate_directory_are_not_followed(tmp_path):
    from verification.runner.archive import materialize

    secret = tmp_path / "host-secret.txt"
    secret.write_text("host only")
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    (candidate / "serve.py").write_text("print('hi')\n")
    (candidate / "leak.txt").symlink_to(secret)
    (candidate / "leakdir").symlink_to(tmp_path)
    copy = materialize(candidate, tmp_path / "copy")
    assert sorted(p.name for p in copy.iterdir()) == ["serve.py"]


def test_command_line_check_writes_report_and_plot(tmp_path, example_package, candidates):
    report_path, plot_path = tmp_path / "report.json", tmp_path / "plot.png"
    marker = uuid.uuid4().hex
    command = [
        sys.executable,
        "-m",
        "verification.runner",
        "check",
        "--package",
        str(example_package),
        "--candidate",
        str(candidates / "fast"),
        "--criteria",
        str(REPO / "examples/mlp/criteria.json"),
        "--report",
        str(report_path),
        "--plot",
        str(plot_path),
        "--budget",
        "12",
        "--seed",
        "3",
        "--quiet",
    ]
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "MARKER": marker}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("PASS")
    data = json.loads(report_path.read_text())
    assert data["decision"] == "PASS" and data["settings"]["inputs"] == "public"
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_path.with_suffix(".svg").read_text().lstrip().startswith("<?xml")

    wrong = subprocess.run(
        command[:7] + [str(candidates / "wrong")] + command[8:], cwd=REPO, capture_output=True, text=True
    )
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    missing = subprocess.run(
        command[:5] + [str(tmp_path / "nope")] + command[6:], cwd=REPO, capture_output=True, text=True
    )
    assert missing.returncode == 3


def test_scorer_correctness_and_self_reported_metrics(tmp_path, hidden_inputs):
    """Process mode with a scorer (accuracy against references) and a declared self-reported metric."""
    package = tmp_path / "pkg"
    for directory in ("implementation", "inputs/public/references", "scorer"):
        (package / directory).mkdir(parents=True)
    (package / "speedproof.toml").write_text(
        'format = 1\nname = "classify"\nmode = "process"\ncommand = ["python", "run.py"]\n'
        'scorer = ["python", "scorer/score.py"]\nwarmup_runs = 1\n'
        '[[reported_metrics]]\nname = "rows_per_second"\nhigher_is_better = true\n'
    )
    hidden = tmp_path / "hidden"
    (hidden / "references").mkdir(parents=True)
    for source in sorted(hidden_inputs.iterdir()):
        shutil.copy(source, hidden / source.name)
        x = json.loads(source.read_text())["x"]
        labels = [int(sum(row) > 0) for row in x]
        (hidden / "references" / source.name).write_text(json.dumps(labels))
    public = next(hidden.glob("*.json"))
    shutil.copy(public, package / "inputs/public" / public.name)
    shutil.copy(hidden / "references" / public.name, package / "inputs/public/references" / public.name)
    implementation = (
        "import json, time\n"
        "rows = 0\n"
        "for name in open('/inputs/ORDER').read().split():\n"
        "    x = json.load(open('/inputs/' + name + '.json'))['x']\n"
        "    rows += len(x)\n"
        "    json.dump([int(sum(r) > THRESHOLD) for r in x], open('/outputs/' + name + '.json', 'w'))\n"
        "json.dump({'rows_per_second': rows * 1000.0}, open('/outputs/metrics.json', 'w'))\n"
    )
    (package / "implementation" / "run.py").write_text(implementation.replace("THRESHOLD", "0"))
    (package / "scorer" / "score.py").write_text(
        "import json, os\n"
        "right = total = 0\n"
        "for name in os.listdir('/inputs/outputs'):\n"
        "    got = json.load(open('/inputs/outputs/' + name))\n"
        "    want = json.load(open('/inputs/reference/' + name))\n"
        "    right += sum(g == w for g, w in zip(got, want))\n"
        "    total += len(want)\n"
        "print(json.dumps({'score': right / total}))\n"
    )
    criteria = {
        "criteria": [
            {"metric": "reported:rows_per_second", "statistic": "mean", "kind": "absolute", "threshold": 100.0}
        ],
        "correctness": {"mode": "scorer", "min_score_ratio": 0.99},
        "tiers": [],
    }
    same = tmp_path / "same"
    same.mkdir()
    (same / "run.py").write_text(implementation.replace("THRESHOLD", "0"))
    report = _verify(package, same, hidden, criteria, budget=5)  # 4 pairs can never show a median at 5%
    assert report.decision == "PASS", report.reason
    assert report.criteria[0]["self_reported"] is True
    assert report.correctness["scores"]["hidden"]["baseline"] == 1.0
    worse = tmp_path / "worse"
    worse.mkdir()
    (worse / "run.py").write_text(implementation.replace("THRESHOLD", "0.8"))
    report = _verify(package, worse, hidden, criteria, budget=4)
    assert report.decision == "FAIL"
    # The candidate chose the outputs its hidden-input score comes from: the score is for the owner only.
    assert report.reason == (
        "correctness criterion failed (scorer): the candidate's score on the hidden "
        "inputs is below the baseline's (minimum 99.00%)"
    )
    assert report.correctness["scores"]["hidden"]["candidate"][-1] < 0.99


def test_calibration_measures_run_to_run_variation(example_package, criteria):
    from verification.runner import calibrate

    result = calibrate(example_package, None, criteria, pairs=4, seed=5)
    wall = next(c for c in result.criteria if c["metric"] == "wall_time")
    assert 0.5 < wall["aa_ratio_estimate"] < 2.0
    assert wall["run_to_run_cv"] >= 0
    assert wall["smallest_verifiable_speedup"] > 1.0
    assert wall["smallest_passing_speedup_for_threshold"] > 1.5
    assert result.report.runs["pairs"] == 4  # an A/A run never stops early


def test_fixed_rate_load_with_concurrency(tmp_path, example_package, candidates, hidden_inputs, criteria):
    package = tmp_path / "package"
    shutil.copytree(example_package, package)
    manifest = package / "speedproof.toml"
    manifest.write_text(manifest.read_text().replace("concurrency = 1", "concurrency = 8\nrate = 100"))
    report = _verify(package, candidates / "fast", hidden_inputs, criteria, budget=4)
    measured = [m for m in report.measurements if m["phase"] == "measure" and m["role"] == "candidate"]
    requests = 8 + 2  # eight hidden inputs, a quarter of them repeated
    # At 100 requests/s the candidate (much faster than that) is paced by the schedule.
    assert all(m["wall_seconds"] >= (requests - 1) / 100 * 0.95 for m in measured)
    assert report.correctness["passed"]


def test_undecidable_criterion_is_inconclusive_at_the_budget(tmp_path, hidden_inputs):
    """A self-reported metric exactly at its threshold can never be decided: INCONCLUSIVE, exit 2."""
    package = tmp_path / "pkg"
    (package / "implementation").mkdir(parents=True)
    (package / "inputs" / "public").mkdir(parents=True)
    (package / "speedproof.toml").write_text(
        'format = 1\nname = "const"\nmode = "process"\ncommand = ["python", "run.py"]\n'
        '[[reported_metrics]]\nname = "quality"\nhigher_is_better = true\n'
    )
    shutil.copy(next(hidden_inputs.iterdir()), package / "inputs" / "public" / "p.json")
    run = (
        "import json\n"
        "for name in open('/inputs/ORDER').read().split():\n"
        "    json.dump(1, open('/outputs/' + name + '.json', 'w'))\n"
        "json.dump({'quality': 5.0}, open('/outputs/metrics.json', 'w'))\n"
    )
    (package / "implementation" / "run.py").write_text(run)
    criteria = {
        "criteria": [{"metric": "reported:quality", "statistic": "mean", "kind": "absolute", "threshold": 5.0}],
        "correctness": {"mode": "exact"},
        "tiers": [],
    }
    report = _verify(package, package / "implementation", hidden_inputs, criteria, budget=4)
    assert report.decision == "INCONCLUSIVE" and report.exit_code == 2
    assert report.runs["pairs"] == 4 and "budget of 4 pairs" in report.reason
