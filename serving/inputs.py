"""What a served signature's images must be, checked per request.

A ``tf.debugging`` check gives one clear error per bad request (the model keeps serving),
and comes before ``tf.ensure_shape``'s own, less readable one.
"""

from __future__ import annotations

import tensorflow as tf


def checked_images(images, image_shape, name: str = "images"):
    """uint8 ``images`` checked to be ``[n, *image_shape]``, with that static shape."""
    h, w, c = image_shape
    check = tf.debugging.assert_equal(
        tf.shape(images)[1:], tf.constant([h, w, c]),
        message=f"{name} must be uint8 images of shape [n, {h}, {w}, {c}] (converted as in "
                "training; see docs/serving.md)")
    with tf.control_dependencies([check]):
        return tf.ensure_shape(images, [None, h, w, c])
