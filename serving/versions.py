"""TF Serving's model base path layout: ``BASE/<version>/``, written atomically.

TF Serving serves the highest numeric version under a base path and ignores
other names, so an export is written into a hidden temporary folder beside the
versions and renamed into place when complete: a server polling the base path
never sees a half-written version, and an existing version is never replaced.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

INFO_FILE = "model_info.json"  # in <version>/assets.extra/, which TF Serving ignores


def versions(base: str | Path) -> list[int]:
    base = Path(base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(base: str | Path) -> int:
    found = versions(base)
    return found[-1] + 1 if found else 1


def resolve_version_dir(path: str | Path) -> Path:
    """A version folder, or a base path (its highest version)."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    found = versions(path)
    if not found:
        raise FileNotFoundError(f"{path}: neither a SavedModel folder nor a model base path "
                                "with numeric version folders")
    return path / str(found[-1])


def read_info(path: str | Path) -> dict:
    """The ``model_info.json`` of a SavedModel version folder (or a base path's highest)."""
    info = resolve_version_dir(path) / "assets.extra" / INFO_FILE
    if not info.is_file():
        raise FileNotFoundError(f"{info}: missing; was this folder written by serving.export?")
    return json.loads(info.read_text())


@contextlib.contextmanager
def new_version_dir(base: str | Path, version: int | None = None) -> Iterator[tuple[Path, Path]]:
    """Yield ``(temporary folder to write, final folder)``; on success the first becomes the
    second, ``base/<version>``."""
    base = Path(base)
    version = next_version(base) if version is None else version
    if version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version}")
    final = base / str(version)
    if final.exists():
        raise FileExistsError(f"{final} already exists: choose another version (the next free "
                              f"one is {next_version(base)}) or another output folder")
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base))
    try:
        yield tmp, final
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
