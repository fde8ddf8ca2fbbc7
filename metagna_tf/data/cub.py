"""CUB-200-2011 birds for cross-domain few-shot evaluation (mini-ImageNet -> CUB).

Accepted in ``data_dir`` (first match wins):

* ``images/<NNN.Name>/*.jpg`` (``data_dir`` is the extracted ``CUB_200_2011``),
  or ``CUB_200_2011/images/...`` below it;
* ``CUB_200_2011.tgz`` (or ``.tar.gz``): read in place with ``tarfile``, nothing
  is extracted or written, so member names cannot escape anywhere; members
  with absolute or ``..`` names are skipped with a count.

Class split (Chen et al., "A Closer Look at Few-shot Classification", ICLR
2019, ``filelists/CUB/write_CUB_filelist.py``): the 200 class folders sorted by
name; folder ``i`` is base (train) if ``i % 2 == 0`` (100), val if
``i % 4 == 1`` (50), novel (test) if ``i % 4 == 3`` (50). If Chen's
``base.json``/``val.json``/``novel.json`` are in ``data_dir`` they define the
split instead; their absolute paths are remapped to this copy by their last two
components (``<class folder>/<file>``).

Without ``data_dir``, TFDS ``caltech_birds2011`` (train+test images; label
``l`` is sorted folder ``l``) is used when it can be downloaded or is cached.
"""

from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from metagna_tf.data.class_folders import Item, file_item, pool_from_items
from metagna_tf.data.episodes import ClassPool
from metagna_tf.data.images import ImageOptions, is_image_file, to_model_array

log = logging.getLogger(__name__)

INVERT = False
CHEN_FILES = {"train": "base.json", "val": "val.json", "test": "novel.json"}
ARCHIVES = ("CUB_200_2011.tgz", "CUB_200_2011.tar.gz")
HELP = ("pass --data-dir holding CUB_200_2011/ (or its images/ folder) or CUB_200_2011.tgz "
        "from https://www.vision.caltech.edu/datasets/cub_200_2011/ (see docs/datasets.md)")


def chen_split(class_folders: list[str], split: str) -> list[str]:
    """Chen et al.'s rule over the sorted class folders: base/val/novel = 100/50/50."""
    folders = sorted(class_folders)
    if split == "all":
        return folders
    rule = {"train": lambda i: i % 2 == 0, "val": lambda i: i % 4 == 1,
            "test": lambda i: i % 4 == 3}[split]
    return [f for i, f in enumerate(folders) if rule(i)]


def _folder_store(images_dir: Path) -> dict[str, dict[str, Item]]:
    """{class folder: {file name: item}} for ``images/<class>/<file>``."""
    store: dict[str, dict[str, Item]] = {}
    for class_dir in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.iterdir() if p.is_file())
        skipped = [p for p in files if not is_image_file(p) and not p.name.startswith(".")]
        if skipped:
            log.warning("cub: ignored %d non-image file(s) in %s, e.g. %s", len(skipped),
                        class_dir, skipped[0].name)
        store[class_dir.name] = {p.name: file_item(p) for p in files if is_image_file(p)}
    return store


def _tar_members(archive: Path) -> dict[str, dict[str, tarfile.TarInfo]]:
    """{class folder: {file name: member}} for ``.../images/<class>/<file>`` members."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"{archive}: not a readable tar archive ({err})") from err
    store: dict[str, dict[str, tarfile.TarInfo]] = {}
    unsafe = 0
    for m in members:
        parts = PurePosixPath(m.name).parts
        if m.name.startswith(("/", "\\")) or ".." in parts:
            unsafe += 1
            continue
        if m.isfile() and len(parts) >= 3 and parts[-3] == "images" and is_image_file(parts[-1]):
            store.setdefault(parts[-2], {})[parts[-1]] = m
    if unsafe:
        log.warning("cub: skipped %d member(s) of %s with absolute or '..' paths", unsafe, archive)
    return store


def _read_tar(archive: Path, names: set[str]) -> dict[str, bytes]:
    """The bytes of the members ``names``, in one forward pass over the archive."""
    data: dict[str, bytes] = {}
    with tarfile.open(archive, "r:*") as tar:
        for m in tar:
            if m.name in names and m.isfile():
                data[m.name] = tar.extractfile(m).read()
    return data


def _chen_lists(data_dir: Path, split: str) -> dict[str, list[str]] | None:
    """Chen's json lists as {label name: ["<class folder>/<file>", ...]}, or None if absent."""
    splits = list(CHEN_FILES) if split == "all" else [split]
    paths = [data_dir / CHEN_FILES[s] for s in splits]
    if not any((data_dir / n).is_file() for n in CHEN_FILES.values()):
        return None
    out: dict[str, list[str]] = {}
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"cub: {path} is missing (Chen's json split files found in "
                                    f"{data_dir}: {', '.join(CHEN_FILES.values())} expected)")
        try:
            meta = json.loads(path.read_text())
            names, files, labels = meta["label_names"], meta["image_names"], meta["image_labels"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a Chen et al. file list with label_names, "
                             f"image_names, image_labels ({err})") from err
        if len(files) != len(labels):
            raise ValueError(f"{path}: {len(files)} image_names but {len(labels)} image_labels")
        for name, label in zip(files, labels, strict=True):
            parts = PurePosixPath(str(name).replace("\\", "/")).parts
            out.setdefault(str(names[int(label)]), []).append("/".join(parts[-2:]))
    log.info("cub: split %s from Chen's json file list(s) in %s", split, data_dir)
    return out


