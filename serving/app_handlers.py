"""The app's handlers: plain functions of their inputs and the session's state.

``serving.app`` wires them to the page; the tests call them directly. Every user
mistake becomes a ``gr.Error`` that says what to do, and leaves the session as it
was. Uploads are checked before anything decodes them: the path must come from
Gradio's upload folder (or the app's own examples), the file must be under the
size limit, the counts within bounds; decoding then runs with PIL's
decompression-bomb guard on (``data.images``).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from metagna_tf.data.images import ImageError, decode_image, to_model_array
from metagna_tf.prediction import support_arrays
from serving.app_model import AdaptedState, AppModel

MIN_CLASSES, MAX_CLASSES = 2, 10
DEFAULT_SHOTS = 5


@dataclasses.dataclass(frozen=True)
class Limits:
    max_file_mb: float = 10.0
    max_images_per_class: int = 20
    max_queries: int = 50

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)


def upload_folders() -> list[Path]:
    """Where Gradio stores uploads (``GRADIO_TEMP_DIR``, else ``<tmp>/gradio``)."""
    root = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")
    return [Path(root).resolve()]


def _path_of(item) -> str:
    """A gr.File / gr.Gallery value item -> its path."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, dict):
        return str(item.get("path") or item.get("name"))
    if isinstance(item, (tuple, list)):
        return _path_of(item[0])
    return str(getattr(item, "path", None) or item.name)


def as_paths(files) -> list[str]:
    if not files:
        return []
    if isinstance(files, (str, os.PathLike, dict)):
        files = [files]
    return [_path_of(f) for f in files]


def check_upload(path: str, allowed: Sequence[Path], limits: Limits) -> Path:
    """An uploaded file, checked before it is read: inside ``allowed`` and not too large."""
    resolved = Path(path).resolve()
    if not any(resolved.is_relative_to(root) for root in allowed):
        raise gr.Error(f"{Path(path).name}: not an uploaded file; upload it through the page")
    try:
        size = resolved.stat().st_size
    except OSError as err:
        raise gr.Error(f"{resolved.name}: the upload is gone ({err.strerror}); upload it "
                       "again") from err
    if size > limits.max_file_bytes:
        raise gr.Error(f"{resolved.name} is {size / 2**20:.1f} MB: images up to "
                       f"{limits.max_file_mb:g} MB are accepted; upload a smaller image")
    return resolved


def read_upload(path: str, model: AppModel, allowed: Sequence[Path], limits: Limits
                ) -> np.ndarray:
    checked = check_upload(path, allowed, limits)
    try:
        return decode_image(checked.read_bytes(), checked.name, model.options)
    except ImageError as err:
        raise gr.Error(f"{err}; upload a PNG, JPEG, GIF, BMP, TIFF or WebP image") from err


# ---- adapt ----------------------------------------------------------------------------------
def class_range(head_ways: int | None) -> tuple[int, int]:
    """How many classes the app takes: any from MIN_CLASSES to MAX_CLASSES, or exactly a
    linear head's number."""
    return (MIN_CLASSES, MAX_CLASSES) if head_ways is None else (head_ways, head_ways)


def collect_classes(count: int, names: Sequence[str], files: Sequence, limits: Limits,
                    head_ways: int | None = None) -> dict[str, list[str]]:
    """The first ``count`` class slots -> {class name: [paths]} with every check named."""
    count = int(count)
    low, high = class_range(head_ways)
    if head_ways is not None and count != head_ways:
        raise gr.Error(f"This model's linear head classifies exactly {head_ways} classes "
                       f"(got {count}): use {head_ways} classes.")
    if not low <= count <= high:
        raise gr.Error(f"Use {low} to {high} classes (got {count}).")
    classes: dict[str, list[str]] = {}
    seen: dict[str, int] = {}
    for i in range(count):
        name = (names[i] or "").strip() or f"Class {i + 1}"
        paths = as_paths(files[i])
        if not paths:
            raise gr.Error(f"Class {i + 1} ({name!r}) has no images: upload 1 to "
                           f"{limits.max_images_per_class} images of it (5 work well), or "
                           "lower the number of classes.")
        if len(paths) > limits.max_images_per_class:
            raise gr.Error(f"Class {i + 1} ({name!r}) has {len(paths)} images: upload at most "
                           f"{limits.max_images_per_class}.")
        key = name.casefold()
        if key in seen:
            raise gr.Error(f"Classes {seen[key] + 1} and {i + 1} are both named {name!r}: give "
                           "every class its own name.")
        seen[key] = i
        classes[name] = paths
    return classes


def loss_frame(state: AdaptedState) -> pd.DataFrame:
    return pd.DataFrame({"inner step": np.arange(len(state.support_loss)),
                         "support loss": state.support_loss.astype(float)})


def scales_frame(state: AdaptedState, tensor_names: Sequence[str]) -> pd.DataFrame:
    """The Arbiter's scale per inner step (1-based) and tensor, one row each."""
    rows = [{"inner step": step + 1, "tensor": name, "scale": float(state.scales[step, i])}
            for step in range(state.scales.shape[0]) for i, name in enumerate(tensor_names)]
    return pd.DataFrame(rows, columns=["inner step", "tensor", "scale"])


def summary(model: AppModel, state: AdaptedState, images: int) -> str:
    losses = state.support_loss
    text = (f"Adapted to **{len(state.class_names)} classes** ({images} images) with "
            f"{model.inner_steps} inner steps of **{model.algorithm}**: support loss "
            f"{losses[0]:.3f} -> {losses[-1]:.3f}, support accuracy "
            f"**{state.support_accuracy:.0%}**.")
    if model.has_scales and state.scales.size:
        text += (f" Gradient-norm scales chosen per tensor: {state.scales.min():.2g} to "
                 f"{state.scales.max():.2g}.")
    return text


