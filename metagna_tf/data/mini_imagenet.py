"""mini-ImageNet (Vinyals et al. 2016; split of Ravi & Larochelle 2017): 64/16/20 classes.

Every common copy is accepted; the format is detected from what is in
``data_dir`` (first match wins, see docs/datasets.md):

1. ``pickle``: ``mini-imagenet-cache-{train,val|validation,test}.pkl`` holding
   ``{"image_data": uint8 [N, 84, 84, 3], "class_dict": {wnid: [row indices]}}``;
2. ``rfs``: MetaOptNet/RFS ``miniImageNet_category_split_{train_phase_train,val,test}.pickle``
   holding ``{"data": uint8 [N, 84, 84, 3], "labels": [int], "catname2label"?: {...}}``
   (Python-2 pickles);
3. ``csv``: Ravi & Larochelle ``{train,val,test}.csv`` (``filename,label``) plus
   ``images/`` of raw JPEGs, resized on load;
4. ``tree``: ``{train,val,test}/<wnid>/*.jpg``.

Pickles are read by ``safe_pickle`` (NumPy arrays and containers only). Split
``all`` is the 100 classes of train+val+test (cross-domain meta-training).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from metagna_tf.data import safe_pickle
from metagna_tf.data.class_folders import concat_pools, convert_array, file_item, pool_from_items
from metagna_tf.data.episodes import ClassPool
from metagna_tf.data.folder import load_tree

log = logging.getLogger(__name__)

INVERT = False
SPLITS = ("train", "val", "test")
PICKLE_NAMES = {"train": ("mini-imagenet-cache-train.pkl",),
                "val": ("mini-imagenet-cache-val.pkl", "mini-imagenet-cache-validation.pkl"),
                "test": ("mini-imagenet-cache-test.pkl",)}
RFS_NAMES = {"train": "miniImageNet_category_split_train_phase_train.pickle",
             "val": "miniImageNet_category_split_val.pickle",
             "test": "miniImageNet_category_split_test.pickle"}
FORMATS = ("pickle", "rfs", "csv", "tree")
HELP = ("expected in --data-dir one of: mini-imagenet-cache-{train,val,test}.pkl; "
        "miniImageNet_category_split_{train_phase_train,val,test}.pickle; "
        "{train,val,test}.csv with images/; or {train,val,test}/<wnid>/*.jpg "
        "(see docs/datasets.md)")


def detect_format(data_dir: Path) -> str:
    """Which copy of mini-ImageNet ``data_dir`` holds (any file of a format is enough)."""
    if any((data_dir / n).is_file() for names in PICKLE_NAMES.values() for n in names):
        return "pickle"
    if any((data_dir / n).is_file() for n in RFS_NAMES.values()):
        return "rfs"
    if any((data_dir / f"{s}.csv").is_file() for s in SPLITS):
        return "csv"
    if any((data_dir / s).is_dir() for s in SPLITS):
        return "tree"
    found = sorted(p.name for p in data_dir.iterdir())[:12] if data_dir.is_dir() else []
    raise FileNotFoundError(f"mini_imagenet: no mini-ImageNet found in {data_dir} (it holds: "
                            f"{', '.join(found) or 'nothing'}); {HELP}")


def _expect(data_dir: Path, names: tuple[str, ...], what: str) -> Path:
    for name in names:
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(f"mini_imagenet: {data_dir / names[0]} is missing ({what} format "
                            f"detected from the other files in {data_dir})")


def _array(obj: dict, key: str, path: Path) -> np.ndarray:
    if not isinstance(obj, dict) or key not in obj:
        keys = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path}: expected a dict with key {key!r}, found {keys}")
    arr = np.asarray(obj[key])
    if arr.dtype != np.uint8 or arr.ndim != 4:
        raise ValueError(f"{path}: {key!r} must be uint8 [N, H, W, C], got {arr.dtype} {arr.shape}")
    return arr


def _pool(images: np.ndarray, groups: dict[str, np.ndarray], path: Path) -> ClassPool:
    """Validate per-class row indices and build the pool (empty classes warned about)."""
    empty = [name for name, idx in groups.items() if len(idx) == 0]
    if empty:
        log.warning("%s: skipped %d empty class(es): %s", path, len(empty), ", ".join(empty[:10]))
    groups = {k: v for k, v in groups.items() if len(v)}
    for name, idx in groups.items():
        if idx.min() < 0 or idx.max() >= len(images):
            raise ValueError(f"{path}: class {name!r} lists image index {int(idx.max())} but "
                             f"there are {len(images)} images")
    if not groups:
        raise ValueError(f"{path}: no classes")
    return ClassPool(images, list(groups.values()), list(groups))


def read_pickle_cache(path: Path) -> ClassPool:
    obj = safe_pickle.load(path)
    images = _array(obj, "image_data", path)
    class_dict = obj.get("class_dict")
    if not isinstance(class_dict, dict):
        raise ValueError(f"{path}: expected 'class_dict' {{wnid: [indices]}}, found "
                         f"{type(class_dict).__name__}")
    groups = {str(k): np.asarray(v, np.int64).reshape(-1) for k, v in sorted(class_dict.items())}
    return _pool(images, groups, path)


def read_rfs(path: Path) -> ClassPool:
    obj = safe_pickle.load(path, encoding="latin1")
    images = _array(obj, "data", path)
    labels = np.asarray(obj.get("labels", []), np.int64).reshape(-1)
    if len(labels) != len(images):
        raise ValueError(f"{path}: {len(labels)} labels for {len(images)} images")
    names = {}
    if isinstance(obj.get("catname2label"), dict):
        names = {int(v): str(k) for k, v in obj["catname2label"].items()}
    groups = {names.get(int(lab), f"class{int(lab)}"): np.flatnonzero(labels == lab)
              for lab in np.unique(labels)}
    return _pool(images, groups, path)


def read_csv(data_dir: Path, split: str) -> dict[str, list[Path]]:
    """``<split>.csv`` rows ``filename,label`` -> {label: image paths under images/}."""
    path = _expect(data_dir, (f"{split}.csv",), "csv")
    images_dir = data_dir / "images"
    if not images_dir.is_dir():
        raise FileNotFoundError(f"mini_imagenet: {images_dir} is missing ({path} lists images "
                                "in it)")
    classes: dict[str, list[Path]] = {}
    missing = []
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["filename", "label"]:
        raise ValueError(f"{path}: expected the header 'filename,label', found {rows[:1]}")
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{path}, line {line}: expected 'filename,label', found {row}")
        image = images_dir / row[0].strip()
        if not image.is_file():
            missing.append(image.name)
        classes.setdefault(row[1].strip(), []).append(image)
    if missing:
        raise FileNotFoundError(f"mini_imagenet: {len(missing)} image(s) listed in {path} are "
                                f"missing from {images_dir}, e.g. {missing[0]}")
    if not classes:
        raise ValueError(f"mini_imagenet: {path} lists no images")
    return dict(sorted(classes.items()))


def load_split(data_dir: Path, split: str, fmt: str, image_size: int,
               channels: int) -> ClassPool:
    """One of train/val/test in format ``fmt``, converted to (image_size, channels)."""
    if fmt == "tree":
        return load_tree(data_dir, split, image_size=image_size, channels=channels,
                         source="mini_imagenet")
    source = f"mini_imagenet {split}"
    if fmt == "csv":
        classes = read_csv(data_dir, split)
        items = {name: [file_item(p) for p in paths] for name, paths in classes.items()}
        return pool_from_items(items, image_size, channels, source)
    readers: dict[str, tuple[tuple[str, ...], Callable[[Path], ClassPool]]] = {
        "pickle": (PICKLE_NAMES[split], read_pickle_cache),
        "rfs": ((RFS_NAMES[split],), read_rfs)}
    names, reader = readers[fmt]
    path = _expect(data_dir, names, fmt)
    pool = reader(path)
    images = convert_array(pool.images, image_size, channels, str(path))
    log.info("%s (%s): %d classes, %d images", source, path.name, pool.num_classes, len(images))
    return ClassPool(images, pool.class_indices, pool.class_names)


def load(data_dir: Path | None, split: str, *, image_size: int = 84, channels: int = 3,
         rotations: bool = False) -> ClassPool:
    if data_dir is None:
        raise FileNotFoundError(f"mini_imagenet: --data-dir (or $METAGNA_DATA_DIR) is required; "
                                f"{HELP}")
    if split not in (*SPLITS, "all"):
        raise ValueError(f"mini_imagenet: unknown split {split!r}; expected train, val, test "
                         "or all")
    if rotations:
        log.warning("mini_imagenet: --rotations is an Omniglot augmentation; ignored")
    fmt = detect_format(data_dir)
    log.info("mini_imagenet: %s format in %s", fmt, data_dir)
    if split != "all":
        return load_split(data_dir, split, fmt, image_size, channels)
    pools = [load_split(data_dir, s, fmt, image_size, channels) for s in SPLITS]
    return concat_pools(pools, SPLITS, "mini_imagenet all")


def prepare(data_dir: Path, out_dir: Path) -> list[Path]:
    """Write any format of ``data_dir`` as 84x84 ``mini-imagenet-cache-*.pkl`` in ``out_dir``.

    The caches load in seconds (the raw-JPEG CSV format decodes ~60k images on every load).
    """
    import pickle

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split in SPLITS:
        pool = load(data_dir, split, image_size=84, channels=3)
        class_dict = {name: idx.tolist()
                      for name, idx in zip(pool.class_names, pool.class_indices, strict=True)}
        path = out_dir / PICKLE_NAMES[split][0]
        with path.open("wb") as f:
            pickle.dump({"image_data": pool.images, "class_dict": class_dict}, f, protocol=4)
        log.info("wrote %s: %d classes, %d images", path, pool.num_classes, len(pool.images))
        written.append(path)
    return written
