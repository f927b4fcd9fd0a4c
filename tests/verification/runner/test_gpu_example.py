"""The GPU example job (examples/gpu_attention) verified through the runner with the GPU's device nodes
bound into the sandbox: a float32 textbook attention against PyTorch's fused bfloat16 attention.

Runs only where a CUDA GPU is present: ``nvidia-smi`` must answer and the job's Python
(``VERIFICATION_PYTHON``, else this interpreter) must import torch and see a CUDA device; anywhere else
every test here is skipped, and nothing here imports torch. Plain runner, no database, so a bare GPU
machine runs it too (``scripts/gpu_check.sh``). The device nodes are ``VERIFICATION_DEVICES`` when set,
else every ``/dev/nvidia*`` character device.

Without a GPU, the CPU tests at the end run the same package and candidate through real sandboxes with
a numpy stand-in for torch (``numpy_torch/``) copied beside each implementation, and another host device
node bound in place of /dev/nvidia*: the servers, their protocol, the correctness rule and the device
binding are checked on every machine, the speed only on a GPU.

The GPU tests print their figures (runs to decision, per-run cost in and out of the sandbox, A/A noise) and,
when ``SPEEDPROOF_GPU_FIGURES`` names a file, write them there as JSON, test by test (and each full report
beside it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from verification.runner import calibrate, cli, run_verification  # noqa: E402
from verification.runner.manifest import load_manifest  # noqa: E402
from verification.runner.sandbox import runtime_paths_of  # noqa: E402

EXAMPLE = REPO / "examples" / "gpu_attention"
PACKAGE = EXAMPLE / "package"
CANDIDATE = EXAMPLE / "candidates" / "sdpa"
CRITERIA = json.loads((EXAMPLE / "criteria.json").read_text())
GPU_PYTHON = os.environ.get("VERIFICATION_PYTHON") or sys.executable
VERIFY_BUDGET_PAIRS = int(os.environ.get("SPEEDPROOF_GPU_BUDGET", "20"))
AA_PAIRS = int(os.environ.get("SPEEDPROOF_GPU_AA_PAIRS", "8"))
BARE_RUNS = int(os.environ.get("SPEEDPROOF_GPU_BARE_RUNS", "3"))
SEED = 20261204
# Host adjustments scripts/gpu_check.sh makes when its probe sandbox needs them (the figures record them):
# an address-space cap for hosts without a memory cgroup, and read-only paths bound beside the runtime.
MEMORY_MB = os.environ.get("SPEEDPROOF_GPU_MEMORY_MB")
EXTRA_PATHS = [Path(p) for p in os.environ.get("SPEEDPROOF_GPU_EXTRA_PATHS", "").split(":") if p]

NUMPY_TORCH = Path(__file__).parent / "numpy_torch" / "torch"
# Character devices the CPU tests bind in place of /dev/nvidia*: the first one this host has.
STAND_IN_DEVICES = ("/dev/loop-control", "/dev/fuse", "/dev/kmsg")

pytestmark = pytest.mark.sandbox

FIGURES: dict[str, object] = {}


def _record(section: str, figures: dict[str, object]) -> None:
    FIGURES[section] = figures
    print(f"\n[gpu figures] {section}: {json.dumps(figures, indent=2, sort_keys=True)}")
    target = os.environ.get("SPEEDPROOF_GPU_FIGURES")
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")


def _keep_report(name: str, report_dict: dict) -> None:
    """The whole report beside the figures file, when there is one (for the record of a GPU check)."""
    target = os.environ.get("SPEEDPROOF_GPU_FIGURES")
    if target:
        (Path(target).parent / name).write_text(json.dumps(report_dict, indent=1, sort_keys=True, default=str) + "\n")


def _device_nodes() -> list[str]:
    configured = [d for d in os.environ.get("VERIFICATION_DEVICES", "").split(",") if d]
    if configured:
        return configured
    return sorted(str(p) for p in Path("/dev").glob("nvidia*") if stat.S_ISCHR(p.stat().st_mode))


def _gpu_models() -> list[str]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        answer = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in answer.stdout.splitlines() if line.strip()] if answer.returncode == 0 else []


@pytest.fixture(scope="module")
def gpu_host() -> dict[str, object]:
    """The job's Python, its runtime paths and the device nodes; skips unless a CUDA GPU is usable."""
    models = _gpu_models()
    if not models:
        pytest.skip("no NVIDIA GPU here (nvidia-smi is missing or lists none)")
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed")
    probe = subprocess.run(
        [GPU_PYTHON, "-c", "import torch; print(torch.cuda.is_available())"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if probe.stdout.strip() != "True":
        pytest.skip(f"{GPU_PYTHON} has no torch with CUDA: {(probe.stdout + probe.stderr).strip()[-300:]}")
    devices = _device_nodes()
    if not devices:
        pytest.skip("no /dev/nvidia* device nodes to bind into the sandbox")
    return {
        "python_executable": GPU_PYTHON,
        "runtime_paths": [*runtime_paths_of(GPU_PYTHON), *EXTRA_PATHS],
        "devices": devices,
        "models": models,
        "host_adjustments": {"memory_mb": MEMORY_MB, "extra_paths": [str(p) for p in EXTRA_PATHS]},
    }


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package, with ``limits.memory_mb`` replaced where the host asks for it."""
    if not MEMORY_MB:
        return PACKAGE
    copy = tmp_path_factory.mktemp("gpu-package") / "package"
    shutil.copytree(PACKAGE, copy)
    manifest = copy / "speedproof.toml"
    text, count = re.subn(r"(?m)^memory_mb = .*$", f"memory_mb = {int(MEMORY_MB)}", manifest.read_text())
    assert count == 1
    manifest.write_text(text)
    return copy


@pytest.fixture(scope="module")
def hidden_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.spec_from_file_location("gpu_attention_inputs", EXAMPLE / "generate_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    directory = tmp_path_factory.mktemp("gpu-hidden")
    module.generate(directory, count=8, seed=777)
    return directory


def _runner_kwargs(gpu_host: dict[str, object]) -> dict[str, object]:
    return {key: gpu_host[key] for key in ("python_executable", "runtime_paths", "devices")}


def _failure(report_dict: dict) -> str:
    return json.dumps({k: report_dict.get(k) for k in ("decision", "reason", "logs", "blocked_actions")}, indent=1)[
        -6000:
    ]


def _per_run_seconds(report_dict: dict) -> dict[str, float | None]:
    """Mean wall-clock seconds the runner spent per run: a fresh sandbox, interpreter and CUDA context,
    the kernels' warm-up, the requests and the teardown."""
    timings, runs = report_dict["timings"], report_dict["runs"]
    return {
        "warmup": timings.get("warmup_seconds", 0) / runs["warmup"] if runs["warmup"] else None,
        "measure": timings.get("measure_seconds", 0) / runs["total"] if runs["total"] else None,
    }


@pytest.mark.gpu
def test_fused_bf16_attention_passes_against_the_float32_baseline(gpu_host, package, hidden_inputs):
    started = time.perf_counter()
    report = run_verification(
        package, CANDIDATE, hidden_inputs, CRITERIA, budget=VERIFY_BUDGET_PAIRS, seed=SEED, **_runner_kwargs(gpu_host)
    )
    elapsed = time.perf_counter() - started
    result = report.to_dict()
    _keep_report("gpu_verification_report.json", result)
    speedup = next(c for c in result["criteria"] if c["criterion"]["metric"] == "wall_time")
    measured = [m for m in result["measurements"] if m["phase"] == "measure"]
    _record(
        "verification",
        {
            "decision": result["decision"],
            "reason": result["reason"],
            "tier": result["tier"],
            "payout_fraction": result["payout_fraction"],
            "pairs_to_decision": result["runs"]["pairs"],
            "measured_runs": result["runs"]["total"],
            "warmup_runs": result["runs"]["warmup"],
            "budget_pairs": VERIFY_BUDGET_PAIRS,
            "seconds_total": round(elapsed, 2),
            "per_run_seconds": _per_run_seconds(result),
            "speedup_estimate": speedup["estimate"],
            "speedup_interval": speedup["interval"],
            "speedup_decided_at_pairs": speedup["decided_at_pairs"],
            "tiers": result["tiers"],
            "baseline_median_wall_seconds": statistics.median(
                m["wall_seconds"] for m in measured if m["role"] == "baseline"
            )
            if measured
            else None,
            "candidate_median_wall_seconds": statistics.median(
                m["wall_seconds"] for m in measured if m["role"] == "candidate"
            )
            if measured
            else None,
            "outputs_compared": result["correctness"]["outputs_compared"],
            "mismatched_outputs": result["correctness"]["mismatched_outputs"],
            "gpu": result["environment"]["gpu"],
            "devices": gpu_host["devices"],
            "host_adjustments": gpu_host["host_adjustments"],
        },
    )
    assert result["decision"] == "PASS", _failure(result)
    assert result["correctness"]["passed"] and result["correctness"]["mismatched_outputs"] == 0
    assert result["correctness"]["outputs_compared"] > 0
    fingerprint_models = [gpu["model"] for gpu in result["environment"]["gpu"] or []]
    assert fingerprint_models == gpu_host["models"]


def _bare_run(implementation: Path, requests: list[object], home: Path) -> dict[str, object]:
    """The implementation's server started without a sandbox, with the sandbox's environment, sent the
    same kind of requests one at a time: (seconds from start to exit, per-request latencies, answers)."""
    environment = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    started = time.perf_counter()
    server = subprocess.Popen(
        [GPU_PYTHON, "serve.py"], cwd=implementation, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert json.loads(server.stdout.readline()) == {"ready": True}
        latencies, answers = [], []
        for index, data in enumerate(requests):
            sent = time.perf_counter()
            server.stdin.write((json.dumps({"id": f"bare-{index}", "data": data}) + "\n").encode())
            server.stdin.flush()
            response = json.loads(server.stdout.readline())
            latencies.append(time.perf_counter() - sent)
            answers.append(response["data"]["block_energy"])
        server.stdin.close()
        server.wait(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return {"seconds": time.perf_counter() - started, "latencies": latencies, "answers": answers}


def _flatten(values: object) -> list[float]:
    if isinstance(values, list):
        return [number for value in values for number in _flatten(value)]
    return [float(values)]


def _worst_difference(expected: list, actual: list, rtol: float, atol: float) -> tuple[float, bool]:
    """(largest relative difference, whether every element is within ``atol + rtol * |expected|``)."""
    pairs = list(zip(_flatten(expected), _flatten(actual), strict=True))
    largest = max(abs(a - e) / abs(e) if e else abs(a) for e, a in pairs)
    return largest, all(abs(a - e) <= atol + rtol * abs(e) for e, a in pairs)


@pytest.mark.gpu
def test_calibration_noise_and_the_sandbox_cost_per_run(gpu_host, package, hidden_inputs, tmp_path):
    started = time.perf_counter()
    calibration = calibrate(package, hidden_inputs, CRITERIA, pairs=AA_PAIRS, seed=SEED, **_runner_kwargs(gpu_host))
    aa_seconds = time.perf_counter() - started
    aa = calibration.report.to_dict()
    _keep_report("gpu_calibration_report.json", aa)
    assert aa["decision"] != "ERROR", _failure(aa)
    wall = next(c for c in calibration.criteria if c["metric"] == "wall_time")
    sandboxed_latencies = [
        latency for m in aa["measurements"] if m["phase"] == "measure" for latency in m["latencies_seconds"]
    ]

    manifest = load_manifest(PACKAGE)
    inputs = [json.loads(p.read_text()) for p in sorted(hidden_inputs.glob("*.json"))]
    repeats = round(len(inputs) * manifest.repeat_fraction)
    requests = inputs + inputs[:repeats]
    bare = {"baseline": [], "candidate": []}
    for _ in range(BARE_RUNS):
        bare["baseline"].append(_bare_run(PACKAGE / "implementation", requests, tmp_path))
        bare["candidate"].append(_bare_run(CANDIDATE, requests, tmp_path))
    rule = CRITERIA["correctness"]
    differences = [
        _worst_difference(b["answers"], c["answers"], rule["rtol"], rule["atol"])
        for b, c in zip(bare["baseline"], bare["candidate"], strict=True)
    ]
    bare_run_seconds = statistics.mean(run["seconds"] for run in bare["baseline"])
    sandboxed_run_seconds = _per_run_seconds(aa)["measure"]
    bare_latency = statistics.median(lat for run in bare["baseline"] for lat in run["latencies"][: len(inputs)])
    _record(
        "calibration_and_overhead",
        {
            "aa_pairs": calibration.pairs,
            "aa_seconds_total": round(aa_seconds, 2),
            "aa_wall_time_run_to_run_cv_percent": 100 * wall["run_to_run_cv"],
            "aa_pair_log_ratio_sd": wall["pair_log_ratio_sd"],
            "aa_ratio_estimate": wall["aa_ratio_estimate"],
            "aa_ratio_interval": wall["aa_ratio_interval"],
            "smallest_passing_speedup_for_threshold": wall["smallest_passing_speedup_for_threshold"],
            "sandboxed_baseline_seconds_per_run": sandboxed_run_seconds,
            "bare_baseline_seconds_per_run": bare_run_seconds,
            "sandbox_overhead_seconds_per_run": sandboxed_run_seconds - bare_run_seconds,
            "bare_candidate_seconds_per_run": statistics.mean(run["seconds"] for run in bare["candidate"]),
            "sandboxed_baseline_median_request_seconds": statistics.median(sandboxed_latencies),
            "bare_baseline_median_request_seconds": bare_latency,
            "bare_candidate_median_request_seconds": statistics.median(
                lat for run in bare["candidate"] for lat in run["latencies"][: len(inputs)]
            ),
            "bare_runs_per_role": BARE_RUNS,
            "max_relative_difference_candidate_vs_baseline": max(largest for largest, _ in differences),
        },
    )
    assert all(within for _, within in differences), "the fused attention is outside the job's tolerance"
    assert 0 < wall["run_to_run_cv"] < 0.5


# ---------------------------------------------------------------- without a GPU: the plumbing


@pytest.fixture
def stand_in_device() -> str:
    for node in STAND_IN_DEVICES:
        if Path(node).exists() and stat.S_ISCHR(Path(node).stat().st_mode):
            return node
    pytest.skip(f"none of {STAND_IN_DEVICES} exists here to bind in place of a GPU")


def _with_numpy_torch(source: Path, target: Path, replace: tuple[str, str] | None = None) -> Path:
    """A copy of an implementation with the numpy stand-in for torch beside its server."""
    shutil.copytree(source, target)
    shutil.copytree(
        NUMPY_TORCH, target / "implementation" / "torch" if (target / "implementation").is_dir() else target / "torch"
    )
    if replace is not None:
        serve = target / "serve.py"
        text = serve.read_text()
        assert replace[0] in text
        serve.write_text(text.replace(*replace))
    return target


def test_the_example_runs_in_sandboxes_with_a_device_bound_and_meets_its_tolerance(
    hidden_inputs, stand_in_device, tmp_path
):
    package = _with_numpy_torch(PACKAGE, tmp_path / "package")
    candidate = _with_numpy_torch(CANDIDATE, tmp_path / "candidate")
    report = run_verification(
        package, candidate, hidden_inputs, CRITERIA, budget=4, seed=SEED, devices=[stand_in_device]
    )
    result = report.to_dict()
    # Four pairs decide no PASS; the speed of numpy says nothing about the GPU anyway.
    assert result["decision"] in ("FAIL", "INCONCLUSIVE"), _failure(result)
    assert all(m["exit_code"] == 0 and m["error"] is None for m in result["measurements"])
    assert result["correctness"]["passed"] and result["correctness"]["first_differences"] == []
    repeat_fraction = load_manifest(PACKAGE).repeat_fraction  # each run repeats a share of its requests
    public_requests, hidden_requests = (n + round(n * repeat_fraction) for n in (4, 8))
    assert result["correctness"]["outputs_compared"] == public_requests + 4 * hidden_requests


def test_without_the_device_nodes_the_baseline_cannot_start_and_the_verification_is_an_error(
    hidden_inputs, stand_in_device, tmp_path
):
    package = _with_numpy_torch(PACKAGE, tmp_path / "package")
    candidate = _with_numpy_torch(CANDIDATE, tmp_path / "candidate")
    report = run_verification(package, candidate, hidden_inputs, CRITERIA, budget=4, seed=SEED)
    assert report.decision == "ERROR"
    assert report.reason == (
        "the baseline failed in warm-up on the public inputs: the implementation exited before announcing it was ready"
    )


def test_a_candidate_that_skips_the_attention_scale_fails_on_correctness(hidden_inputs, stand_in_device, tmp_path):
    package = _with_numpy_torch(PACKAGE, tmp_path / "package")
    unscaled = _with_numpy_torch(
        CANDIDATE,
        tmp_path / "unscaled",
        replace=("F.scaled_dot_product_attention(*half)", "F.scaled_dot_product_attention(half[0] * 8.0, *half[1:])"),
    )
    report = run_verification(
        package, unscaled, hidden_inputs, CRITERIA, budget=4, seed=SEED, devices=[stand_in_device]
    )
    result = report.to_dict()
    assert result["decision"] == "FAIL", _failure(result)
    assert result["correctness"]["mismatched_outputs"] > 0


def test_speedproof_check_binds_the_device_nodes_named_with_device(hidden_inputs, stand_in_device, tmp_path):
    package = _with_numpy_torch(PACKAGE, tmp_path / "package")
    candidate = _with_numpy_torch(CANDIDATE, tmp_path / "candidate")
    argv = [
        "check",
        *("--package", str(package), "--candidate", str(candidate), "--inputs", str(hidden_inputs)),
        *("--criteria", str(EXAMPLE / "criteria.json"), "--budget", "4", "--seed", str(SEED), "--quiet"),
    ]
    bound = cli.main([*argv, "--report", str(tmp_path / "bound.json"), "--device", stand_in_device])
    unbound = cli.main([*argv, "--report", str(tmp_path / "unbound.json")])
    report = json.loads((tmp_path / "bound.json").read_text())
    assert bound in (1, 2), _failure(report)  # FAIL or INCONCLUSIVE: measured, not an error
    assert report["correctness"]["passed"]
    assert unbound == 3
    assert json.loads((tmp_path / "unbound.json").read_text())["decision"] == "ERROR"
