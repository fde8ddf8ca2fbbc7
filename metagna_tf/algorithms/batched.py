"""The inner loop for every task of a meta-batch at once (``--task-batching grouped``).

The loop formulation (``MetaLearner.meta_gradients``) adapts the tasks of a
meta-batch one after another in a ``tf.while_loop``: many small kernels. Here
the tasks share every kernel:

* activations are laid out ``[n, H, W, T, C]`` (``n`` images per task, ``T`` tasks), so a
  convolution with per-task kernels is one grouped convolution over ``T * C`` channels
  (``feature_group_count = T``: kernel ``[3, 3, C, T * F]``, task-major channels);
* BatchNorm moments per task and channel reduce ``[n, H, W]``;
* the head is a batched matmul ``[T, n, d] @ [T, d, ways]``;
* the GNA step normalizes each task's gradient of each tensor, and the Arbiter sees a
  ``[T, tensors, features]`` batch.

The maths is the loop's, term for term (``tests/test_batched.py`` checks the meta-gradients
to 1e-9 in float64). TensorFlow has no grouped-convolution gradient on the CPU in float64,
so ``grouped=False`` (``--task-batching stacked``) runs each task's convolution separately
inside the same batched formulation: the variant the float64 checks use.
"""

from __future__ import annotations

import tensorflow as tf

from metagna_tf.algorithms.gna import EPS, safe_log
from metagna_tf.algorithms.inner_loop import float_logits, scale_dtype
from metagna_tf.arbiter import NUM_FEATURES
from metagna_tf.models.conv4 import _ACTIVATIONS, BLOCKS, LOW_PRECISION, batch_norm

FORMULATIONS = ("loop", "grouped", "stacked")


