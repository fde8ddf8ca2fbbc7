"""Any image folder: one subfolder per class, or ``train/``, ``val/``, ``test/`` of them.

Layouts (``--dataset folder --data-dir DIR``):

* split layout: ``DIR/{train,val,test}/<class>/<image>``; split ``all`` is
  every class of the split folders present.
* flat layout: ``DIR/<class>/<image>``; every split is the same classes (a
  warning says so for ``train`` and ``val``, since few-shot evaluation needs
  classes unseen in training).

Any format PIL reads (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM/PGM) in any colour
mode or bit depth is converted by ``images.to_model_array`` to the model's
(size, channels), the same path predict uses.
"""

from __future__ import annotations

import logging
from pathlib import Path

from metagna_tf.data.class_folders import concat_pools, pool_from_folders, scan_classes
from metagna_tf.data.episodes import ClassPool

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
INVERT = False


def split_dirs(data_dir: Path) -> dict[str, Path]:
    """The split folders present in ``data_dir`` (empty for the flat layout)."""
    return {s: data_dir / s for s in SPLITS if (data_dir / s).is_dir()}


def load_tree(data_dir: Path, split: str, *, image_size: int, channels: int,
              source: str) -> ClassPool:
    """``data_dir/<split>/<class>/<image>``; ``all`` concatenates the split folders present."""
    present = split_dirs(data_dir)
    if split == "all":
        if not present:
            raise FileNotFoundError(f"{source}: no train/, val/ or test/ folder in {data_dir}")
        pools = [pool_from_folders(scan_classes(path, source), image_size, channels,
                                   f"{source} {name}") for name, path in present.items()]
        return concat_pools(pools, list(present), source)
    if split not in present:
        raise FileNotFoundError(f"{source}: split {split!r} needs the folder {data_dir / split} "
                                f"(found: {', '.join(present) or 'none'} of train/val/test)")
    return pool_from_folders(scan_classes(present[split], source), image_size, channels,
                             f"{source} {split}")


def load(data_dir: Path | None, split: str, *, image_size: int, channels: int,
         rotations: bool = False) -> ClassPool:
    if data_dir is None:
        raise FileNotFoundError("folder: --data-dir (or $METAGNA_DATA_DIR) is required: a folder "
                                "of class subfolders, or of train/, val/, test/ holding them")
    if split not in (*SPLITS, "all"):
        raise ValueError(f"folder: unknown split {split!r}; expected train, val, test or all")
    if rotations:
        log.warning("folder: --rotations is an Omniglot augmentation; ignored for image folders")
    if split_dirs(data_dir):
        return load_tree(data_dir, split, image_size=image_size, channels=channels,
                         source="folder")
    if split in ("train", "val"):
        log.warning("folder: %s has no train/, val/, test/ folders, so split %r uses every class "
                    "folder, the same classes as every other split", data_dir, split)
    return pool_from_folders(scan_classes(data_dir, "folder"), image_size, channels,
                             f"folder {split}")
