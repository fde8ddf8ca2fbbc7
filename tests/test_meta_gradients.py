"""Behavioural tests of the inner loop and the meta-gradients (second order, exact)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from metagna_tf.algorithms.gna import GNAUpdate, per_sample_norms
from metagna_tf.algorithms.inner_loop import (
    classify,
    frozen_stats_sample_norms,
    head_logits,
    init_fast_weights,
    per_sample_losses,
    support_gradients,
)
from metagna_tf.algorithms.maml import MetaLearner
from tests.conftest import random_episode, tiny_config


def task(data, i=0):
    """Episode ``i`` as a batch of one task (every tensor keeps the task axis, T = 1)."""
    return tuple(tf.constant(data[k][i:i + 1])
                 for k in ("support_x", "support_y", "query_x", "query_y"))


def meta_loss(model, data):
    loss, _, _ = model.task_outputs(*task(data), steps=model.config.inner_steps,
                                    first_order=model.config.first_order)
    return float(loss[0])


def randomize_arbiter(model, seed=1):
    """Give the Arbiter's zero-initialized output layer random weights, so a != 1."""
    rng = np.random.default_rng(seed)
    for var in model.arbiter.output_layer.weights:
        var.assign(0.3 * rng.standard_normal(var.shape))


class FrozenFeatures(GNAUpdate):
    """GNA update whose Arbiter features replay those recorded at the unperturbed point.

    The features are constants of the meta-gradient (stop_gradient); a finite
    difference in theta would also move them, so the check holds them fixed.
    """

    def __init__(self, base: GNAUpdate):
        super().__init__(base.inner_lr, base.arbiter, base.direction, base.sample_grads)
        self.recorded = {}
        self.replay = False

    def constants(self, *, step, **kwargs):
        if self.replay:
            return self.recorded[step]
        self.recorded[step] = super().constants(step=step, **kwargs)
        return self.recorded[step]


def directional_fd_check(model, data, seed=0, h=1e-5):
    """Compare <meta-gradient, v> with a central finite difference along v."""
    variables = model.trainable_variables
    _, _, _, grads = model.meta_gradients(*(tf.constant(data[k]) for k in
                                            ("support_x", "support_y", "query_x", "query_y")))
    rng = np.random.default_rng(seed)
    direction = [rng.standard_normal(v.shape) for v in variables]
    scale = np.sqrt(sum(float(np.sum(d * d)) for d in direction))
    direction = [d / scale for d in direction]
    analytic = sum(float(np.sum(g.numpy() * d)) for g, d in zip(grads, direction, strict=True))
    base = [v.numpy().copy() for v in variables]

    def loss_at(t):
        for v, b, d in zip(variables, base, direction, strict=True):
            v.assign(b + t * d)
        return meta_loss(model, data)

    numeric = (loss_at(h) - loss_at(-h)) / (2 * h)
    loss_at(0.0)
    return analytic, numeric


@pytest.mark.parametrize("algorithm", ["maml", "metagna", "metagna:jacobian", "gna_normalize_only"])
def test_second_order_meta_gradient_matches_finite_differences(algorithm):
    keras.utils.set_random_seed(5)
    config = tiny_config(algorithm=algorithm.split(":")[0],
                         gna_sample_grads=algorithm.split(":")[-1] if ":" in algorithm
                         else "frozen_stats")
    model = MetaLearner(config)
    data = random_episode(config, seed=3)
    if config.algorithm == "metagna":
        randomize_arbiter(model)
        model.update_rule = FrozenFeatures(model.update_rule)
        # the case tests the per-sample-gradient definition its name says
        assert model.update_rule.sample_grads == config.gna_sample_grads
        assert model.update_rule.needs_sample_grads == (config.gna_sample_grads == "jacobian")
        meta_loss(model, data)  # record the features at the unperturbed point
        model.update_rule.replay = True
    analytic, numeric = directional_fd_check(model, data)
    assert abs(analytic) > 1e-4
    assert abs(analytic - numeric) <= 1e-6 * abs(numeric), (analytic, numeric)


