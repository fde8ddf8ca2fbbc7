"""The one conversion of uint8 images to model input.

Every path that feeds images to the model goes through ``to_model_input``: the
episode pipeline, evaluation, prediction, the SavedModel and ONNX/TFLite
exports and the app. Images reach it as uint8 ``(..., H, W, C)`` produced by
``data.images`` (decoding, resizing, colour mode, Omniglot's inversion).
"""

from __future__ import annotations

import tensorflow as tf


def to_model_input(images, dtype="float32"):
    """uint8 images -> ``value / 255`` in ``dtype`` (a correctly rounded division)."""
    dtype = tf.as_dtype(dtype)
    return tf.cast(images, dtype) / tf.constant(255, dtype)
