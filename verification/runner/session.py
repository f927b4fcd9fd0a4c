"""The runner's Python API: ``run_verification`` and ``calibrate``. No Django here (a test checks)."""

from __future__ import annotations

import io
import json
import math
import os
import random
import secrets as secrets_module
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import correctness, stats
from .archive import ArchiveError, materialize, sha256_of
from .certificate import sign_report
from .criteria import Criteria, CriteriaError, default_sandbox_policy
from .decision import (
    ERROR,
    FAIL,
    PASS,
    MissingMeasurement,
    Pair,
    SequentialDecision,
    caching_flag,
    settle_undecided,
)
from .manifest import Manifest, ManifestError, load_manifest
from .measure import REFERENCES_DIR, Executor, InputItem, RunRecord, list_inputs
from .report import Report, environment_fingerprint, scrub
from .sandbox import INPUTS_MOUNT, RunOutcome, SandboxError, SandboxProcess, SandboxSpec, default_runtime_paths
from .violations import SANDBOX_VIOLATION, violations_refused, violations_summarise

DEFAULT_BUDGET_PAIRS = 40
FAILED_RUN_LOG_CHARS = 300
SANDBOX_POLICY = [
    "network: no network interfaces except an isolated loopback (new network namespace)",
    "filesystem: only the runtime, the implementation (read-only) and size-capped scratch are visible",
    "processes: new PID namespace; every process is killed when the run ends",
    "system calls: namespace, mount, identity, tracing and kernel-interface calls refused (EPERM) and counted",
    "privileges: unprivileged uid 65534, no capabilities, no_new_privs",
]
# Without root (an engineer's own machine) the code runs as the invoking user inside a user namespace,
# and what the launcher reports from inside the sandbox is not protected from it.
UNPRIVILEGED_HOST_POLICY = (
    "privileges: the invoking user's uid in a user namespace, no capabilities; "
    "figures reported from inside the sandbox (wall time, CPU time, peak memory, "
    "leftover processes) are not protected from the measured code: verify on a root host"
)


def sandbox_policy() -> list[str]:
    if os.geteuid() == 0:
        return SANDBOX_POLICY
    return [*SANDBOX_POLICY[:-1], UNPRIVILEGED_HOST_POLICY]


@dataclass(frozen=True)
class Progress:
    phase: str  # "warmup" | "measure" | "done"
    runs_done: int
    runs_budget: int
    pairs_done: int
    pairs_budget: int
    estimate: float | None  # current speedup estimate (the speedup criterion), if any
    interval: tuple[float, float] | None


ProgressCallback = Callable[[Progress], None]