class BatchedConv4:
    """Conv-4 over ``[n, H, W, T, C]`` activations with per-task weights ``[T, ...]``."""

    def __init__(self, spec, grouped: bool = True):
        self.spec = spec
        self.grouped = grouped
        self.stride = 2 if spec.downsample == "stride" else 1

    def conv(self, a, kernel):
        """``a`` [n, H, W, T, C], ``kernel`` [T, 3, 3, C, F] -> [n, H', W', T, F]."""
        shape = tf.shape(a)
        n, h, w = shape[0], shape[1], shape[2]
        tasks, c, f = kernel.shape[0], kernel.shape[3], kernel.shape[4]
        if self.grouped:
            x = tf.reshape(a, [n, h, w, tasks * c])
            k = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]), [3, 3, c, tasks * f])
            y = tf.nn.conv2d(x, k, strides=self.stride, padding="SAME")
            ys = tf.shape(y)
            return tf.reshape(y, [ys[0], ys[1], ys[2], tasks, f])
        outs = [tf.nn.conv2d(a[:, :, :, t], kernel[t], strides=self.stride, padding="SAME")
                for t in range(tasks)]
        return tf.stack(outs, axis=3)

    def downsample(self, a):
        kind = self.spec.downsample
        if kind == "stride":
            return a
        s = tf.shape(a)
        tasks, f = a.shape[3], a.shape[4]
        x = tf.reshape(a, [s[0], s[1], s[2], tasks * f])
        pool = tf.nn.max_pool2d if kind == "maxpool" else tf.nn.avg_pool2d
        x = pool(x, 2, 2, "VALID")
        xs = tf.shape(x)
        return tf.reshape(x, [xs[0], xs[1], xs[2], tasks, f])

    def forward(self, params, a, n_stats=None, stats=None, return_stats=False, taps=None,
                freeze_stats=False):
        """Features ``[T, n, d]`` of ``a`` (model input ``[n, H, W, T, C]``); as ``conv4_forward``."""
        act = _ACTIVATIONS[self.spec.activation]
        h = a
        used = []
        for block in range(BLOCKS):
            kernel, gamma, beta = params[3 * block: 3 * block + 3]
            conv_in = h
            h = self.conv(h, kernel)  # [n, H, W, T, F]: moments per task and channel, [T, F]
            h, block_stats = batch_norm(h, conv_in, gamma, beta, self.spec.bn_eps,
                                        n_stats=n_stats,
                                        stats=None if stats is None else stats[block],
                                        freeze_stats=freeze_stats, taps=taps)
            used.append(block_stats)
            h = self.downsample(act(h))
        if self.spec.feature_reduce == "mean":
            features = tf.transpose(tf.reduce_mean(h, axis=[1, 2]), [1, 0, 2])
        else:
            t = tf.transpose(h, [3, 0, 1, 2, 4])  # [T, n, H, W, F]
            s = tf.shape(t)
            features = tf.reshape(t, [s[0], s[1], -1])
        return (features, used) if return_stats else features

    def sample_grad_norms(self, params, taps, bn_out_grads):
        """``conv4_sample_grad_norms`` for every task: 12 tensors of per-sample norms [T, n]."""
        norms = []
        for block in range(BLOCKS):
            kernel, gamma, _ = params[3 * block: 3 * block + 3]
            conv_in, xhat = taps["conv_in"][block], taps["xhat"][block]
            g_y = bn_out_grads[block]
            g_z = g_y * gamma * taps["inv_std"][block]  # [n, H', W', T, F]
            tasks, c = kernel.shape[0], kernel.shape[3]
            s = tf.shape(conv_in)
            x = tf.reshape(conv_in, [s[0], s[1], s[2], tasks * c])
            patches = tf.image.extract_patches(x, sizes=[1, 3, 3, 1],
                                               strides=[1, self.stride, self.stride, 1],
                                               rates=[1, 1, 1, 1], padding="SAME")
            ps = tf.shape(patches)
            patches = tf.reshape(patches, [ps[0], ps[1], ps[2], 9, tasks, c])
            per_sample = tf.einsum("nhwktc,nhwtf->tnkcf", patches, g_z)
            norms += [tf.sqrt(tf.reduce_sum(tf.square(per_sample), axis=[2, 3, 4])),
                      tf.transpose(tf.norm(tf.reduce_sum(g_y * xhat, axis=[1, 2]), axis=-1)),
                      tf.transpose(tf.norm(tf.reduce_sum(g_y, axis=[1, 2]), axis=-1))]
        return norms


# ---- head, loss, adaptation --------------------------------------------------------------
def head_logits(features, fast):
    return float_logits(tf.matmul(features, fast[-2]) + fast[-1][:, None, :])


def prototype_head(features, labels, ways):
    """``inner_loop.prototype_head`` per task: ``features`` [T, n, d], ``labels`` [T, n]."""
    onehot = tf.one_hot(labels, ways, dtype=features.dtype)  # [T, n, ways]
    counts = tf.reduce_sum(onehot, axis=1)  # [T, ways]
    prototypes = tf.matmul(onehot, features, transpose_a=True) / counts[..., None]
    return 2.0 * tf.transpose(prototypes, [0, 2, 1]), -tf.reduce_sum(tf.square(prototypes), -1)


def per_sample_losses(net, fast, x, y):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=y, logits=head_logits(net.forward(fast[:-2], x), fast))


def to_task_layout(images):
    """``[T, n, H, W, C]`` -> ``[n, H, W, T, C]``."""
    return tf.transpose(images, [1, 2, 3, 0, 4])


