"""Pure functions of the inner loop: head, task loss, adaptation.

Fast weights are a list of tensors: the backbone's tensors followed by the
classifier head ``[W, b]``. Nothing here touches a variable's value; the
outer loop differentiates through everything (second order) unless
``first_order`` stops the inner gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import tensorflow as tf

# An update rule: (step, params, grads, losses, sample_grads, sample_norms) -> (new params,
# scales). ``sample_grads`` are per-sample gradients (a list of [n, *shape] tensors), or
# None unless the rule has ``needs_sample_grads = True``; ``sample_norms`` are
# (num_tensors, n) per-sample gradient norms with BatchNorm statistics held constant, or
# None unless ``needs_sample_norms = True``; ``scales`` is a vector with one gradient-norm
# scale per tensor (ones for plain SGD).
UpdateRule = Callable[..., tuple[list, tf.Tensor]]


class Adaptation(NamedTuple):
    """What adapting to one support set yields; ``classify`` needs only ``fast`` and ``stats``."""

    fast: list  # adapted backbone tensors, then the head [W, b]
    stats: list  # per block (mean, variance) of the support set under ``fast``
    scales: tf.Tensor  # (steps, num_tensors) gradient-norm scales applied (ones for SGD)
    support_losses: tf.Tensor  # (steps + 1,) mean support loss before each step and after the last


def prototype_head(features, labels, ways):
    """Proto-MAML head: ``W_c = 2 mu_c``, ``b_c = -||mu_c||^2`` (mu_c: class mean feature).

    ``logits = f W + b = -||f - mu_c||^2 + ||f||^2``: a nearest-prototype classifier
    for any number of classes, with a non-zero backbone gradient at the first step.
    """
    onehot = tf.one_hot(labels, ways, dtype=features.dtype)  # (n, ways)
    counts = tf.reduce_sum(onehot, axis=0)
    prototypes = tf.matmul(onehot, features, transpose_a=True) / counts[:, None]  # (ways, d)
    return 2.0 * tf.transpose(prototypes), -tf.reduce_sum(tf.square(prototypes), axis=-1)


def float_logits(logits):
    """Logits in float32 when computed in bfloat16 or float16: losses and softmax stay exact."""
    return tf.cast(logits, tf.float32) if logits.dtype in (tf.bfloat16, tf.float16) else logits


def logits_of(backbone, fast, x):
    """Logits of ``x`` under fast weights, BatchNorm statistics from ``x`` itself (the support set)."""
    features = backbone.forward(fast[:-2], x)
    return float_logits(tf.matmul(features, fast[-2]) + fast[-1])


def per_sample_losses(backbone, fast, x, y):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits_of(backbone, fast, x))


def init_fast_weights(backbone, params: Sequence, support_x, support_y, ways):
    features = backbone.forward(list(params), support_x)
    w, b = prototype_head(features, support_y, ways)
    return list(params) + [w, b]


def support_gradients(backbone, fast, x, y, per_sample: bool = False):
    """Per-sample losses, the gradient of their mean and, if asked, per-sample gradients.

    Per-sample gradients (a list of ``[n, *shape]`` tensors) are the Jacobian of the
    per-sample loss vector from the same forward pass (same BatchNorm statistics),
    vectorized with ``pfor`` rather than a Python loop over samples.
    """
    with tf.GradientTape(persistent=per_sample) as tape:
        tape.watch(fast)
        losses = per_sample_losses(backbone, fast, x, y)
        loss = tf.reduce_mean(losses)
    grads = tape.gradient(loss, fast)
    sample_grads = tape.jacobian(losses, fast, experimental_use_pfor=True) if per_sample else None
    del tape
    return losses, grads, sample_grads


def frozen_stats_sample_norms(backbone, fast, x, y):
    """``(num_tensors, n)`` per-sample gradient norms, BatchNorm statistics held constant.

    One extra first-order forward and backward pass: with the batch statistics as
    constants, sample ``i``'s activations reach only ``L_i``, so the gradient of
    ``sum_i L_i`` with respect to each block's output holds every sample's own
    gradient, and per-layer identities give the norms exactly (no Jacobian, no loop
    over samples). The result is a constant for the meta-gradient.
    """
    fast = [tf.stop_gradient(f) for f in fast]
    x = tf.stop_gradient(x)
    taps: dict = {}
    with tf.GradientTape() as tape:
        tape.watch(fast)
        features = backbone.forward(fast[:-2], x, taps=taps, freeze_stats=True)
        logits = float_logits(tf.matmul(features, fast[-2]) + fast[-1])
        total = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y,
                                                                             logits=logits))
    grads = tape.gradient(total, [*taps["bn_out"], logits])
    logit_norms = tf.norm(grads[-1], axis=-1)  # |p_i - onehot(y_i)|
    norms = backbone.sample_grad_norms(fast[:-2], taps, grads[:-1])
    norms += [tf.norm(float_logits(features), axis=-1) * logit_norms, logit_norms]  # W, b
    return tf.stop_gradient(tf.stack([tf.cast(n, logit_norms.dtype) for n in norms]))


def inner_step(backbone, update: UpdateRule, step: int, fast, support_x, support_y, *,
               first_order: bool = False, observe=None):
    """One inner step: ``(new fast weights, scales, mean support loss before the step)``."""
    per_sample = getattr(update, "needs_sample_grads", False)
    losses, grads, sample_grads = support_gradients(backbone, fast, support_x, support_y,
                                                    per_sample)
    if first_order:
        grads = [tf.stop_gradient(g) for g in grads]
        if sample_grads is not None:
            sample_grads = [tf.stop_gradient(g) for g in sample_grads]
    sample_norms = (frozen_stats_sample_norms(backbone, fast, support_x, support_y)
                    if getattr(update, "needs_sample_norms", False) else None)
    new_fast, scales = update(step=step, params=fast, grads=grads, losses=losses,
                              sample_grads=sample_grads, sample_norms=sample_norms)
    if observe is not None:
        observe(step=step, fast=fast, losses=losses, grads=grads, scales=scales)
    return new_fast, scales, tf.reduce_mean(losses)


def support_statistics(backbone, fast, support_x, support_y):
    """The support set's BatchNorm statistics under ``fast``, and its mean loss."""
    features, stats = backbone.forward(fast[:-2], support_x, return_stats=True)
    logits = float_logits(tf.matmul(features, fast[-2]) + fast[-1])
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=support_y,
                                                                         logits=logits))
    return stats, loss


