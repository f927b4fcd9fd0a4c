"""The verification runner's cost per run beyond the implementation itself.

Run:  python bench/verification_overhead.py [--runs 60]

For a no-op implementation, each figure is the median wall time of a complete run through the runner
(fresh cgroups, bwrap sandbox, trusted launcher, measurement, output collection, teardown) minus the
median wall time of the same command started directly with subprocess (no sandbox), which is the cost
of the implementation itself. Two modes:
- process: ``/bin/true`` with one staged input file;
- stream: an echo server (``cat`` after the ready line) answering 8 requests.
Target: <= 30 ms per run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verification.runner.manifest import parse_manifest
from verification.runner.measure import Executor, InputItem, RunRecord
from verification.runner.sandbox import default_runtime_paths

ECHO_SERVER = ["/bin/sh", "-c", "echo '{\"ready\": true}'; exec cat"]
REQUESTS = 8


def _executor(mode: str, command: list[str], scratch: Path) -> Executor:
    manifest = parse_manifest(
        {"format": 1, "name": "noop", "mode": mode, "command": command, "stream": {"repeat_fraction": 0.0}}
    )
    return Executor(manifest, default_runtime_paths(), sys.executable, scratch)


def _time_runner(executor: Executor, implementation: Path, inputs: list[InputItem], runs: int) -> list[float]:
    rng = random.Random(1)
    times = []
    for index in range(runs):
        record = RunRecord(role="candidate", phase="measure", pair=index, position=0, input_ids=[])
        started = time.perf_counter()
        executor.run(implementation, inputs, record, rng)
        times.append(time.perf_counter() - started)
        if record.error and executor.manifest.mode == "stream":
            raise SystemExit(f"run failed: {record.error}")
    return times


def _time_direct_process(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(["/bin/true"], check=True)
        times.append(time.perf_counter() - started)
    return times


def _time_direct_stream(inputs: list[InputItem], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        process = subprocess.Popen(ECHO_SERVER, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert process.stdin is not None and process.stdout is not None
        process.stdout.readline()
        for index, item in enumerate(inputs):
            process.stdin.write((json.dumps({"id": str(index), "data": json.loads(item.read())}) + "\n").encode())
            process.stdin.flush()
            process.stdout.readline()
        process.stdin.close()
        process.wait()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="speedproof-bench-"))
    scratch.chmod(0o755)
    implementation = scratch / "impl"
    implementation.mkdir(mode=0o755)
    inputs = []
    for index in range(REQUESTS):
        path = scratch / f"in{index}.json"
        path.write_text(json.dumps({"x": [index] * 16}))
        path.chmod(0o644)
        inputs.append(InputItem(f"in{index}", path))

    process_runner = _time_runner(_executor("process", ["/bin/true"], scratch), implementation, inputs[:1], args.runs)
    process_direct = _time_direct_process(args.runs)
    stream_runner = _time_runner(_executor("stream", ECHO_SERVER, scratch), implementation, inputs, args.runs)
    stream_direct = _time_direct_stream(inputs, args.runs)

    print(f"runs per figure: {args.runs} (medians; p90 in brackets)")
    for mode, runner, direct in (("process", process_runner, process_direct), ("stream", stream_runner, stream_direct)):
        overhead = statistics.median(runner) - statistics.median(direct)
        p90 = sorted(runner)[int(0.9 * len(runner))] - statistics.median(direct)
        verdict = "met" if overhead <= 0.030 else "NOT MET"
        print(
            f"{mode:<8} runner {statistics.median(runner) * 1000:7.1f} ms  direct {statistics.median(direct) * 1000:6.1f} ms"
            f"  overhead {overhead * 1000:6.1f} ms [{p90 * 1000:.1f}]  target <= 30 ms: {verdict}"
        )


if __name__ == "__main__":
    main()
