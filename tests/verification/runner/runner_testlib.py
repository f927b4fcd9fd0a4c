"""Helpers shared by the runner's tests (imported by name: this folder has no __init__.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "mlp"
CRITERIA = json.loads((EXAMPLE / "criteria.json").read_text())

if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
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
