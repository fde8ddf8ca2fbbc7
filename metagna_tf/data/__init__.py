"""Data sources by name; each module exposes ``load(data_dir, split, ...) -> ClassPool``.

Where the data comes from (docs/datasets.md): ``--data-dir``, else
``$METAGNA_DATA_DIR``; else TFDS when asked (``download=True``) or when its copy is
already in the TFDS cache; else, for Omniglot, the minimal sets bundled with the
package. Nothing touches the network unless asked.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from metagna_tf.data import cub, folder, mini_imagenet, omniglot
from metagna_tf.data.episodes import ClassPool, EpisodeSampler, EpisodeSpec
from metagna_tf.data.images import ImageOptions

SOURCES = {"omniglot": omniglot, "mini_imagenet": mini_imagenet, "cub": cub, "folder": folder}
TFDS_NAMES = {"omniglot": "omniglot", "cub": "caltech_birds2011"}
ENV_VAR = "METAGNA_DATA_DIR"
log = logging.getLogger(__name__)
_told: set[str] = set()  # the bundled-data notice is logged once per process

__all__ = ["ClassPool", "EpisodeSampler", "EpisodeSpec", "ImageOptions", "SOURCES", "load_pool",
           "resolve_data_dir", "source_dir", "image_options"]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """``--data-dir`` if given, else ``$METAGNA_DATA_DIR``, else None."""
    value = data_dir if data_dir else os.environ.get(ENV_VAR)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        origin = "--data-dir" if data_dir else f"${ENV_VAR}"
        raise FileNotFoundError(f"{origin}={value!s}: no such directory")
    return path


def source(dataset: str):
    if dataset not in SOURCES:
        raise ValueError(f"unknown --dataset {dataset!r}; known: {sorted(SOURCES)}")
    return SOURCES[dataset]


def tfds_cached(name: str) -> bool:
    """Whether TFDS already holds ``name`` locally (checked without any network access)."""
    try:
        import tensorflow_datasets as tfds
        from tensorflow_datasets.core import constants

        if not (Path(constants.get_default_data_dir()).expanduser() / name).is_dir():
            return False  # nothing cached (asking the builder would log a warning about it)
        return bool(tfds.builder(name).is_prepared())
    except Exception:  # noqa: BLE001 - unknown name, broken cache: not usable offline
        return False


def source_dir(dataset: str, data_dir=None, download: bool = False) -> Path | None:
    """The folder to read ``dataset`` from, or None for TFDS; see the module docstring."""
    path = resolve_data_dir(data_dir)
    if path is not None:
        return path
    tfds_name = TFDS_NAMES.get(dataset)
    if tfds_name and (download or tfds_cached(tfds_name)):
        return None
    if download:
        raise ValueError(f"{dataset}: no TFDS source to download; give a data folder")
    if dataset == "omniglot":
        level = logging.DEBUG if dataset in _told else logging.INFO
        log.log(level, "omniglot: no data folder given: using the minimal background sets "
                "bundled with metagna-tf (242 characters); for the full Omniglot set give a "
                "folder with images_background.zip and images_evaluation.zip, or download it "
                "(TFDS)")
        _told.add(dataset)
        return omniglot.bundled_dir()
    if dataset == "cub":
        raise FileNotFoundError("cub: no data folder given (--data-dir or $METAGNA_DATA_DIR) and "
                                "TFDS holds no caltech_birds2011; pass --download to fetch it")
    return None  # the source explains what it needs


def load_pool(dataset: str, split: str, config, data_dir=None, download: bool = False
              ) -> ClassPool:
    """The images of ``split`` of ``dataset``, converted to the model's input (size, channels)."""
    rotations = bool(getattr(config, "rotations", False)) and split == config.train_split
    protocol = getattr(config, "protocol", "standard")
    extra = {}
    if protocol != "standard":
        if dataset != "omniglot":
            raise ValueError(f"protocol {protocol!r} is defined for omniglot only, not {dataset!r}")
        extra["protocol"] = protocol
    module = source(dataset)
    return module.load(source_dir(dataset, data_dir, download), split,
                                image_size=config.image_size, channels=config.channels,
                                rotations=rotations, **extra)


def image_options(config) -> ImageOptions:
    """How a raw image becomes the input of a model trained with ``config``: its size and
    channels, inverted as its dataset's source is (``INVERT``)."""
    return ImageOptions(config.image_size, config.channels,
                        bool(getattr(source(config.dataset), "INVERT", False)))
