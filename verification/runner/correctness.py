"""Comparing a candidate's output with the baseline's output for the same input."""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .criteria import Correctness

MAX_DIFFERENCES = 5


class OutputDecodeError(ValueError):
    pass


@dataclass(frozen=True)
class Difference:
    input_id: str
    where: str
    expected: str
    actual: str
    # ``where`` with the expected output's dict keys replaced by their order (``$.<key 0>[3]``), or None
    # when ``where`` names no keys: the baseline's keys on a hidden input can carry that input's content,
    # positions cannot.
    position: str | None = None

    def to_dict(self) -> dict[str, str]:
        return {
            "input_id": self.input_id,
            "where": self.where,
            "position": self.where if self.position is None else self.position,
            "expected": self.expected,
            "actual": self.actual,
        }


def decode_file(data: bytes, output_format: str) -> Any:
    """An output file (process mode) as a comparable value."""
    if output_format == "json":
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise OutputDecodeError(f"not valid JSON: {error}") from error
    if output_format == "npy":
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as error:
            # (a header announcing a huge shape, say, fails with MemoryError, not ValueError)
            raise OutputDecodeError(f"not a valid .npy array: {error}") from error
    return bytes(data)


def decode_stream_data(data: Any, output_format: str) -> Any:
    """A response's ``data`` (stream mode): JSON as is; binary formats arrive base64-encoded."""
    if output_format == "json":
        return data
    if not isinstance(data, str):
        raise OutputDecodeError("binary output must be a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (ValueError, TypeError) as error:
        raise OutputDecodeError(f"invalid base64: {error}") from error
    return decode_file(raw, output_format)


def compare(input_id: str, expected: Any, actual: Any, rule: Correctness) -> list[Difference]:
    """Up to ``MAX_DIFFERENCES`` differences; empty when the outputs agree under the rule."""
    differences: list[Difference] = []
    if rule.mode == "numeric":
        _compare_numeric(input_id, "$", "$", expected, actual, rule, differences)
    else:
        _compare_exact(input_id, expected, actual, differences)
    return differences[:MAX_DIFFERENCES]


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        text = f"array(shape={value.shape}, dtype={value.dtype})"
    elif isinstance(value, bytes):
        text = f"{len(value)} bytes {value[:16].hex()}"
    else:
        text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _compare_exact(input_id: str, expected: Any, actual: Any, out: list[Difference]) -> None:
    if isinstance(expected, np.ndarray) or isinstance(actual, np.ndarray):
        if not (isinstance(expected, np.ndarray) and isinstance(actual, np.ndarray)):
            out.append(Difference(input_id, "$", _short(expected), _short(actual)))
            return
        if expected.shape != actual.shape or expected.dtype != actual.dtype:
            out.append(
                Difference(
                    input_id, "$.shape/dtype", f"{expected.shape} {expected.dtype}", f"{actual.shape} {actual.dtype}"
                )
            )
            return
        unequal = np.argwhere(expected != actual)
        for index in unequal[:MAX_DIFFERENCES]:
            key = tuple(int(i) for i in index)
            out.append(
                Difference(
                    input_id, f"$[{','.join(map(str, key))}]", repr(expected[key].item()), repr(actual[key].item())
                )
            )
        return
    if expected != actual or type(expected) is not type(actual) and not _both_numbers(expected, actual):
        out.append(Difference(input_id, "$", _short(expected), _short(actual)))


def _both_numbers(a: Any, b: Any) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))


def _as_numeric_array(value: Any) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value if value.dtype.kind in "biuf" else None
    if _both_numbers(value, 0) or isinstance(value, list):
        try:
            array = np.asarray(value, dtype=np.float64)
        except (ValueError, TypeError):
            return None
        return array
    return None


def _compare_numeric(
    input_id: str, where: str, position: str, expected: Any, actual: Any, rule: Correctness, out: list[Difference]
) -> None:
    if len(out) >= MAX_DIFFERENCES:
        return
    expected_array, actual_array = _as_numeric_array(expected), _as_numeric_array(actual)
    if expected_array is not None and actual_array is not None:
        if expected_array.shape != actual_array.shape:
            out.append(
                Difference(
                    input_id, f"{where}.shape", str(expected_array.shape), str(actual_array.shape), f"{position}.shape"
                )
            )
            return
        e = expected_array.astype(np.float64)
        a = actual_array.astype(np.float64)
        close = np.isclose(a, e, rtol=rule.rtol, atol=rule.atol, equal_nan=True)
        for index in np.argwhere(~close)[: MAX_DIFFERENCES - len(out)]:
            key = tuple(int(i) for i in index)
            suffix = f"[{','.join(map(str, key))}]" if key else ""
            out.append(
                Difference(
                    input_id, f"{where}{suffix}", repr(float(e[key])), repr(float(a[key])), f"{position}{suffix}"
                )
            )
        return
    if isinstance(expected, dict) and isinstance(actual, dict):
        if set(expected) != set(actual):
            out.append(
                Difference(
                    input_id, f"{where} keys", _short(sorted(expected)), _short(sorted(actual)), f"{position} keys"
                )
            )
            return
        for index, key in enumerate(expected):
            _compare_numeric(
                input_id, f"{where}.{key}", f"{position}.<key {index}>", expected[key], actual[key], rule, out
            )
        return
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            out.append(
                Difference(input_id, f"{where}.length", str(len(expected)), str(len(actual)), f"{position}.length")
            )
            return
        for i, (e, a) in enumerate(zip(expected, actual)):
            _compare_numeric(input_id, f"{where}[{i}]", f"{position}[{i}]", e, a, rule, out)
        return
    if isinstance(expected, float) and isinstance(actual, float) and math.isnan(expected) and math.isnan(actual):
        return
    if expected != actual:
        out.append(Difference(input_id, where, _short(expected), _short(actual), position))
