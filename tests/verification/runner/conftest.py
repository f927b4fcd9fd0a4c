"""Fixtures for the verification runner's tests: plain Python, real bwrap sandboxes, no database."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "mlp"
CRITERIA = json.loads((EXAMPLE / "criteria.json").read_text())

sys.path.insert(0, str(EXAMPLE))


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
    generate(directory, count=6, rows=4, seed=987)
    return directory


def package_with(source: Path, target: Path, **manifest_overrides: str) -> Path:
    """A copy of ``source`` with ``key = value`` lines of the manifest replaced (TOML text)."""
    shutil.copytree(source, target)
    manifest = target / "speedproof.toml"
    text = manifest.read_text()
    for key, value in manifest_overrides.items():
        text, count = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert count == 1, f"{key} not in manifest"
    manifest.write_text(text)
    return target


def candidate_with(target: Path, serve_py: str) -> Path:
    target.mkdir(parents=True)
    shutil.copy(EXAMPLE / "package" / "implementation" / "mlp.py", target / "mlp.py")
    (target / "serve.py").write_text(serve_py)
    return target


def processes_matching(marker: str) -> list[str]:
    result = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return [line for line in result.stdout.splitlines() if marker in line and "ps -eo" not in line]
