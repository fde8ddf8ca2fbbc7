"""Meta-GNA's inner update: normalize the gradient, let the Arbiter pick its norm.

For inner step ``j`` and weight tensor ``l`` (support samples ``i = 1..n``)::

    g[l]     = d mean_i L_i / d theta[l]
    d[l]     = normalize(g[l]),  normalize(v) = v * rsqrt(max(sum(v^2), eps^2))
    f[l, j]  = stop_gradient([log|g[l]|, log|theta[l]|,
                              mean_i L_i, std_i L_i, max_i L_i,
                              mean_i log|g_i[l]|, std_i log|g_i[l]|, max_i log|g_i[l]|])
    a[l, j]  = Arbiter(f[l, j], step j, tensor l)           # = 1 at initialization
    theta[l] <- theta[l] - inner_lr * a[l, j] * |g[l]| * d[l]

for every task of the meta-batch at once (every tensor has a leading task axis ``T``).

With ``a = 1`` this is MAML's step exactly. ``gna_normalize_only`` (the
paper's first component alone) uses ``theta[l] <- theta[l] - inner_lr * d[l]``.

The authors' form (``--arbiter-form joint``, ``arbiter.JointArbiter``; SKKUJMLim/MAML, see
docs/method.md) reads the norms of all ``L`` adapted tensors at once and sets each step's
norm::

    x        = standardize([|theta[1]|..|theta[L]|, stop_gradient(|g[1]|..|g[L]|)])
    alpha    = softplus(relu(x K1 + b1) K2 + b2)                     # [L], every step
    theta[l] <- theta[l] - inner_lr * alpha[l] * d[l]
``direction="sample"`` replaces ``d`` by ``normalize(mean_i normalize(g_i[l]))``.
Norms are clamped at 1e-12 before the log.

Reference: Lim, Cha, Kong, Shyn, Kim. "Meta-learning with gradient norm
arbitration for sample-aware few-shot learning". Knowledge-Based Systems 329
(2025). The Arbiter's inputs and this update are our reconstruction from the
paper's abstract; see docs/method.md.
"""

from __future__ import annotations

import tensorflow as tf

from metagna_tf.algorithms.inner_loop import as_dtype, scale_dtype
from metagna_tf.arbiter import NUM_FEATURES

EPS = 1e-12


def normalize(v, eps: float = EPS):
    """Each task's ``v`` [T, *shape] scaled to unit norm, and its norm [T]: smooth, exact unit
    norm when ``|v| > eps``, no NaN at 0 (the sum of squares in float32 for low precision)."""
    axes = list(range(1, len(v.shape)))
    v32 = to_float32(v)
    sq = tf.reduce_sum(tf.square(v32), axis=axes)  # [T]
    inv = tf.math.rsqrt(tf.maximum(sq, eps * eps))
    # scaled in float32: 1/eps = 1e12 overflows float16, and 0 * inf would be NaN
    return tf.cast(v32 * per_task(inv, v32), v.dtype), tf.cast(sq * inv, v.dtype)


def to_float32(v):
    """``v`` in float32 if it is bfloat16/float16 (sums of squares overflow float16 at 256^2)."""
    return tf.cast(v, tf.float32) if v.dtype in (tf.bfloat16, tf.float16) else v


def per_task(values, like):
    """[T] values shaped to broadcast against ``like`` [T, *shape]."""
    return tf.reshape(values, [-1] + [1] * (len(like.shape) - 1))


def sample_unit_vectors(sample_grads, eps: float = EPS):
    """Each sample's gradient of ``[T, n, *shape]`` per-sample gradients scaled to unit norm."""
    axes = list(range(2, len(sample_grads.shape)))
    g32 = to_float32(sample_grads)
    sq = tf.reduce_sum(tf.square(g32), axis=axes, keepdims=True)
    return tf.cast(g32 * tf.math.rsqrt(tf.maximum(sq, eps * eps)), sample_grads.dtype)


