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

from metagna_tf.algorithms import batched, make_scale_network, make_update_rule
from metagna_tf.algorithms.inner_loop import (
    Adaptation,
    adapt,
    classify,
    query_logits,
    recomputed_meta_gradients,
)
from metagna_tf.config import Config
from metagna_tf.models import build_backbone

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
        self.backbone = build_backbone(config)
        self.tensor_names = self.backbone.param_names + ["head_kernel", "head_bias"]
        # the Arbiter (metagna) or the learned step sizes (maml_lslr); None otherwise
        self.arbiter = make_scale_network(config, len(self.tensor_names))
        self.update_rule = make_update_rule(config, self.arbiter)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.scale_trackers = []
        self.scale_mean_tracker = None
        if self.arbiter is not None:
            # the mean over tensors for the progress bar; one per tensor for TensorBoard
            self.scale_mean_tracker = keras.metrics.Mean(name="arbiter_scale")
            self.scale_trackers = [keras.metrics.Mean(name=f"arbiter_{n}")
                                   for n in self.tensor_names]
        self.built = True

    def set_inner_lr(self, inner_lr: float) -> None:
        """Take inner steps with ``inner_lr`` from now on (a test-time choice; the Arbiter's
        or the learned step sizes' scales multiply it as in training)."""
        if not inner_lr > 0:
            raise ValueError(f"inner learning rate must be positive, got {inner_lr}")
        self.config = self.config.replace(inner_lr=float(inner_lr))
        self.update_rule = make_update_rule(self.config, self.arbiter)

    # ---- one task -------------------------------------------------------------------
    def adapt(self, support_x, support_y, steps: int, first_order: bool = False,
              ways=None, final_stats: bool = True) -> Adaptation:
        """Adapt the meta-learned initialization to one support set (model-input images).

        ``ways`` (the number of classes) is read from the labels when None; pass it when
        known, as XLA needs it as a compile-time constant.
        """
        dtype = self.config.compute_dtype
        support_x = tf.cast(support_x, dtype)
        if ways is None:
            ways = tf.reduce_max(support_y) + 1
        params = [tf.cast(p.value, dtype) for p in self.backbone.params]
        return adapt(self.backbone, params, support_x, support_y, ways, steps=steps,
                     update=self.update_rule, first_order=first_order, final_stats=final_stats)

    def classify(self, adaptation: Adaptation, images):
        """Logits of ``images`` (model input) under an adaptation (see ``inner_loop.classify``)."""
        return classify(self.backbone, adaptation.fast, adaptation.stats,
                        tf.cast(images, self.config.compute_dtype))

    def task_outputs(self, support_x, support_y, query_x, query_y, steps: int,
                     first_order: bool = False, ways: int | None = None):
        """Query loss, query accuracy and mean scale per tensor for one episode."""
        adaptation = self.adapt(support_x, support_y, steps, first_order, ways,
                                final_stats=False)
        dtype = self.config.compute_dtype
        logits = query_logits(self.backbone, adaptation.fast, tf.cast(support_x, dtype),
                              tf.cast(query_x, dtype))
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=query_y, logits=logits))
        correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=query_y.dtype), query_y),
                          loss.dtype)
        scales = adaptation.scales
        mean_scales = (tf.reduce_mean(scales, axis=0) if steps > 0
                       else tf.ones([len(self.tensor_names)], loss.dtype))
        return loss, tf.reduce_mean(correct), mean_scales

    def scale_loss(self, loss):
        """The loss scaled for float16 (``mixed_float16``); the optimizer unscales the gradients."""
        optimizer = getattr(self, "optimizer", None)
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return optimizer.scale_loss(loss)
        return loss

    def recomputed_task_gradients(self, support_x, support_y, query_x, query_y):
        """One task's (loss, accuracy, scales, gradients) with ``--inner-checkpointing``:
        ``inner_loop.recomputed_meta_gradients`` (same values, less memory)."""
        config = self.config
        dtype = config.compute_dtype
        scale_vars = list(self.arbiter.trainable_variables) if self.arbiter is not None else []
        loss, acc, scales, theta_grads, scale_grads = recomputed_meta_gradients(
            self.backbone, self.update_rule, self.backbone.params, scale_vars,
            lambda v: tf.cast(v.value, dtype), tf.cast(support_x, dtype), support_y,
            tf.cast(query_x, dtype), query_y, config.ways, steps=config.inner_steps,
            first_order=config.first_order)
        by_var = {id(v): g for v, g in zip([*self.backbone.params, *scale_vars],
                                           [*theta_grads, *scale_grads], strict=True)}
        grads = [by_var.get(id(v), tf.zeros_like(v)) for v in self.trainable_variables]
        factor = self.scale_loss(tf.constant(1.0, loss.dtype))
        grads = [tf.cast(g, v.dtype) * tf.cast(factor, v.dtype)
                 for g, v in zip(grads, self.trainable_variables, strict=True)]
        return loss, acc, tf.cast(scales, loss.dtype), grads

    def meta_gradients(self, support_x, support_y, query_x, query_y):
        """Mean query loss, accuracy, scales and meta-gradients over a meta-batch."""
        config = self.config
        if config.batching != "loop":
            return batched.meta_gradients(self, config.batching == "grouped", support_x,
                                          support_y, query_x, query_y)
        variables = self.trainable_variables
        dtype = config.dtype
        num_tasks = tf.shape(support_x)[0]

        def body(i, grads, loss_sum, acc_sum, scale_sum):
            if config.inner_checkpointing:
                loss, acc, scales, task_grads = self.recomputed_task_gradients(
                    support_x[i], support_y[i], query_x[i], query_y[i])
                grads = [a + g for a, g in zip(grads, task_grads, strict=True)]
                return i + 1, grads, loss_sum + loss, acc_sum + acc, scale_sum + scales
            with tf.GradientTape() as tape:
                loss, acc, scales = self.task_outputs(
                    support_x[i], support_y[i], query_x[i], query_y[i],
                    steps=config.inner_steps, first_order=config.first_order, ways=config.ways)
                scaled = self.scale_loss(loss)
            task_grads = tape.gradient(scaled, variables)
            grads = [a + (tf.zeros_like(a) if g is None else tf.convert_to_tensor(g))
                     for a, g in zip(grads, task_grads, strict=True)]
            return i + 1, grads, loss_sum + loss, acc_sum + acc, scale_sum + scales

        zeros = [tf.zeros(v.shape, dtype=v.dtype) for v in variables]
        _, grads, loss_sum, acc_sum, scale_sum = tf.while_loop(
            lambda i, *_: i < num_tasks, body,
            [tf.constant(0), zeros, tf.zeros([], dtype), tf.zeros([], dtype),
             tf.zeros([len(self.tensor_names)], dtype)])
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

    def episode_metrics(self, data, steps: int, ways: int | None = None):
        """Per-episode (query loss, query accuracy, scales) of a meta-batch, no meta-update."""
        if self.config.batching != "loop" and ways is not None:
            net = batched.BatchedConv4(self.backbone.spec,
                                       grouped=self.config.batching == "grouped")
            return batched.task_outputs(self, net, batched.BatchedUpdate(self),
                                        *(data[k] for k in EPISODE_KEYS), steps=steps,
                                        first_order=False, ways=ways)
        def one(episode):
            return self.task_outputs(*episode, steps=steps, ways=ways)

        dtype = self.config.dtype
        return tf.map_fn(one, tuple(data[k] for k in EPISODE_KEYS),
                         fn_output_signature=(tf.TensorSpec([], dtype), tf.TensorSpec([], dtype),
                                              tf.TensorSpec([len(self.tensor_names)], dtype)))

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
        """Query logits of one episode ``{"support_x", "support_y", "query_x"}`` (model input)
        after ``inner_steps_test`` inner steps."""
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
