"""Unpacking packages and candidates safely, and fingerprinting them."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from .archive_rules import ArchiveLimits, ArchiveViolation, archive_walk


class ArchiveError(ValueError):
    def __init__(self, message: str, *, code: str = "archive_invalid"):
        super().__init__(message)
        self.code = code


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and (name.endswith((".tar.gz", ".tgz", ".tar", ".zip")))


def materialize(
    source: Path, destination: Path, *, require_manifest: bool = False, limits: ArchiveLimits | None = None
) -> Path:
    """``source`` as a directory under ``destination``: archives are unpacked under the rules the platform
    checked them against at upload (``archive_rules``: regular files and directories only, no absolute
    paths, ``..``, links or devices, size caps; a package's manifest), directories copied, so later changes
    to the source cannot change what is measured. Everything ends up world-readable and read-only, as the
    sandbox's unprivileged uid needs."""
    destination.mkdir(parents=True, exist_ok=True)
    target = destination / "root"
    if source.is_dir():
        # Links are copied as links and then deleted: following them would let a directory smuggle
        # host files (read by the root runner) into the sandbox.
        shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    elif is_archive(source):
        _unpack(source, target, require_manifest=require_manifest, limits=limits)
    else:
        raise ArchiveError(f"{source}: not a directory or a .tar.gz/.tgz/.tar/.zip archive")
    _normalise_permissions(target)
    return _single_top_directory(target)


def _unpack(source: Path, target: Path, *, require_manifest: bool, limits: ArchiveLimits | None) -> None:
    target.mkdir(parents=True)
    try:
        with open(source, "rb") as handle:
            archive_walk(
                handle,
                size=source.stat().st_size,
                limits=limits or ArchiveLimits.from_environment(),
                require_manifest=require_manifest,
                destination=target,
            )
    except ArchiveViolation as violation:
        raise ArchiveError(f"{source.name}: {violation.message} ({violation.code})", code=violation.code) from violation


def _normalise_permissions(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in list(dirnames):
            if os.path.islink(os.path.join(dirpath, name)):
                os.unlink(os.path.join(dirpath, name))
                dirnames.remove(name)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                os.unlink(path)
                continue
            executable = os.stat(path).st_mode & 0o111
            os.chmod(path, 0o755 if executable else 0o644)


def _single_top_directory(root: Path) -> Path:
    """Archives made with ``tar czf x.tar.gz dir/`` have one top directory; look inside it."""
    entries = [e for e in root.iterdir() if not e.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and not (root / "speedproof.toml").exists():
        return entries[0]
    return root


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a directory's tree (sorted relative paths, modes' executable bit and
    contents), so the same content gives the same fingerprint however it was delivered."""
    digest = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        relative = file.relative_to(path).as_posix()
        digest.update(relative.encode() + b"\0")
        digest.update(b"x" if os.access(file, os.X_OK) else b"-")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()
