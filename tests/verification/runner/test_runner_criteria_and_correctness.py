"""Criteria in the marketplace's JSON shape, manifests, and output comparison."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from runner_testlib import REPO

from verification.runner.correctness import compare, decode_file
from verification.runner.criteria import Correctness, Criteria, CriteriaError
from verification.runner.manifest import SCHEMA_PATH, ManifestError, load_manifest, parse_manifest

# Runs real sandboxes (uid 65534, whose RLIMIT_NPROC is shared machine-wide): `make check` runs these one at a time.
pytestmark = pytest.mark.sandbox

MARKETPLACE_SHAPE = {
    "criteria": [
        {"metric": "latency", "statistic": "p95", "kind": "absolute", "threshold": 0.02},
        {"metric": "wall_time", "statistic": "median", "kind": "speedup", "threshold": 1.5},
        {"metric": "peak_memory", "statistic": "median", "kind": "no_worse", "threshold": 1.0, "tolerance": 0.1},
        {"metric": "reported:gflops", "statistic": "mean", "kind": "no_worse", "threshold": 1.0, "tolerance": 0.05},
    ],
    "correctness": {"mode": "numeric", "rtol": 1e-4, "atol": 1e-6},
    "tiers": [{"speedup": 1.5, "fraction": 0.5}, {"speedup": 2.0, "fraction": 1.0}],
}


def test_marketplace_criteria_shape_round_trips():
    criteria = Criteria.from_dict(MARKETPLACE_SHAPE)
    assert [c.metric for c in criteria.criteria] == ["latency", "wall_time", "peak_memory", "reported:gflops"]
    assert criteria.speedup_criterion.threshold == 1.5
    assert criteria.criteria[3].self_reported
    assert criteria.correctness == Correctness(mode="numeric", rtol=1e-4, atol=1e-6)
    assert Criteria.from_dict(criteria.to_dict()) == criteria


@pytest.mark.parametrize(
    "tiers",
    [
        [{"speedup": 2.0, "fraction": 0.5}, {"speedup": 1.5, "fraction": 1.0}],
        [{"speedup": 1.5, "fraction": 0.5}, {"speedup": 2.0, "fraction": 0.9}],
        [{"speedup": 1.5, "fraction": 0.7}, {"speedup": 2.0, "fraction": 0.5}],
    ],
)
def test_tiers_must_be_monotone_and_end_at_full_payout(tiers):
    with pytest.raises(CriteriaError):
        Criteria.from_dict({**MARKETPLACE_SHAPE, "tiers": tiers})


@pytest.mark.parametrize(
    "bad",
    [
        {"metric": "joules", "statistic": "median", "kind": "speedup", "threshold": 2},
        {"metric": "wall_time", "statistic": "p50", "kind": "speedup", "threshold": 2},
        {"metric": "wall_time", "statistic": "median", "kind": "faster", "threshold": 2},
        {"metric": "wall_time", "statistic": "median", "kind": "speedup", "threshold": 0.5},
        {"metric": "wall_time", "statistic": "median", "kind": "speedup", "threshold": "2"},
    ],
)
def test_malformed_criteria_are_refused(bad):
    with pytest.raises(CriteriaError):
        Criteria.from_dict({"criteria": [bad], "correctness": {"mode": "exact"}})


def test_percentile_criteria_need_enough_requests_per_run():
    criteria = Criteria.from_dict(MARKETPLACE_SHAPE)
    with pytest.raises(CriteriaError, match="at least 40 requests"):
        criteria.check_against(mode="stream", requests_per_run=10, reported={"gflops"}, has_scorer=False)
    criteria.check_against(mode="stream", requests_per_run=40, reported={"gflops"}, has_scorer=False)
    with pytest.raises(CriteriaError, match="stream-mode"):
        criteria.check_against(mode="process", requests_per_run=100, reported={"gflops"}, has_scorer=False)
    with pytest.raises(CriteriaError, match="does not declare"):
        criteria.check_against(mode="stream", requests_per_run=100, reported=set(), has_scorer=False)


def test_example_manifest_loads_and_matches_the_json_schema(example_package):
    manifest = load_manifest(example_package)
    assert manifest.mode == "stream" and manifest.command == ("python", "serve.py")
    jsonschema = pytest.importorskip("jsonschema")
    import tomllib

    raw = tomllib.loads((example_package / "speedproof.toml").read_text())
    jsonschema.validate(raw, json.loads(SCHEMA_PATH.read_text()))


@pytest.mark.parametrize(
    "raw",
    [
        {"format": 2, "name": "x", "mode": "stream", "command": ["python"]},
        {"format": 1, "name": "x", "mode": "batch", "command": ["python"]},
        {"format": 1, "name": "x", "mode": "stream", "command": []},
        {"format": 1, "name": "x", "mode": "stream", "command": ["python"], "limits": {"memory_mb": 1}},
        {"format": 1, "name": "x", "mode": "stream", "command": ["python"], "surprise": True},
    ],
)
def test_invalid_manifests_are_refused(raw):
    with pytest.raises(ManifestError):
        parse_manifest(raw)


def test_exact_comparison_reports_first_differences():
    assert compare("a", {"y": [1, 2]}, {"y": [1, 2]}, Correctness("exact")) == []
    differences = compare("a", {"y": [1, 2]}, {"y": [1, 3]}, Correctness("exact"))
    assert differences and differences[0].input_id == "a"


def test_numeric_comparison_respects_tolerances_and_locates_the_difference():
    rule = Correctness("numeric", rtol=1e-4, atol=1e-6)
    expected = {"logits": [[1.0, 2.0], [3.0, 4.0]]}
    assert compare("a", expected, {"logits": [[1.00005, 2.0], [3.0, 4.0]]}, rule) == []
    differences = compare("a", expected, {"logits": [[1.0, 2.0], [3.0, 4.1]]}, rule)
    assert [(d.where, d.expected, d.actual) for d in differences] == [("$.logits[1,1]", "4.0", "4.1")]
    assert compare("a", expected, {"logits": [[1.0, 2.0]]}, rule)[0].where == "$.logits.shape"


def test_npy_outputs_are_compared_as_arrays():
    def npy(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    reference = decode_file(npy(np.arange(6.0).reshape(2, 3)), "npy")
    close = decode_file(npy(np.arange(6.0).reshape(2, 3) + 1e-9), "npy")
    far = decode_file(npy(np.arange(6.0).reshape(2, 3) * 2), "npy")
    rule = Correctness("numeric", rtol=1e-6, atol=1e-6)
    assert compare("x", reference, close, rule) == []
    assert compare("x", reference, far, rule)[0].where == "$[0,1]"
    assert compare("x", reference, close, Correctness("exact"))


def test_the_runner_imports_nothing_from_django():
    code = (
        "import sys; import verification.runner, verification.runner.cli, verification.runner.plot; "
        "print('django' in sys.modules or any(m.startswith('django') for m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_logs_are_scrubbed_of_secrets_and_truncated():
    from verification.runner.report import MAX_LOG_CHARS, scrub

    text = (
        "STRIPE_SECRET_KEY=sk_live_abcdefghijklmnop\nAuthorization: Bearer eyJhbGciOi.x.y\n"
        "aws AKIAABCDEFGHIJKLMNOP here\npassword: hunter2\nplain line\ncustom-value-123"
    )
    scrubbed = scrub(text, ["custom-value-123"])
    for secret in ("sk_live_abcdefghijklmnop", "eyJhbGciOi", "AKIAABCDEFGHIJKLMNOP", "hunter2", "custom-value-123"):
        assert secret not in scrubbed
    assert "plain line" in scrubbed
    long = scrub("x" * (MAX_LOG_CHARS * 3) + "END")
    assert long.endswith("END") and len(long) < MAX_LOG_CHARS + 40