def test_first_order_equals_stop_gradient_copy():
    config = tiny_config(algorithm="fomaml")
    model = MetaLearner(config)
    data = random_episode(config, seed=4)
    _, _, _, grads = model.meta_gradients(*(tf.constant(data[k]) for k in
                                            ("support_x", "support_y", "query_x", "query_y")))
    sx, sy, qx, qy = task(data)
    backbone = model.backbone
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        theta = [tf.convert_to_tensor(p.value) for p in backbone.params]
        fast0 = init_fast_weights(backbone, theta, sx, sy, 2)
        # plain SGD on a detached copy, then re-attached with an identity Jacobian
        fast = [tf.stop_gradient(f) for f in fast0]
        for _ in range(config.inner_steps):
            with tf.GradientTape() as inner:
                inner.watch(fast)
                loss = tf.reduce_mean(per_sample_losses(backbone, fast, sx, sy))
            fast = [f - config.inner_lr * g for f, g in zip(fast, inner.gradient(loss, fast),
                                                                strict=True)]
        fast = [f0 + tf.stop_gradient(f - f0) for f0, f in zip(fast0, fast, strict=True)]
        _, stats = backbone.forward(fast[:-2], sx, return_stats=True)
        logits = classify(backbone, fast, stats, qx)
        query_loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=qy, logits=logits))
    expected = tape.gradient(query_loss, variables)
    for g, e in zip(grads, expected, strict=True):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-10, atol=1e-12)


def test_metagna_with_neutral_arbiter_is_maml():
    """a = 1 at initialization: Meta-GNA's inner steps and meta-gradient equal MAML's."""
    config = tiny_config(algorithm="maml")
    maml = MetaLearner(config)
    gna = MetaLearner(config.replace(algorithm="metagna"))
    for a, b in zip(gna.backbone.params, maml.backbone.params, strict=True):
        a.assign(b.numpy())
    data = random_episode(config, seed=5)
    sx, sy, qx, qy = task(data)
    adapted_maml = maml.adapt(sx, sy, steps=3)
    adapted_gna = gna.adapt(sx, sy, steps=3)
    np.testing.assert_array_equal(adapted_gna.scales.numpy(), 1.0)
    flat = [tf.nest.flatten(a.fast + a.stats) for a in (adapted_gna, adapted_maml)]
    for a, b in zip(*flat, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-12)
    args = [tf.constant(data[k]) for k in ("support_x", "support_y", "query_x", "query_y")]
    g_maml = maml.meta_gradients(*args)[3]
    g_gna = gna.meta_gradients(*args)[3][: len(g_maml)]
    for a, b in zip(g_gna, g_maml, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("downsample", ["stride", "maxpool", "avgpool"])
def test_frozen_stats_sample_norms_match_a_loop(downsample):
    """Per-layer identities == a loop over the rows of the per-sample loss vector of a
    forward pass whose BatchNorm statistics (the batch's) are held constant."""
    config = tiny_config(downsample=downsample, shots=3)
    model = MetaLearner(config)
    sx, sy, _, _ = task(random_episode(config, seed=12))
    theta = [tf.convert_to_tensor(p.value) for p in model.backbone.params]
    fast = init_fast_weights(model.backbone, theta, sx, sy, config.ways)
    norms = frozen_stats_sample_norms(model.backbone, fast, sx, sy).numpy()[0]  # (tensors, n)
    assert norms.shape == (len(model.tensor_names), int(sx.shape[1]))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(fast)
        features = model.backbone.forward(fast[:-2], sx, freeze_stats=True)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=sy, logits=head_logits(features, fast))
        rows = [losses[0, i] for i in range(int(sx.shape[1]))]
    for i, loss_i in enumerate(rows):
        expected = [float(tf.norm(tf.reshape(g, [-1]))) for g in tape.gradient(loss_i, fast)]
        np.testing.assert_allclose(norms[:, i], expected, rtol=1e-9, atol=1e-12)
    # they differ from the gradients through the statistics (the Jacobian definition)
    _, _, coupled = support_gradients(model.backbone, fast, sx, sy, per_sample=True)
    assert not np.allclose(per_sample_norms(coupled).numpy()[0], norms, rtol=1e-3)


