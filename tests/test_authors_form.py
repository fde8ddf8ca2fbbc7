"""Meta-GNA as its authors built it: MAML's linear head, the joint Arbiter, BatchNorm not adapted.

The joint Arbiter (``--arbiter-form joint``, ``arbiter.JointArbiter``) against a hand
computation, its meta-gradients against finite differences, the linear head's shapes, and the
clear errors for a class count the head cannot take.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from metagna_tf.algorithms.inner_loop import init_fast_weights, inner_step, support_gradients
from metagna_tf.algorithms.maml import EPISODE_KEYS, MetaLearner
from metagna_tf.config import PRESETS, Config
from tests.conftest import random_episode, tiny_config
from tests.test_meta_gradients import FrozenFeatures, directional_fd_check, meta_loss, task

AUTHORS = dict(algorithm="metagna", head="linear", arbiter_form="joint", inner_params="no_bn")


def softplus(x):
    return np.log1p(np.exp(x))


def test_joint_arbiter_inputs_and_update_match_a_hand_computation():
    """x = standardize([|theta_l|], [|g_l|]) (N - 1 std + 1e-12), alpha = softplus(relu(x K1
    + b1) K2 + b2), theta_l <- theta_l - lr * alpha_l * g_l / |g_l|, on the 6 adapted tensors
    (4 kernels, head W and b); gamma and beta pass through."""
    keras.utils.set_random_seed(1)
    config = tiny_config(**AUTHORS, inner_lr=0.05)
    model = MetaLearner(config)
    assert model.scale_names == ["conv1_kernel", "conv2_kernel", "conv3_kernel", "conv4_kernel",
                                 "head_kernel", "head_bias"]
    sx, sy, _, _ = task(random_episode(config, seed=2))
    fast = init_fast_weights(model.backbone, model.theta(), sx, sy, config.ways,
                             model.head_params())
    adapted = model.inner_loop_args(config.ways)["adapted"]
    new, scales, _ = inner_step(model.backbone, model.update_rule, 0, fast, sx, sy,
                                adapted=adapted)
    _, grads, _ = support_gradients(model.backbone, fast, sx, sy, adapted=adapted)

    theta = [fast[i].numpy()[0] for i in adapted]
    g = [t.numpy()[0] for t in grads]
    x = np.array([np.linalg.norm(t) for t in theta] + [np.linalg.norm(t) for t in g])
    x = (x - x.mean()) / (x.std(ddof=1) + 1e-12)
    k1, b1, k2, b2 = (w.numpy() for w in model.arbiter.scale_weights)
    alpha = softplus(np.maximum(x @ k1 + b1, 0) @ k2 + b2)
    np.testing.assert_allclose(scales.numpy()[0], alpha, rtol=1e-12)
    for j, i in enumerate(adapted):
        expected = theta[j] - config.inner_lr * alpha[j] * g[j] / np.linalg.norm(g[j])
        np.testing.assert_allclose(new[i].numpy()[0], expected, rtol=1e-12, atol=1e-15)
    for i in set(range(len(fast))) - set(adapted):  # gamma, beta: not adapted
        np.testing.assert_array_equal(new[i].numpy(), fast[i].numpy())
    assert model.tensor_names[adapted[-1]] == "head_bias"
    # the head's bias starts at 0: its norm's gradient is 0 there, not NaN
    assert float(tf.norm(fast[-1])) == 0.0


@pytest.mark.parametrize("variant", ["authors", "maml_linear", "metagna_linear_all"])
def test_linear_head_meta_gradients_match_finite_differences(variant):
    """Second order through the linear head, the joint Arbiter (its weight-norm inputs carry
    the meta-gradient, its gradient-norm inputs are constants) and the frozen BatchNorm."""
    keras.utils.set_random_seed(9)
    options = {"authors": AUTHORS,
               "maml_linear": dict(algorithm="maml", head="linear", inner_params="no_bn"),
               "metagna_linear_all": dict(algorithm="metagna", head="linear")}[variant]
    config = tiny_config(**options, inner_steps=2)
    model = MetaLearner(config)
    data = random_episode(config, seed=21)
    if model.arbiter is not None:
        rng = np.random.default_rng(4)
        for var in model.arbiter.weights:  # away from the initialization
            var.assign(var.numpy() + 0.2 * rng.standard_normal(var.shape))
        model.update_rule = FrozenFeatures(model.update_rule)
        meta_loss(model, data)  # record the constants at the unperturbed point
        model.update_rule.replay = True
    analytic, numeric = directional_fd_check(model, data)
    assert abs(analytic) > 1e-4
    assert abs(analytic - numeric) <= 1e-6 * abs(numeric), (analytic, numeric)
    head_grads = model.meta_gradients(*(tf.constant(data[k]) for k in EPISODE_KEYS))[3]
    by_path = {v.path: g for v, g in zip(model.trainable_variables, head_grads, strict=True)}
    assert float(tf.reduce_max(tf.abs(by_path["head/head_kernel"]))) > 0


def test_linear_head_shapes():
    config = tiny_config(head="linear", ways=3, feature_reduce="flatten", downsample="avgpool",
                         image_size=16, filters=4, queries=2)
    model = MetaLearner(config)
    features = 4 * 1 * 1  # 16 -> 8 -> 4 -> 2 -> 1 after four 2x2 average pools, 4 filters
    assert model.head.kernel.shape == (features, 3) and model.head.bias.shape == (3,)
    sx, sy, qx, _ = task(random_episode(config, seed=3))
    adaptation = model.adapt(sx, sy, steps=2)
    assert adaptation.fast[-2].shape == (1, features, 3)
    assert adaptation.fast[-1].shape == (1, 3)
    assert model.classify(adaptation, qx).shape == (1, 6, 3)
    # the head is a meta-parameter (saved, trained); the prototype head is not
    assert {v.path for v in model.trainable_variables} >= {"head/head_kernel", "head/head_bias"}
    assert MetaLearner(config.replace(head="proto")).head is None


def test_a_class_count_the_linear_head_cannot_take_is_refused():
    from metagna_tf.prediction import Predictor

    config = tiny_config(head="linear", dtype="float32", activation="relu", downsample="stride",
                         image_size=28, ways=5)
    model = MetaLearner(config)
    sx, sy, _, _ = task(random_episode(config.replace(ways=3), seed=4))
    with pytest.raises(ValueError, match="linear head classifies exactly 5"):
        model.adapt(sx, sy, steps=1, ways=3)
    images = np.zeros((6, 28, 28, 1), np.uint8)
    with pytest.raises(ValueError, match="3 classes given, but this model's linear head "
                                         "classifies exactly 5"):
        Predictor(model, 1).adapt(images, np.repeat(np.arange(3), 2))


def test_presets_carry_the_authors_settings():
    mini = Config.from_dict(PRESETS["paper_mini_imagenet_5w1s"])
    assert (mini.head, mini.arbiter_form, mini.inner_params, mini.algorithm) == (
        "linear", "joint", "no_bn", "metagna")
    assert (mini.inner_steps, mini.inner_steps_test, mini.inner_lr) == (5, 5, 0.01)
    assert (mini.queries, mini.meta_batch_size, mini.meta_lr, mini.filters) == (15, 4, 1e-4, 128)
    assert (mini.image_size, mini.downsample, mini.activation) == (84, "maxpool", "leaky_relu")
    assert mini.iterations == 150 * 500 and not mini.first_order
    five = Config.from_dict(PRESETS["paper_mini_imagenet_5w5s"])
    assert (five.shots, five.meta_batch_size) == (5, 2)
    omniglot = Config.from_dict(PRESETS["paper_omniglot_5w1s"])
    assert (omniglot.head, omniglot.arbiter_form, omniglot.inner_params) == (
        "linear", "joint", "no_bn")
    assert (omniglot.inner_steps, omniglot.inner_steps_test, omniglot.image_size) == (5, 5, 28)
    # the per-tensor Arbiter's keys do nothing with the joint form
    assert {"arbiter_hidden", "arbiter_bound", "gna_sample_grads"} <= mini.inert_keys
    assert "arbiter_form" not in mini.inert_keys
    assert "arbiter_form" in Config(algorithm="maml").inert_keys
