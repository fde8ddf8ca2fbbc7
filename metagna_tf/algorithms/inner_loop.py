"""The inner loop, written once, over a leading task axis: head, task loss, adaptation.

Every tensor carries a task axis ``T`` first: images ``[T, n, H, W, C]``, labels
``[T, n]``, fast weights (the backbone's tensors followed by the classifier head
``[W, b]``) ``[T, ...]``, BatchNorm statistics ``[T, F]``. One task is ``T = 1``:
training and evaluation run a meta-batch's tasks at once (or one at a time, a layout
choice of ``MetaLearner``), prediction, the exports and the app run one, all through
``adapt`` and ``classify``. Tasks never mix: every loss is a per-task mean, and the
gradient of the sum of the tasks' losses is each task's own gradient.

Nothing here touches a variable's value; the outer loop differentiates through
everything (second order) unless ``first_order`` stops the inner gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import tensorflow as tf

# An update rule: (step, params, grads, losses, sample_grads, sample_norms) -> (new params,
# scales), all with the task axis. ``losses`` [T, n] per-sample losses; ``sample_grads`` are
# per-sample gradients (a list of [T, n, *shape] tensors), or None unless the rule has
# ``needs_sample_grads = True``; ``sample_norms`` are [T, num_tensors, n] per-sample gradient
# norms with BatchNorm statistics held constant, or None unless ``needs_sample_norms = True``;
# ``scales`` [T, num_tensors] are the gradient-norm scales applied (ones for plain SGD).
UpdateRule = Callable[..., tuple[list, tf.Tensor]]


class Adaptation(NamedTuple):
    """What adapting to ``T`` support sets yields; ``classify`` needs only ``fast`` and ``stats``."""

    fast: list  # adapted backbone tensors, then the head [W, b]; each [T, ...]
    stats: list | None  # per block (mean, variance) [T, F] of the support set under ``fast``
    scales: tf.Tensor  # [T, steps, num_tensors] gradient-norm scales applied (ones for SGD)
    support_losses: tf.Tensor  # [T, steps + 1] mean support loss before each step, after the last

    def task(self, i: int = 0) -> Adaptation:
        """Task ``i`` alone, without the task axis (what a folded export stores)."""
        stats = None if self.stats is None else [(m[i], v[i]) for m, v in self.stats]
        return Adaptation([f[i] for f in self.fast], stats, self.scales[i],
                          self.support_losses[i])

    @classmethod
    def of_one_task(cls, adaptation: Adaptation) -> Adaptation:
        """The inverse of ``task``: a task axis of 1 in front of every tensor."""
        stats = None if adaptation.stats is None else [(m[None], v[None])
                                                       for m, v in adaptation.stats]
        return cls([f[None] for f in adaptation.fast], stats, adaptation.scales[None],
                   adaptation.support_losses[None])


def float_logits(logits):
    """Logits in float32 when computed in bfloat16 or float16: losses and softmax stay exact."""
    return tf.cast(logits, tf.float32) if logits.dtype in (tf.bfloat16, tf.float16) else logits


def head_logits(features, fast):
    """``features`` [T, n, d] through the head ``fast[-2:]`` = W [T, d, ways], b [T, ways].

    An einsum, not ``tf.matmul``: TensorFlow 2.21's ``pfor`` (the per-sample Jacobian of
    ``--gna-sample-grads jacobian``) differentiates a batched matmul wrongly with respect to
    its first operand (measured: 29.6 vs 43.4 for the loop Jacobian's norm); the einsum's is
    exact, and its forward is the same batched matmul.
    """
    return float_logits(tf.einsum("tnd,tdw->tnw", features, fast[-2]) + fast[-1][:, None, :])


def prototype_head(features, labels, ways):
    """Proto-MAML head per task: ``W_c = 2 mu_c``, ``b_c = -||mu_c||^2`` (mu_c: class mean).

    ``logits = f W + b = -||f - mu_c||^2 + ||f||^2``: a nearest-prototype classifier for any
    number of classes, with a non-zero backbone gradient at the first step.
    ``features`` [T, n, d], ``labels`` [T, n] -> W [T, d, ways], b [T, ways].
    """
    onehot = tf.one_hot(labels, ways, dtype=features.dtype)  # [T, n, ways]
    counts = tf.reduce_sum(onehot, axis=1)  # [T, ways]
    prototypes = tf.matmul(onehot, features, transpose_a=True) / counts[..., None]
    return 2.0 * tf.transpose(prototypes, [0, 2, 1]), -tf.reduce_sum(tf.square(prototypes), -1)


def per_sample_losses(backbone, fast, x, y):
    """[T, n] losses of ``x`` under ``fast``, BatchNorm statistics from ``x`` itself."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=y, logits=head_logits(backbone.forward(fast[:-2], x), fast))


def per_task_copies(params: Sequence, tasks_like) -> list:
    """Each of ``params`` repeated for the ``T`` tasks of ``tasks_like`` [T, ...]."""
    tasks = tf.shape(tasks_like)[0]
    return [tf.ensure_shape(tf.broadcast_to(p[None], tf.concat([[tasks], tf.shape(p)], 0)),
                            [tasks_like.shape[0], *p.shape]) for p in params]


def init_fast_weights(backbone, params: Sequence, support_x, support_y, ways, head=None):
    """The meta-learned ``params`` for each of the ``T`` tasks, then each task's head: the
    meta-learned linear ``head`` [W, b] (``--head linear``), or when None the prototype head
    of the support set's features (``--head proto``)."""
    fast = per_task_copies(params, support_x)
    if head is not None:
        return fast + per_task_copies(head, support_x)
    features = backbone.forward(fast, support_x)
    return fast + list(prototype_head(features, support_y, ways))


def support_gradients(backbone, fast, x, y, per_sample: bool = False, adapted=None):
    """Per-sample losses [T, n], each task's gradient of its mean loss and, if asked,
    per-sample gradients ([T, n, *shape] per tensor), with respect to the ``adapted``
    tensors of ``fast`` (indices; all when None).

    Per-sample gradients are the Jacobian of the per-sample losses from the same forward
    pass (same BatchNorm statistics). Task ``t``'s losses reach only task ``t``'s fast
    weights, so the Jacobian of ``sum_t L[t, i]`` (n rows, vectorized with ``pfor``) holds
    every task's per-sample gradients at once.
    """
    with tf.GradientTape(persistent=per_sample) as tape:
        tape.watch(fast)
        losses = per_sample_losses(backbone, fast, x, y)
        loss = tf.reduce_sum(tf.reduce_mean(losses, axis=1))
        rows = tf.reduce_sum(losses, axis=0) if per_sample else None  # [n]
    targets = fast if adapted is None else [fast[i] for i in adapted]
    grads = tape.gradient(loss, targets)
    sample_grads = None
    if per_sample:
        jacobian = tape.jacobian(rows, targets, experimental_use_pfor=True)  # [n, T, *shape]
        sample_grads = [tf.transpose(j, [1, 0, *range(2, len(j.shape))]) for j in jacobian]
    del tape
    return losses, grads, sample_grads


def frozen_stats_sample_norms(backbone, fast, x, y):
    """``[T, num_tensors, n]`` per-sample gradient norms, BatchNorm statistics held constant.

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
        logits = head_logits(features, fast)
        total = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y,
                                                                             logits=logits))
    grads = tape.gradient(total, [*taps["bn_out"], logits])
    logit_norms = tf.norm(grads[-1], axis=-1)  # [T, n]: |p_i - onehot(y_i)|
    norms = backbone.sample_grad_norms(fast[:-2], taps, grads[:-1])
    norms += [tf.norm(float_logits(features), axis=-1) * logit_norms, logit_norms]  # W, b
    return tf.stop_gradient(tf.stack([tf.cast(n, logit_norms.dtype) for n in norms], axis=1))


def inner_step(backbone, update: UpdateRule, step: int, fast, support_x, support_y, *,
               first_order: bool = False, observe=None, adapted=None):
    """One inner step of the ``adapted`` tensors (indices into ``fast``; all when None), the
    others passed through: ``(new fast weights, scales [T, L_adapted], mean support loss [T]
    before the step)``."""
    per_sample = getattr(update, "needs_sample_grads", False)
    losses, grads, sample_grads = support_gradients(backbone, fast, support_x, support_y,
                                                    per_sample, adapted)
    if first_order:
        grads = [tf.stop_gradient(g) for g in grads]
        if sample_grads is not None:
            sample_grads = [tf.stop_gradient(g) for g in sample_grads]
    sample_norms = None
    if getattr(update, "needs_sample_norms", False):
        sample_norms = frozen_stats_sample_norms(backbone, fast, support_x, support_y)
        if adapted is not None:
            sample_norms = tf.gather(sample_norms, list(adapted), axis=1)
    targets = fast if adapted is None else [fast[i] for i in adapted]
    new_targets, scales = update(step=step, params=targets, grads=grads, losses=losses,
                                 sample_grads=sample_grads, sample_norms=sample_norms)
    new_fast = list(new_targets)
    if adapted is not None:
        new_fast = list(fast)
        for i, tensor in zip(adapted, new_targets, strict=True):
            new_fast[i] = tensor
    if observe is not None:
        observe(step=step, fast=fast, losses=losses, grads=grads, scales=scales)
    return new_fast, scales, tf.reduce_mean(losses, axis=1)


def support_statistics(backbone, fast, support_x, support_y):
    """The support sets' BatchNorm statistics under ``fast``, and their mean losses [T]."""
    features, stats = backbone.forward(fast[:-2], support_x, return_stats=True)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=support_y,
                                                            logits=head_logits(features, fast))
    return stats, tf.reduce_mean(losses, axis=1)


