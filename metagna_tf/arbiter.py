"""The Arbiter: a small MLP that chooses the inner-loop gradient norm per tensor.

Input, for weight tensor ``l`` at inner step ``j`` (see docs/method.md):
``NUM_FEATURES`` sample-aware scalars (log gradient norm, log weight norm,
mean/std/max of the per-sample losses and of the per-sample log gradient
norms), plus learned embeddings of the step index and of the tensor index.

Output: ``a = clip(exp(z), a_min, a_max)`` where ``z`` is a Dense layer with
zero-initialized kernel and bias, so ``a == 1`` at initialization and the
Meta-GNA step starts as MAML's step.
"""

from __future__ import annotations

import keras
from keras import ops

NUM_FEATURES = 8
FEATURE_NAMES = ("log_grad_norm", "log_weight_norm", "loss_mean", "loss_std", "loss_max",
                 "log_sample_grad_norm_mean", "log_sample_grad_norm_std",
                 "log_sample_grad_norm_max")


@keras.saving.register_keras_serializable(package="metagna_tf")
class Arbiter(keras.layers.Layer):
    """Maps sample-aware features of each weight tensor to a gradient-norm scale.

    Args:
        num_tensors: number of weight tensors arbitrated (size of the tensor embedding).
        num_steps: number of trained inner steps; later steps reuse the last embedding.
        hidden: hidden units of the MLP.
        embed_dim: size of the step and tensor embeddings.
        a_min, a_max: clip range of the output scale (``0 < a_min <= 1 <= a_max``).

    Call: ``arbiter(features, step)`` with ``features`` of shape
    ``(num_tensors, NUM_FEATURES)`` and an integer ``step``; returns ``(num_tensors,)``.
    """

    def __init__(self, num_tensors, num_steps=1, hidden=32, embed_dim=4, a_min=0.01, a_max=100.0,
                 **kwargs):
        super().__init__(**kwargs)
        for name, value in (("num_tensors", num_tensors), ("num_steps", num_steps),
                            ("hidden", hidden), ("embed_dim", embed_dim)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"Arbiter: {name} must be a positive integer, got {value!r}")
        if not 0 < a_min <= 1 <= a_max:
            raise ValueError(f"Arbiter: need 0 < a_min <= 1 <= a_max, got a_min={a_min!r}, "
                             f"a_max={a_max!r}")
        self.num_tensors = num_tensors
        self.num_steps = num_steps
        self.hidden = hidden
        self.embed_dim = embed_dim
        self.a_min = float(a_min)
        self.a_max = float(a_max)
        self.tensor_embedding = self.add_weight(
            shape=(num_tensors, embed_dim), initializer=keras.initializers.RandomNormal(stddev=0.1),
            name="tensor_embedding")
        self.step_embedding = self.add_weight(
            shape=(num_steps, embed_dim), initializer=keras.initializers.RandomNormal(stddev=0.1),
            name="step_embedding")
        self.hidden_layer = keras.layers.Dense(hidden, activation="relu", dtype=self.dtype_policy,
                                               name="hidden")
        self.output_layer = keras.layers.Dense(1, kernel_initializer="zeros",
                                               bias_initializer="zeros", dtype=self.dtype_policy,
                                               name="log_scale")
        self.hidden_layer.build((None, NUM_FEATURES + 2 * embed_dim))
        self.output_layer.build((None, hidden))
        self.built = True

    def call(self, features, step):
        step = ops.minimum(ops.convert_to_tensor(step, "int32"), self.num_steps - 1)
        step_embed = ops.take(self.step_embedding, step, axis=0)
        step_embed = ops.broadcast_to(step_embed[None, :], (self.num_tensors, self.embed_dim))
        inputs = ops.concatenate(
            [ops.cast(features, self.compute_dtype), self.tensor_embedding, step_embed], axis=-1)
        log_scale = self.output_layer(self.hidden_layer(inputs))[:, 0]
        return ops.clip(ops.exp(log_scale), self.a_min, self.a_max)

    def get_config(self):
        return {**super().get_config(), "num_tensors": self.num_tensors,
                "num_steps": self.num_steps, "hidden": self.hidden, "embed_dim": self.embed_dim,
                "a_min": self.a_min, "a_max": self.a_max}
