"""Unpacking packages and candidates safely, and fingerprinting them."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

MAX_UNPACKED_BYTES = 2 << 30
MAX_MEMBERS = 100_000


class ArchiveError(ValueError):
    pass


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and (name.endswith((".tar.gz", ".tgz", ".tar", ".zip")))


def materialize(source: Path, destination: Path) -> Path:
    """``source`` as a directory under ``destination``: archives are unpacked (regular files and
    directories only; absolute paths, ``..``, links and devices are refused), directories copied, so
    later changes to the source cannot change what is measured. Everything ends up world-readable
    and read-only, as the sandbox's unprivileged uid needs."""
    destination.mkdir(parents=True, exist_ok=True)
    target = destination / "root"
    if source.is_dir():
        # Links are copied as links and then deleted: following them would let a directory smuggle
        # host files (read by the root runner) into the sandbox.
        shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    elif is_archive(source):
        _unpack(source, target)
    else:
        raise ArchiveError(f"{source}: not a directory or a .tar.gz/.tgz/.tar/.zip archive")
    _normalise_permissions(target)
    return _single_top_directory(target)


def _safe_member_path(root: Path, name: str) -> Path:
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise ArchiveError(f"unsafe path in archive: {name!r}")
    return root.joinpath(*[p for p in pure.parts if p not in ("", ".")])


def _unpack(source: Path, target: Path) -> None:
    target.mkdir(parents=True)
    total = 0
    if source.name.lower().endswith(".zip"):
        with zipfile.ZipFile(source) as archive:
            members = archive.infolist()
            if len(members) > MAX_MEMBERS:
                raise ArchiveError("too many files in archive")
            for member in members:
                mode = (member.external_attr >> 16) & 0o170000
                if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    raise ArchiveError(f"links and special files are not allowed: {member.filename!r}")
                path = _safe_member_path(target, member.filename)
                if member.is_dir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                total += member.file_size
                if total > MAX_UNPACKED_BYTES:
                    raise ArchiveError("archive too large when unpacked")
                path.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        return
    with tarfile.open(source, mode="r:*") as archive:
        members = archive.getmembers()
        if len(members) > MAX_MEMBERS:
            raise ArchiveError("too many files in archive")
        for member in members:
            path = _safe_member_path(target, member.name)
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            if not member.isfile():
                raise ArchiveError(f"links and special files are not allowed: {member.name!r}")
            total += member.size
            if total > MAX_UNPACKED_BYTES:
                raise ArchiveError("archive too large when unpacked")
            path.parent.mkdir(parents=True, exist_ok=True)
            extracted = archive.extractfile(member)
            assert extracted is not None
            with extracted, open(path, "wb") as dst:
                shutil.copyfileobj(extracted, dst)
            if member.mode & 0o111:
                path.chmod(0o755)


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
