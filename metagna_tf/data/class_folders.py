"""Shared by the image-file sources: class folders, parallel decoding, pool assembly.

Images are decoded and resized through ``images.decode_image`` (the one
conversion path) by a thread pool; PIL releases the GIL while decoding and
resizing, so this scales with cores. Results are written into one preallocated
uint8 array, so peak memory is the pool itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from metagna_tf.data.episodes import ClassPool
from metagna_tf.data.images import (
    ImageError,
    ImageOptions,
    decode_image,
    is_image_file,
    to_model_array,
)

log = logging.getLogger(__name__)

# (file name for errors, function returning the encoded bytes)
Item = tuple[str, Callable[[], bytes]]


def workers() -> int:
    return max(1, min(16, (os.cpu_count() or 1) * 2))


def file_item(path: Path) -> Item:
    def read() -> bytes:
        try:
            return path.read_bytes()
        except OSError as err:
            raise ImageError(f"{path}: cannot read ({err})") from err

    return str(path), read


def decode_all(items: Sequence[Item], options: ImageOptions) -> np.ndarray:
    """Decode ``items`` in parallel into uint8 ``(n, *options.shape)``.

    A corrupt file raises ``ImageError`` naming it (the first one in order).
    """
    out = np.empty((len(items), *options.shape), np.uint8)

    def one(i: int) -> None:
        source, read = items[i]
        out[i] = decode_image(read(), source, options)

    with ThreadPoolExecutor(workers()) as pool:
        for future in [pool.submit(one, i) for i in range(len(items))]:
            future.result()
    return out


def convert_array(images: np.ndarray, size: int, channels: int, source: str) -> np.ndarray:
    """uint8 ``(n, h, w, c)`` already decoded (pickles) -> the model's (size, channels)."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{source}: expected uint8 images (N, H, W, 1 or 3), got "
                         f"{images.dtype} {images.shape}")
    if images.shape[1:] == (size, size, channels):
        return images
    options = ImageOptions(size, channels)
    out = np.empty((len(images), *options.shape), np.uint8)
    grey = images.shape[-1] == 1

    def one(i: int) -> None:
        img = images[i, :, :, 0] if grey else images[i]  # 2-D uint8 -> L, (h, w, 3) -> RGB
        out[i] = to_model_array(Image.fromarray(img), options)

    with ThreadPoolExecutor(workers()) as pool:
        list(pool.map(one, range(len(images))))
    return out


def scan_classes(root: Path, source: str) -> dict[str, list[Path]]:
    """``root/<class>/<image>`` -> {class: sorted image paths}, class folders sorted.

    Empty class folders, non-image files and files directly in ``root`` are
    skipped with a warning giving their count.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"{source}: {root}: no such directory")
    classes: dict[str, list[Path]] = {}
    empty, stray, other = [], [], []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            stray.append(entry.name)
            continue
        files = sorted(p for p in entry.iterdir() if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if is_image_file(p)]
        other += [str(p) for p in files if not is_image_file(p)]
        if images:
            classes[entry.name] = images
        else:
            empty.append(entry.name)
    if empty:
        log.warning("%s: skipped %d class folder(s) in %s with no images: %s", source, len(empty),
                    root, ", ".join(empty[:10]) + (" ..." if len(empty) > 10 else ""))
    if other:
        log.warning("%s: ignored %d non-image file(s) in class folders of %s, e.g. %s", source,
                    len(other), root, other[0])
    if stray:
        log.warning("%s: ignored %d file(s) directly in %s (images must be in class "
                    "subfolders), e.g. %s", source, len(stray), root, stray[0])
    if not classes:
        raise ValueError(f"{source}: no class subfolders with images in {root} (expected "
                         f"{root}/<class>/<image>)")
    return classes


def pool_from_items(classes: dict[str, Sequence[Item]], size: int, channels: int, source: str,
                    invert: bool = False) -> ClassPool:
    """Decode {class name: items} (in parallel) into a ClassPool, classes in the given order."""
    names = list(classes)
    flat = [item for name in names for item in classes[name]]
    counts = [len(classes[name]) for name in names]
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    images = decode_all(flat, ImageOptions(size, channels, invert))
    indices = [np.arange(starts[i], starts[i + 1]) for i in range(len(names))]
    log.info("%s: %d classes, %d images", source, len(names), len(flat))
    return ClassPool(images, indices, names)


def pool_from_folders(classes: dict[str, list[Path]], size: int, channels: int,
                      source: str) -> ClassPool:
    return pool_from_items({n: [file_item(p) for p in paths] for n, paths in classes.items()},
                           size, channels, source)


def concat_pools(pools: Sequence[ClassPool], prefixes: Sequence[str], source: str) -> ClassPool:
    """One pool of every class of ``pools`` (the "all" split); clashing names get prefixed."""
    names = [n for p in pools for n in p.class_names]
    clash = len(set(names)) != len(names)
    if clash:
        log.warning("%s: a class name occurs in several splits; kept as separate classes named "
                    "<split>/<class>", source)
    images = np.concatenate([p.images for p in pools]) if len(pools) > 1 else pools[0].images
    indices, out_names, offset = [], [], 0
    for pool, prefix in zip(pools, prefixes, strict=True):
        indices += [idx + offset for idx in pool.class_indices]
        out_names += [f"{prefix}/{n}" if clash else n for n in pool.class_names]
        offset += len(pool.images)
    return ClassPool(images, indices, out_names)
