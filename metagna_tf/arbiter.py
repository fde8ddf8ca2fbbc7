"""The Arbiter: a small MLP that chooses the inner-loop gradient norm per tensor.

Input, for weight tensor ``l`` at inner step ``j`` (see docs/method.md):
``NUM_FEATURES`` sample-aware scalars (log gradient norm, log weight norm,
mean/std/max of the per-sample losses and of the per-sample log gradient
norms), plus learned embeddings of the step index and of the tensor index.

Output: ``a = bound(z)`` where ``z`` is a Dense layer with zero-initialized
kernel and bias, so ``a == 1`` at initialization and the Meta-GNA step starts
as MAML's step. Bounds (``a_min <= a <= a_max``):

* ``tanh`` (the default, chosen on the validation split): ``log a = c * tanh(z / c)``
  with ``c = log(a_max)`` for ``z >= 0`` and ``c = -log(a_min)`` below: smooth, the
  identity ``a = exp(z)`` near 0, and a gradient everywhere;
* ``clip``: ``a = clip(exp(z), a_min, a_max)`` (no gradient once clipped).

``LearnedStepSizes`` is the ablation without sample awareness (MAML++'s LSLR,
Meta-SGD with one scalar per tensor): ``a[j, l] = bound(z[j, l])`` with ``z`` a
learned table, zero at initialization.

Both layers compute through pure functions of an explicit weight list
(``arbiter_scales``, ``step_size_scales``), so an export can hold its own
``tf.Variable`` copies of the weights and call the same code.
"""

from __future__ import annotations

import functools
import math

import keras
import tensorflow as tf

from metagna_tf.config import ARBITER_BOUNDS, check_scale_bounds

NUM_FEATURES = 8
FEATURE_NAMES = ("log_grad_norm", "log_weight_norm", "loss_mean", "loss_std", "loss_max",
                 "log_sample_grad_norm_mean", "log_sample_grad_norm_std",
                 "log_sample_grad_norm_max")
BOUNDS = ARBITER_BOUNDS


def bounded_scale(z, a_min: float, a_max: float, bound: str):
    """``z`` (a log-scale) -> a scale in ``[a_min, a_max]``; ``bound`` is clip or tanh."""
    if bound == "clip":
        return tf.clip_by_value(tf.exp(z), a_min, a_max)
    upper, lower = math.log(a_max), -math.log(a_min)
    # both branches are finite everywhere (upper, lower > 0), so tf.where's gradient is clean
    return tf.exp(tf.where(z >= 0, upper * tf.tanh(z / upper), lower * tf.tanh(z / lower)))


def arbiter_scales(weights, features, step, *, num_tensors: int, num_steps: int, a_min: float,
                   a_max: float, bound: str, use_features: bool = True):
    """The Arbiter's forward: ``weights`` = [tensor_embedding, step_embedding, hidden kernel,
    hidden bias, output kernel, output bias]; ``features`` (num_tensors, NUM_FEATURES), or with
    leading task axes (..., num_tensors, NUM_FEATURES) for the task-batched inner loop."""
    tensor_embedding, step_embedding, k1, b1, k2, b2 = (tf.convert_to_tensor(w) for w in weights)
    dtype = k1.dtype
    features = tf.cast(features, dtype)  # (..., num_tensors, NUM_FEATURES): leading task axes
    lead = tf.shape(features)[:-1]
    step = tf.minimum(tf.cast(step, tf.int32), num_steps - 1)
    embed_dim = step_embedding.shape[-1]
    step_embed = tf.broadcast_to(tf.gather(step_embedding, step), tf.concat([lead, [embed_dim]], 0))
    tensor_embed = tf.broadcast_to(tensor_embedding, tf.concat([lead, [embed_dim]], 0))
    if not use_features:
        features = tf.zeros_like(features)  # ablation: step and tensor embeddings only
    inputs = tf.concat([features, tensor_embed, step_embed], axis=-1)
    flat = tf.reshape(inputs, [-1, inputs.shape[-1]])
    hidden = tf.nn.relu(tf.matmul(flat, k1) + b1)
    z = tf.reshape((tf.matmul(hidden, k2) + b2)[:, 0], lead)
    return bounded_scale(z, a_min, a_max, bound)