def test_per_sample_gradient_norms_match_a_loop():
    config = tiny_config(dtype="float32", activation="relu", downsample="stride", shots=3)
    model = MetaLearner(config)
    sx, sy, _, _ = task(random_episode(config, seed=6))
    theta = [tf.convert_to_tensor(p.value) for p in model.backbone.params]
    fast = init_fast_weights(model.backbone, theta, sx, sy, config.ways)
    losses, _, sample_grads = support_gradients(model.backbone, fast, sx, sy, per_sample=True)
    norms = per_sample_norms(sample_grads).numpy()[0]  # (tensors, n)
    for i in range(int(losses.shape[1])):
        with tf.GradientTape() as tape:
            tape.watch(fast)
            loss_i = per_sample_losses(model.backbone, fast, sx, sy)[0, i]
        grads = tape.gradient(loss_i, fast)
        expected = [float(tf.norm(tf.reshape(g, [-1]))) for g in grads]
        np.testing.assert_allclose(norms[:, i], expected, rtol=1e-4, atol=1e-7)


def test_every_arbiter_weight_changes_after_two_meta_steps():
    config = tiny_config(dtype="float32", activation="relu", downsample="stride",
                         algorithm="metagna", meta_batch_size=2)
    model = MetaLearner(config)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    before = {v.path: v.numpy().copy() for v in model.arbiter.weights}
    data = random_episode(config, seed=7, tasks=2)
    ds = tf.data.Dataset.from_tensors(data).repeat()
    model.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)
    after_one = {v.path: v.numpy().copy() for v in model.arbiter.weights}
    hidden = model.arbiter.hidden_layer.kernel.path
    # the zero-initialized output layer passes no gradient to earlier layers at first
    np.testing.assert_array_equal(after_one[hidden], before[hidden])
    model.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)
    for v in model.arbiter.weights:
        assert not np.array_equal(v.numpy(), before[v.path]), f"{v.path} did not change"


@pytest.mark.parametrize("algorithm", ["maml", "metagna", "gna_normalize_only"])
def test_adapting_lowers_the_support_loss(algorithm):
    config = tiny_config(dtype="float32", activation="relu", downsample="stride",
                         algorithm=algorithm, inner_lr=0.1, shots=3)
    model = MetaLearner(config)
    sx, sy, _, _ = task(random_episode(config, seed=8))
    theta = [tf.convert_to_tensor(p.value) for p in model.backbone.params]
    before = float(tf.reduce_mean(per_sample_losses(
        model.backbone, init_fast_weights(model.backbone, theta, sx, sy, config.ways), sx, sy)))
    adapted = model.adapt(sx, sy, steps=5)
    after = float(tf.reduce_mean(per_sample_losses(model.backbone, adapted.fast, sx, sy)))
    assert after < before
    # the reported trace: the loss before each step and after the last
    trace = adapted.support_losses.numpy()[0]
    assert trace.shape == (6,) and adapted.scales.shape == (1, 5, len(model.tensor_names))
    np.testing.assert_allclose([trace[0], trace[-1]], [before, after], rtol=1e-5)


def test_prototype_head_gives_backbone_gradients_at_the_first_step():
    config = tiny_config(dtype="float32", activation="relu", downsample="stride")
    model = MetaLearner(config)
    sx, sy, _, _ = task(random_episode(config, seed=9))
    theta = [tf.convert_to_tensor(p.value) for p in model.backbone.params]
    fast = init_fast_weights(model.backbone, theta, sx, sy, config.ways)
    _, grads, _ = support_gradients(model.backbone, fast, sx, sy)
    for name, g in zip(model.tensor_names, grads, strict=True):
        assert float(tf.norm(tf.reshape(g, [-1]))) > 0, name
    # the trap it avoids: with a zero head every backbone gradient is exactly zero
    zero_head = fast[:-2] + [tf.zeros_like(fast[-2]), tf.zeros_like(fast[-1])]
    _, grads, _ = support_gradients(model.backbone, zero_head, sx, sy)
    for g in grads[:-2]:
        assert float(tf.reduce_max(tf.abs(g))) == 0.0


