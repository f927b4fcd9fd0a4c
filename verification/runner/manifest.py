"""Benchmark package format v1: the TOML manifest at the package root (see docs/benchmark-format.md)."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .limits import Limits

MANIFEST_NAME = "speedproof.toml"
SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")
FORMAT_VERSION = 1
RUN_MODES = ("stream", "process")
DATA_FORMATS = ("json", "npy", "bytes")


class ManifestError(ValueError):
    """The package or its manifest is malformed."""


@dataclass(frozen=True)
class ReportedMetric:
    name: str
    higher_is_better: bool = False


@dataclass(frozen=True)
class Manifest:
    name: str
    mode: str
    command: tuple[str, ...]
    implementation: str
    public_inputs: str
    input_format: str
    output_format: str
    scorer: tuple[str, ...] | None
    subset: int
    concurrency: int
    rate: float  # requests per second sent on a fixed schedule; 0: next request when one is free
    repeat_fraction: float
    warmup_runs: int
    limits: Limits
    reported_metrics: tuple[ReportedMetric, ...] = field(default_factory=tuple)
    hardware_class: str = "cpu"

    def reported(self, name: str) -> ReportedMetric | None:
        return next((m for m in self.reported_metrics if m.name == name), None)

    def input_suffix(self) -> str:
        return {"json": ".json", "npy": ".npy", "bytes": ".bin"}[self.input_format]

    def output_suffix(self) -> str:
        return {"json": ".json", "npy": ".npy", "bytes": ".bin"}[self.output_format]


def load_manifest(package_dir: Path) -> Manifest:
    path = package_dir / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{MANIFEST_NAME} not found at the package root")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ManifestError(f"{MANIFEST_NAME}: {error}") from error
    manifest = parse_manifest(raw)
    for relative in (manifest.implementation, manifest.public_inputs):
        if not (package_dir / relative).is_dir():
            raise ManifestError(f"{MANIFEST_NAME}: directory {relative!r} not found in the package")
    return manifest


def parse_manifest(raw: dict[str, Any]) -> Manifest:
    _validate_against_schema(raw)
    stream = raw.get("stream", {})
    inputs = raw.get("inputs", {})
    outputs = raw.get("outputs", {})
    limits = raw.get("limits", {})
    defaults = Limits()
    mib = 1 << 20
    return Manifest(
        name=raw["name"],
        mode=raw["mode"],
        command=tuple(raw["command"]),
        implementation=raw.get("implementation", "implementation"),
        public_inputs=raw.get("public_inputs", "inputs/public"),
        input_format=inputs.get("format", "json"),
        output_format=outputs.get("format", "json"),
        scorer=tuple(raw["scorer"]) if "scorer" in raw else None,
        subset=int(inputs.get("subset", 0)),
        concurrency=int(stream.get("concurrency", 1)),
        rate=float(stream.get("rate", 0.0)),
        repeat_fraction=float(stream.get("repeat_fraction", 0.1)),
        warmup_runs=int(raw.get("warmup_runs", 1)),
        limits=Limits(
            wall_seconds=float(limits.get("wall_seconds", defaults.wall_seconds)),
            memory_bytes=int(limits.get("memory_mb", defaults.memory_bytes // mib)) * mib,
            max_processes=int(limits.get("max_processes", defaults.max_processes)),
            max_file_bytes=int(limits.get("max_file_mb", defaults.max_file_bytes // mib)) * mib,
            max_open_files=int(limits.get("max_open_files", defaults.max_open_files)),
            scratch_bytes=int(limits.get("scratch_mb", defaults.scratch_bytes // mib)) * mib,
            outputs_bytes=int(limits.get("outputs_mb", defaults.outputs_bytes // mib)) * mib,
        ),
        reported_metrics=tuple(
            ReportedMetric(m["name"], bool(m.get("higher_is_better", False))) for m in raw.get("reported_metrics", [])
        ),
        hardware_class=raw.get("hardware_class", "cpu"),
    )


def _validate_against_schema(raw: dict[str, Any]) -> None:
    """A small validator for the subset of JSON Schema that ``manifest.schema.json`` uses, so the
    runner needs no jsonschema dependency and the schema file stays the single definition."""
    schema = json.loads(SCHEMA_PATH.read_text())
    errors: list[str] = []
    _check(raw, schema, "manifest", errors)
    if errors:
        raise ManifestError("; ".join(errors))


def _check(value: Any, schema: dict[str, Any], where: str, errors: list[str]) -> None:
    kind = schema.get("type")
    type_ok = {
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        None: True,
    }[kind]
    if not type_ok:
        errors.append(f"{where}: expected {kind}")
        return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: must be one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: must be {schema['const']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: must be <= {schema['maximum']}")
    if isinstance(value, str) and "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{where}: must not be empty")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{where}: needs at least {schema['minItems']} item(s)")
        for index, item in enumerate(value):
            _check(item, schema.get("items", {}), f"{where}[{index}]", errors)
    if isinstance(value, dict):
        for required in schema.get("required", []):
            if required not in value:
                errors.append(f"{where}: missing {required!r}")
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                _check(item, properties[key], f"{where}.{key}", errors)
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: unknown key {key!r}")