def safe_log(x):
    return tf.math.log(tf.maximum(x, EPS))


def per_sample_norms(sample_grads):
    """``[T, num_tensors, n]`` per-sample gradient norms from ``[T, n, *shape]`` gradients."""
    return tf.stack([
        tf.sqrt(tf.reduce_sum(tf.square(to_float32(
            tf.reshape(g, [tf.shape(g)[0], tf.shape(g)[1], -1]))), axis=-1))
        for g in sample_grads], axis=1)


def arbiter_features(params, grad_norms, losses, sample_norms):
    """The ``[T, num_tensors, NUM_FEATURES]`` sample-aware features (constants).

    ``grad_norms`` [T, L] norms of each task's mean gradient, ``losses`` [T, n] per-sample
    losses, ``sample_norms`` [T, L, n] per-sample gradient norms.
    """
    num = len(params)
    dtype = losses.dtype  # float32 also when the fast weights are bfloat16/float16
    weight_norms = tf.stack([tf.norm(tf.cast(tf.reshape(p, [tf.shape(p)[0], -1]), dtype),
                                     axis=-1) for p in params], axis=1)  # [T, L]
    grad_norms = tf.cast(grad_norms, dtype)
    loss_stats = tf.stack([tf.reduce_mean(losses, -1), tf.math.reduce_std(losses, -1),
                           tf.reduce_max(losses, -1)], axis=-1)  # [T, 3]
    log_sample = safe_log(tf.cast(sample_norms, dtype))  # [T, L, n]
    tasks = tf.shape(losses)[0]
    features = tf.concat([
        safe_log(grad_norms)[..., None], safe_log(weight_norms)[..., None],
        tf.broadcast_to(loss_stats[:, None, :], [tasks, num, 3]),
        tf.reduce_mean(log_sample, -1, keepdims=True),
        tf.math.reduce_std(log_sample, -1, keepdims=True),
        tf.reduce_max(log_sample, -1, keepdims=True)], axis=-1)
    tf.debugging.assert_equal(tf.shape(features)[-1], NUM_FEATURES)
    return tf.stop_gradient(features)


def safe_norms(params, dtype):
    """[T, L] norms of each task's tensors, in ``dtype``, with a zero gradient at 0 (the linear
    head's bias starts at 0; ``tf.norm``'s gradient there is NaN, PyTorch's is 0)."""
    return tf.stack([normalize(tf.cast(p, dtype))[1] for p in params], axis=1)


def norm_inputs(params, grad_norms):
    """The joint Arbiter's input [T, 2L]: ``x = [|theta_1|..|theta_L|, |g_1|..|g_L|]``
    standardized over its 2L entries, ``(x - mean(x)) / (std(x) + 1e-12)`` with the N - 1
    standard deviation (torch's ``.std()``). The weight norms carry the meta-gradient; the
    gradient norms ``grad_norms`` [T, L] are constants (``GNAUpdate.constants``)."""
    dtype = grad_norms.dtype
    x = tf.concat([safe_norms(params, dtype), grad_norms], axis=1)
    centred = x - tf.reduce_mean(x, axis=1, keepdims=True)
    var = tf.reduce_sum(tf.square(centred), axis=1, keepdims=True) / (x.shape[1] - 1)
    std = var * tf.math.rsqrt(tf.maximum(var, EPS * EPS))  # sqrt with a finite gradient at 0
    return centred / (std + 1e-12)


