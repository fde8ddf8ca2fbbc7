"""Conv-4 backbone with a functional forward over a list of weight tensors.

Four blocks of ``conv 3x3 -> BatchNorm -> activation -> downsample``, over a
leading task axis: every weight tensor is ``[T, ...]``, images ``[T, n, H, W, C]``,
features ``[T, n, d]`` (one task is ``T = 1``). Activations are laid out
``[n, H, W, T, C]``, so the ``T`` tasks' convolutions are one grouped convolution
(``task_conv``, the one layout choice). The inner loop differentiates through this
forward twice, so it is written out instead of using Keras layers:

* BatchNorm moments are explicit, ``m = mean(h)``, ``v = mean((h - m)^2)``.
  ``tf.nn.moments`` and ``keras.layers.BatchNormalization`` stop the gradient
  through the mean inside the variance, which makes second derivatives
  0.4-2% wrong.
* The statistics come from the first ``n_stats`` rows (the support set) and
  are applied to every row, so a query's output never depends on which other
  queries share its batch (stricter than MAML's transductive statistics).
  They can also be returned, or passed in, so that an exported classifier
  stores them.

Convolutions have no bias: BatchNorm's mean subtraction cancels it and its
gradient would be exactly zero.

An adapted classifier's statistics are constants, so BatchNorm folds into the
convolution (``fold_batchnorm``, ``conv4_folded_forward``): the forward-only
form that the ONNX and TFLite exports carry.
"""

from __future__ import annotations

import dataclasses
import functools

import keras
import tensorflow as tf

BLOCKS = 4
_ACTIVATIONS = {"relu": tf.nn.relu, "softplus": tf.nn.softplus,
                "leaky_relu": lambda h: tf.nn.leaky_relu(h, alpha=0.01)}


def to_task_layout(images):
    """``[T, n, H, W, C]`` -> ``[n, H, W, T, C]``: the layout every block computes in."""
    if images.shape[0] == 1:
        return images[0][:, :, :, None, :]
    return tf.transpose(images, [1, 2, 3, 0, 4])


@functools.cache
def grouped_gradients_available(dtype: str = "float32") -> bool:
    """Whether TensorFlow can differentiate a grouped convolution in ``dtype`` on this
    machine's default device. Its CPU kernels have none without oneDNN ("Gradients for
    grouped convolutions are not supported on CPU"), none in float64 or float16, and in
    bfloat16 only where oneDNN takes bfloat16 (AVX-512). TensorFlow leaves oneDNN off with
    ``TF_ENABLE_ONEDNN_OPTS=0`` and, by default, on some CPUs (seen on one without AVX2);
    ``TF_ENABLE_ONEDNN_OPTS=1``, set before TensorFlow is imported, turns it on. The two
    gradient kernels of a tiny grouped convolution are run once per dtype, eagerly, to tell
    (the ops themselves: ``tf.init_scope`` pauses any gradient tape)."""
    with tf.init_scope():
        x = tf.zeros([1, 3, 3, 2], dtype)
        kernel = tf.zeros([1, 1, 1, 4], dtype)  # 2 groups of 1 input channel
        dy = tf.zeros([1, 3, 3, 4], dtype)
        strides = [1, 1, 1, 1]
        try:
            tf.raw_ops.Conv2DBackpropInput(input_sizes=x.shape, filter=kernel, out_backprop=dy,
                                           strides=strides, padding="SAME")
            tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=kernel.shape, out_backprop=dy,
                                            strides=strides, padding="SAME")
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
                tf.errors.NotFoundError):
            return False
    return True


def task_conv(a, kernel, stride: int, grouped: bool):
    """The layout choice, and nothing else: ``a`` [n, H, W, T, C], per-task ``kernel``
    [T, 3, 3, C, F] -> [n, H', W', T, F].

    ``grouped``: one convolution over ``T * C`` task-major channels with ``T`` groups (for
    ``T = 1`` a plain convolution). Otherwise one convolution per task (TensorFlow has no
    grouped-convolution gradient on the CPU in float64).
    """
    shape = tf.shape(a)
    n, h, w = shape[0], shape[1], shape[2]
    tasks, c, f = kernel.shape[0], kernel.shape[3], kernel.shape[4]
    if tasks == 1:
        return tf.nn.conv2d(a[:, :, :, 0], kernel[0], strides=stride, padding="SAME")[:, :, :, None]
    if grouped:
        x = tf.reshape(a, [n, h, w, tasks * c])
        k = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]), [3, 3, c, tasks * f])
        y = tf.nn.conv2d(x, k, strides=stride, padding="SAME")
        ys = tf.shape(y)
        return tf.reshape(y, [ys[0], ys[1], ys[2], tasks, f])
    return tf.stack([tf.nn.conv2d(a[:, :, :, t], kernel[t], strides=stride, padding="SAME")
                     for t in range(tasks)], axis=3)


