"""Data sources by name; each module exposes ``load(data_dir, split, ...) -> ClassPool``."""

from __future__ import annotations

import os
from pathlib import Path

from metagna_tf.data import cub, folder, mini_imagenet, omniglot
from metagna_tf.data.episodes import ClassPool, EpisodeSampler, EpisodeSpec

SOURCES = {"omniglot": omniglot, "mini_imagenet": mini_imagenet, "cub": cub, "folder": folder}
ENV_VAR = "METAGNA_DATA_DIR"

__all__ = ["ClassPool", "EpisodeSampler", "EpisodeSpec", "SOURCES", "load_pool", "resolve_data_dir",
           "image_options"]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """``--data-dir`` if given, else ``$METAGNA_DATA_DIR``, else None (TFDS when online)."""
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


def load_pool(dataset: str, split: str, config, data_dir=None) -> ClassPool:
    """The images of ``split`` of ``dataset``, converted to the model's input (size, channels)."""
    rotations = bool(getattr(config, "rotations", False)) and split == config.train_split
    protocol = getattr(config, "protocol", "standard")
    extra = {}
    if protocol != "standard":
        if dataset != "omniglot":
            raise ValueError(f"protocol {protocol!r} is defined for omniglot only, not {dataset!r}")
        extra["protocol"] = protocol
    return source(dataset).load(resolve_data_dir(data_dir), split, image_size=config.image_size,
                                channels=config.channels, rotations=rotations, **extra)


def image_options(config) -> dict:
    """How a raw image becomes this model's input (used by predict and serving)."""
    return {"size": config.image_size, "channels": config.channels,
            "invert": bool(getattr(source(config.dataset), "INVERT", False))}
