"""The task-batched formulations compute the loop's maths (meta-gradients, metrics, training)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from metagna_tf.algorithms.maml import EPISODE_KEYS, MetaLearner
from tests.conftest import random_episode, tiny_config


def batch(data):
    return [tf.constant(data[k]) for k in EPISODE_KEYS]


def pair(config, batching):
    loop = MetaLearner(config)
    other = MetaLearner(config.replace(task_batching=batching))
    other.set_weights(loop.get_weights())
    rng = np.random.default_rng(3)
    if loop.arbiter is not None:  # away from the neutral initialization
        for a, b in zip(loop.arbiter.weights, other.arbiter.weights, strict=True):
            value = a.numpy() + 0.2 * rng.standard_normal(a.shape)
            a.assign(value)
            b.assign(value)
    return loop, other


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metagna", "gna_normalize_only",
                                       "maml_lslr"])
@pytest.mark.parametrize("downsample", ["avgpool", "stride"])
def test_stacked_meta_gradients_equal_the_loop_in_float64(algorithm, downsample):
    config = tiny_config(algorithm=algorithm, downsample=downsample, meta_batch_size=3)
    loop, stacked = pair(config, "stacked")
    data = batch(random_episode(config, seed=31, tasks=3))
    a, b = loop.meta_gradients(*data), stacked.meta_gradients(*data)
    for x, y in zip(a[:3], b[:3], strict=True):
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=1e-9, atol=1e-12)
    for name, x, y in zip([v.path for v in loop.trainable_variables], a[3], b[3], strict=True):
        scale = np.max(np.abs(x.numpy()))
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=1e-9, atol=1e-9 * scale,
                                   err_msg=name)


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
def test_grouped_convolutions_equal_the_loop_in_float32(downsample):
    config = tiny_config(algorithm="metagna", dtype="float32", activation="relu",
                         downsample=downsample, meta_batch_size=4, image_size=28, filters=8)
    loop, grouped = pair(config, "grouped")
    data = batch(random_episode(config, seed=32, tasks=4))
    a, b = loop.meta_gradients(*data), grouped.meta_gradients(*data)
    np.testing.assert_allclose(b[0].numpy(), a[0].numpy(), rtol=1e-5)
    for x, y in zip(a[3], b[3], strict=True):
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=1e-3,
                                   atol=1e-4 * np.max(np.abs(x.numpy())))
    episodes = dict(zip(EPISODE_KEYS, data, strict=True))
    la, lb = loop.episode_metrics(episodes, 3, ways=2), grouped.episode_metrics(episodes, 3,
                                                                                ways=2)
    for x, y in zip(la, lb, strict=True):  # float32: the exact check is the float64 one above
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=1e-3, atol=1e-6)


def test_unsupported_settings_say_so():
    config = tiny_config(algorithm="metagna", gna_direction="sample", task_batching="stacked")
    model = MetaLearner(config)
    with pytest.raises(ValueError, match="task batching supports gna_direction=mean"):
        model.meta_gradients(*batch(random_episode(config, seed=1, tasks=1)))


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "metagna", "maml_lslr"])
def test_inner_checkpointing_gives_the_same_meta_gradients(algorithm):
    """Recomputing each inner step in the backward pass: the same second-order
    meta-gradients (float64), for the backbone and the Arbiter alike."""
    config = tiny_config(algorithm=algorithm, meta_batch_size=2, inner_steps=3)
    plain, recomputed = pair(config, "loop")
    recomputed = MetaLearner(config.replace(inner_checkpointing=True))
    recomputed.set_weights(plain.get_weights())
    data = batch(random_episode(config, seed=33, tasks=2))
    a, b = plain.meta_gradients(*data), recomputed.meta_gradients(*data)
    for x, y in zip(a[:3], b[:3], strict=True):
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=1e-12)
    for v, x, y in zip(plain.trainable_variables, a[3], b[3], strict=True):
        scale = np.max(np.abs(x.numpy()))
        assert scale > 0 or algorithm == "fomaml", v.path
        np.testing.assert_allclose(y.numpy(), x.numpy(), rtol=1e-9, atol=1e-9 * scale,
                                   err_msg=v.path)