def conv4_forward(params, x, *, downsample: str, activation: str, feature_reduce: str,
                  bn_eps: float, grouped: bool = True, n_stats=None, stats=None,
                  return_stats: bool = False, taps: dict | None = None,
                  freeze_stats: bool = False):
    """Features ``[T, n, d]`` of images ``x`` [T, n, H, W, C] under per-task ``params`` =
    [kernel, gamma, beta] * 4, each with a leading task axis ``T`` (one task: ``T = 1``).

    BatchNorm statistics (per task and channel, ``[T, F]``) are taken from
    ``x[:, :n_stats]`` (all rows when None) unless ``stats`` (a list of 4 ``(mean,
    variance)`` pairs) is given. ``taps``, if a dict, receives per block the convolution
    input, the normalized pre-activation ``xhat``, ``1/sqrt(var + eps)`` and the BatchNorm
    output (see ``conv4_sample_grad_norms``). ``freeze_stats`` stops the gradient through
    the batch statistics (they are still the batch's values). ``grouped``: ``task_conv``.
    """
    act = _ACTIVATIONS[activation]
    stride = 2 if downsample == "stride" else 1
    h = to_task_layout(x)
    used_stats = []
    for block in range(BLOCKS):
        kernel, gamma, beta = params[3 * block: 3 * block + 3]
        conv_in = h
        h = task_conv(h, kernel, stride, grouped)
        h, block_stats = batch_norm(h, conv_in, gamma, beta, bn_eps, n_stats=n_stats,
                                    stats=None if stats is None else stats[block],
                                    freeze_stats=freeze_stats, taps=taps)
        used_stats.append(block_stats)
        h = _downsample(act(h), downsample)
    features = _reduce(h, feature_reduce)
    return (features, used_stats) if return_stats else features


LOW_PRECISION = (tf.bfloat16, tf.float16)


def moments(h, axes):
    """``mean(h)``, ``mean((h - mean)^2)`` written out (exact second derivatives), in float32
    when ``h`` is bfloat16 or float16."""
    if h.dtype in LOW_PRECISION:
        h = tf.cast(h, tf.float32)
    mean = tf.reduce_mean(h, axis=axes)
    return mean, tf.reduce_mean(tf.square(h - mean), axis=axes)


def batch_norm(h, conv_in, gamma, beta, eps: float, *, n_stats=None, stats=None,
               freeze_stats: bool = False, taps: dict | None = None):
    """BatchNorm of the convolution output ``h`` [n, H, W, T, F] (moments per task and
    channel over the first three axes, from ``h[:n_stats]``, unless ``stats = (mean,
    variance)``, each [T, F], is given). Returns the
    output and the ``(mean, variance)`` used; fills ``taps`` as ``conv4_forward`` documents."""
    if stats is None:
        mean, var = moments(h if n_stats is None else h[:n_stats], [0, 1, 2])
        if freeze_stats:
            mean, var = tf.stop_gradient(mean), tf.stop_gradient(var)
    else:
        mean, var = stats
    inv_std = tf.cast(tf.math.rsqrt(var + eps), h.dtype)
    if taps is None:
        # gamma * (h - mean) * inv_std + beta as one scale and one shift per task and channel:
        # two elementwise passes over h (and its gradients) instead of four
        scale = gamma * inv_std
        out = h * scale + (beta - tf.cast(mean, h.dtype) * scale)
        return out, (mean, var)
    xhat = (h - tf.cast(mean, h.dtype)) * inv_std
    out = xhat * gamma + beta
    for key, value in (("conv_in", conv_in), ("xhat", xhat), ("inv_std", inv_std),
                       ("bn_out", out)):
        taps.setdefault(key, []).append(value)
    return out, (mean, var)


def _downsample(h, downsample: str):
    """2x2 pooling of [n, H, W, T, F] activations (or of one task's [n, H, W, F])."""
    if downsample == "stride":
        return h
    pool = tf.nn.max_pool2d if downsample == "maxpool" else tf.nn.avg_pool2d
    if len(h.shape) == 4:
        return pool(h, 2, 2, "VALID")
    s = tf.shape(h)
    tasks, f = h.shape[3], h.shape[4]
    y = pool(tf.reshape(h, [s[0], s[1], s[2], tasks * f]), 2, 2, "VALID")
    ys = tf.shape(y)
    return tf.reshape(y, [ys[0], ys[1], ys[2], tasks, f])