def frozen_stats_sample_norms(net, fast, x, y):
    """``inner_loop.frozen_stats_sample_norms`` per task: ``[T, tensors, n]``."""
    fast = [tf.stop_gradient(f) for f in fast]
    x = tf.stop_gradient(x)
    taps: dict = {}
    with tf.GradientTape() as tape:
        tape.watch(fast)
        features = net.forward(fast[:-2], x, taps=taps, freeze_stats=True)
        logits = head_logits(features, fast)
        total = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y,
                                                                             logits=logits))
    grads = tape.gradient(total, [*taps["bn_out"], logits])
    logit_norms = tf.norm(grads[-1], axis=-1)  # [T, n]
    norms = net.sample_grad_norms(fast[:-2], taps, grads[:-1])
    norms += [tf.norm(float_logits(features), axis=-1) * logit_norms, logit_norms]
    return tf.stop_gradient(tf.stack([tf.cast(n, logit_norms.dtype) for n in norms], axis=1))


def _normalize(g):
    axes = list(range(1, len(g.shape)))
    g32 = tf.cast(g, tf.float32) if g.dtype in LOW_PRECISION else g
    sq = tf.reduce_sum(tf.square(g32), axis=axes)  # [T]
    inv = tf.math.rsqrt(tf.maximum(sq, EPS * EPS))
    shape = [-1] + [1] * (len(g.shape) - 1)
    return g * tf.cast(tf.reshape(inv, shape), g.dtype), tf.cast(sq * inv, g.dtype)


def arbiter_features(params, grad_norms, losses, sample_norms):
    """``gna.arbiter_features`` per task: ``[T, tensors, NUM_FEATURES]`` (constants)."""
    num = len(params)
    dtype = losses.dtype  # float32 also when the fast weights are bfloat16/float16
    weight_norms = tf.stack([tf.norm(tf.cast(tf.reshape(p, [tf.shape(p)[0], -1]), dtype),
                                     axis=-1) for p in params], axis=1)  # [T, L]
    grad_norms = tf.cast(grad_norms, dtype)
    loss_stats = tf.stack([tf.reduce_mean(losses, -1), tf.math.reduce_std(losses, -1),
                           tf.reduce_max(losses, -1)], axis=-1)  # [T, 3]
    log_sample = safe_log(sample_norms)  # [T, L, n]
    tasks = tf.shape(losses)[0]
    features = tf.concat([
        safe_log(grad_norms)[..., None], safe_log(weight_norms)[..., None],
        tf.broadcast_to(loss_stats[:, None, :], [tasks, num, 3]),
        tf.reduce_mean(log_sample, -1, keepdims=True),
        tf.math.reduce_std(log_sample, -1, keepdims=True),
        tf.reduce_max(log_sample, -1, keepdims=True)], axis=-1)
    tf.debugging.assert_equal(tf.shape(features)[-1], NUM_FEATURES)
    return tf.stop_gradient(features)


class BatchedUpdate:
    """The model's inner step (SGD, GNA with or without its scale network) for all tasks."""

    def __init__(self, model):
        config = model.config
        self.algorithm = config.algorithm
        self.inner_lr = config.inner_lr
        self.arbiter = model.arbiter
        if config.gna_direction != "mean" or (
                self.arbiter is not None and self.arbiter.uses_features
                and config.gna_sample_grads != "frozen_stats"):
            raise ValueError("task batching supports gna_direction=mean with "
                             "gna_sample_grads=frozen_stats; use --task-batching loop")
        self.needs_sample_norms = self.arbiter is not None and self.arbiter.uses_features

    def __call__(self, step, params, grads, losses, sample_norms):
        ones = tf.ones([tf.shape(losses)[0], len(params)], scale_dtype(params))
        if self.algorithm in ("maml", "fomaml"):
            new = [p - self.inner_lr * g for p, g in zip(params, grads, strict=True)]
            return new, ones
        units, norms = zip(*(_normalize(g) for g in grads), strict=True)
        if self.arbiter is None:  # normalize-only
            new = [p - self.inner_lr * d for p, d in zip(params, units, strict=True)]
            return new, ones
        if self.needs_sample_norms:
            features = arbiter_features(params, tf.stack(norms, axis=1), losses, sample_norms)
        else:
            features = tf.zeros([tf.shape(losses)[0], len(params), NUM_FEATURES], ones.dtype)
        weights = [w.value for w in self.arbiter.scale_weights]
        scales = tf.cast(self.arbiter.functional()(weights, features, step), ones.dtype)
        scales = tf.broadcast_to(scales, tf.shape(ones))  # LSLR gives one row [L]
        applied = tf.cast(scales, params[0].dtype)
        new = []
        for i, (p, d) in enumerate(zip(params, units, strict=True)):
            shape = [-1] + [1] * (len(p.shape) - 1)
            new.append(p - self.inner_lr * tf.reshape(applied[:, i] * norms[i], shape) * d)
        return new, scales


