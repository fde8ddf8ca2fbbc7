"""An adapted classifier: forward-only, BatchNorm folded, ready for any runtime.

``AdaptedClassifier`` takes the result of adapting to one support set
(``inner_loop.Adaptation``), folds the support set's BatchNorm statistics into
the convolutions (``models.conv4.fold_batchnorm``) and holds every weight in a
``tf.Variable`` (tf2onnx freezes variables; tensors captured from eager code
would become extra graph inputs). Writers:

* ``write_saved_model``: TF Serving layout; ``serving_default(images)`` returns
  ``probabilities`` and the predicted class names (``label``, strings);
* ``write_onnx``: tf2onnx, input ``images`` (uint8 NHWC), output ``probabilities``,
  class names and preprocessing in the model's metadata;
* ``write_tflite``: TFLite builtins only, same input and output.

tf2onnx cannot convert the adaptation itself (gradient ops have no ONNX
handlers), which is why the SavedModel of ``serving.export`` carries the
adaptation and these formats carry adapted classifiers.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from metagna_tf.data.images import ImageOptions
from metagna_tf.models.conv4 import BLOCKS
from metagna_tf.preprocessing import to_model_input
from serving.inputs import checked_images

ONNX_OPSET = 17


class AdaptedClassifier(tf.Module):
    """Adapted weights + class names; ``probabilities(images)`` is the whole forward pass.

    Args:
        spec: the backbone's ``Conv4Spec``.
        adaptation: an ``Adaptation`` (adapted ``fast`` weights and support ``stats``).
        class_names: one name per class, in label order.
        info: ``image_size``, ``channels``, ``invert`` (the preprocessing), plus anything to
            record (algorithm, inner steps, source).
        dtype: the model's float type.
    """

    def __init__(self, spec, adaptation, class_names, info: dict, dtype="float32"):
        super().__init__(name="adapted_classifier")
        options = ImageOptions.from_info(info, "AdaptedClassifier info")
        fast, stats = adaptation.fast, adaptation.stats
        num_classes = int(fast[-1].shape[0])
        if len(class_names) != num_classes:
            raise ValueError(f"AdaptedClassifier: {len(class_names)} class names for "
                             f"{num_classes} classes")
        self.class_list = tuple(str(c) for c in class_names)
        # a JSON string, not a dict: tf.Module would wrap a dict into a trackable DictWrapper
        self._metadata_json = json.dumps({"classes": list(self.class_list), **info},
                                         default=lambda v: v.item() if isinstance(v, np.generic)
                                         else str(v))
        self.image_shape = options.shape
        self.dtype = tf.as_dtype(dtype)
        self._spec = spec
        folded = spec.fold(fast[:-2], stats)
        self.folded = [tf.Variable(t, trainable=False, name=f"{kind}{b + 1}")
                       for b in range(BLOCKS) for kind, t in
                       (("conv_kernel", folded[2 * b]), ("conv_bias", folded[2 * b + 1]))]
        self.head_kernel = tf.Variable(fast[-2], trainable=False, name="head_kernel")
        self.head_bias = tf.Variable(fast[-1], trainable=False, name="head_bias")
        self.names = tf.Variable(list(self.class_list), trainable=False, name="class_names")
        h, w, c = self.image_shape
        self.probabilities = tf.function(
            self._probabilities, jit_compile=False,
            input_signature=[tf.TensorSpec([None, h, w, c], tf.uint8, name="images")])
        self.serving_default = tf.function(
            self._serving, jit_compile=False,
            input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, name="images")])

    def logits(self, x):
        """Logits of model-input images (the folded form of ``inner_loop.classify``)."""
        features = self._spec.folded_forward([tf.convert_to_tensor(v) for v in self.folded], x)
        return tf.matmul(features, self.head_kernel) + self.head_bias

    def _probabilities(self, images):
        return tf.nn.softmax(self.logits(to_model_input(images, self.dtype)))

    def _serving(self, images):
        probabilities = self._probabilities(checked_images(images, self.image_shape))
        label = tf.gather(self.names, tf.argmax(probabilities, axis=-1))
        return {"probabilities": probabilities, "label": label}

    def metadata(self) -> dict:
        """What the exported files record: class names and preprocessing (+ ``info``)."""
        return json.loads(self._metadata_json)


# ---- writers ---------------------------------------------------------------------------------
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write beside ``path`` then rename: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 -> the usual file mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_saved_model(classifier: AdaptedClassifier, base: str | Path,
                      version: int | None = None) -> Path:
    """``base/<version>/`` (TF Serving layout) with ``serving_default`` and ``probabilities``."""
    from serving.versions import INFO_FILE, new_version_dir

    signatures = {"serving_default": classifier.serving_default.get_concrete_function(),
                  "probabilities": classifier.probabilities.get_concrete_function()}
    with new_version_dir(base, version) as (tmp, final):
        tf.saved_model.save(classifier, str(tmp), signatures=signatures)
        (tmp / "assets.extra").mkdir(exist_ok=True)
        (tmp / "assets.extra" / INFO_FILE).write_text(
            json.dumps({"format": "metagna-tf adapted classifier", **classifier.metadata()},
                       indent=2) + "\n")
    return final


def onnx_model(classifier: AdaptedClassifier, opset: int = ONNX_OPSET):
    """The classifier as an ``onnx.ModelProto`` (input ``images``, output ``probabilities``)."""
    import onnx
    import tf2onnx

    h, w, c = classifier.image_shape
    spec = (tf.TensorSpec([None, h, w, c], tf.uint8, name="images"),)
    model, _ = tf2onnx.convert.from_function(classifier.probabilities, input_signature=spec,
                                             opset=opset)
    # name the output as documented (tf2onnx keeps the graph's "Identity:0")
    old = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = ["probabilities" if o == old else o for o in node.output]
    model.graph.output[0].name = "probabilities"
    meta = {k: json.dumps(v) for k, v in classifier.metadata().items()}
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def write_onnx(classifier: AdaptedClassifier, path: str | Path, opset: int = ONNX_OPSET) -> Path:
    path = Path(path)
    _atomic_write_bytes(path, onnx_model(classifier, opset).SerializeToString())
    return path


def tflite_bytes(classifier: AdaptedClassifier) -> bytes:
    concrete = classifier.probabilities.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], classifier)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def write_tflite(classifier: AdaptedClassifier, path: str | Path) -> Path:
    path = Path(path)
    _atomic_write_bytes(path, tflite_bytes(classifier))
    return path


def write_classes(classifier: AdaptedClassifier, path: str | Path) -> Path:
    path = Path(path)
    _atomic_write_bytes(path, (json.dumps(classifier.metadata(), indent=2) + "\n").encode())
    return path


def read_onnx_metadata(session) -> dict:
    """Class names and preprocessing from an onnxruntime session's model metadata."""
    meta = session.get_modelmeta().custom_metadata_map
    missing = [k for k in ("classes", *ImageOptions.KEYS) if k not in meta]
    if missing:
        raise ValueError(f"the ONNX model lacks metadata {missing}; was it written by "
                         "serving.export_adapted?")
    return {k: json.loads(v) for k, v in meta.items()}