def _reduce(h, feature_reduce: str):
    """Features of [n, H, W, T, F] activations as [T, n, d] (of one task's [n, H, W, F]: [n, d])."""
    if len(h.shape) == 4:
        if feature_reduce == "mean":
            return tf.reduce_mean(h, axis=[1, 2])
        return tf.reshape(h, [tf.shape(h)[0], -1])
    if feature_reduce == "mean":
        return tf.transpose(tf.reduce_mean(h, axis=[1, 2]), [1, 0, 2])
    t = tf.transpose(h, [3, 0, 1, 2, 4])  # [T, n, H, W, F]: each row flattened as (H, W, F)
    s = tf.shape(t)
    return tf.reshape(t, [s[0], s[1], -1])


def fold_batchnorm(params, stats, bn_eps: float) -> list:
    """Fold fixed BatchNorm statistics into the convolutions.

    ``BN(conv(x, K)) = conv(x, K * s) + (beta - mean * s)`` with ``s = gamma / sqrt(var + eps)``
    per output channel. Returns ``[kernel, bias] * 4``.
    """
    folded = []
    for block in range(BLOCKS):
        kernel, gamma, beta = params[3 * block: 3 * block + 3]
        mean, var = stats[block]
        scale = gamma * tf.math.rsqrt(var + bn_eps)
        folded += [kernel * scale, beta - mean * scale]
    return folded


def conv4_folded_forward(folded, x, *, downsample: str, activation: str, feature_reduce: str):
    """Features of ``x`` under ``fold_batchnorm``'s ``[kernel, bias] * 4`` (inference only)."""
    act = _ACTIVATIONS[activation]
    stride = 2 if downsample == "stride" else 1
    h = x
    for block in range(BLOCKS):
        kernel, bias = folded[2 * block: 2 * block + 2]
        h = tf.nn.bias_add(tf.nn.conv2d(h, kernel, strides=stride, padding="SAME"), bias)
        h = _downsample(act(h), downsample)
    return _reduce(h, feature_reduce)


@dataclasses.dataclass(frozen=True)
class Conv4Spec:
    """Conv-4's settings and functional forwards, without variables.

    What the inner loop needs of a backbone (``forward``, ``sample_grad_norms``); the
    ``Conv4`` layer delegates to one, and an export holds one beside its own variables.
    """

    downsample: str = "stride"
    activation: str = "relu"
    feature_reduce: str = "mean"
    bn_eps: float = 1e-3
    grouped: bool = True  # task_conv's layout for T > 1 tasks

    def with_layout(self, grouped: bool) -> Conv4Spec:
        return dataclasses.replace(self, grouped=grouped)

    def forward(self, params, x, n_stats=None, stats=None, return_stats=False, taps=None,
                freeze_stats=False):
        return conv4_forward(params, x, downsample=self.downsample, activation=self.activation,
                             feature_reduce=self.feature_reduce, bn_eps=self.bn_eps,
                             grouped=self.grouped, n_stats=n_stats, stats=stats,
                             return_stats=return_stats, taps=taps, freeze_stats=freeze_stats)

    def sample_grad_norms(self, params, taps, bn_out_grads):
        return conv4_sample_grad_norms(params, taps, bn_out_grads, self.downsample)

    def fold(self, params, stats) -> list:
        return fold_batchnorm(params, stats, self.bn_eps)

    def folded_forward(self, folded, x):
        return conv4_folded_forward(folded, x, downsample=self.downsample,
                                    activation=self.activation, feature_reduce=self.feature_reduce)


def conv4_sample_grad_norms(params, taps: dict, bn_out_grads, downsample: str):
    """Per-sample gradient norms of the 12 Conv-4 tensors, BatchNorm statistics held constant.

    ``taps`` come from a forward pass with ``freeze_stats``; ``bn_out_grads[b]`` is the
    gradient of ``sum_i L_i`` with respect to block ``b``'s BatchNorm output. With the
    statistics constant, sample ``i``'s activations reach only ``L_i``, so the rows of
    these gradients are per-sample gradients and the per-layer identities are exact:

        dL_i/dK     = sum_p patch_p(a_i) (x) g_z[i, p],   g_z = g_y * gamma / sqrt(var + eps)
        dL_i/dgamma = sum_p g_y[i, p] * xhat[i, p],       dL_i/dbeta = sum_p g_y[i, p]

    Returns a list of 12 ``[T, n]`` tensors, in ``params`` order.
    """
    stride = 2 if downsample == "stride" else 1
    norms = []
    for block in range(BLOCKS):
        kernel, gamma, _ = params[3 * block: 3 * block + 3]
        conv_in, xhat = taps["conv_in"][block], taps["xhat"][block]
        g_y = bn_out_grads[block]
        g_z = g_y * gamma * taps["inv_std"][block]  # [n, H', W', T, F]
        tasks, c = kernel.shape[0], kernel.shape[3]
        s = tf.shape(conv_in)
        x = tf.reshape(conv_in, [s[0], s[1], s[2], tasks * c])
        patches = tf.image.extract_patches(x, sizes=[1, 3, 3, 1], strides=[1, stride, stride, 1],
                                           rates=[1, 1, 1, 1], padding="SAME")
        ps = tf.shape(patches)
        patches = tf.reshape(patches, [ps[0], ps[1], ps[2], 9, tasks, c])
        per_sample_kernel = tf.einsum("nhwktc,nhwtf->tnkcf", patches, g_z)
        # the squares summed in float32: in float16 they overflow once a norm passes 256
        f32 = tf.float32 if g_y.dtype in (tf.float16, tf.bfloat16) else g_y.dtype
        norms += [tf.sqrt(tf.reduce_sum(tf.square(tf.cast(per_sample_kernel, f32)),
                                        axis=[2, 3, 4])),
                  tf.transpose(tf.norm(tf.cast(tf.reduce_sum(g_y * xhat, axis=[1, 2]), f32),
                                       axis=-1)),
                  tf.transpose(tf.norm(tf.cast(tf.reduce_sum(g_y, axis=[1, 2]), f32), axis=-1))]
    return norms