def adapt(backbone, params: Sequence, support_x, support_y, ways, *, steps: int,
          update: UpdateRule, first_order: bool = False, observe=None,
          final_stats: bool = True, head=None, adapted=None) -> Adaptation:
    """Adapt ``params`` (the meta-learned backbone tensors, no task axis) to ``T`` support
    sets ``support_x`` [T, n, H, W, C] (model input), ``support_y`` [T, n].

    ``head``: the meta-learned linear head [W, b], or None for the prototype head
    (``init_fast_weights``). ``adapted``: the indices of the fast weights the inner loop
    adapts (all when None; ``--inner-params no_bn`` leaves BatchNorm's gamma and beta).

    After the last step, one forward pass over the support sets gives the BatchNorm
    statistics that ``classify`` applies to any image (and the final support losses).
    ``observe``, if given, is called at each step with ``step``, ``fast`` (before the step),
    ``losses`` (per sample), ``grads`` and ``scales`` (for analysis tools; eager use).
    ``final_stats=False`` skips the final support forward (``stats`` is then None): for
    ``query_logits``, which gets the same statistics in its own forward pass.
    """
    fast = init_fast_weights(backbone, params, support_x, support_y, ways, head)
    all_scales, support_losses = [], []
    for step in range(steps):
        fast, scales, loss = inner_step(backbone, update, step, fast, support_x, support_y,
                                        first_order=first_order, observe=observe,
                                        adapted=adapted)
        all_scales.append(scales)
        support_losses.append(loss)
    stats = None
    if final_stats:
        stats, loss = support_statistics(backbone, fast, support_x, support_y)
        support_losses.append(loss)
    tasks = tf.shape(support_y)[0]
    num_adapted = len(fast) if adapted is None else len(adapted)
    scales = (tf.stack(all_scales, axis=1) if all_scales
              else tf.zeros([tasks, 0, num_adapted], dtype=scale_dtype(fast)))
    losses = (tf.stack(support_losses, axis=1) if support_losses
              else tf.zeros([tasks, 0], scales.dtype))
    return Adaptation(fast, stats, scales, losses)