def adapt(net, update, theta, support_x, support_y, ways, steps: int, first_order: bool):
    """``inner_loop.adapt`` for all tasks; ``support_x`` [n, H, W, T, C], labels [T, n].

    Returns (fast weights [T, ...], scales [T, steps, tensors]).
    """
    tasks = support_y.shape[0]
    backbone = [tf.broadcast_to(p[None], [tasks, *p.shape]) for p in theta]
    features = net.forward(backbone, support_x)
    fast = backbone + list(prototype_head(features, support_y, ways))
    all_scales = []
    for step in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(fast)
            losses = per_sample_losses(net, fast, support_x, support_y)  # [T, n]
            loss = tf.reduce_sum(tf.reduce_mean(losses, axis=1))
        grads = tape.gradient(loss, fast)
        if first_order:
            grads = [tf.stop_gradient(g) for g in grads]
        sample_norms = (frozen_stats_sample_norms(net, fast, support_x, support_y)
                        if update.needs_sample_norms else None)
        fast, scales = update(step, fast, grads, losses, sample_norms)
        all_scales.append(scales)
    scales = (tf.stack(all_scales, axis=1) if all_scales
              else tf.zeros([tasks, 0, len(fast)], scale_dtype(fast)))
    return fast, scales


def task_outputs(model, net, update, support_x, support_y, query_x, query_y, steps: int,
                 first_order: bool, ways: int):
    """Per-task query loss [T], accuracy [T] and mean scale per tensor [T, tensors]."""
    dtype = model.config.compute_dtype
    theta = [tf.cast(p.value, dtype) for p in model.backbone.params]
    sx = to_task_layout(tf.cast(support_x, dtype))
    qx = to_task_layout(tf.cast(query_x, dtype))
    fast, scales = adapt(net, update, theta, sx, support_y, ways, steps, first_order)
    # one forward over [support; queries], statistics from the support rows (query_logits)
    n_support = tf.shape(sx)[0]
    features = net.forward(fast[:-2], tf.concat([sx, qx], axis=0), n_stats=n_support)
    logits = head_logits(features[:, n_support:], fast)  # [T, q, ways]
    losses = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=query_y, logits=logits), axis=1)
    correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=query_y.dtype), query_y),
                      losses.dtype)
    mean_scales = (tf.reduce_mean(scales, axis=1) if steps > 0
                   else tf.ones([support_y.shape[0], len(fast)], losses.dtype))
    return losses, tf.reduce_mean(correct, axis=1), mean_scales


def meta_gradients(model, grouped: bool, support_x, support_y, query_x, query_y):
    """``MetaLearner.meta_gradients`` with every task of the meta-batch at once."""
    config = model.config
    net = BatchedConv4(model.backbone.spec, grouped=grouped)
    update = BatchedUpdate(model)
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        losses, accs, scales = task_outputs(model, net, update, support_x, support_y, query_x,
                                            query_y, config.inner_steps, config.first_order,
                                            config.ways)
        loss = tf.reduce_mean(losses)
        scaled = model.scale_loss(loss)
    grads = tape.gradient(scaled, variables)
    grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
             for v, g in zip(variables, grads, strict=True)]
    return loss, tf.reduce_mean(accs), tf.reduce_mean(scales, axis=0), grads