def step_size_scales(weights, features, step, *, num_steps: int, a_min: float, a_max: float,
                     bound: str):
    """LSLR's forward: ``weights`` = [log_scale (num_steps, num_tensors)]; features unused."""
    del features
    (log_scale,) = (tf.convert_to_tensor(w) for w in weights)
    step = tf.minimum(tf.cast(step, tf.int32), num_steps - 1)
    return bounded_scale(tf.gather(log_scale, step), a_min, a_max, bound)


class ScaleNetworkLayer(keras.layers.Layer):
    """What the scale networks share: ``call`` runs the pure ``functional()`` on the layer's
    ``scale_weights`` (an export runs the same function on its own copies)."""

    def call(self, features, step=0):
        return self.functional()([w.value for w in self.scale_weights], features, step)


@keras.saving.register_keras_serializable(package="metagna_tf")
class Arbiter(ScaleNetworkLayer):
    """Maps sample-aware features of each weight tensor to a gradient-norm scale.

    Args:
        num_tensors: number of weight tensors arbitrated (size of the tensor embedding).
        num_steps: number of trained inner steps; later steps reuse the last embedding.
        hidden: hidden units of the MLP.
        embed_dim: size of the step and tensor embeddings.
        a_min, a_max: range of the output scale (``0 < a_min <= 1 <= a_max``).
        bound: ``"tanh"`` (smooth) or ``"clip"``, see the module docstring.
        use_features: False zeroes the sample-aware features (the embeddings-only ablation).

    Call: ``arbiter(features, step)`` with ``features`` of shape
    ``(num_tensors, NUM_FEATURES)`` and an integer ``step``; returns ``(num_tensors,)``.
    """

    uses_features = True
    inputs_kind = "per_tensor"  # gna.GNAUpdate: sample-aware features, a scale on |g|

    def __init__(self, num_tensors, num_steps=1, hidden=32, embed_dim=4, a_min=0.01, a_max=100.0,
                 bound="tanh", use_features=True, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("num_tensors", num_tensors), ("num_steps", num_steps),
                            ("hidden", hidden), ("embed_dim", embed_dim)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"Arbiter: {name} must be a positive integer, got {value!r}")
        check_scale_bounds("Arbiter", a_min, a_max, bound)
        self.num_tensors = num_tensors
        self.num_steps = num_steps
        self.hidden = hidden
        self.embed_dim = embed_dim
        self.a_min = float(a_min)
        self.a_max = float(a_max)
        self.bound = bound
        self.use_features = bool(use_features)
        self.uses_features = self.use_features
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

    @property
    def scale_weights(self) -> list:
        """The weights in the order ``arbiter_scales`` takes them."""
        return [self.tensor_embedding, self.step_embedding, self.hidden_layer.kernel,
                self.hidden_layer.bias, self.output_layer.kernel, self.output_layer.bias]

    def functional(self):
        """``(weights, features, step) -> scales`` with this layer's settings, holding no
        reference to the layer (an export pairs it with its own copies of the weights)."""
        return functools.partial(arbiter_scales, num_tensors=self.num_tensors,
                                 num_steps=self.num_steps, a_min=self.a_min, a_max=self.a_max,
                                 bound=self.bound, use_features=self.use_features)

    def get_config(self):
        return {**super().get_config(), "num_tensors": self.num_tensors,
                "num_steps": self.num_steps, "hidden": self.hidden, "embed_dim": self.embed_dim,
                "a_min": self.a_min, "a_max": self.a_max, "bound": self.bound,
                "use_features": self.use_features}