def classify(backbone, fast, stats, images):
    """Logits [T, m, ways] of ``images`` [T, m, H, W, C] (model input) under adapted ``fast``
    weights and support ``stats``.

    The one inference path: training's query loss (``query_logits``, the same forward),
    evaluation, prediction, the SavedModel's signatures and the folded exports compute
    these logits. A row's logits depend on that row only.
    """
    return head_logits(backbone.forward(fast[:-2], images, stats=stats), fast)


def query_logits(backbone, fast, support_x, query_x):
    """``classify(fast, support statistics, query_x)`` in one forward pass over
    ``[support; queries]`` with the statistics of the support rows: the same logits, one
    forward fewer (the training and evaluation path; ``tests/test_meta_gradients.py``)."""
    n_support = tf.shape(support_x)[1]
    features = backbone.forward(fast[:-2], tf.concat([support_x, query_x], axis=1),
                                n_stats=n_support)
    return head_logits(features[:, n_support:], fast)


def query_metrics(logits, query_y):
    """Per-task mean query loss [T] and accuracy [T]."""
    losses = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=query_y, logits=logits), axis=1)
    correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=query_y.dtype), query_y),
                      losses.dtype)
    return losses, tf.reduce_mean(correct, axis=1)


def mean_scales(scales, dtype):
    """[T, steps, L] -> the mean scale per task and tensor [T, L] (ones without a step)."""
    if scales.shape[1] == 0:
        return tf.ones([tf.shape(scales)[0], scales.shape[2]], dtype)
    return tf.cast(tf.reduce_mean(scales, axis=1), dtype)


