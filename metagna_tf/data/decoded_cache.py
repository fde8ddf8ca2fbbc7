"""Decoded image sets kept in memory and on disk, so a dataset is decoded once per machine.

Decoding Omniglot's 4840 minimal-set PNGs takes 5-10 s, and every command (training reads
two splits) did it again. ``cached(kind, sources, options, decode)`` returns ``decode()``'s
``{set name: {class key: uint8 array}}`` from

1. this process's memory (arrays read-only: callers copy before changing them), else
2. ``<cache dir>/<kind>-<fingerprint>.npz``, else
3. ``decode()``, written to that file atomically (a temporary file, then a rename).

The fingerprint covers the sources (a file's size and sha256; a folder's relative paths,
sizes and modification times), the decoding options and ``FORMAT``: any change decodes
again. The cache dir is ``$METAGNA_CACHE_DIR``, else ``$XDG_CACHE_HOME/metagna_tf``, else
``~/.cache/metagna_tf``; ``METAGNA_CACHE_DIR=off`` keeps nothing on disk. A cache file that
can't be read or written costs a warning and a decode, never the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1  # bump when decoding changes what the same files give
OFF = "off"

Decoded = dict[str, dict[str, np.ndarray]]
_memory: dict[str, Decoded] = {}


def cache_dir() -> Path | None:
    value = os.environ.get("METAGNA_CACHE_DIR")
    if value:
        return None if value.lower() == OFF else Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "metagna_tf"


def fingerprint(sources: Iterable[Path], options: dict) -> str:
    h = hashlib.sha256(json.dumps({"format": FORMAT, "options": options},
                                  sort_keys=True).encode())
    for source in sources:
        source = Path(source)
        if source.is_file():
            h.update(f"file {source.name} {source.stat().st_size}\n".encode())
            with source.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        elif source.is_dir():
            h.update(f"dir {source.name}\n".encode())
            for path in sorted(p for p in source.rglob("*") if p.is_file()):
                st = path.stat()
                h.update(f"{path.relative_to(source)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def cached(kind: str, sources: Iterable[Path], options: dict,
           decode: Callable[[], Decoded]) -> Decoded:
    key = f"{kind}-{fingerprint(sources, options)}"
    if key in _memory:
        return _memory[key]
    folder = cache_dir()
    path = None if folder is None else folder / f"{key}.npz"
    decoded = _read(path) if path is not None and path.is_file() else None
    if decoded is None:
        decoded = decode()
        if path is not None:
            _write(path, decoded)
    for classes in decoded.values():
        for arr in classes.values():
            arr.setflags(write=False)
    _memory[key] = decoded
    return decoded


def _read(path: Path) -> Decoded | None:
    try:
        with path.open("rb") as f, np.load(f, allow_pickle=False) as npz:
            index = json.loads(str(npz["index"]))
            images = npz["images"]
        out: Decoded = {}
        start = 0
        for set_name, class_key, count in index:
            out.setdefault(set_name, {})[class_key] = images[start:start + count]
            start += count
        if start != len(images):
            raise ValueError(f"index counts {start} images, the file holds {len(images)}")
        return out
    except Exception as err:  # noqa: BLE001 - truncated, foreign or old: decode again
        log.warning("%s: unreadable decoded-image cache (%s); decoding the images again",
                    path, err)
        return None


def _write(path: Path, decoded: Decoded) -> None:
    index = [[s, k, len(arr)] for s, classes in decoded.items() for k, arr in classes.items()]
    arrays = [arr for classes in decoded.values() for arr in classes.values()]
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".partial")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, index=np.array(json.dumps(index)),
                     images=np.concatenate(arrays) if arrays else np.zeros((0,), np.uint8))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 otherwise
        os.replace(tmp, path)
        log.info("decoded images cached in %s", path)
    except OSError as err:
        log.warning("%s: could not write the decoded-image cache (%s); set METAGNA_CACHE_DIR "
                    "to a writable folder, or to 'off'", path, err)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
