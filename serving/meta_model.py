"""The meta-learned initialization plus its adaptation routine as a ``tf.Module``.

``MetaModelModule`` holds its own ``tf.Variable`` copies of the meta-parameters
(the Conv-4 tensors and, for Meta-GNA / LSLR, the Arbiter's or step sizes'
weights) and no Keras object: TF Serving and ``saved_model_cli`` load
SavedModels with the TF1 loader, which fails on the second copy of the
variables that tracked Keras 3 layers export. The signatures call the library's
own functions (``inner_loop.adapt``, ``inner_loop.classify``,
``preprocessing.to_model_input``), so a served prediction is the training code's.

Signatures (images: uint8 NHWC at the model's size and channels, converted by
``metagna_tf.data.images`` exactly as the training data; see docs/serving.md):

* ``adapt_and_predict(support_images, support_labels, num_classes, query_images)``
  -> ``probabilities, logits, support_loss, arbiter_scales``; also ``serving_default``;
* ``adapt(support_images, support_labels, num_classes)`` -> one output per adapted
  tensor (``conv1_kernel`` ... ``head_bias``) and per BatchNorm statistic
  (``bn1_mean``, ``bn1_variance`` ...);
* ``classify(<the outputs of adapt>, images)`` -> ``probabilities, logits``.

Nothing is assigned during a call: fast weights are tensors, so concurrent
requests cannot interfere. Nothing is jit-compiled (TF Serving disables XLA).
"""

from __future__ import annotations

import tensorflow as tf

from metagna_tf.algorithms import make_update_rule
from metagna_tf.algorithms.inner_loop import Adaptation, adapt, classify
from metagna_tf.models.conv4 import BLOCKS
from metagna_tf.preprocessing import to_model_input
from serving.inputs import checked_images


class ScaleNetwork:
    """The Arbiter's (or step sizes') pure forward bound to the module's own variables."""

    def __init__(self, function, weights, uses_features: bool, inputs_kind: str):
        self.function = function
        self.weights = weights
        self.uses_features = uses_features
        self.inputs_kind = inputs_kind

    def __call__(self, features, step):
        return self.function(self.weights, features, step)


def stat_names() -> list[str]:
    return [f"bn{b + 1}_{kind}" for b in range(BLOCKS) for kind in ("mean", "variance")]


