"""One measured run of an implementation, in stream or process mode, inside a fresh sandbox."""

from __future__ import annotations

import base64
import json
import os
import random
import re
import secrets
import select
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import correctness
from .manifest import Manifest
from .sandbox import INPUTS_MOUNT, RunOutcome, SandboxProcess, SandboxSpec, read_outputs_tar

REFERENCES_DIR = "references"
MAX_RESPONSE_LINE_BYTES = 64 << 20
LOG_TAIL_BYTES = 2000
# How much of what an implementation said when it failed (its response, a decode error quoting its
# output) the owner's logs keep.
ERROR_DETAIL_CHARS = 200
STREAM_EXIT_GRACE_SECONDS = 2.0


JSON_LINES_SUFFIX = ".jsonl"


@dataclass(frozen=True)
class InputItem:
    id: str
    path: Path
    # An input read from one line of a JSON-lines file: its bytes (the line), kept in memory.
    data: bytes | None = None

    def read(self) -> bytes:
        return self.path.read_bytes() if self.data is None else self.data


def _json_lines(path: Path) -> list[InputItem]:
    """One input per non-blank line, id `<file stem>-<line number>`; a line that is not JSON is named by
    file and line only (hidden inputs' content never reaches an error)."""
    items = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except ValueError:
                raise ValueError(f"{path.name} line {number} is not one JSON value") from None
            items.append(InputItem(f"{path.name[: -len(JSON_LINES_SUFFIX)]}-{number}", path, line.strip()))
    return items


def list_inputs(directory: Path, suffix: str) -> list[InputItem]:
    """One input per file with the format's suffix (stem = id), and for JSON inputs one per line of each
    `*.jsonl` file (id `<stem>-<line>`); ``references/`` is for the scorer."""
    items = []
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            continue
        if path.name.endswith(suffix):
            items.append(InputItem(path.name[: -len(suffix)], path))
        elif suffix == ".json" and path.name.endswith(JSON_LINES_SUFFIX):
            items.extend(_json_lines(path))
    if not items:
        raise ValueError(f"no *{suffix} inputs in {directory}")
    duplicates = [item_id for item_id, count in Counter(item.id for item in items).items() if count > 1]
    if duplicates:
        raise ValueError(f"two inputs have the id {duplicates[0]!r} (a file and a JSON-lines line?)")
    return items


@dataclass
class RunRecord:
    role: str  # "baseline" | "candidate"
    phase: str  # "warmup" | "measure"
    pair: int
    position: int  # 0: first in its pair, 1: second
    input_ids: list[str]
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    peak_memory_bytes: int | None = None
    throughput: float | None = None
    latencies: dict[str, float] = field(default_factory=dict)  # first-seen requests, by input id
    repeat_latencies: dict[str, float] = field(default_factory=dict)
    # (position in the run's request order, is a repeat, latency) for the caching check
    request_log: list[tuple[int, bool, float]] = field(default_factory=list)
    reported: dict[str, list[float]] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    # The run's inputs are the package's public ones: errors may then name them.
    public_inputs: bool = False
    # A fixed category (it reaches the certified reason the engineer reads): an implementation sent a
    # hidden input could otherwise echo it into its error.
    error: str | None = None
    # The input and the implementation's own words, for the owner-only logs.
    error_detail: str | None = None
    limit_broken: str | None = None
    exit_code: int | None = None
    blocked: list[str] = field(default_factory=list)
    # Sandbox violations by category (counts the command chose: owner-only on hidden inputs).
    violations: dict[str, int] = field(default_factory=dict)
    # The privileged calls refused, by system call name (chosen by the command, like the counts).
    privileged_calls: dict[str, int] = field(default_factory=dict)
    # Categories the sandbox could not observe in this run (see sandbox.RunOutcome.unobserved).
    unobserved: list[str] = field(default_factory=list)
    stdout_tail: str = ""
    stderr_tail: str = ""
    seed: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def fail(self, category: str, *, item: InputItem | None = None, detail: str | None = None) -> None:
        self.error = category if item is None or not self.public_inputs else f"{category} (input {item.id!r})"
        self.error_detail = _owner_account(category, item, detail)

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "phase": self.phase,
            "pair": self.pair,
            "position": self.position,
            "inputs": len(self.input_ids),
            "seed": self.seed,
            "wall_seconds": self.wall_seconds,
            "cpu_seconds": self.cpu_seconds,
            "peak_memory_bytes": self.peak_memory_bytes,
            "throughput": self.throughput,
            "latencies_seconds": sorted(self.latencies.values()) if self.latencies else [],
            "repeat_latencies_seconds": sorted(self.repeat_latencies.values()) if self.repeat_latencies else [],
            "reported": dict(self.reported.items()),
            "error": self.error,
            "limit_broken": self.limit_broken,
            "exit_code": self.exit_code,
            "blocked": self.blocked,
            "violations": dict(self.violations),
            "privileged_calls": dict(self.privileged_calls),
        }


