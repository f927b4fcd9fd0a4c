"""Fixtures for the verification runner's tests: plain Python, real bwrap sandboxes, no database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runner_testlib import CRITERIA, EXAMPLE


@pytest.fixture(scope="session")
def example_package() -> Path:
    return EXAMPLE / "package"


@pytest.fixture(scope="session")
def candidates() -> Path:
    return EXAMPLE / "candidates"


@pytest.fixture
def criteria() -> dict:
    return json.loads(json.dumps(CRITERIA))


@pytest.fixture(scope="session")
def hidden_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Hidden inputs from the example's generator, outside the package (like on a real host)."""
    from generate_inputs import generate

    directory = tmp_path_factory.mktemp("hidden")
    generate(directory, count=8, rows=16, seed=987)
    return directory