def task_outputs(backbone, update, params, support_x, support_y, query_x, query_y, ways, *,
                 steps: int, first_order: bool = False, head=None, adapted=None):
    """Per-task query loss [T], query accuracy [T] and mean scale per adapted tensor [T, L]:
    ``adapt`` then ``query_logits`` (``classify``'s logits in the same forward)."""
    adaptation = adapt(backbone, params, support_x, support_y, ways, steps=steps,
                       update=update, first_order=first_order, final_stats=False, head=head,
                       adapted=adapted)
    logits = query_logits(backbone, adaptation.fast, support_x, query_x)
    losses, accuracies = query_metrics(logits, query_y)
    return losses, accuracies, mean_scales(adaptation.scales, losses.dtype)


def recomputed_meta_gradients(backbone, update: UpdateRule, theta_variables, scale_variables,
                              cast, support_x, support_y, query_x, query_y, ways, *,
                              steps: int, first_order: bool = False, head_variables=(),
                              adapted=None):
    """The tasks' query losses and the gradients of their sum, recomputing each inner step
    backwards.

    The plain path keeps every inner step's activations for the backward pass. Here the
    forward keeps only the fast weights after each step; the backward pass walks the steps
    in reverse, recomputing step ``j`` under a tape and taking its vector-Jacobian product
    with the gradient of step ``j + 1`` (second order included, the inner tapes are rebuilt
    too): memory of one step's activations, about one more forward and inner backward per
    step. Returns ``(losses [T], accuracies [T], scales [T, L], theta grads, scale-network
    grads)``, the gradients of ``sum_t losses[t]``, for the backbone's ``theta_variables``
    and then the linear head's ``head_variables`` (none with the prototype head).
    """
    with tf.GradientTape() as init_tape:
        theta = [cast(v) for v in theta_variables]
        head = [cast(v) for v in head_variables] or None
        fast = init_fast_weights(backbone, theta, support_x, support_y, ways, head)
    path = [[tf.stop_gradient(f) for f in fast]]
    all_scales = []
    for step in range(steps):
        new, scales, _ = inner_step(backbone, update, step, path[-1], support_x, support_y,
                                    first_order=first_order, adapted=adapted)
        path.append([tf.stop_gradient(f) for f in new])
        all_scales.append(tf.stop_gradient(scales))
    with tf.GradientTape() as tape:
        tape.watch(path[-1])
        logits = query_logits(backbone, path[-1], support_x, query_x)
        losses, accuracies = query_metrics(logits, query_y)
        loss = tf.reduce_sum(losses)
    upstream = tape.gradient(loss, path[-1])
    scale_grads = [tf.zeros_like(v) for v in scale_variables]
    for step in reversed(range(steps)):
        with tf.GradientTape() as tape:
            tape.watch(path[step])
            new, _, _ = inner_step(backbone, update, step, path[step], support_x, support_y,
                                   first_order=first_order, adapted=adapted)
        grads = tape.gradient(new, [*path[step], *scale_variables], output_gradients=upstream,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        upstream = grads[:len(new)]
        scale_grads = [a + g for a, g in zip(scale_grads, grads[len(new):], strict=True)]
    theta_grads = init_tape.gradient(fast, [*theta_variables, *head_variables],
                                     output_gradients=upstream,
                                     unconnected_gradients=tf.UnconnectedGradients.ZERO)
    num_adapted = len(fast) if adapted is None else len(adapted)
    scales = tf.stack(all_scales, axis=1) if all_scales else tf.zeros(
        [tf.shape(support_y)[0], 0, num_adapted], losses.dtype)
    return losses, accuracies, mean_scales(scales, losses.dtype), theta_grads, scale_grads


def sgd_update(inner_lr) -> UpdateRule:
    """MAML's inner step: ``theta <- theta - inner_lr * g`` (``inner_lr`` a number or a
    scalar tensor)."""

    def update(*, step, params, grads, losses, sample_grads, sample_norms):
        del step, sample_grads, sample_norms
        new = [p - as_dtype(inner_lr, p.dtype) * g for p, g in zip(params, grads, strict=True)]
        return new, tf.ones([tf.shape(losses)[0], len(params)], dtype=scale_dtype(params))

    return update


def as_dtype(value, dtype):
    """A number or a tensor in ``dtype``; a Python float is converted exactly (``tf.cast`` of a
    Python float goes through float32 first: 0.3 would become 0.30000001192...)."""
    if isinstance(value, (int, float)):
        return tf.constant(value, dtype)
    return tf.cast(value, dtype)


def scale_dtype(params):
    """The dtype of reported step scales: float32 for bfloat16/float16 fast weights."""
    return tf.float32 if params[0].dtype in (tf.bfloat16, tf.float16) else params[0].dtype