@dataclass
class Executor:
    manifest: Manifest
    runtime_paths: Sequence[Path]
    python_executable: str
    scratch_dir: Path
    devices: Sequence[str] = ()

    def command(self) -> list[str]:
        command = list(self.manifest.command)
        if command and command[0] == "python":
            command[0] = self.python_executable
        return command

    def run(
        self, implementation: Path, inputs: Sequence[InputItem], record: RunRecord, rng: random.Random
    ) -> RunRecord:
        # A fresh seed per run for implementations that need randomness (never the same twice, so
        # nothing can be precomputed for it).
        record.seed = rng.getrandbits(32)
        if self.manifest.mode == "stream":
            return self._run_stream(implementation, inputs, record, rng)
        return self._run_process(implementation, inputs, record)

    # ------------------------------------------------------------ process mode

    def _run_process(self, implementation: Path, inputs: Sequence[InputItem], record: RunRecord) -> RunRecord:
        stage = Path(tempfile.mkdtemp(prefix="inputs-", dir=self.scratch_dir))
        try:
            stage.chmod(0o755)
            suffix = self.manifest.input_suffix()
            for item in inputs:
                target = stage / f"{item.id}{suffix}"
                if item.data is not None:
                    target.write_bytes(item.data)
                else:
                    try:
                        os.link(item.path, target)
                    except OSError:
                        shutil.copyfile(item.path, target)
                target.chmod(0o644)
            order = stage / "ORDER"
            order.write_text("".join(f"{item.id}\n" for item in inputs))
            order.chmod(0o644)
            spec = SandboxSpec(
                command=self.command(),
                implementation=implementation,
                runtime_paths=self.runtime_paths,
                limits=self.manifest.limits,
                supervisor_python=self.python_executable,
                inputs=stage,
                with_outputs=True,
                devices=self.devices,
                env={
                    "SPEEDPROOF_INPUTS": INPUTS_MOUNT,
                    "SPEEDPROOF_OUTPUTS": "/outputs",
                    "SPEEDPROOF_SEED": str(record.seed),
                },
            )
            with SandboxProcess(spec) as sandbox:
                outcome = sandbox.finish()
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        self._apply_outcome(record, outcome)
        if record.error is not None:
            return record
        files = read_outputs_tar(outcome.outputs_tar, self.manifest.limits.outputs_bytes)
        out_suffix = self.manifest.output_suffix()
        for item in inputs:
            data = files.get(f"{item.id}{out_suffix}")
            if data is None:
                record.fail("no output for an input in /outputs", item=item, detail=f"{item.id}{out_suffix} missing")
                return record
            try:
                record.outputs[item.id] = correctness.decode_file(data, self.manifest.output_format)
            except correctness.OutputDecodeError as error:
                record.fail(
                    f"output could not be decoded as {self.manifest.output_format}", item=item, detail=str(error)
                )
                return record
        if "metrics.json" in files and self.manifest.reported_metrics:
            self._take_reported(record, files["metrics.json"])
        record.throughput = len(inputs) / record.wall_seconds if record.wall_seconds else None
        return record

    def _take_reported(self, record: RunRecord, data: bytes) -> None:
        try:
            metrics = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return
        if not isinstance(metrics, dict):
            return
        for declared in self.manifest.reported_metrics:
            value = metrics.get(declared.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                record.reported.setdefault(declared.name, []).append(float(value))

    # ------------------------------------------------------------ stream mode

    def _run_stream(
        self, implementation: Path, inputs: Sequence[InputItem], record: RunRecord, rng: random.Random
    ) -> RunRecord:
        requests = self._stream_requests(inputs, rng)
        spec = SandboxSpec(
            command=self.command(),
            implementation=implementation,
            runtime_paths=self.runtime_paths,
            limits=self.manifest.limits,
            supervisor_python=self.python_executable,
            devices=self.devices,
            env={"SPEEDPROOF_SEED": str(record.seed)},
        )
        with SandboxProcess(spec, stream=True) as sandbox:
            error: _StreamError | None = None
            try:
                self._serve(sandbox, requests, record)
            except _StreamError as problem:
                error = problem
            # A well-behaved server exits at end of input; the grace lets the launcher report what
            # was left running. After a failure there is nothing to wait for.
            outcome = sandbox.finish(
                kill=error is not None,
                timed_out=error is not None and error.timed_out,
                grace_seconds=STREAM_EXIT_GRACE_SECONDS,
            )
        self._apply_outcome(record, outcome, stream_error=error)
        return record

    def _stream_requests(self, inputs: Sequence[InputItem], rng: random.Random) -> list[tuple[str, InputItem, bool]]:
        """(opaque request id, input, is_repeat): ids are random so that an implementation cannot
        tell inputs or repeats apart by id."""
        requests = [(secrets.token_hex(8), item, False) for item in inputs]
        repeats = int(round(self.manifest.repeat_fraction * len(inputs)))
        for item in rng.sample(list(inputs), min(repeats, len(inputs))):
            # A repeat goes somewhere after its first occurrence.
            first = next(i for i, r in enumerate(requests) if r[1].id == item.id and not r[2])
            position = rng.randint(first + 1, len(requests))
            requests.insert(position, (secrets.token_hex(8), item, True))
        return requests

    def _encode(self, request_id: str, item: InputItem) -> bytes:
        raw = item.read()
        if self.manifest.input_format == "json":
            data: Any = json.loads(raw)
        else:
            data = base64.b64encode(raw).decode("ascii")
        return (json.dumps({"id": request_id, "data": data}, separators=(",", ":")) + "\n").encode()

    def _serve(self, sandbox: SandboxProcess, requests: list[tuple[str, InputItem, bool]], record: RunRecord) -> None:
        payloads = [self._encode(request_id, item) for request_id, item, _ in requests]
        by_id = {request_id: (item, repeat, position) for position, (request_id, item, repeat) in enumerate(requests)}
        deadline = sandbox.deadline()
        stdin_fd = sandbox.stdin.fileno()
        stdout_fd = sandbox.stdout.fileno()
        os.set_blocking(stdin_fd, False)
        sent_at: dict[str, float] = {}
        buffer = bytearray()
        next_request = 0
        pending_write = b""
        pending_id: str | None = None
        outstanding = 0
        first_sent: float | None = None
        last_received: float | None = None
        done = 0
        concurrency = max(1, self.manifest.concurrency)
        rate = self.manifest.rate
        self._await_ready(stdout_fd, buffer, deadline)
        schedule_start = time.perf_counter()
        scheduled_at: float | None = None
        while done < len(requests):
            now = time.perf_counter()
            wait_for_schedule = None
            if not pending_write and next_request < len(requests) and outstanding < concurrency:
                due = schedule_start + next_request / rate if rate > 0 else now
                if due <= now:
                    pending_id = requests[next_request][0]
                    pending_write = payloads[next_request]
                    scheduled_at = due
                    next_request += 1
                else:
                    wait_for_schedule = due - now
            wants_write = [stdin_fd] if pending_write else []
            remaining = deadline - now
            if remaining <= 0:
                raise _StreamError("timeout: the run exceeded its wall-clock limit", timed_out=True)
            timeout = remaining if wait_for_schedule is None else min(remaining, wait_for_schedule)
            readable, writable, _ = select.select([stdout_fd], wants_write, [], timeout)
            if writable and pending_write:
                try:
                    written = os.write(stdin_fd, pending_write)
                except BrokenPipeError as error:
                    raise _StreamError("the implementation closed its input (crashed?)") from error
                if pending_id is not None and pending_id not in sent_at:
                    now = time.perf_counter()
                    # At a fixed rate, latency counts from when the request was due, so a server
                    # that falls behind cannot hide its queueing (no coordinated omission).
                    sent_at[pending_id] = scheduled_at if rate > 0 and scheduled_at is not None else now
                    first_sent = first_sent if first_sent is not None else sent_at[pending_id]
                pending_write = pending_write[written:]
                if not pending_write:
                    outstanding += 1
                    pending_id = None
            if readable:
                chunk = os.read(stdout_fd, 1 << 20)
                received = time.perf_counter()
                if not chunk:
                    raise _StreamError("the implementation exited before answering every request")
                buffer += chunk
                if len(buffer) > MAX_RESPONSE_LINE_BYTES:
                    raise _StreamError("response line too long")
                while b"\n" in buffer:
                    line, _, rest = bytes(buffer).partition(b"\n")
                    buffer = bytearray(rest)
                    if not line.strip():
                        continue
                    self._take_response(line, by_id, sent_at, received, record)
                    outstanding -= 1
                    done += 1
                    last_received = received
        if first_sent is not None and last_received is not None:
            record.wall_seconds = last_received - first_sent
            record.throughput = len(requests) / record.wall_seconds if record.wall_seconds > 0 else None

    def _await_ready(self, stdout_fd: int, buffer: bytearray, deadline: float) -> None:
        """The implementation announces ``{"ready": true}`` once loaded; timing starts after it, so
        interpreter start and model loading are not part of any request's latency."""
        while b"\n" not in buffer:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise _StreamError(NEVER_READY, timed_out=True)
            readable, _, _ = select.select([stdout_fd], [], [], remaining)
            if readable:
                chunk = os.read(stdout_fd, 1 << 16)
                if not chunk:
                    raise _StreamError("the implementation exited before announcing it was ready")
                buffer += chunk
                if len(buffer) > MAX_RESPONSE_LINE_BYTES:
                    raise _StreamError("protocol error: ready line too long")
        line, _, rest = bytes(buffer).partition(b"\n")
        buffer[:] = rest
        try:
            ready = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise _StreamError('protocol error: the first line must be {"ready": true}') from error
        if not (isinstance(ready, dict) and ready.get("ready") is True):
            raise _StreamError('protocol error: the first line must be {"ready": true}')

    def _take_response(
        self,
        line: bytes,
        by_id: dict[str, tuple[InputItem, bool, int]],
        sent_at: dict[str, float],
        received: float,
        record: RunRecord,
    ) -> None:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError; deep nesting
            raise _StreamError(
                "protocol error: a response is not JSON",
                detail=f"{error}; the line began {line[:ERROR_DETAIL_CHARS]!r}",
            ) from error
        if not isinstance(message, dict) or "id" not in message:
            raise _StreamError("protocol error: a response lacks an 'id'", detail=repr(line[:ERROR_DETAIL_CHARS]))
        request_id = message["id"]
        # Ids are strings the runner made up: anything else (a list is not even hashable) is unknown.
        if not isinstance(request_id, str) or request_id not in by_id or request_id not in sent_at:
            raise _StreamError("protocol error: response to an unknown request id", detail=f"id {request_id!r}")
        item, repeat, position = by_id.pop(request_id)
        latency = received - sent_at[request_id]
        record.request_log.append((position, repeat, latency))
        if "error" in message:
            raise _StreamError("the implementation reported an error", item=item, detail=str(message["error"]))
        try:
            value = correctness.decode_stream_data(message.get("data"), self.manifest.output_format)
        except correctness.OutputDecodeError as error:
            raise _StreamError(
                f"output could not be decoded as {self.manifest.output_format}", item=item, detail=str(error)
            ) from error
        if repeat:
            record.repeat_latencies[item.id] = latency
            record.outputs.setdefault(f"{item.id}#repeat", value)
        else:
            record.latencies[item.id] = latency
            record.outputs[item.id] = value
        metrics = message.get("metrics")
        if isinstance(metrics, dict):
            for declared in self.manifest.reported_metrics:
                reported = metrics.get(declared.name)
                if isinstance(reported, (int, float)) and not isinstance(reported, bool):
                    record.reported.setdefault(declared.name, []).append(float(reported))

    # ------------------------------------------------------------ common

    def _apply_outcome(self, record: RunRecord, outcome: RunOutcome, stream_error: _StreamError | None = None) -> None:
        record.exit_code = outcome.exit_code
        record.cpu_seconds = outcome.cpu_seconds
        record.peak_memory_bytes = outcome.peak_memory_bytes
        record.limit_broken = outcome.limit_broken
        record.blocked = outcome.blocked
        record.violations = dict(outcome.violations)
        record.privileged_calls = dict(outcome.privileged_calls)
        record.unobserved = list(outcome.unobserved)
        record.stdout_tail = _tail(outcome.stdout) if self.manifest.mode == "process" else ""
        record.stderr_tail = _tail(outcome.stderr)
        if self.manifest.mode == "process":
            record.wall_seconds = outcome.wall_seconds
        if outcome.limit_broken == "timeout" and stream_error is not None and stream_error.category == NEVER_READY:
            # The wall-clock limit ran out only because the run never began: name what to fix.
            record.fail(NEVER_READY)
        elif outcome.limit_broken is not None:
            record.fail(_limit_category(outcome.limit_broken, self.manifest))
            if stream_error is not None:
                # What the runner saw before the limit (the implementation gone mid-request, say)
                # tells the owner where it broke.
                seen = _owner_account(stream_error.category, stream_error.item, stream_error.detail)
                record.error_detail = f"{record.error_detail}; the runner saw: {seen}"
        elif stream_error is not None:
            record.fail(stream_error.category, item=stream_error.item, detail=stream_error.detail)
        elif self.manifest.mode == "process" and outcome.exit_code != 0:
            record.fail(f"exited with status {outcome.exit_code}")
        if not record.ok and wraps_python_in_shell(self.manifest.command):
            record.error = f"{record.error}; {SHELL_WRAPPED_PYTHON}"


NEVER_READY = 'never announced ready: print {"ready": true} after start-up'
SHELL_WRAPPED_PYTHON = (
    "the command runs python through a shell, so the job's Python is not used: make python the command's first word"
)
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"}
_PYTHON_WORD = re.compile(r"(?<![\w./-])(?:\S*/)?python[0-9.]*(?![\w-])")


def wraps_python_in_shell(command: Sequence[str]) -> bool:
    """A shell that starts ``python`` finds it on the sandbox's PATH, not the job's interpreter, which
    only a command whose first word is ``python`` gets (Executor.command)."""
    return bool(command) and Path(command[0]).name in _SHELLS and any(_PYTHON_WORD.search(a) for a in command[1:])


def _limit_category(limit: str, manifest: Manifest) -> str:
    if limit == "memory":
        return f"memory limit: the run needed more than limits.memory_mb ({manifest.limits.memory_bytes >> 20} MiB)"
    return f"limit exceeded: {limit}"


class _StreamError(RuntimeError):
    """A stream run's failure: ``category`` is fixed text, ``detail`` what the implementation said."""

    def __init__(
        self, category: str, *, item: InputItem | None = None, detail: str | None = None, timed_out: bool = False
    ) -> None:
        super().__init__(category)
        self.category = category
        self.item = item
        self.detail = detail
        self.timed_out = timed_out


def _owner_account(category: str, item: InputItem | None, detail: str | None) -> str:
    parts = [category, *([f"input {item.id!r}"] if item is not None else []), *([_clip(detail)] if detail else [])]
    return ": ".join(parts)


def _clip(text: str) -> str:
    return text if len(text) <= ERROR_DETAIL_CHARS else text[:ERROR_DETAIL_CHARS] + " [...]"


def _tail(data: bytes) -> str:
    text = data[-LOG_TAIL_BYTES:].decode("utf-8", "replace")
    return ("[...] " if len(data) > LOG_TAIL_BYTES else "") + text


__all__ = ["Executor", "InputItem", "RunRecord", "list_inputs"]