def adapt(backbone, params: Sequence, support_x, support_y, ways, *, steps: int,
          update: UpdateRule, first_order: bool = False, observe=None,
          final_stats: bool = True) -> Adaptation:
    """Adapt ``params`` (backbone tensors) to the support set.

    After the last step, one forward pass over the support set gives the BatchNorm
    statistics that ``classify`` applies to any image (and the final support loss).
    ``observe``, if given, is called at each step with ``step``, ``fast`` (before the step),
    ``losses`` (per sample), ``grads`` and ``scales`` (for analysis tools; eager use).
    ``final_stats=False`` skips the final support forward (``stats`` is then None): for
    ``query_logits``, which gets the same statistics in its own forward pass.
    """
    fast = init_fast_weights(backbone, params, support_x, support_y, ways)
    all_scales, support_losses = [], []
    for step in range(steps):
        fast, scales, loss = inner_step(backbone, update, step, fast, support_x, support_y,
                                        first_order=first_order, observe=observe)
        all_scales.append(scales)
        support_losses.append(loss)
    stats = None
    if final_stats:
        stats, loss = support_statistics(backbone, fast, support_x, support_y)
        support_losses.append(loss)
    scales = (tf.stack(all_scales) if all_scales
              else tf.zeros([0, len(fast)], dtype=scale_dtype(fast)))
    losses = tf.stack(support_losses) if support_losses else tf.zeros([0], scales.dtype)
    return Adaptation(fast, stats, scales, losses)


