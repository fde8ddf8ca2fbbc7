"""The outer loop: ``MetaLearner``, a ``keras.Model`` trained with ``fit()``.

Each batch is a meta-batch of episodes (dict of ``support_x``, ``support_y``,
``query_x``, ``query_y`` with a leading task axis). ``train_step`` adapts to
every task with the configured inner rule, differentiates the query loss with
respect to the initialization (and the Arbiter) through the inner loop,
averages over tasks and applies Adam::

    theta' = adapt(theta, support)                       # inner loop, see inner_loop.py
    theta <- theta - Adam(mean_tasks d L_query(theta') / d theta)

References: Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast
Adaptation of Deep Networks". ICML 2017. Triantafillou et al. "Meta-Dataset"
(ICLR 2020) for the Proto-MAML head.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from metagna_tf.algorithms import make_scale_network, make_update_rule
from metagna_tf.algorithms.inner_loop import (
    Adaptation,
    adapt,
    classify,
    recomputed_meta_gradients,
    task_outputs,
)
from metagna_tf.config import Config
from metagna_tf.models import build_backbone
from metagna_tf.models.conv4 import grouped_gradients_available
from metagna_tf.models.head import LinearHead, check_classes

EPISODE_KEYS = ("support_x", "support_y", "query_x", "query_y")


def resolve_jit(config: Config) -> bool:
    """``auto``: off on CPU (measured slower, ~50 s compile); on for GPUs unless max-pooling,
    whose XLA second derivative is inexact. ``on`` with max-pool second order is refused."""
    if config.jit == "on":
        if config.downsample == "maxpool" and config.algorithm != "fomaml":
            raise ValueError("--jit on: XLA's second derivative of max-pooling is inexact "
                             "(bf16 comparison in MaxPoolGradGrad); use --jit off or a "
                             "stride/avgpool backbone")
        return True
    if config.jit == "off":
        return False
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    return has_gpu and config.downsample != "maxpool"


def _multi_worker(strategy) -> bool:
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


@keras.saving.register_keras_serializable(package="metagna_tf")
class MetaLearner(keras.Model):
    """Meta-learned Conv-4 initialization (+ Arbiter for Meta-GNA)."""

    def __init__(self, config: Config | dict, **kwargs):
        super().__init__(**kwargs)
        self.config = config if isinstance(config, Config) else Config.from_saved(config)
        config = self.config
        if (config.batching == "grouped"
                and not grouped_gradients_available(config.compute_dtype)):
            raise ValueError(
                f"--task-batching grouped: this TensorFlow has no grouped-convolution gradient "
                f"in {config.compute_dtype} on this machine (its CPU kernels need oneDNN, "
                f"off here unless TF_ENABLE_ONEDNN_OPTS=1 is set before TensorFlow is "
                f"imported, and AVX-512 for bfloat16; none in float64 or float16); use "
                f"--task-batching auto or loop")
        self.backbone = build_backbone(config)
        # MAML's meta-learned N-way head (--head linear); None: the prototype head
        self.head = (LinearHead(self.backbone.feature_dim(config.image_size), config.ways,
                                dtype=config.dtype, name="head")
                     if config.head == "linear" else None)
        self.tensor_names = self.backbone.param_names + ["head_kernel", "head_bias"]
        # the fast weights the inner loop adapts (--inner-params), and their names
        self.adapted = adapted_indices(config, self.tensor_names)
        self.scale_names = [self.tensor_names[i] for i in self.adapted]
        # the Arbiter (metagna) or the learned step sizes (maml_lslr); None otherwise
        self.arbiter = make_scale_network(config, len(self.scale_names))
        self.update_rule = make_update_rule(config, self.arbiter)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.scale_trackers = []
        self.scale_mean_tracker = None
        if self.arbiter is not None:
            # the mean over tensors for the progress bar; one per tensor for TensorBoard
            self.scale_mean_tracker = keras.metrics.Mean(name="arbiter_scale")
            self.scale_trackers = [keras.metrics.Mean(name=f"arbiter_{n}")
                                   for n in self.scale_names]
        self.built = True

    # ---- the inner loop (inner_loop.py), T tasks at once -------------------------------
    def update_for(self, inner_lr=None):
        """The inner update rule, at the trained inner learning rate or at ``inner_lr`` (a
        test-time choice, a number or a scalar tensor; the Arbiter's or the learned step
        sizes' scales multiply it as in training)."""
        if inner_lr is None:
            return self.update_rule
        return make_update_rule(self.config, self.arbiter, inner_lr=inner_lr)

    def theta(self):
        """The meta-learned backbone tensors in the compute precision."""
        return [tf.cast(p.value, self.config.compute_dtype) for p in self.backbone.params]

    def head_params(self):
        """The meta-learned linear head [W, b] in the compute precision (None: prototype head)."""
        if self.head is None:
            return None
        return [tf.cast(p.value, self.config.compute_dtype) for p in self.head.params]

    @property
    def head_ways(self) -> int | None:
        """The number of classes a linear head takes (None: any, the prototype head)."""
        return None if self.head is None else self.head.ways

    def inner_loop_args(self, ways):
        """What ``inner_loop.adapt`` needs besides the data: the head and the adapted tensors.
        A linear head takes its own number of classes only (a clear error otherwise)."""
        if self.head is not None and isinstance(ways, int):
            check_classes(self.head.ways, ways)
        every = len(self.adapted) == len(self.tensor_names)
        return {"head": self.head_params(), "adapted": None if every else self.adapted}

    def adapt(self, support_x, support_y, steps: int, first_order: bool = False,
              ways=None, inner_lr=None) -> Adaptation:
        """Adapt the meta-learned initialization to ``T`` support sets ``support_x``
        [T, n, H, W, C] (model input), ``support_y`` [T, n]; one task is ``T = 1``.

        ``ways`` (the number of classes) is read from the labels when None; pass it when
        known, as XLA needs it as a compile-time constant.
        """
        if ways is None:
            ways = self.head_ways or tf.reduce_max(support_y) + 1
        return adapt(self.backbone.spec, self.theta(), tf.cast(support_x, self.config.compute_dtype),
                     support_y, ways, steps=steps, update=self.update_for(inner_lr),
                     first_order=first_order, **self.inner_loop_args(ways))

    def classify(self, adaptation: Adaptation, images):
        """Logits [T, m, ways] of ``images`` [T, m, H, W, C] (model input) under an adaptation
        (see ``inner_loop.classify``)."""
        return classify(self.backbone.spec, adaptation.fast, adaptation.stats,
                        tf.cast(images, self.config.compute_dtype))

    def layout_spec(self):
        """The backbone's forward with the configured task layout (``Config.batching``)."""
        return self.backbone.spec.with_layout(grouped=self.config.batching != "stacked")

    def task_outputs(self, support_x, support_y, query_x, query_y, steps: int,
                     first_order: bool = False, ways: int | None = None, inner_lr=None):
        """Per-task query loss [T], query accuracy [T] and mean scale per tensor [T, L]."""
        dtype = self.config.compute_dtype
        if ways is None:
            ways = self.head_ways or tf.reduce_max(support_y) + 1
        return task_outputs(self.layout_spec(), self.update_for(inner_lr), self.theta(),
                            tf.cast(support_x, dtype), support_y, tf.cast(query_x, dtype),
                            query_y, ways, steps=steps, first_order=first_order,
                            **self.inner_loop_args(ways))

    def scale_loss(self, loss):
        """The loss scaled for float16 (``mixed_float16``); the optimizer unscales the gradients."""
        optimizer = getattr(self, "optimizer", None)
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return optimizer.scale_loss(loss)
        return loss

    def task_gradients(self, support_x, support_y, query_x, query_y):
        """``(losses [T], accuracies [T], scales [T, L], gradients of the summed query loss)``
        for ``T`` tasks at once; with ``--inner-checkpointing`` each inner step is recomputed
        in the backward pass (``inner_loop.recomputed_meta_gradients``: same values, less
        memory)."""
        config = self.config
        variables = self.trainable_variables
        if not config.inner_checkpointing:
            with tf.GradientTape() as tape:
                losses, accs, scales = self.task_outputs(
                    support_x, support_y, query_x, query_y, steps=config.inner_steps,
                    first_order=config.first_order, ways=config.ways)
                scaled = self.scale_loss(tf.reduce_sum(losses))
            grads = tape.gradient(scaled, variables)
            grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                     for v, g in zip(variables, grads, strict=True)]
            return losses, accs, scales, grads
        dtype = config.compute_dtype
        scale_vars = list(self.arbiter.trainable_variables) if self.arbiter is not None else []
        head_vars = self.head.params if self.head is not None else []
        losses, accs, scales, theta_grads, scale_grads = recomputed_meta_gradients(
            self.layout_spec(), self.update_rule, self.backbone.params, scale_vars,
            lambda v: tf.cast(v.value, dtype), tf.cast(support_x, dtype), support_y,
            tf.cast(query_x, dtype), query_y, config.ways, steps=config.inner_steps,
            first_order=config.first_order, head_variables=head_vars,
            adapted=self.inner_loop_args(config.ways)["adapted"])
        by_var = {id(v): g for v, g in zip([*self.backbone.params, *head_vars, *scale_vars],
                                           [*theta_grads, *scale_grads], strict=True)}
        factor = self.scale_loss(tf.constant(1.0, losses.dtype))
        grads = [tf.cast(by_var.get(id(v), tf.zeros_like(v)), v.dtype) * tf.cast(factor, v.dtype)
                 for v in variables]
        return losses, accs, scales, grads

    def meta_gradients(self, support_x, support_y, query_x, query_y):
        """Mean query loss, accuracy, scales and meta-gradients over a meta-batch.

        ``Config.batching`` picks the layout only: ``grouped``/``stacked`` adapt every task
        at once; ``loop`` runs the same functions on one task at a time (``T = 1`` slices
        in a ``tf.while_loop``), which is faster for few large tasks (tools/bench.py).
        """
        config = self.config
        dtype = config.dtype
        if config.batching != "loop":
            losses, accs, scales, grads = self.task_gradients(support_x, support_y, query_x,
                                                              query_y)
            n = tf.cast(tf.shape(losses)[0], dtype)
            return (tf.reduce_mean(losses), tf.reduce_mean(accs), tf.reduce_mean(scales, 0),
                    [g / tf.cast(n, g.dtype) for g in grads])
        variables = self.trainable_variables
        num_tasks = tf.shape(support_x)[0]

        def body(i, grads, loss_sum, acc_sum, scale_sum):
            one = [t[i][None] for t in (support_x, support_y, query_x, query_y)]
            losses, accs, scales, task_grads = self.task_gradients(*one)
            grads = [a + g for a, g in zip(grads, task_grads, strict=True)]
            return (i + 1, grads, loss_sum + losses[0], acc_sum + accs[0],
                    scale_sum + scales[0])

        zeros = [tf.zeros(v.shape, dtype=v.dtype) for v in variables]
        _, grads, loss_sum, acc_sum, scale_sum = tf.while_loop(
            lambda i, *_: i < num_tasks, body,
            [tf.constant(0), zeros, tf.zeros([], dtype), tf.zeros([], dtype),
             tf.zeros([len(self.scale_names)], dtype)])
        n = tf.cast(num_tasks, dtype)
        return loss_sum / n, acc_sum / n, scale_sum / n, [g / tf.cast(n, g.dtype) for g in grads]

    # ---- keras hooks ----------------------------------------------------------------
    def train_step(self, data):
        loss, acc, scales, grads = self.meta_gradients(*(data[k] for k in EPISODE_KEYS))
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            # each replica holds the mean over its B/R tasks; Keras' TF optimizer sums the
            # replicas' gradients (keras/src/backend/tensorflow/optimizer.py), so divide by R
            # to apply the mean over the whole meta-batch
            grads = [g / replicas for g in grads]
        self.optimizer.apply(grads, self.trainable_variables)
        return self._update_metrics(loss, acc, scales)

    def episode_metrics(self, data, steps: int, ways: int | None = None, inner_lr=None):
        """Per-episode (query loss, query accuracy, scales) of a meta-batch, no meta-update:
        every episode at once, or one at a time with the ``loop`` layout."""
        episodes = tuple(data[k] for k in EPISODE_KEYS)
        if self.config.batching != "loop":
            return self.task_outputs(*episodes, steps=steps, ways=ways, inner_lr=inner_lr)

        def one(episode):
            outputs = self.task_outputs(*(t[None] for t in episode), steps=steps, ways=ways,
                                        inner_lr=inner_lr)
            return tuple(t[0] for t in outputs)

        dtype = self.config.dtype
        return tf.map_fn(one, episodes,
                         fn_output_signature=(tf.TensorSpec([], dtype), tf.TensorSpec([], dtype),
                                              tf.TensorSpec([len(self.scale_names)], dtype)))

    def test_step(self, data):
        losses, accs, scales = self.episode_metrics(data, self.config.inner_steps_test,
                                                    ways=self.config.ways)
        return self._update_metrics(tf.reduce_mean(losses), tf.reduce_mean(accs),
                                    tf.reduce_mean(scales, axis=0), count=tf.shape(losses)[0])

    def _update_metrics(self, loss, acc, scales, count=1):
        self.loss_tracker.update_state(loss, sample_weight=count)
        self.accuracy_tracker.update_state(acc, sample_weight=count)
        if self.scale_mean_tracker is not None:
            self.scale_mean_tracker.update_state(tf.reduce_mean(scales), sample_weight=count)
        for i, tracker in enumerate(self.scale_trackers):
            tracker.update_state(scales[i], sample_weight=count)
        results = {m.name: m.result() for m in self.metrics}
        if _multi_worker(tf.distribute.get_strategy()):
            # Keras reduces step outputs across workers with reduce(MEAN, axis=0), which a
            # scalar cannot take (Keras 3.15): report each as a 1-vector, reduced to a scalar
            results = {k: tf.reshape(v, [1]) for k, v in results.items()}
        return results

    @property
    def metrics(self):
        means = [self.scale_mean_tracker] if self.scale_mean_tracker is not None else []
        return [self.loss_tracker, self.accuracy_tracker, *means, *self.scale_trackers]

    def call(self, inputs):
        """Query logits [T, m, ways] of episodes ``{"support_x", "support_y", "query_x"}``
        (model input, a leading task axis) after ``inner_steps_test`` inner steps."""
        adaptation = self.adapt(inputs["support_x"], inputs["support_y"],
                                self.config.inner_steps_test)
        return self.classify(adaptation, inputs["query_x"])

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Nothing to build: every variable exists from ``__init__`` (and the optimizer's from
        ``checkpoints.build_model``). Keras' version draws a batch to trace the model, and under
        ``MultiWorkerMirroredStrategy`` fails reducing that batch of dicts (measured with
        Keras 3.15)."""
        del iterator, data_batch

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict()}


def adapted_indices(config: Config, tensor_names) -> list[int]:
    """The indices of the fast weights the inner loop adapts: all (``--inner-params all``), or
    all but BatchNorm's gamma and beta (``no_bn``: the convolution kernels and the head)."""
    if config.inner_params == "all":
        return list(range(len(tensor_names)))
    return [i for i, name in enumerate(tensor_names) if "_gamma" not in name
            and "_beta" not in name]
