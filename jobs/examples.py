"""The example MLP job of `examples/mlp`, packed as uploads: used by the demo data and the tests."""

import importlib.util
import io
import json
import tarfile
import tempfile
from pathlib import Path

from django.conf import settings

EXAMPLE_DIR = Path(settings.BASE_DIR) / "examples" / "mlp"


def directory_tar_gz(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.add(path, arcname=str(path.relative_to(directory)))
    return buffer.getvalue()


def example_criteria() -> dict:
    return json.loads((EXAMPLE_DIR / "criteria.json").read_text())


def example_package() -> bytes:
    return directory_tar_gz(EXAMPLE_DIR / "package")


def example_candidate(name: str) -> bytes:
    """One of `fast`, `wrong`, `unchanged`, `cheater`."""
    return directory_tar_gz(EXAMPLE_DIR / "candidates" / name)


def example_hidden_inputs(*, count: int = 8, seed: int = 20261128) -> bytes:
    spec = importlib.util.spec_from_file_location("example_mlp_inputs", EXAMPLE_DIR / "generate_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with tempfile.TemporaryDirectory() as scratch:
        module.generate(Path(scratch), count=count, rows=8, seed=seed)
        return directory_tar_gz(Path(scratch))
