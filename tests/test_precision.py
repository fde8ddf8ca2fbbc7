"""Low-precision compute (bfloat16, float16 with loss scaling) trains with finite losses on CPU."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from metagna_tf.algorithms.gna import normalize, sample_unit_vectors
from metagna_tf.checkpoints import build_model
from metagna_tf.models.conv4 import grouped_gradients_available
from tests.conftest import random_episode, tiny_config


@pytest.mark.parametrize("precision, batching", [("mixed_float16", "loop"),
                                                 ("bfloat16", "loop"), ("bfloat16", "grouped")])
def test_low_precision_trains_a_few_steps_with_finite_loss(precision, batching):
    config = tiny_config(dtype="float32", activation="relu", downsample="stride",
                         algorithm="metagna", image_size=28, filters=8, meta_batch_size=2,
                         precision=precision, task_batching=batching)
    if batching == "grouped" and not grouped_gradients_available(config.compute_dtype):
        # this CPU can't (oneDNN takes bfloat16 only with AVX-512): a clear refusal instead
        with pytest.raises(ValueError, match=f"no grouped-convolution gradient in "
                                             f"{config.compute_dtype}"):
            build_model(config)
        assert config.replace(task_batching="auto").batching == "loop"
        return
    keras.utils.set_random_seed(3)  # an initialization whose float16 gradients hit exact zeros
    model = build_model(config)
    if precision == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    before = [v.numpy().copy() for v in model.backbone.params]
    data = random_episode(config, seed=41, tasks=2)
    history = model.fit(tf.data.Dataset.from_tensors(data).repeat(), steps_per_epoch=6,
                        epochs=1, verbose=0)
    losses = history.history["loss"]
    assert all(math.isfinite(v) for v in losses)
    assert all(v.dtype == np.float32 for v in before)  # variables stay float32
    moved = [not np.array_equal(v.numpy(), b) for v, b in zip(model.backbone.params, before,
                                                                strict=True)]
    assert all(moved)
    # the low-precision adaptation tracks the float32 one
    reference = build_model(config.replace(precision="float32"))
    reference.set_weights(model.get_weights())
    sx = tf.constant(data["support_x"][:1])  # one task (the task axis kept)
    sy = tf.constant(data["support_y"][:1])
    low, full = model.adapt(sx, sy, 2), reference.adapt(sx, sy, 2)
    assert low.fast[0].dtype == tf.as_dtype(config.compute_dtype)
    np.testing.assert_allclose(low.support_losses.numpy(), full.support_losses.numpy(),
                               rtol=0.1, atol=0.05)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_normalize_in_low_precision_maps_a_zero_gradient_to_zero_not_nan(dtype):
    # 1 / eps = 1e12 is inf in float16, and 0 * inf is NaN: the scaling has to stay in float32
    v = tf.constant(np.stack([np.zeros((3, 2)), np.full((3, 2), 1e-3), np.full((3, 2), 300.0)]),
                    dtype)  # [T=3, 3, 2]: a zero gradient, a tiny one, one whose |v|^2 > 65504
    unit, norm = normalize(v)
    assert unit.dtype == dtype and norm.dtype == dtype
    np.testing.assert_array_equal(tf.cast(unit[0], tf.float32).numpy(), 0.0)
    np.testing.assert_allclose(tf.cast(norm, tf.float32).numpy(),
                               [0.0, 1e-3 * 6 ** 0.5, 300.0 * 6 ** 0.5], rtol=1e-2)
    np.testing.assert_allclose(tf.norm(tf.cast(unit[1:], tf.float32), axis=[1, 2]).numpy(),
                               [1.0, 1.0], rtol=1e-2)
    per_sample = sample_unit_vectors(v[None])  # [T=1, n=3, 3, 2]
    assert np.isfinite(tf.cast(per_sample, tf.float32).numpy()).all()
    np.testing.assert_array_equal(tf.cast(per_sample[0, 0], tf.float32).numpy(), 0.0)
