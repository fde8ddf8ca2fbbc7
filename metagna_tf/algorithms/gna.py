"""Meta-GNA's inner update: normalize the gradient, let the Arbiter pick its norm.

For inner step ``j`` and weight tensor ``l`` (support samples ``i = 1..n``)::

    g[l]     = d mean_i L_i / d theta[l]
    d[l]     = normalize(g[l]),  normalize(v) = v * rsqrt(max(sum(v^2), eps^2))
    f[l, j]  = stop_gradient([log|g[l]|, log|theta[l]|,
                              mean_i L_i, std_i L_i, max_i L_i,
                              mean_i log|g_i[l]|, std_i log|g_i[l]|, max_i log|g_i[l]|])
    a[l, j]  = Arbiter(f[l, j], step j, tensor l)           # = 1 at initialization
    theta[l] <- theta[l] - inner_lr * a[l, j] * |g[l]| * d[l]

With ``a = 1`` this is MAML's step exactly. ``gna_normalize_only`` (the
paper's first component alone) uses ``theta[l] <- theta[l] - inner_lr * d[l]``.
``direction="sample"`` replaces ``d`` by ``normalize(mean_i normalize(g_i[l]))``.
Norms are clamped at 1e-12 before the log.

Reference: Lim, Cha, Kong, Shyn, Kim. "Meta-learning with gradient norm
arbitration for sample-aware few-shot learning". Knowledge-Based Systems 329
(2025). The Arbiter's inputs and this update are our reconstruction from the
paper's abstract; see docs/method.md.
"""

from __future__ import annotations

import tensorflow as tf

from metagna_tf.algorithms.inner_loop import scale_dtype
from metagna_tf.arbiter import NUM_FEATURES

EPS = 1e-12


def normalize(v, eps: float = EPS):
    """``(v / max(|v|, eps), |v|)``, smooth, exact unit norm when ``|v| > eps``, no NaN at 0."""
    v32 = tf.cast(v, tf.float32) if v.dtype in (tf.bfloat16, tf.float16) else v
    sq = tf.reduce_sum(tf.square(v32))
    inv = tf.math.rsqrt(tf.maximum(sq, eps * eps))
    return v * tf.cast(inv, v.dtype), tf.cast(sq * inv, v.dtype)


def sample_unit_vectors(sample_grads, eps: float = EPS):
    """Each row of ``[n, *shape]`` per-sample gradients scaled to unit norm."""
    axes = list(range(1, len(sample_grads.shape)))
    sq = tf.reduce_sum(tf.square(sample_grads), axis=axes, keepdims=True)
    return sample_grads * tf.math.rsqrt(tf.maximum(sq, eps * eps))


def safe_log(x):
    return tf.math.log(tf.maximum(x, EPS))


def per_sample_norms(sample_grads):
    """``(num_tensors, n)`` per-sample gradient norms from ``[n, *shape]`` gradients."""
    return tf.stack([
        tf.sqrt(tf.reduce_sum(tf.square(tf.reshape(g, [tf.shape(g)[0], -1])), axis=-1))
        for g in sample_grads])


def arbiter_features(params, grad_norms, losses, sample_norms):
    """The ``(num_tensors, NUM_FEATURES)`` sample-aware features (constants)."""
    num = len(params)
    dtype = losses.dtype  # float32 also when the fast weights are bfloat16/float16
    weight_norms = tf.stack([tf.norm(tf.cast(tf.reshape(p, [-1]), dtype)) for p in params])
    grad_norms = tf.cast(grad_norms, dtype)
    loss_stats = tf.stack([tf.reduce_mean(losses), tf.math.reduce_std(losses),
                           tf.reduce_max(losses)])
    log_sample = safe_log(sample_norms)
    features = tf.concat([
        safe_log(grad_norms)[:, None],
        safe_log(weight_norms)[:, None],
        tf.broadcast_to(loss_stats[None, :], [num, 3]),
        tf.reduce_mean(log_sample, axis=1, keepdims=True),
        tf.math.reduce_std(log_sample, axis=1, keepdims=True),
        tf.reduce_max(log_sample, axis=1, keepdims=True),
    ], axis=1)
    tf.debugging.assert_equal(tf.shape(features)[1], NUM_FEATURES)
    return tf.stop_gradient(features)


class GNAUpdate:
    """The Meta-GNA inner step (``arbiter=None``: the normalize-only ablation)."""

    def __init__(self, inner_lr: float, arbiter=None, direction: str = "mean",
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
        self.needs_sample_grads = direction == "sample" or (
            self.uses_features and sample_grads == "jacobian")
        self.needs_sample_norms = self.uses_features and sample_grads == "frozen_stats"

    def features(self, *, step, params, norms, losses, sample_grads, sample_norms):
        """The Arbiter's input at this step (a hook: tests freeze it for finite differences)."""
        del step
        if sample_norms is None:
            sample_norms = per_sample_norms([tf.stop_gradient(g) for g in sample_grads])
        return arbiter_features(params, tf.stack(norms), losses, sample_norms)

    def __call__(self, *, step, params, grads, losses, sample_grads, sample_norms=None):
        units, norms = zip(*(normalize(g) for g in grads), strict=True)
        if self.direction == "sample":
            # every support sample an equal vote; second order flows through g_i
            units = [normalize(tf.reduce_mean(sample_unit_vectors(g_i), axis=0))[0]
                     for g_i in sample_grads]
        if self.arbiter is None:
            new = [p - self.inner_lr * d for p, d in zip(params, units, strict=True)]
            return new, tf.ones([len(params)], dtype=scale_dtype(params))
        # a feature-free scale (LSLR, the embeddings-only Arbiter) computes no features
        features = tf.zeros([len(params), NUM_FEATURES], params[0].dtype)
        if self.uses_features:
            features = self.features(step=step, params=params, norms=norms, losses=losses,
                                     sample_grads=sample_grads, sample_norms=sample_norms)
        scales = tf.cast(self.arbiter(features, step=step), scale_dtype(params))
        applied = tf.cast(scales, params[0].dtype)
        new = [p - self.inner_lr * applied[i] * norms[i] * units[i]
               for i, p in enumerate(params)]
        return new, scales