class _Stop(Exception):
    """Ends the measurement early with a decision (a failed candidate run, wrong outputs...)."""

    def __init__(self, decision: str, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.decision = decision
        self.reason = reason
        self.code = code  # a stable name for the reason, e.g. "sandbox_violation"


def run_verification(
    package: Path | str,
    candidate: Path | str,
    hidden_inputs: Path | str | None,
    criteria: dict[str, Any],
    *,
    budget: int = DEFAULT_BUDGET_PAIRS,
    seed: int | None = None,
    alpha: float = stats.DEFAULT_ALPHA,
    progress: ProgressCallback | None = None,
    signing_key: Any = None,
    python_executable: str | None = None,
    runtime_paths: Sequence[Path] | None = None,
    devices: Sequence[str] = (),
    secrets: Sequence[str] = (),
    work_dir: Path | None = None,
    stop_early: bool = True,
) -> Report:
    """Measure ``candidate`` against the package's baseline on the hidden inputs (the public ones
    when ``hidden_inputs`` is None) and decide PASS / FAIL / INCONCLUSIVE (or ERROR when the
    verification itself could not be carried out). ``budget`` is the maximum number of pairs;
    ``signing_key`` (an Ed25519 private key) adds a certificate to the report; ``stop_early=False``
    measures the whole budget (calibration)."""
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    seed = seed if seed is not None else secrets_module.randbits(63)
    scratch = Path(tempfile.mkdtemp(prefix="speedproof-", dir=work_dir))
    scratch.chmod(0o700)  # host-private: the sandbox sees only the subtrees bound into it
    session = _Session(
        seed=seed, alpha=alpha, budget=budget, progress=progress, secrets=list(secrets), stop_early=stop_early
    )
    try:
        try:
            session.prepare(
                Path(package),
                Path(candidate),
                Path(hidden_inputs) if hidden_inputs else None,
                criteria,
                scratch,
                python_executable,
                runtime_paths,
                devices,
            )
            session.measure()
        except _Stop as stop:
            session.stop = stop
        except (ManifestError, CriteriaError, ArchiveError, ValueError) as error:
            session.stop = _Stop(ERROR, f"invalid package, candidate, inputs or criteria: {error}")
        except (SandboxError, OSError) as error:
            session.stop = _Stop(ERROR, f"infrastructure error: {error}")
        report = session.report(started_at, time.perf_counter() - clock)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if signing_key is not None:
        report.certificate = sign_report(report.to_dict(), signing_key)
    if progress is not None:
        progress(
            Progress("done", session.runs_done, 2 * budget, len(session.pairs), budget, *session.current_estimate())
        )
    return report


class _Session:
    def __init__(
        self,
        *,
        seed: int,
        alpha: float,
        budget: int,
        progress: ProgressCallback | None,
        secrets: list[str],
        stop_early: bool,
    ) -> None:
        self.seed = seed
        self.stop_early = stop_early
        self.alpha = alpha
        self.budget = budget
        self.progress = progress
        self.secrets = secrets
        self.rng = random.Random(seed)
        self.stop: _Stop | None = None
        self.records: list[RunRecord] = []
        self.pairs: list[Pair] = []
        self.runs_done = 0
        self.references: dict[str, Any] = {}
        self.outputs_compared = 0
        self.mismatches: list[dict[str, Any]] = []
        self.mismatched_outputs = 0
        self.scores: dict[str, Any] = {}
        self.scorer_failures: list[dict[str, Any]] = []
        self.manifest: Manifest | None = None
        self.criteria: Criteria | None = None
        self.criteria_raw: dict[str, Any] = {}
        self.decision: SequentialDecision | None = None
        self.sha: dict[str, str | None] = {"package": None, "candidate": None, "hidden_inputs": None}
        self.phase_seconds: dict[str, float] = {}
        self.python_executable = sys.executable
        self.hidden_used = False

    # ------------------------------------------------------------ setup

    def prepare(
        self,
        package: Path,
        candidate: Path,
        hidden: Path | None,
        criteria: dict[str, Any],
        scratch: Path,
        python_executable: str | None,
        runtime_paths: Sequence[Path] | None,
        devices: Sequence[str],
    ) -> None:
        began = time.perf_counter()
        self.criteria_raw = criteria
        self.criteria = Criteria.from_dict(criteria)
        for label, path in (("package", package), ("candidate", candidate), ("hidden inputs", hidden)):
            if path is not None and not path.exists():
                raise ArchiveError(f"{label} not found: {path}")
        self.package_dir = materialize(package, scratch / "package", require_manifest=True)
        self.candidate_dir = materialize(candidate, scratch / "candidate")
        self.sha["package"] = sha256_of(self.package_dir)
        self.sha["candidate"] = sha256_of(self.candidate_dir)
        self.manifest = manifest = load_manifest(self.package_dir)
        self.baseline_dir = self.package_dir / manifest.implementation
        suffix = manifest.input_suffix()
        self.public_inputs = list_inputs(self.package_dir / manifest.public_inputs, suffix)
        if hidden is not None:
            self.hidden_dir: Path | None = materialize(hidden, scratch / "hidden")
            self.sha["hidden_inputs"] = sha256_of(self.hidden_dir)
            self.hidden_inputs = list_inputs(self.hidden_dir, suffix)
            self.hidden_used = True
        else:
            self.hidden_dir = None
            self.hidden_inputs = self.public_inputs
        self.per_run = min(manifest.subset or len(self.hidden_inputs), len(self.hidden_inputs))
        self.criteria.check_against(
            mode=manifest.mode,
            requests_per_run=self.per_run,
            reported={m.name for m in manifest.reported_metrics},
            has_scorer=manifest.scorer is not None,
        )
        looks = stats.plan_looks(self.budget, alpha=self.alpha)
        self.decision = SequentialDecision(
            self.criteria,
            looks,
            {m.name: m.higher_is_better for m in manifest.reported_metrics},
            confidence=1.0 - 2.0 * self.alpha,
        )
        self.python_executable = python_executable or sys.executable
        self.executor = Executor(
            manifest, list(runtime_paths or default_runtime_paths()), self.python_executable, scratch, devices
        )
        self.scratch = scratch
        self.phase_seconds["setup"] = time.perf_counter() - began

    # ------------------------------------------------------------ measurement

    def measure(self) -> None:
        assert self.manifest is not None and self.decision is not None
        began = time.perf_counter()
        for _index in range(self.manifest.warmup_runs):
            order = self.rng.sample(self.public_inputs, len(self.public_inputs))
            baseline = self._run("baseline", "warmup", -1, 0, order)
            if not baseline.ok:
                raise _Stop(ERROR, f"the baseline failed in warm-up on the public inputs: {baseline.error}")
            candidate = self._run("candidate", "warmup", -1, 1, self.rng.sample(order, len(order)))
            if not candidate.ok:
                raise _Stop(FAIL, f"the candidate failed in warm-up on the public inputs: {candidate.error}")
            self._check_outputs(baseline, candidate, public=True)
        self.phase_seconds["warmup"] = time.perf_counter() - began
        began = time.perf_counter()
        try:
            for pair_index in range(self.budget):
                subset = self.rng.sample(self.hidden_inputs, self.per_run)
                baseline_first = self.rng.random() < 0.5
                runs: dict[str, RunRecord] = {}
                for position, role in enumerate(
                    ("baseline", "candidate") if baseline_first else ("candidate", "baseline")
                ):
                    order = self.rng.sample(subset, len(subset))
                    record = self._run(role, "measure", pair_index, position, order)
                    if not record.ok:
                        if role == "candidate":
                            raise _Stop(FAIL, f"a candidate run failed: {record.error}")
                        raise _Stop(ERROR, f"a baseline run failed (infrastructure or package problem): {record.error}")
                    runs[role] = record
                self._check_outputs(runs["baseline"], runs["candidate"], public=False)
                self.pairs.append(Pair(pair_index, runs["baseline"], runs["candidate"]))
                try:
                    self.decision.update(self.pairs)
                except MissingMeasurement as error:
                    raise _Stop(ERROR, f"a metric could not be measured: {error}") from error
                self._notify("measure")
                if self.stop_early and self.decision.all_decided():
                    break
        finally:
            self.phase_seconds["measure"] = time.perf_counter() - began

    def _run(self, role: str, phase: str, pair: int, position: int, order: Sequence[InputItem]) -> RunRecord:
        implementation = self.baseline_dir if role == "baseline" else self.candidate_dir
        record = RunRecord(
            role=role,
            phase=phase,
            pair=pair,
            position=position,
            input_ids=[i.id for i in order],
            public_inputs=phase == "warmup" or not self.hidden_used,
        )
        self.executor.run(implementation, order, record, self.rng)
        self.records.append(record)
        if phase == "measure":
            self.runs_done += 1
        self._notify(phase)
        if role == "candidate" and record.ok:
            # A run that failed on its own (a fork bomb stopped by the process limit, say) keeps its
            # own reason; what it attempted is listed all the same.
            self._enforce_sandbox_policy(record)
        return record

    def _enforce_sandbox_policy(self, record: RunRecord) -> None:
        """Stop at the candidate's first run that attempted what the job's policy fails: whatever it
        measures, the company does not pay for code that probes its verifier. The reason names the
        categories only (the counts stay in the report: the candidate chose them)."""
        assert self.criteria is not None
        refused = violations_refused(record.violations, self.criteria.sandbox_policy)
        if refused:
            where = "a warm-up run on the public inputs" if record.phase == "warmup" else "a measured run"
            raise _Stop(
                FAIL,
                f"{SANDBOX_VIOLATION}: the candidate attempted what its sandbox forbids ({', '.join(refused)}) "
                f"in {where}; the job's sandbox_policy fails a verification for it",
                code=SANDBOX_VIOLATION,
            )

    def _check_outputs(self, baseline: RunRecord, candidate: RunRecord, *, public: bool) -> None:
        assert self.criteria is not None
        rule = self.criteria.correctness
        for input_id, value in baseline.outputs.items():
            if not input_id.endswith("#repeat"):
                self.references.setdefault(("public:" if public else "") + input_id, value)
        if rule.mode == "scorer":
            self._check_scores(baseline, candidate, public=public)
            return
        for key, value in candidate.outputs.items():
            input_id = key.removesuffix("#repeat")
            reference = self.references.get(("public:" if public else "") + input_id)
            if reference is None:
                continue
            self.outputs_compared += 1
            differences = correctness.compare(input_id, reference, value, rule)
            if differences:
                self.mismatched_outputs += 1
                if len(self.mismatches) < correctness.MAX_DIFFERENCES:
                    self.mismatches.extend(
                        {**d.to_dict(), "inputs": "public" if public else "hidden"}
                        for d in differences[: correctness.MAX_DIFFERENCES - len(self.mismatches)]
                    )
        if self.mismatched_outputs:
            first = self.mismatches[0]
            # The reason is certified and shown to the engineer: it holds no values (the candidate's are
            # its own choice) and, for hidden inputs, neither the input's name (the company chose it)
            # nor the output's keys (the baseline's, on that input). All of it stays in the report's
            # correctness section for the job's owner.
            if public:
                raise _Stop(
                    FAIL,
                    f"correctness criterion failed ({rule.mode}): output for public input "
                    f"{first['input_id']!r} differs at {first['where']}",
                )
            raise _Stop(
                FAIL,
                f"correctness criterion failed ({rule.mode}): an output for a hidden input "
                f"differs at {first['position']}",
            )

    def _check_scores(self, baseline: RunRecord, candidate: RunRecord, *, public: bool) -> None:
        assert self.criteria is not None and self.manifest is not None
        key = "public" if public else "hidden"
        if key not in self.scores:
            self.scores[key] = {"baseline": self._score(baseline.outputs, public), "candidate": []}
        score = self._score(candidate.outputs, public)
        self.scores[key]["candidate"].append(score)
        self.outputs_compared += len([k for k in candidate.outputs if not k.endswith("#repeat")])
        base = self.scores[key]["baseline"]
        ratio = score / base if base else (math.inf if score > 0 else 1.0)
        if ratio < self.criteria.correctness.min_score_ratio:
            self.mismatched_outputs += 1
            minimum = f"minimum {self.criteria.correctness.min_score_ratio:.2%}"
            if not public:
                # The candidate chooses its outputs, hence its score on the hidden inputs: a number it
                # could make carry them. The scores stay in the report for the job's owner.
                raise _Stop(
                    FAIL,
                    f"correctness criterion failed (scorer): the candidate's score on the "
                    f"hidden inputs is below the baseline's ({minimum})",
                )
            raise _Stop(
                FAIL,
                f"correctness criterion failed (scorer): candidate score {score:.6g} is "
                f"{ratio:.2%} of the baseline's {base:.6g} ({minimum})",
            )

    def _score(self, outputs: dict[str, Any], public: bool) -> float:
        """Run the package's scorer (sandboxed too: it is the company's code) over one run's outputs."""
        assert self.manifest is not None and self.manifest.scorer is not None
        stage = Path(tempfile.mkdtemp(prefix="score-", dir=self.scratch))
        stage.chmod(0o755)
        (stage / "outputs").mkdir(mode=0o755)
        suffix = self.manifest.output_suffix()
        for input_id, value in outputs.items():
            if input_id.endswith("#repeat"):
                continue
            path = stage / "outputs" / f"{input_id}{suffix}"
            path.write_bytes(_encode_output(value, self.manifest.output_format))
            path.chmod(0o644)
        references = (
            (self.package_dir / self.manifest.public_inputs / REFERENCES_DIR)
            if public
            else ((self.hidden_dir / REFERENCES_DIR) if self.hidden_dir else None)
        )
        if references is not None and references.is_dir():
            shutil.copytree(references, stage / "reference")
            for path in [stage / "reference", *(stage / "reference").rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
        command = list(self.manifest.scorer)
        if command[0] == "python":
            command[0] = self.python_executable
        spec = SandboxSpec(
            command=command,
            implementation=self.package_dir,
            runtime_paths=self.executor.runtime_paths,
            limits=self.manifest.limits,
            inputs=stage,
            devices=self.executor.devices,
            env={"SPEEDPROOF_INPUTS": INPUTS_MOUNT},
        )
        with SandboxProcess(spec) as sandbox:
            outcome = sandbox.finish()
        shutil.rmtree(stage, ignore_errors=True)
        # The scorer reads the candidate's outputs, so what it says can quote them: its own words go
        # to the owner's logs, the certified reason keeps to fixed text.
        if not outcome.ok:
            self._log_scorer_failure(outcome, public, None)
            raise _Stop(ERROR, f"the scorer failed: exit {outcome.exit_code} {outcome.limit_broken or ''}")
        try:
            return float(json.loads(outcome.stdout.decode().strip().splitlines()[-1])["score"])
        except (ValueError, KeyError, IndexError, TypeError) as error:
            self._log_scorer_failure(outcome, public, f"{type(error).__name__}: {error}")
            raise _Stop(ERROR, 'the scorer did not print {"score": number} on its last line') from error

    def _log_scorer_failure(self, outcome: RunOutcome, public: bool, error: str | None) -> None:
        self.scorer_failures.append(
            {
                "role": "scorer",
                "phase": "warmup" if public else "measure",
                "stdout": scrub(_text_tail(outcome.stdout), self.secrets),
                "stderr": scrub(_text_tail(outcome.stderr), self.secrets),
                **({"error": scrub(error, self.secrets)} if error else {}),
            }
        )

    # ------------------------------------------------------------ progress and report

    def current_estimate(self) -> tuple[float | None, tuple[float, float] | None]:
        if self.decision is None:
            return None, None
        for state in self.decision.states:
            if state.criterion.kind == "speedup":
                return state.estimate, state.interval
        return None, None

    def _notify(self, phase: str) -> None:
        if self.progress is None:
            return
        self.progress(
            Progress(phase, self.runs_done, 2 * self.budget, len(self.pairs), self.budget, *self.current_estimate())
        )

    def report(self, started_at: datetime, elapsed: float) -> Report:
        decision_state = self.decision
        reason_code = None
        if self.stop is not None:
            verdict, reason, reason_code = self.stop.decision, self.stop.reason, self.stop.code
        elif decision_state is not None:
            verdict = decision_state.overall()
            reason = _reason(verdict, decision_state, len(self.pairs), self.budget)
        else:
            verdict, reason = ERROR, "the verification did not start"
        tier = None
        if verdict == PASS and decision_state is not None:
            chosen = decision_state.tier()
            if chosen is not None:
                tier = {"speedup": chosen.speedup, "fraction": chosen.fraction}
            elif decision_state.tiers:
                verdict, reason = FAIL, "the speedup criterion passed but no payout tier was reached"
        manifest = self.manifest
        return Report(
            decision=verdict,
            reason=reason,
            criteria=settle_undecided([s.to_dict() for s in decision_state.states], verdict) if decision_state else [],
            tier=tier,
            tiers=settle_undecided([t.to_dict() for t in decision_state.tiers], verdict) if decision_state else [],
            correctness={
                "mode": self.criteria.correctness.mode if self.criteria else None,
                "rule": self.criteria.correctness.to_dict() if self.criteria else None,
                "passed": self.mismatched_outputs == 0 and self.outputs_compared > 0,
                "outputs_compared": self.outputs_compared,
                "mismatched_outputs": self.mismatched_outputs,
                "first_differences": self.mismatches,
                **({"scores": self.scores} if self.scores else {}),
            },
            runs={
                "pairs": len(self.pairs),
                "total": self.runs_done,
                "warmup": len([r for r in self.records if r.phase == "warmup"]),
                "budget_pairs": self.budget,
                "looks": decision_state.looks_done if decision_state else [],
                "planned_looks": [lk.pairs for lk in decision_state.looks] if decision_state else [],
            },
            measurements=[r.to_dict() for r in self.records],
            sha256=self.sha,
            environment=environment_fingerprint(self.python_executable),
            timings={
                "started_at": started_at.isoformat(),
                "finished_at": datetime.now(UTC).isoformat(),
                "total_seconds": elapsed,
                **{f"{phase}_seconds": seconds for phase, seconds in self.phase_seconds.items()},
            },
            blocked_actions=self._blocked(),
            sandbox_violations=violations_summarise(
                self.records, self.criteria.sandbox_policy if self.criteria else default_sandbox_policy()
            ),
            reason_code=reason_code,
            logs=self._logs(),
            anti_gaming={
                **caching_flag(self.pairs),
                "repeat_fraction": manifest.repeat_fraction if manifest else None,
                "fresh_order_and_seed_per_run": True,
            },
            settings={
                "seed": self.seed,
                "alpha_per_side": self.alpha,
                "budget_pairs": self.budget,
                "confidence": 1.0 - 2.0 * self.alpha,
                "inputs": "hidden" if self.hidden_used else "public",
                "inputs_per_run": getattr(self, "per_run", None),
                "looks_weights": {
                    "early": stats.EARLY_LOOK_WEIGHT,
                    "late_decay": stats.LATE_LOOK_DECAY,
                    "late_from_pairs": stats.LATE_LOOKS_FROM,
                },
                "test": "sign",
                "min_pass_pairs": min(stats.MIN_PASS_PAIRS, self.budget),
            },
            criteria_spec=self.criteria.to_dict() if self.criteria else self.criteria_raw,
            package={
                "name": manifest.name,
                "mode": manifest.mode,
                "hardware_class": manifest.hardware_class,
                "reported_metrics": [m.name for m in manifest.reported_metrics],
            }
            if manifest
            else {},
        )

    def _blocked(self) -> list[dict[str, Any]]:
        counts: dict[tuple[str, str], int] = {}
        for record in self.records:
            for action in record.blocked:
                key = (record.role, action)
                counts[key] = counts.get(key, 0) + 1
        observed = [{"role": role, "action": action, "runs": n} for (role, action), n in sorted(counts.items())]
        return observed + [{"role": "policy", "action": action, "runs": None} for action in sandbox_policy()]

    def _logs(self) -> list[dict[str, Any]]:
        """Logs of the warm-up runs (public inputs), and the end of failed runs' stderr with what went
        wrong in the implementation's words (``error``). They are for the job's owner only (the
        platform withholds them from the engineer): a candidate could print the hidden inputs."""
        logs = []
        for record in self.records:
            error = {"error": scrub(record.error_detail, self.secrets)} if record.error_detail else {}
            if record.phase == "warmup":
                logs.append(
                    {
                        "role": record.role,
                        "phase": record.phase,
                        "stdout": scrub(record.stdout_tail, self.secrets),
                        "stderr": scrub(record.stderr_tail, self.secrets),
                        **error,
                    }
                )
            elif not record.ok:
                logs.append(
                    {
                        "role": record.role,
                        "phase": record.phase,
                        "pair": record.pair,
                        "stdout": "",
                        "stderr": scrub(record.stderr_tail[-FAILED_RUN_LOG_CHARS:], self.secrets),
                        **error,
                    }
                )
        return logs + self.scorer_failures


def _reason(verdict: str, state: SequentialDecision, pairs: int, budget: int) -> str:
    if verdict == PASS:
        return f"all criteria passed after {pairs} pairs"
    if verdict == FAIL:
        failed = [s.criterion.label for s in state.states if s.decision == FAIL]
        return f"criterion failed after {pairs} pairs: {'; '.join(failed)}"
    undecided = [s.criterion.label for s in state.states if s.decision != PASS]
    return f"run budget of {budget} pairs spent without a decision on: {'; '.join(undecided)}"


def _text_tail(data: bytes) -> str:
    return data[-FAILED_RUN_LOG_CHARS:].decode("utf-8", "replace")


def _encode_output(value: Any, output_format: str) -> bytes:
    if output_format == "json":
        return json.dumps(value).encode()
    if output_format == "npy":
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        return buffer.getvalue()
    return bytes(value)


__all__ = ["run_verification", "Progress", "ProgressCallback", "DEFAULT_BUDGET_PAIRS"]
