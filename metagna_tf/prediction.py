"""Adapt a trained model to labelled support images and classify new images.

The support images arrive either as a folder with one subfolder per class (its
name is the class name; ``read_support``) or in memory (``support_arrays``, used
by the app and the REST client). Every image goes through the conversion of the
training data (``data.images``, then ``preprocessing.to_model_input``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from metagna_tf.algorithms.inner_loop import Adaptation
from metagna_tf.checkpoints import load_trained
from metagna_tf.data import image_options
from metagna_tf.data.images import ImageOptions, is_image_file, load_image
from metagna_tf.models.head import check_classes
from metagna_tf.preprocessing import to_model_input


def support_arrays(images_by_class: Mapping[str, Sequence[np.ndarray]]
                   ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``{class name: [uint8 (H, W, C) images]}`` -> (class names, support_x, support_y).

    Labels follow the mapping's order. Needs at least 2 classes, every class with at
    least one image, all images of one shape.
    """
    classes = list(images_by_class)
    if len(classes) < 2:
        raise ValueError(f"needs at least 2 classes, got {len(classes)} ({classes})")
    images, labels = [], []
    for label, name in enumerate(classes):
        arrays = list(images_by_class[name])
        if not arrays:
            raise ValueError(f"class {name!r} has no images")
        images += arrays
        labels += [label] * len(arrays)
    shapes = {np.shape(a) for a in images}
    if len(shapes) != 1:
        raise ValueError(f"support images differ in shape: {sorted(shapes)}")
    return classes, np.stack(images).astype(np.uint8), np.asarray(labels, np.int32)


def read_support(support_dir: str | Path, options: ImageOptions) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A folder of class subfolders (sorted by name) -> (class names, support_x, support_y)."""
    root = Path(support_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    by_class = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
        by_class[folder.name] = [load_image(path, options) for path in files]
    try:
        return support_arrays(by_class)
    except ValueError as err:
        raise ValueError(f"{root}: {err} (one subfolder of images per class)") from err


def expand_queries(paths) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.is_file() and is_image_file(q))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    if not out:
        raise ValueError("no query image files given")
    return out


class Predictor:
    """Adapt-then-classify for uint8 images, as graphs with the served signatures' shapes.

    ``adapt`` returns one task's ``Adaptation`` (``inner_loop.Adaptation.task``: no task
    axis), which ``classify`` consumes. The SavedModel of ``serving.export`` runs
    ``inner_loop.adapt`` and ``classify`` on inputs of unknown batch size and number of
    classes; these functions trace the same library code with the same shape information,
    so in-process predictions equal served ones to float32 rounding (eager execution, or
    static shapes, can select other kernels; after a few Meta-GNA steps with large learned
    step scales that reaches 1e-4 in probability).

    The inner learning rate is an input of the traced graph (``inner_lr``, default the
    trained one), so a test-time rate never meets a graph traced for another.
    """

    def __init__(self, model, steps: int | None = None, inner_lr: float | None = None):
        config = model.config
        self.model = model
        self.steps = config.inner_steps_test if steps is None else int(steps)
        if self.steps < 0:
            raise ValueError(f"inner steps must be at least 0, got {self.steps}")
        self.inner_lr = config.inner_lr if inner_lr is None else float(inner_lr)
        if not self.inner_lr > 0:
            raise ValueError(f"inner learning rate must be positive, got {self.inner_lr}")
        shape = [None, config.image_size, config.image_size, config.channels]
        self._images = tf.TensorSpec(shape, tf.uint8)
        self._adapt_fn = tf.function(self._adapt, jit_compile=False, input_signature=[
            self._images, tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], config.dtype)])
        self._classify_fn = tf.function(self._classify, jit_compile=False, reduce_retracing=True)

    def _adapt(self, support_x, support_y, num_classes, inner_lr) -> Adaptation:
        model = self.model
        return model.adapt(to_model_input(support_x, model.config.dtype)[None], support_y[None],
                           self.steps, ways=num_classes, inner_lr=inner_lr).task(0)

    def _classify(self, adaptation: Adaptation, images):
        one = Adaptation.of_one_task(adaptation)
        images = to_model_input(images, self.model.config.dtype)[None]
        return tf.nn.softmax(self.model.classify(one, images)[0])

    def adapt(self, support_x, support_y, num_classes: int | None = None) -> Adaptation:
        """Adapt to uint8 support images with labels ``0..num_classes-1`` (one task)."""
        support_y = np.asarray(support_y, np.int32)
        num_classes = int(num_classes or support_y.max() + 1)
        check_classes(self.model.head_ways, num_classes)
        return self._adapt_fn(tf.constant(support_x, tf.uint8), tf.constant(support_y),
                              tf.constant(num_classes),
                              tf.constant(self.inner_lr, self.model.config.dtype))

    def classify(self, adaptation: Adaptation, images) -> np.ndarray:
        """Class probabilities of uint8 images under an adaptation."""
        images = tf.ensure_shape(tf.convert_to_tensor(images, tf.uint8), self._images.shape)
        return self._classify_fn(adaptation, images).numpy()

    def predict(self, support_x, support_y, query_x) -> np.ndarray:
        """Class probabilities of ``query_x`` (uint8 images) after adapting to the support set."""
        return self.classify(self.adapt(support_x, support_y), query_x)


def prediction_json(classes: Sequence[str], files: Sequence, probabilities, inner_steps: int
                    ) -> dict:
    """The JSON that ``metagna_tf.predict``, the REST client and ``onnx_predict`` print."""
    return {"classes": list(classes), "inner_steps": int(inner_steps), "predictions": [
        {"file": str(path), "label": classes[int(np.argmax(p))],
         "probabilities": {c: float(v) for c, v in zip(classes, p, strict=True)}}
        for path, p in zip(files, probabilities, strict=True)]}


def predict_folder(workdir, support_dir, query_paths, inner_steps=None,
                   checkpoint: str = "best") -> dict:
    model, _ = load_trained(workdir, checkpoint)
    options = image_options(model.config)
    classes, support_x, support_y = read_support(support_dir, options)
    files = expand_queries(query_paths)
    query_x = np.stack([load_image(p, options) for p in files])
    predictor = Predictor(model, inner_steps)
    probs = predictor.predict(support_x, support_y, query_x)
    return prediction_json(classes, files, probs, predictor.steps)
