"""The example MLP job of `examples/mlp`, packed as uploads: used by the demo data and the tests."""

import gzip
import importlib.util
import io
import json
import tarfile
import tempfile
from pathlib import Path

from django.conf import settings

EXAMPLE_DIR = Path(settings.BASE_DIR) / "examples" / "mlp"


def directory_tar_gz(directory: Path) -> bytes:
    """The same bytes for the same files, whenever it runs: artifacts are stored and cached by sha256, so an
    archive stamped with the clock or the checkout's file times would be a new artifact every time."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for path in sorted(directory.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                info = tarfile.TarInfo(str(path.relative_to(directory)))
                info.size = path.stat().st_size
                info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
                with path.open("rb") as content:
                    archive.addfile(info, content)
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