def adapt(model: AppModel, count, names: Sequence[str], files: Sequence,
          allowed: Sequence[Path], limits: Limits):
    """-> (state, loss frame, scales frame or None, summary markdown)."""
    classes = collect_classes(count, names, files, limits, model.head_ways)
    arrays = {name: [read_upload(p, model, allowed, limits) for p in paths]
              for name, paths in classes.items()}
    try:
        class_names, support_x, support_y = support_arrays(arrays)
    except ValueError as err:
        raise gr.Error(str(err)) from err
    state = model.adapt(class_names, support_x, support_y)
    scales = scales_frame(state, model.scale_names) if model.has_scales else None
    return state, loss_frame(state), scales, summary(model, state, len(support_y))


# ---- classify -------------------------------------------------------------------------------
def camera_array(image, model: AppModel) -> np.ndarray:
    """A webcam/clipboard image (NumPy, as gr.Image gives it) -> the model's uint8 input."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    pil = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)
    return to_model_array(pil, model.options)


def top_classes(probabilities: np.ndarray, class_names: Sequence[str], k: int = 3
                ) -> list[tuple[str, float]]:
    order = np.argsort(-probabilities)[:k]
    return [(class_names[i], float(probabilities[i])) for i in order]


def classify(model: AppModel, state: AdaptedState | None, files, camera,
             allowed: Sequence[Path], limits: Limits):
    """-> (gallery [(path or array, caption)], table rows, label dict of the first image)."""
    if state is None:
        raise gr.Error("Adapt first: define the classes, upload their images and press Adapt.")
    paths = as_paths(files)
    if not paths and camera is None:
        raise gr.Error("Add images to classify: upload them, or take one with the webcam or "
                       "paste one from the clipboard.")
    if len(paths) + (camera is not None) > limits.max_queries:
        raise gr.Error(f"{len(paths)} images: classify at most {limits.max_queries} at once.")
    arrays = [read_upload(p, model, allowed, limits) for p in paths]
    shown: list = list(paths)
    names = [Path(p).name for p in paths]
    if camera is not None:
        arrays.append(camera_array(camera, model))
        shown.append(np.asarray(camera))
        names.append("webcam/clipboard image")
    probabilities = model.classify(state, np.stack(arrays))
    gallery, rows = [], []
    for item, name, p in zip(shown, names, probabilities, strict=True):
        top = top_classes(p, state.class_names)
        gallery.append((item, f"{top[0][0]} ({top[0][1]:.0%})"))
        rows.append([name] + [f"{c} ({q:.1%})" for c, q in top]
                    + [""] * (3 - len(top)))
    first = dict(top_classes(probabilities[0], state.class_names, len(state.class_names)))
    return gallery, rows, first


def export_onnx(model: AppModel, state: AdaptedState | None) -> str:
    """The session's adapted classifier as ONNX (class names inside); returns the file path."""
    from serving.adapted import write_onnx

    if state is None:
        raise gr.Error("Adapt first: the download is the classifier adapted to your classes.")
    folder = Path(tempfile.mkdtemp(prefix="metagna_onnx_"))
    return str(write_onnx(model.adapted_classifier(state), folder / "adapted_classifier.onnx"))


# ---- examples -------------------------------------------------------------------------------
@dataclasses.dataclass
class Examples:
    """Example classes for a first visitor: {class name: (support paths, query paths)}."""

    folder: Path
    classes: dict[str, tuple[list[str], list[str]]]

    @staticmethod
    def from_class_folders(root: Path, shots: int = DEFAULT_SHOTS, queries: int = 2,
                           max_classes: int = 5) -> Examples:
        from metagna_tf.data.images import is_image_file

        classes = {}
        for folder in sorted(p for p in Path(root).iterdir() if p.is_dir())[:max_classes]:
            files = sorted(str(p.resolve()) for p in folder.iterdir() if is_image_file(p))
            if files:
                classes[folder.name] = (files[:shots], files[shots:shots + queries])
        if len(classes) < MIN_CLASSES:
            raise ValueError(f"{root}: needs at least {MIN_CLASSES} class subfolders of images")
        return Examples(Path(root).resolve(), classes)

    @staticmethod
    def from_omniglot(data_dir: Path, shots: int = DEFAULT_SHOTS, queries: int = 2) -> Examples:
        """Five held-out Omniglot characters (test split, five alphabets), written to a temp
        folder: ``shots`` support and ``queries`` query drawings each."""
        from metagna_tf.data.omniglot import character_files

        folder = Path(tempfile.mkdtemp(prefix="metagna_examples_")).resolve()
        classes = {}
        for key, files in character_files(data_dir, per_character=shots + queries).items():
            name = key.replace("/", " ").replace("_", " ")
            paths = []
            for file_name, data in files:
                path = folder / key.replace("/", "__") / file_name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                paths.append(str(path))
            classes[name] = (paths[:shots], paths[shots:])
        return Examples(folder, classes)

    def fill(self, max_classes: int = MAX_CLASSES):
        """-> (count, names padded to max_classes, support file lists padded, query files)."""
        names = list(self.classes)[:max_classes]
        supports = [self.classes[n][0] for n in names]
        queries = [q for n in names for q in self.classes[n][1]]
        pad = max_classes - len(names)
        return len(names), names + [""] * pad, supports + [None] * pad, queries