def query_logits(backbone, fast, support_x, query_x):
    """``classify(fast, support statistics, query_x)`` in one forward pass over
    ``[support; queries]`` with the statistics of the support rows: the same logits, one
    forward fewer (the training and evaluation path; ``tests/test_meta_gradients.py``)."""
    n_support = tf.shape(support_x)[0]
    features = backbone.forward(fast[:-2], tf.concat([support_x, query_x], axis=0),
                                n_stats=n_support)
    return float_logits(tf.matmul(features[n_support:], fast[-2]) + fast[-1])


def recomputed_meta_gradients(backbone, update: UpdateRule, theta_variables, scale_variables,
                              cast, support_x, support_y, query_x, query_y, ways, *,
                              steps: int, first_order: bool = False):
    """One task's query loss and its gradients, recomputing each inner step backwards.

    The plain path keeps every inner step's activations for the backward pass. Here the
    forward keeps only the fast weights after each step; the backward pass walks the steps
    in reverse, recomputing step ``j`` under a tape and taking its vector-Jacobian product
    with the gradient of step ``j + 1`` (second order included, the inner tapes are rebuilt
    too): memory of one step's activations, about one more forward and inner backward per
    step. Returns ``(loss, accuracy, scales, theta grads, scale-network grads)``.
    """
    with tf.GradientTape() as init_tape:
        theta = [cast(v) for v in theta_variables]
        fast = init_fast_weights(backbone, theta, support_x, support_y, ways)
    path = [[tf.stop_gradient(f) for f in fast]]
    all_scales = []
    for step in range(steps):
        new, scales, _ = inner_step(backbone, update, step, path[-1], support_x, support_y,
                                    first_order=first_order)
        path.append([tf.stop_gradient(f) for f in new])
        all_scales.append(tf.stop_gradient(scales))
    with tf.GradientTape() as tape:
        tape.watch(path[-1])
        stats, _ = support_statistics(backbone, path[-1], support_x, support_y)
        logits = classify(backbone, path[-1], stats, query_x)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=query_y, logits=logits))
    upstream = tape.gradient(loss, path[-1])
    scale_grads = [tf.zeros_like(v) for v in scale_variables]
    for step in reversed(range(steps)):
        with tf.GradientTape() as tape:
            tape.watch(path[step])
            new, _, _ = inner_step(backbone, update, step, path[step], support_x, support_y,
                                   first_order=first_order)
        grads = tape.gradient(new, [*path[step], *scale_variables], output_gradients=upstream,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        upstream = grads[:len(new)]
        scale_grads = [a + g for a, g in zip(scale_grads, grads[len(new):], strict=True)]
    theta_grads = init_tape.gradient(fast, list(theta_variables), output_gradients=upstream,
                                     unconnected_gradients=tf.UnconnectedGradients.ZERO)
    correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=query_y.dtype), query_y),
                      loss.dtype)
    scales = (tf.reduce_mean(tf.stack(all_scales), axis=0) if all_scales
              else tf.ones([len(fast)], loss.dtype))
    return loss, tf.reduce_mean(correct), scales, theta_grads, scale_grads


def classify(backbone, fast, stats, images):
    """Logits of ``images`` (model input) under adapted ``fast`` weights and support ``stats``.

    The one inference path: training's query loss, evaluation, prediction, the
    SavedModel's signatures and the folded exports compute these logits. A row's
    logits depend on that row only.
    """
    features = backbone.forward(fast[:-2], images, stats=stats)
    return float_logits(tf.matmul(features, fast[-2]) + fast[-1])


def sgd_update(inner_lr: float) -> UpdateRule:
    """MAML's inner step: ``theta <- theta - inner_lr * g``."""

    def update(*, step, params, grads, losses, sample_grads, sample_norms):
        del step, losses, sample_grads, sample_norms
        new = [p - inner_lr * g for p, g in zip(params, grads, strict=True)]
        return new, tf.ones([len(params)], dtype=scale_dtype(params))

    return update


def scale_dtype(params):
    """The dtype of reported step scales: float32 for bfloat16/float16 fast weights."""
    return tf.float32 if params[0].dtype in (tf.bfloat16, tf.float16) else params[0].dtype
