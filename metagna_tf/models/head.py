"""MAML's meta-learned N-way linear head (``--head linear``).

``logits = features @ kernel + bias`` with ``kernel`` [d, ways] and ``bias`` [ways], learned
in the outer loop and adapted by the inner loop like every other fast weight. The kernel is
Glorot-uniform (a zero head would give the backbone zero gradients at the first inner step),
the bias zero. Its number of classes is fixed at ``ways``: prediction, the exports and the
app refuse any other (``check_classes``).

The default ``--head proto`` has no variables: ``inner_loop.prototype_head`` fits it to the
support set's class means before the first step, for any number of classes.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="metagna_tf")
class LinearHead(keras.layers.Layer):
    """Holds the head's meta-parameters ``kernel`` [features, ways] and ``bias`` [ways].

    Args:
        features: the backbone's feature dimension.
        ways: the number of classes.
    """

    def __init__(self, features, ways, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("features", features), ("ways", ways)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"LinearHead: {name} must be a positive integer, got {value!r}")
        if ways < 2:
            raise ValueError(f"LinearHead: ways must be at least 2, got {ways!r}")
        self.features = features
        self.ways = ways
        self.kernel = self.add_weight(shape=(features, ways), initializer="glorot_uniform",
                                      name="head_kernel")
        self.bias = self.add_weight(shape=(ways,), initializer="zeros", name="head_bias")
        self.built = True

    @property
    def params(self) -> list:
        return [self.kernel, self.bias]

    def call(self, features):
        return features @ self.kernel + self.bias

    def get_config(self):
        return {**super().get_config(), "features": self.features, "ways": self.ways}


def check_classes(head_ways: int | None, num_classes: int, where: str = "") -> None:
    """A clear error when a linear head is asked for another number of classes."""
    if head_ways is not None and int(num_classes) != int(head_ways):
        raise ValueError(f"{where}{num_classes} classes given, but this model's linear head "
                         f"classifies exactly {head_ways} (--head linear fixes the number of "
                         "classes at training time; a --head proto model takes any number)")