def _select(data_dir: Path, split: str, folders: list[str]) -> dict[str, list[tuple[str, str]]]:
    """{class name: [(class folder, file)]} of ``split``, from Chen's json or his rule."""
    lists = _chen_lists(data_dir, split)
    if lists is not None:
        return {name: [tuple(k.split("/", 1)) for k in keys] for name, keys in lists.items()}
    if len(folders) != 200:
        log.warning("cub: found %d class folders, CUB-200-2011 has 200; Chen's split rule is "
                    "applied to the %d present", len(folders), len(folders))
    return {c: [(c, "")] for c in chen_split(folders, split)}  # "": every file of the folder


def _resolve(selection, store, source: str) -> dict[str, list]:
    """Look the selected (folder, file) pairs up in ``store``; anything missing is an error."""
    out, missing = {}, []
    for name, keys in selection.items():
        got = []
        for folder, file in keys:
            files = store.get(folder, {})
            if file == "":
                got += [files[f] for f in sorted(files)]
            elif file in files:
                got.append(files[file])
            else:
                missing.append(f"{folder}/{file}")
        if got:
            out[name] = got
        elif not missing:
            missing.append(f"{name}/ (no images)")
    if missing:
        raise FileNotFoundError(f"cub: {len(missing)} image(s) of the split are not in {source}, "
                                f"e.g. {missing[0]}")
    return out


def load_dir(data_dir: Path, split: str, image_size: int, channels: int) -> ClassPool:
    images_dir = next((d for d in (data_dir / "images", data_dir / "CUB_200_2011" / "images")
                       if d.is_dir()), None)
    archive = next((data_dir / n for n in ARCHIVES if (data_dir / n).is_file()), None)
    if images_dir is not None:
        store = _folder_store(images_dir)
        chosen = _resolve(_select(data_dir, split, list(store)), store, str(images_dir))
    elif archive is not None:
        members = _tar_members(archive)
        picked = _resolve(_select(data_dir, split, list(members)), members, str(archive))
        blobs = _read_tar(archive, {m.name for ms in picked.values() for m in ms})
        chosen = {name: [(f"{archive}:{m.name}", lambda b=blobs[m.name]: b) for m in ms]
                  for name, ms in picked.items()}
    else:
        raise FileNotFoundError(f"cub: no images/ folder, CUB_200_2011/images/ folder or "
                                f"{' / '.join(ARCHIVES)} in {data_dir}; {HELP}")
    return pool_from_items(chosen, image_size, channels, f"cub {split}")


def load_tfds(split: str, image_size: int, channels: int) -> ClassPool:
    """TFDS ``caltech_birds2011`` (train+test), Chen's rule on the 0-based label.

    Needs the network on first use (or a prepared TFDS cache).
    """
    import tensorflow_datasets as tfds
    from PIL import Image

    from metagna_tf.data.download import tfds_load

    try:
        ds = tfds_load("caltech_birds2011", split="train+test",
                       decoders={"segmentation_mask": tfds.decode.SkipDecoding()})
    except Exception as err:  # noqa: BLE001 - offline, no cache, broken download...
        raise FileNotFoundError(f"cub: no --data-dir or $METAGNA_DATA_DIR given and TFDS could "
                                f"not provide 'caltech_birds2011' ({err}); {HELP}") from err
    folders = [f"{i:03d}" for i in range(200)]
    keep = {int(f) for f in chen_split(folders, split)}
    images: dict[int, list[np.ndarray]] = {}
    names: dict[int, str] = {}
    options = ImageOptions(image_size, channels)
    for ex in tfds.as_numpy(ds):
        label = int(ex["label"])
        if label in keep:
            img = Image.fromarray(ex["image"])
            images.setdefault(label, []).append(to_model_array(img, options))
            names[label] = f"{label + 1:03d}.{ex['label_name'].decode()}"
    labels = sorted(images)
    counts = np.cumsum([0] + [len(images[lab]) for lab in labels])
    pool = ClassPool(np.stack([a for lab in labels for a in images[lab]]),
                     [np.arange(counts[i], counts[i + 1]) for i in range(len(labels))],
                     [names[lab] for lab in labels])
    log.info("cub %s (tfds caltech_birds2011): %d classes, %d images", split, pool.num_classes,
             len(pool.images))
    return pool


def load(data_dir: Path | None, split: str, *, image_size: int = 84, channels: int = 3,
         rotations: bool = False) -> ClassPool:
    if split not in ("train", "val", "test", "all"):
        raise ValueError(f"cub: unknown split {split!r}; expected train, val, test or all")
    if rotations:
        log.warning("cub: --rotations is an Omniglot augmentation; ignored")
    if data_dir is None:
        return load_tfds(split, image_size, channels)
    return load_dir(data_dir, split, image_size, channels)
