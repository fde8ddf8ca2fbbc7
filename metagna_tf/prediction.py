"""Adapt a trained model to a folder of labelled support images and classify new images.

The support folder holds one subfolder per class (its name is the class
name) with images of any common format, colour mode and size; each image goes
through the same conversion as the training data (``data.images``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from metagna_tf.algorithms.inner_loop import query_logits
from metagna_tf.checkpoints import load_trained
from metagna_tf.data import image_options
from metagna_tf.data.images import is_image_file, load_image


def read_support(support_dir: str | Path, options: dict) -> tuple[list[str], np.ndarray, np.ndarray]:
    root = Path(support_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--support {root}: no such directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ValueError(f"--support {root}: needs at least 2 class subfolders, found "
                         f"{len(classes)} ({classes})")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.is_file() and is_image_file(p))
        if not files:
            raise ValueError(f"--support {root / name}: class folder has no image files")
        for path in files:
            images.append(load_image(path, **options))
            labels.append(label)
    return classes, np.stack(images), np.asarray(labels, np.int32)


def expand_queries(paths) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.is_file() and is_image_file(q))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"--query {p}: no such file or directory")
    if not out:
        raise ValueError("--query: no image files given")
    return out


def predict(model, support_x, support_y, query_x, steps: int) -> np.ndarray:
    """Class probabilities of ``query_x`` (uint8 images) after adapting to the support set."""
    dtype = model.config.dtype
    sx = tf.constant(support_x, dtype) / 255
    fast, _ = model.adapt(sx, tf.constant(support_y), steps, ways=int(np.max(support_y)) + 1)
    logits = query_logits(model.backbone, fast, sx, tf.constant(query_x, dtype) / 255)
    return tf.nn.softmax(logits).numpy()


def predict_folder(workdir, support_dir, query_paths, inner_steps=None,
                   checkpoint: str = "best") -> dict:
    model, _ = load_trained(workdir, checkpoint)
    options = image_options(model.config)
    classes, support_x, support_y = read_support(support_dir, options)
    files = expand_queries(query_paths)
    query_x = np.stack([load_image(p, **options) for p in files])
    steps = inner_steps or model.config.inner_steps_test
    probs = predict(model, support_x, support_y, query_x, steps)
    return {"classes": classes, "inner_steps": steps, "predictions": [
        {"file": str(path), "label": classes[int(np.argmax(p))],
         "probabilities": {c: float(v) for c, v in zip(classes, p, strict=True)}}
        for path, p in zip(files, probs, strict=True)]}
