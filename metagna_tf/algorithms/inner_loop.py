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


def logits_of(backbone, fast, x):
    """Logits of ``x`` under fast weights, BatchNorm statistics from ``x`` itself (the support set)."""
    features = backbone.forward(fast[:-2], x)
    return tf.matmul(features, fast[-2]) + fast[-1]


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
        logits = tf.matmul(features, fast[-2]) + fast[-1]
        total = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y,
                                                                             logits=logits))
    grads = tape.gradient(total, [*taps["bn_out"], logits])
    logit_norms = tf.norm(grads[-1], axis=-1)  # |p_i - onehot(y_i)|
    norms = backbone.sample_grad_norms(fast[:-2], taps, grads[:-1])
    norms += [tf.norm(features, axis=-1) * logit_norms, logit_norms]  # head W (rank 1), b
    return tf.stop_gradient(tf.stack(norms))


def adapt(backbone, params: Sequence, support_x, support_y, ways, *, steps: int,
          update: UpdateRule, first_order: bool = False, observe=None) -> Adaptation:
    """Adapt ``params`` (backbone tensors) to the support set.

    After the last step, one forward pass over the support set gives the BatchNorm
    statistics that ``classify`` applies to any image (and the final support loss).
    ``observe``, if given, is called at each step with ``step``, ``fast`` (before the step),
    ``losses`` (per sample), ``grads`` and ``scales`` (for analysis tools; eager use).
    """
    per_sample = getattr(update, "needs_sample_grads", False)
    per_sample_norms = getattr(update, "needs_sample_norms", False)
    fast = init_fast_weights(backbone, params, support_x, support_y, ways)
    all_scales, support_losses = [], []
    for step in range(steps):
        losses, grads, sample_grads = support_gradients(backbone, fast, support_x, support_y,
                                                        per_sample)
        support_losses.append(tf.reduce_mean(losses))
        if first_order:
            grads = [tf.stop_gradient(g) for g in grads]
            if sample_grads is not None:
                sample_grads = [tf.stop_gradient(g) for g in sample_grads]
        sample_norms = (frozen_stats_sample_norms(backbone, fast, support_x, support_y)
                        if per_sample_norms else None)
        new_fast, scales = update(step=step, params=fast, grads=grads, losses=losses,
                                  sample_grads=sample_grads, sample_norms=sample_norms)
        if observe is not None:
            observe(step=step, fast=fast, losses=losses, grads=grads, scales=scales)
        fast = new_fast
        all_scales.append(scales)
    features, stats = backbone.forward(fast[:-2], support_x, return_stats=True)
    logits = tf.matmul(features, fast[-2]) + fast[-1]
    support_losses.append(tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=support_y, logits=logits)))
    scales = (tf.stack(all_scales) if all_scales
              else tf.zeros([0, len(fast)], dtype=fast[0].dtype))
    return Adaptation(fast, stats, scales, tf.stack(support_losses))


def classify(backbone, fast, stats, images):
    """Logits of ``images`` (model input) under adapted ``fast`` weights and support ``stats``.

    The one inference path: training's query loss, evaluation, prediction, the
    SavedModel's signatures and the folded exports compute these logits. A row's
    logits depend on that row only.
    """
    features = backbone.forward(fast[:-2], images, stats=stats)
    return tf.matmul(features, fast[-2]) + fast[-1]


def sgd_update(inner_lr: float) -> UpdateRule:
    """MAML's inner step: ``theta <- theta - inner_lr * g``."""

    def update(*, step, params, grads, losses, sample_grads, sample_norms):
        del step, losses, sample_grads, sample_norms
        new = [p - inner_lr * g for p, g in zip(params, grads, strict=True)]
        return new, tf.ones([len(params)], dtype=params[0].dtype)

    return update