@keras.saving.register_keras_serializable(package="metagna_tf")
class LearnedStepSizes(ScaleNetworkLayer):
    """A learned scale per inner step and tensor, without inputs (the LSLR ablation).

    Args:
        num_tensors: number of weight tensors.
        num_steps: number of trained inner steps; later steps reuse the last row.
        a_min, a_max, bound: as for ``Arbiter``.
    """

    uses_features = False
    inputs_kind = "per_tensor"

    def __init__(self, num_tensors, num_steps=1, a_min=0.01, a_max=100.0, bound="tanh", **kwargs):
        super().__init__(**kwargs)
        for name, value in (("num_tensors", num_tensors), ("num_steps", num_steps)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"LearnedStepSizes: {name} must be a positive integer, got "
                                 f"{value!r}")
        check_scale_bounds("LearnedStepSizes", a_min, a_max, bound)
        self.num_tensors = num_tensors
        self.num_steps = num_steps
        self.a_min = float(a_min)
        self.a_max = float(a_max)
        self.bound = bound
        self.log_scale = self.add_weight(shape=(num_steps, num_tensors), initializer="zeros",
                                         name="log_scale")
        self.built = True

    @property
    def scale_weights(self) -> list:
        return [self.log_scale]

    def functional(self):
        return functools.partial(step_size_scales, num_steps=self.num_steps, a_min=self.a_min,
                                 a_max=self.a_max, bound=self.bound)

    def get_config(self):
        return {**super().get_config(), "num_tensors": self.num_tensors,
                "num_steps": self.num_steps, "a_min": self.a_min, "a_max": self.a_max,
                "bound": self.bound}


def joint_arbiter_scales(weights, features, step):
    """The joint Arbiter's forward: ``weights`` = [hidden kernel (2L, 2L), hidden bias (2L),
    output kernel (2L, L), output bias (L)]; ``features`` [..., 2L] (``gna.norm_inputs``)
    -> ``alpha`` [..., L] = softplus(relu(x K1 + b1) K2 + b2). The same network at every
    step (``step`` unused)."""
    del step
    k1, b1, k2, b2 = (tf.convert_to_tensor(w) for w in weights)
    x = tf.cast(features, k1.dtype)
    hidden = tf.nn.relu(tf.einsum("...i,ij->...j", x, k1) + b1)
    return tf.nn.softplus(tf.einsum("...i,ij->...j", hidden, k2) + b2)


def _torch_linear_init(fan_in: int):
    """PyTorch's default ``nn.Linear`` initialization, U(+-1/sqrt(fan_in)) for the kernel
    (kaiming_uniform with a = sqrt(5)) and the bias: what the authors' Arbiter starts from."""
    limit = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-limit, limit)


@keras.saving.register_keras_serializable(package="metagna_tf")
class JointArbiter(ScaleNetworkLayer):
    """The authors' Arbiter (``--arbiter-form joint``): one MLP over all adapted tensors.

    Input, per task and inner step: ``x = [|theta_1|..|theta_L|, |g_1|..|g_L|]`` standardized
    over its 2L entries (``gna.norm_inputs``). Output: ``alpha_l`` = the norm of tensor
    ``l``'s step, ``theta_l <- theta_l - inner_lr * alpha_l * g_l / |g_l|`` (``gna.py``).
    ``Linear(2L, 2L) -> ReLU -> Linear(2L, L) -> Softplus``, PyTorch's default
    initialization, shared by every step, no bound (softplus is positive). Source and every
    difference: docs/method.md.

    Args:
        num_tensors: L, the number of adapted tensors.
    """

    uses_features = True
    inputs_kind = "norms"  # gna.GNAUpdate: standardized weight and gradient norms, alpha = step norm

    def __init__(self, num_tensors, **kwargs):
        super().__init__(**kwargs)
        if not (isinstance(num_tensors, int) and num_tensors >= 1):
            raise ValueError(f"JointArbiter: num_tensors must be a positive integer, got "
                             f"{num_tensors!r}")
        self.num_tensors = num_tensors
        width = 2 * num_tensors
        init = _torch_linear_init(width)
        self.hidden_kernel = self.add_weight(shape=(width, width), initializer=init,
                                             name="hidden_kernel")
        self.hidden_bias = self.add_weight(shape=(width,), initializer=init, name="hidden_bias")
        self.output_kernel = self.add_weight(shape=(width, num_tensors), initializer=init,
                                             name="output_kernel")
        self.output_bias = self.add_weight(shape=(num_tensors,), initializer=init,
                                           name="output_bias")
        self.built = True

    @property
    def scale_weights(self) -> list:
        return [self.hidden_kernel, self.hidden_bias, self.output_kernel, self.output_bias]

    def functional(self):
        return joint_arbiter_scales

    def get_config(self):
        return {**super().get_config(), "num_tensors": self.num_tensors}