def output_size(image_size: int, downsample: str) -> int:
    size = image_size
    for _ in range(BLOCKS):
        size = -(-size // 2) if downsample == "stride" else size // 2
    return size


@keras.saving.register_keras_serializable(package="metagna_tf")
class Conv4(keras.layers.Layer):
    """Holds the Conv-4 meta-parameters; ``forward`` runs them functionally.

    Args:
        channels: input channels (1 for Omniglot, 3 for RGB).
        filters: convolution filters per block (64 for Omniglot, 32 or 48 for 84x84).
        downsample: ``"stride"`` (stride-2 convolutions), ``"maxpool"`` or
            ``"avgpool"`` (2x2 pooling after each block).
        activation: ``"relu"``, ``"softplus"`` (smooth, for finite differences) or
            ``"leaky_relu"`` (slope 0.01).
        feature_reduce: ``"mean"`` (spatial average) or ``"flatten"``.
        bn_eps: BatchNorm epsilon.
    """

    def __init__(self, channels=1, filters=64, downsample="stride", activation="relu",
                 feature_reduce="mean", bn_eps=1e-3, **kwargs):
        super().__init__(**kwargs)
        if channels not in (1, 3):
            raise ValueError(f"Conv4: channels must be 1 or 3, got {channels!r}")
        if not (isinstance(filters, int) and filters >= 1):
            raise ValueError(f"Conv4: filters must be a positive integer, got {filters!r}")
        if downsample not in ("stride", "maxpool", "avgpool"):
            raise ValueError(f"Conv4: downsample must be stride, maxpool or avgpool, got {downsample!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"Conv4: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if feature_reduce not in ("mean", "flatten"):
            raise ValueError(f"Conv4: feature_reduce must be mean or flatten, got {feature_reduce!r}")
        if not bn_eps > 0:
            raise ValueError(f"Conv4: bn_eps must be positive, got {bn_eps!r}")
        self.channels = channels
        self.filters = filters
        self.downsample = downsample
        self.activation = activation
        self.feature_reduce = feature_reduce
        self.bn_eps = bn_eps
        self.params = []
        cin = channels
        for block in range(BLOCKS):
            self.params += [
                self.add_weight(shape=(3, 3, cin, filters), initializer="glorot_uniform",
                                name=f"conv{block + 1}_kernel"),
                self.add_weight(shape=(filters,), initializer="ones", name=f"bn{block + 1}_gamma"),
                self.add_weight(shape=(filters,), initializer="zeros", name=f"bn{block + 1}_beta"),
            ]
            cin = filters
        # Also as attributes: TensorFlow checkpoints see a Keras layer's variables through its
        # attributes, not through a list such as ``params`` (checkpoints written before this
        # held the backbone only through the optimizer; checkpoints.load_trained reads both).
        for param in self.params:
            setattr(self, param.name, param)
        self.built = True

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def spec(self) -> Conv4Spec:
        return Conv4Spec(self.downsample, self.activation, self.feature_reduce, self.bn_eps)

    def forward(self, params, x, **kwargs):
        return self.spec.forward(params, x, **kwargs)

    def sample_grad_norms(self, params, taps, bn_out_grads):
        return self.spec.sample_grad_norms(params, taps, bn_out_grads)

    def call(self, x):
        """Features of one batch of images ``[n, H, W, C]``, BatchNorm statistics its own."""
        params = [p.value[None] for p in self.params]
        return self.forward(params, tf.cast(x, self.compute_dtype)[None])[0]

    def feature_dim(self, image_size: int) -> int:
        if self.feature_reduce == "mean":
            return self.filters
        return self.filters * output_size(image_size, self.downsample) ** 2

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "filters": self.filters,
                "downsample": self.downsample, "activation": self.activation,
                "feature_reduce": self.feature_reduce, "bn_eps": self.bn_eps}