class GNAUpdate:
    """The Meta-GNA inner step for ``T`` tasks (``arbiter=None``: the normalize-only ablation).

    The scale network's ``inputs_kind`` says which form: ``per_tensor`` (``Arbiter``,
    ``LearnedStepSizes``: a scale ``a`` on the gradient's own norm, ``theta - lr * a * |g| *
    g/|g|``) or ``norms`` (``JointArbiter``: ``alpha`` is the step's norm, ``theta - lr *
    alpha * g/|g|``, as is the normalize-only step with ``alpha = 1``).
    """

    def __init__(self, inner_lr, arbiter=None, direction: str = "mean",
                 sample_grads: str = "frozen_stats"):
        if direction not in ("mean", "sample"):
            raise ValueError(f"GNAUpdate: direction must be 'mean' or 'sample', got {direction!r}")
        if sample_grads not in ("frozen_stats", "jacobian"):
            raise ValueError("GNAUpdate: sample_grads must be 'frozen_stats' or 'jacobian', got "
                             f"{sample_grads!r}")
        self.inner_lr = inner_lr
        self.arbiter = arbiter
        self.direction = direction
        self.sample_grads = sample_grads
        self.uses_features = arbiter is not None and getattr(arbiter, "uses_features", True)
        self.inputs_kind = None if arbiter is None else getattr(arbiter, "inputs_kind",
                                                                "per_tensor")
        # the sample-aware features need per-sample gradient norms; the joint form does not
        self.uses_features = self.uses_features and self.inputs_kind != "norms"
        self.needs_sample_grads = direction == "sample" or (
            self.uses_features and sample_grads == "jacobian")
        self.needs_sample_norms = self.uses_features and sample_grads == "frozen_stats"

    def constants(self, *, step, params, norms, losses, sample_grads, sample_norms):
        """What the scale network reads that the meta-gradient treats as constant (a hook:
        the finite-difference tests replay it): the per-tensor form's features
        [T, L, NUM_FEATURES], the joint form's gradient norms [T, L]."""
        del step
        if self.inputs_kind == "norms":
            dtype = scale_dtype(params)
            return tf.stop_gradient(tf.cast(tf.stack(norms, axis=1), dtype))
        if sample_norms is None:
            sample_norms = per_sample_norms([tf.stop_gradient(g) for g in sample_grads])
        return arbiter_features(params, tf.stack(norms, axis=1), losses, sample_norms)

    def __call__(self, *, step, params, grads, losses, sample_grads, sample_norms=None):
        units, norms = zip(*(normalize(g) for g in grads), strict=True)
        if self.direction == "sample":
            # every support sample an equal vote; second order flows through g_i
            units = [normalize(tf.reduce_mean(sample_unit_vectors(g_i), axis=1))[0]
                     for g_i in sample_grads]
        tasks = tf.shape(losses)[0]
        if self.arbiter is None:
            new = [p - as_dtype(self.inner_lr, p.dtype) * d
                   for p, d in zip(params, units, strict=True)]
            return new, tf.ones([tasks, len(params)], dtype=scale_dtype(params))
        kwargs = dict(step=step, params=params, norms=norms, losses=losses,
                      sample_grads=sample_grads, sample_norms=sample_norms)
        if self.inputs_kind == "norms":  # the joint form: alpha is the step's norm
            inputs = norm_inputs(params, self.constants(**kwargs))
            scales = tf.cast(self.arbiter(inputs, step=step), scale_dtype(params))
            step_norms = [scales[:, i] for i in range(len(params))]
        else:
            # a feature-free scale (LSLR, the embeddings-only Arbiter) computes no features
            features = tf.zeros([tasks, len(params), NUM_FEATURES], scale_dtype(params))
            if self.uses_features:
                features = self.constants(**kwargs)
            scales = tf.cast(self.arbiter(features, step=step), scale_dtype(params))
            scales = tf.broadcast_to(scales, [tasks, len(params)])  # LSLR gives one row [L]
            step_norms = [scales[:, i] * tf.cast(norms[i], scales.dtype)
                          for i in range(len(params))]
        new = [p - as_dtype(self.inner_lr, p.dtype) * per_task(tf.cast(s, p.dtype), p) * d
               for p, s, d in zip(params, step_norms, units, strict=True)]
        return new, scales