class MetaModelModule(tf.Module):
    """See the module docstring. ``model`` is a trained ``MetaLearner``."""

    def __init__(self, model, inner_steps: int):
        super().__init__(name="metagna")
        config = model.config
        if inner_steps < 0:
            raise ValueError(f"inner_steps must be at least 0, got {inner_steps}")
        self.inner_steps = int(inner_steps)
        self.image_shape = (config.image_size, config.image_size, config.channels)
        self.dtype = tf.as_dtype(config.dtype)
        self.tensor_names = list(model.tensor_names)
        self.stat_names = stat_names()
        self.num_tensors = len(self.tensor_names)
        self.backbone_params = [tf.Variable(p.numpy(), trainable=False, name=n)
                                for p, n in zip(model.backbone.params, model.backbone.param_names,
                                                strict=True)]
        # MAML's linear head (--head linear): its number of classes is the only one taken
        self.head_ways = model.head_ways
        self.head_params = ([tf.Variable(p.numpy(), trainable=False, name=n)
                             for p, n in zip(model.head.params, ("head_kernel", "head_bias"),
                                             strict=True)] if model.head is not None else [])
        scale_net = None
        self.scale_weights = []
        if model.arbiter is not None:
            self.scale_weights = [tf.Variable(w.numpy(), trainable=False, name=f"arbiter_{i}")
                                  for i, w in enumerate(model.arbiter.scale_weights)]
            scale_net = ScaleNetwork(model.arbiter.functional(), self.scale_weights,
                                     model.arbiter.uses_features, model.arbiter.inputs_kind)
        # plain Python objects: not tracked, so no Keras variable enters the SavedModel
        self._adapted = model.inner_loop_args(model.config.ways)["adapted"]
        self._spec = model.backbone.spec
        self._update = make_update_rule(config, scale_net)
        self._build_signatures()

    # ---- input checks (tf.debugging: a clear error per request, the model keeps serving) ----
    def _images(self, images, name: str):
        return to_model_input(checked_images(images, self.image_shape, name), self.dtype)

    def _support(self, support_images, support_labels, num_classes):
        """Checked support inputs: everything downstream runs after every check."""
        n = tf.shape(support_images)[0]
        checks = [
            tf.debugging.assert_positive(n, message="support_images is empty: send at least one "
                                                    "image per class"),
            tf.debugging.assert_equal(tf.shape(support_labels)[0], n, message="support_labels "
                                      "must have one label per support image"),
            tf.debugging.assert_greater_equal(num_classes, 2,
                                              message="num_classes must be at least 2"),
            *([tf.debugging.assert_equal(
                num_classes, self.head_ways,
                message=f"num_classes must be {self.head_ways}: the linear head of this model "
                        f"classifies exactly {self.head_ways} classes")]
              if self.head_ways is not None else []),
            tf.debugging.assert_non_negative(support_labels, message="support_labels must be in "
                                             "0..num_classes-1"),
            tf.debugging.assert_less(support_labels, num_classes,
                                     message="support_labels must be in 0..num_classes-1"),
        ]
        with tf.control_dependencies(checks):
            counts = tf.math.bincount(support_labels, minlength=num_classes,
                                      maxlength=num_classes)
        checks.append(tf.debugging.assert_positive(
            counts, message="every class 0..num_classes-1 needs at least one support image"))
        with tf.control_dependencies(checks):
            support_labels = tf.identity(support_labels)
            support_x = self._images(support_images, "support_images")
        return support_x, support_labels

    def _adapt(self, support_images, support_labels, num_classes):
        """One task's ``Adaptation``, without the task axis (``Adaptation.task``)."""
        support_x, support_labels = self._support(support_images, support_labels, num_classes)
        params = [tf.convert_to_tensor(p) for p in self.backbone_params]
        head = [tf.convert_to_tensor(p) for p in self.head_params] or None
        return adapt(self._spec, params, support_x[None], support_labels[None], num_classes,
                     steps=self.inner_steps, update=self._update, head=head,
                     adapted=self._adapted).task(0)

    def _classify(self, fast, stats, images):
        tf.debugging.assert_equal(tf.shape(fast[-2])[1], tf.shape(fast[-1])[0],
                                  message="head_kernel and head_bias disagree on the number of "
                                          "classes")
        one = Adaptation.of_one_task(Adaptation(fast, stats, tf.zeros([0, 0]), tf.zeros([0])))
        logits = classify(self._spec, one.fast, one.stats, self._images(images, "images")[None])[0]
        return {"probabilities": tf.nn.softmax(logits), "logits": logits}

    # ---- signatures ---------------------------------------------------------------------
    def _build_signatures(self) -> None:
        images = tf.TensorSpec([None, None, None, None], tf.uint8)
        support = [tf.TensorSpec([None, None, None, None], tf.uint8, name="support_images"),
                   tf.TensorSpec([None], tf.int32, name="support_labels"),
                   tf.TensorSpec([], tf.int32, name="num_classes")]

        @tf.function(input_signature=[*support, tf.TensorSpec.from_spec(images,
                                                                         name="query_images")],
                     jit_compile=False)
        def adapt_and_predict(support_images, support_labels, num_classes, query_images):
            adapted = self._adapt(support_images, support_labels, num_classes)
            out = self._classify(adapted.fast, adapted.stats, query_images)
            return {**out, "support_loss": adapted.support_losses,
                    "arbiter_scales": adapted.scales}

        @tf.function(input_signature=support, jit_compile=False)
        def adapt_fn(support_images, support_labels, num_classes):
            adapted = self._adapt(support_images, support_labels, num_classes)
            flat_stats = [t for pair in adapted.stats for t in pair]
            return {**dict(zip(self.tensor_names, adapted.fast, strict=True)),
                    **dict(zip(self.stat_names, flat_stats, strict=True))}

        specs = [tf.TensorSpec(p.shape, self.dtype, name=n)
                 for p, n in zip(self.backbone_params, self.tensor_names[:-2], strict=True)]
        # the head's shape depends on the number of classes (and, flattened, the image size)
        specs += [tf.TensorSpec([None, None], self.dtype, name="head_kernel"),
                  tf.TensorSpec([None], self.dtype, name="head_bias")]
        filters = self.backbone_params[-1].shape[0]
        specs += [tf.TensorSpec([filters], self.dtype, name=n) for n in self.stat_names]

        @tf.function(input_signature=[*specs, tf.TensorSpec.from_spec(images, name="images")],
                     jit_compile=False)
        def classify_fn(*args):
            fast = list(args[:self.num_tensors])
            flat = args[self.num_tensors:-1]
            stats = [(flat[2 * b], flat[2 * b + 1]) for b in range(BLOCKS)]
            return self._classify(fast, stats, args[-1])

        self.adapt_and_predict = adapt_and_predict
        self.adapt = adapt_fn
        self.classify = classify_fn

    def signatures(self) -> dict:
        adapt_and_predict = self.adapt_and_predict.get_concrete_function()
        return {"serving_default": adapt_and_predict, "adapt_and_predict": adapt_and_predict,
                "adapt": self.adapt.get_concrete_function(),
                "classify": self.classify.get_concrete_function()}
