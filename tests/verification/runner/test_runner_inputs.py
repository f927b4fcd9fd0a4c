"""Input files: one input per file, and JSON-lines files with one input per line."""

from __future__ import annotations

import json
import shutil

import pytest
from runner_testlib import package_with

from verification.runner import run_verification
from verification.runner.measure import list_inputs


def test_json_lines_files_hold_one_input_per_line(tmp_path):
    (tmp_path / "a.json").write_text('{"x": 1}')
    (tmp_path / "batch.jsonl").write_text('{"x": 2}\n\n  {"x": 3}  \n[4, 5]\n')
    (tmp_path / "notes.txt").write_text("not an input")
    (tmp_path / "references").mkdir()
    items = list_inputs(tmp_path, ".json")
    assert [item.id for item in items] == ["a", "batch-1", "batch-3", "batch-4"]
    assert [json.loads(item.read()) for item in items] == [{"x": 1}, {"x": 2}, {"x": 3}, [4, 5]]


def test_a_line_that_is_not_json_is_named_by_file_and_line_only(tmp_path):
    (tmp_path / "hidden.jsonl").write_text('{"ok": 1}\n{"secret-canary": \n')
    with pytest.raises(ValueError) as problem:
        list_inputs(tmp_path, ".json")
    assert str(problem.value) == "hidden.jsonl line 2 is not one JSON value"


def test_ids_stay_unique_and_other_formats_ignore_json_lines(tmp_path):
    (tmp_path / "batch-1.json").write_text("1")
    (tmp_path / "batch.jsonl").write_text("2\n")
    with pytest.raises(ValueError, match="batch-1"):
        list_inputs(tmp_path, ".json")
    (tmp_path / "batch-1.json").unlink()
    with pytest.raises(ValueError, match=r"no \*\.npy inputs"):
        list_inputs(tmp_path, ".npy")


def _as_json_lines(source, target):
    """`source`'s *.json inputs as one JSON-lines file in `target` (references copied along)."""
    target.mkdir(parents=True, exist_ok=True)
    files = sorted(source.glob("*.json"))
    (target / "all.jsonl").write_text("".join(json.dumps(json.loads(path.read_text())) + "\n" for path in files))
    for path in files:
        (target / path.name).unlink(missing_ok=True)
    if (source / "references").is_dir() and not (target / "references").exists():
        shutil.copytree(source / "references", target / "references")
    return len(files)


@pytest.mark.sandbox
def test_a_stream_package_with_json_lines_inputs_is_verified(
    tmp_path, example_package, candidates, hidden_inputs, criteria
):
    package = package_with(example_package, tmp_path / "package")
    _as_json_lines(example_package / "inputs" / "public", package / "inputs" / "public")
    hidden_count = _as_json_lines(hidden_inputs, tmp_path / "hidden")
    report = json.loads(
        run_verification(package, candidates / "fast", tmp_path / "hidden", criteria, budget=8, seed=3).to_json()
    )
    assert report["decision"] == "PASS", report["reason"]
    assert report["correctness"]["passed"] and report["correctness"]["outputs_compared"] >= hidden_count


@pytest.mark.sandbox
def test_a_process_package_gets_each_line_as_its_own_input_file(tmp_path, hidden_inputs):
    package = tmp_path / "pkg"
    (package / "implementation").mkdir(parents=True)
    (package / "speedproof.toml").write_text(
        'format = 1\nname = "sum"\nmode = "process"\ncommand = ["python", "run.py"]\nwarmup_runs = 1\n'
        "[limits]\nwall_seconds = 20\n"
    )
    _as_json_lines(hidden_inputs, package / "inputs" / "public")
    hidden_count = _as_json_lines(hidden_inputs, tmp_path / "hidden")
    program = (
        "import json, time\n"
        "for name in open('/inputs/ORDER').read().split():\n"
        "    x = json.load(open('/inputs/' + name + '.json'))['x']\n"
        "    time.sleep(DELAY)\n"
        "    json.dump({'sum': round(sum(map(sum, x)), 6)}, open('/outputs/' + name + '.json', 'w'))\n"
    )
    (package / "implementation" / "run.py").write_text(program.replace("DELAY", "0.03"))
    candidate = tmp_path / "cand"
    candidate.mkdir()
    (candidate / "run.py").write_text(program.replace("DELAY", "0.0"))
    criteria = {
        "criteria": [{"metric": "wall_time", "statistic": "median", "kind": "speedup", "threshold": 1.5}],
        "correctness": {"mode": "exact"},
    }
    report = run_verification(package, candidate, tmp_path / "hidden", criteria, budget=8, seed=5)
    assert report.decision == "PASS", report.reason
    assert report.correctness["outputs_compared"] >= hidden_count * 4