def test_query_prediction_is_the_same_alone_and_in_a_batch():
    config = tiny_config(dtype="float32", activation="relu", downsample="stride", queries=3)
    model = MetaLearner(config)
    sx, sy, qx, _ = task(random_episode(config, seed=10))
    adapted = model.adapt(sx, sy, steps=2)
    batch = model.classify(adapted, qx).numpy()
    for i in range(int(qx.shape[1])):
        alone = model.classify(adapted, qx[:, i:i + 1]).numpy()
        np.testing.assert_allclose(alone[0, 0], batch[0, i], rtol=1e-5, atol=1e-6)


def test_sample_direction_runs_and_gives_finite_meta_gradients():
    config = tiny_config(algorithm="metagna", gna_direction="sample")
    model = MetaLearner(config)
    data = random_episode(config, seed=11)
    _, _, _, grads = model.meta_gradients(*(tf.constant(data[k]) for k in
                                            ("support_x", "support_y", "query_x", "query_y")))
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert any(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_xla_train_step_matches_the_plain_graph():
    """--jit on (stride backbone): XLA compiles the meta-step and computes the same update."""
    config = tiny_config(dtype="float32", activation="relu", downsample="stride",
                         algorithm="metagna", inner_steps=1, meta_batch_size=2)
    data = random_episode(config, seed=13, tasks=2)
    ds = tf.data.Dataset.from_tensors(data).repeat()
    weights = None
    results = []
    for jit in (False, True):
        model = MetaLearner(config)
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
        history = model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
        results.append((history.history["loss"][0], model.get_weights()))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-4)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("variant", ["maml_lslr", "metagna:tanh", "metagna:nofeatures"])
def test_ablation_variants_meta_gradients_match_finite_differences(variant):
    """LSLR, the smooth bound and the feature-free Arbiter are differentiated exactly too."""
    keras.utils.set_random_seed(7)  # a fixed initialization: the check's direction is random
    algorithm, _, option = variant.partition(":")
    config = tiny_config(algorithm=algorithm, arbiter_bound="tanh" if option == "tanh" else "clip",
                         arbiter_use_features=option != "nofeatures")
    model = MetaLearner(config)
    data = random_episode(config, seed=14)
    rng = np.random.default_rng(2)
    for var in model.arbiter.weights:  # away from the neutral initialization
        var.assign(var.numpy() + 0.2 * rng.standard_normal(var.shape))
    if option == "tanh":
        model.update_rule = FrozenFeatures(model.update_rule)
        meta_loss(model, data)
        model.update_rule.replay = True
    analytic, numeric = directional_fd_check(model, data)
    assert abs(analytic) > 1e-4
    assert abs(analytic - numeric) <= 1e-6 * abs(numeric), (analytic, numeric)


def test_lslr_at_initialization_is_maml():
    config = tiny_config(algorithm="maml")
    maml = MetaLearner(config)
    lslr = MetaLearner(config.replace(algorithm="maml_lslr"))
    for a, b in zip(lslr.backbone.params, maml.backbone.params, strict=True):
        a.assign(b.numpy())
    sx, sy, _, _ = task(random_episode(config, seed=15))
    x = tf.nest.flatten(lslr.adapt(sx, sy, steps=2).fast)
    y = tf.nest.flatten(maml.adapt(sx, sy, steps=2).fast)
    for a, b in zip(x, y, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-12)


def test_training_logits_equal_the_inference_path():
    """query_logits (one forward over [support; queries]) == classify(adapt(...)) logits."""
    from metagna_tf.algorithms.inner_loop import query_logits

    config = tiny_config(queries=3)
    model = MetaLearner(config)
    sx, sy, qx, _ = task(random_episode(config, seed=16))
    adapted = model.adapt(sx, sy, steps=2)
    np.testing.assert_allclose(query_logits(model.backbone, adapted.fast, sx, qx).numpy(),
                               model.classify(adapted, qx).numpy(), rtol=1e-12, atol=1e-12)
