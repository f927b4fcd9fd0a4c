"""What observing privileged calls (runner/seccomp.py) costs a sandboxed run.

Run:  python bench/sandbox_seccomp_overhead.py [--runs 30] [--installer compiled|python] [--command /bin/true]

Runs a trivial command in a fresh sandbox ``--runs`` times with the seccomp installer and as many
times without, interleaved so that drift on a shared machine falls on both, and prints the median and
p90 of each run's total time (sandbox set up, command, teardown) and of its measured wall time (what
a ``wall_time`` criterion compares), and the differences of the medians. ``--installer python`` measures
the fallback used where the host has no C compiler.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verification.runner import seccomp
from verification.runner.sandbox import SandboxProcess, SandboxSpec, default_runtime_paths


def _run(implementation: Path, command: list[str], observe: bool) -> tuple[float, float]:
    spec = SandboxSpec(
        command=command,
        implementation=implementation,
        runtime_paths=default_runtime_paths(),
        supervisor_python=sys.executable,
        observe_privileged_calls=observe,
    )
    started = time.perf_counter()
    with SandboxProcess(spec) as sandbox:
        outcome = sandbox.finish()
    total = time.perf_counter() - started
    if outcome.exit_code != 0 or outcome.violations:
        raise SystemExit(f"the trivial command failed: {outcome}")
    if observe == bool(outcome.unobserved):
        raise SystemExit(f"privileged calls observed={not outcome.unobserved}, expected {observe}")
    return total, outcome.wall_seconds


def _figures(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(values) * 1000:7.1f} ms  p90 {p90 * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--installer", choices=("compiled", "python"), default="compiled")
    parser.add_argument("--command", nargs="+", default=["/bin/true"])
    options = parser.parse_args()
    if options.installer == "python":
        seccomp.installer_binary = lambda: None
    elif seccomp.installer_binary() is None:
        raise SystemExit("no C compiler here: only --installer python can be measured")
    with tempfile.TemporaryDirectory() as scratch:
        implementation = Path(scratch)
        implementation.chmod(0o755)
        _run(implementation, options.command, True)  # warm the page cache for both
        _run(implementation, options.command, False)
        results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for _ in range(options.runs):
            for observe in (True, False):
                results[observe].append(_run(implementation, options.command, observe))
    print(f"{options.runs} runs each of {' '.join(options.command)}, {options.installer} installer")
    for observe, label in ((False, "without the filter"), (True, "with the filter   ")):
        totals, walls = zip(*results[observe])
        print(f"{label}  total: {_figures(list(totals))}   measured wall: {_figures(list(walls))}")
    for index, name in ((0, "total"), (1, "measured wall")):
        difference = statistics.median(r[index] for r in results[True]) - statistics.median(
            r[index] for r in results[False]
        )
        print(f"difference of medians, {name}: {difference * 1000:+.1f} ms")


if __name__ == "__main__":
    main()
