"""Keras object contract of the Conv-4 backbone and the Arbiter."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from metagna_tf.arbiter import NUM_FEATURES, Arbiter
from metagna_tf.models.conv4 import Conv4


def test_conv4_serialization_round_trip():
    layer = Conv4(channels=3, filters=8, downsample="maxpool", feature_reduce="flatten")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert clone.get_config() == layer.get_config()
    clone.set_weights(layer.get_weights())
    x = np.random.default_rng(0).random((2, 84, 84, 3)).astype("float32")
    np.testing.assert_allclose(clone(x), layer(x), rtol=1e-6)
    assert layer(x).shape == (2, layer.feature_dim(84)) == (2, 8 * 5 * 5)


def test_conv4_stride_shapes():
    layer = Conv4(channels=1, filters=64)
    assert layer(np.zeros((3, 28, 28, 1), "float32")).shape == (3, 64)
    assert len(layer.params) == 12 and layer.param_names[0] == "conv1_kernel"


@pytest.mark.parametrize("kwargs, name", [
    ({"channels": 2}, "channels"), ({"filters": 0}, "filters"),
    ({"downsample": "pool"}, "downsample"), ({"activation": "gelu"}, "activation"),
    ({"feature_reduce": "max"}, "feature_reduce"), ({"bn_eps": 0}, "bn_eps")])
def test_conv4_argument_errors_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"Conv4: {name}"):
        Conv4(**kwargs)


def test_arbiter_starts_neutral_and_round_trips():
    arbiter = Arbiter(num_tensors=5, num_steps=2, hidden=8, embed_dim=3, a_min=0.1, a_max=10)
    features = np.random.default_rng(0).standard_normal((5, NUM_FEATURES)).astype("float32")
    np.testing.assert_array_equal(arbiter(features, step=0), np.ones(5))
    clone = keras.layers.deserialize(keras.layers.serialize(arbiter))
    assert clone.get_config() == arbiter.get_config()
    for v in arbiter.output_layer.weights:
        v.assign(np.full(v.shape, 0.5))
    clone.set_weights(arbiter.get_weights())
    for step in (0, 1, 7):  # steps past the trained ones reuse the last embedding
        np.testing.assert_allclose(clone(features, step=step), arbiter(features, step=step))
    np.testing.assert_allclose(arbiter(features, step=7), arbiter(features, step=1))
    out = arbiter(features * 100, step=0).numpy()
    assert np.all((out >= 0.1) & (out <= 10))


@pytest.mark.parametrize("kwargs, name", [
    ({"num_tensors": 0}, "num_tensors"), ({"num_tensors": 3, "hidden": 0}, "hidden"),
    ({"num_tensors": 3, "a_min": 2.0}, "a_min"), ({"num_tensors": 3, "a_max": 0.5}, "a_min")])
def test_arbiter_argument_errors_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"Arbiter: .*{name}"):
        Arbiter(**kwargs)


def test_tanh_bound_is_smooth_identity_near_zero_and_bounded():
    import tensorflow as tf

    from metagna_tf.arbiter import bounded_scale

    z = tf.constant([-50.0, -1e-3, 0.0, 1e-3, 2.0, 50.0], tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        smooth = bounded_scale(z, 0.01, 100.0, "tanh")
        clipped = bounded_scale(z, 0.01, 100.0, "clip")
    a = smooth.numpy()
    assert a[2] == 1.0 and np.all((a > 0.01) & (a < 100.0))
    np.testing.assert_allclose(a[1:4], np.exp(z.numpy()[1:4]), rtol=1e-6)  # exp(z) near 0
    g_smooth = tape.gradient(smooth, z).numpy()
    g_clip = tape.gradient(clipped, z).numpy()
    assert g_clip[-1] == 0 and g_clip[0] == 0  # the hard clip passes no gradient there
    assert np.all(g_smooth > 0)  # the smooth bound always does


def test_feature_free_scale_networks_ignore_their_input():
    from metagna_tf.arbiter import LearnedStepSizes

    rng = np.random.default_rng(0)
    f1, f2 = (rng.standard_normal((5, NUM_FEATURES)).astype("float32") for _ in range(2))
    blind = Arbiter(num_tensors=5, num_steps=2, hidden=8, use_features=False)
    for v in blind.output_layer.weights:
        v.assign(np.full(v.shape, 0.3))
    np.testing.assert_array_equal(blind(f1, step=0), blind(f2, step=0))
    assert not np.allclose(blind(f1, step=0), blind(f1, step=1))  # the step embedding counts
    lslr = LearnedStepSizes(num_tensors=5, num_steps=2)
    np.testing.assert_array_equal(lslr(f1, step=0), np.ones(5))  # neutral at initialization
    lslr.log_scale.assign(np.log(np.full((2, 5), 3.0)))
    c = np.log(100.0)  # the default tanh bound: log a = c tanh(log 3 / c), a bit below 3
    np.testing.assert_allclose(lslr(f2, step=7), np.full(5, np.exp(c * np.tanh(np.log(3.0) / c))),
                               rtol=1e-6)
    clone = keras.layers.deserialize(keras.layers.serialize(lslr))
    assert clone.get_config() == lslr.get_config()
    assert Arbiter.from_config(blind.get_config()).get_config() == blind.get_config()


def test_joint_arbiter_round_trips_and_names_bad_arguments():
    from metagna_tf.arbiter import JointArbiter
    from metagna_tf.models.head import LinearHead

    arbiter = JointArbiter(num_tensors=6)
    assert [tuple(w.shape) for w in arbiter.scale_weights] == [(12, 12), (12,), (12, 6), (6,)]
    limit = 1 / np.sqrt(12)  # PyTorch's nn.Linear default: U(+-1/sqrt(fan_in)), biases too
    assert all(np.abs(w.numpy()).max() <= limit for w in arbiter.scale_weights)
    x = np.random.default_rng(0).standard_normal((3, 12)).astype("float32")
    alpha = arbiter(x).numpy()
    assert alpha.shape == (3, 6) and np.all(alpha > 0)  # softplus: any positive step norm
    clone = keras.layers.deserialize(keras.layers.serialize(arbiter))
    assert clone.get_config() == arbiter.get_config()
    clone.set_weights(arbiter.get_weights())
    np.testing.assert_allclose(clone(x), alpha)
    with pytest.raises(ValueError, match="JointArbiter: num_tensors"):
        JointArbiter(num_tensors=0)
    head = LinearHead(features=16, ways=5)
    assert keras.layers.deserialize(keras.layers.serialize(head)).get_config() == head.get_config()
    with pytest.raises(ValueError, match="LinearHead: ways"):
        LinearHead(features=16, ways=1)
