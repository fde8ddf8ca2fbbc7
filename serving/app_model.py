"""The app's model: a training workdir or a ``serving.export`` SavedModel, behind one interface.

``AppModel`` is loaded once per process and shared read-only by every browser
session. Adapting returns an ``AdaptedState`` (plain NumPy arrays: it lives in a
session's ``gr.State``), which ``classify`` and ``adapted_classifier`` consume.

* ``--workdir``: ``prediction.Predictor`` over the trained ``MetaLearner``;
* ``--model``: the SavedModel's ``adapt_and_predict``, ``adapt`` and ``classify``
  signatures (the preprocessing and architecture from its ``model_info.json``).

Both run the library's ``inner_loop.adapt`` and ``classify``.
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf

from metagna_tf.algorithms import algorithm
from metagna_tf.algorithms.inner_loop import Adaptation
from metagna_tf.config import Config
from metagna_tf.data.images import ImageOptions
from metagna_tf.models.conv4 import BLOCKS, Conv4Spec


@dataclasses.dataclass
class AdaptedState:
    """One session's adapted classifier (NumPy only, so ``gr.State`` can copy it)."""

    class_names: list[str]
    fast: list[np.ndarray]  # adapted tensors, head last
    stats: list[tuple[np.ndarray, np.ndarray]]  # per block (mean, variance) of the support set
    support_loss: np.ndarray  # (steps + 1,)
    scales: np.ndarray  # (steps, num_tensors)
    support_accuracy: float

    def adaptation(self) -> Adaptation:
        return Adaptation([tf.constant(f) for f in self.fast],
                          [(tf.constant(m), tf.constant(v)) for m, v in self.stats],
                          tf.constant(self.scales), tf.constant(self.support_loss))


class AppModel(abc.ABC):
    """Adapt and classify uint8 images; see the module docstring."""

    def __init__(self, config: Config, tensor_names: list[str], inner_steps: int,
                 options: ImageOptions, source: str):
        self.config = config
        self.tensor_names = list(tensor_names)
        self.inner_steps = int(inner_steps)
        self.options = options  # how an uploaded image becomes the model's input
        self.source = source
        self.spec = Conv4Spec(config.downsample, config.activation, config.feature_reduce,
                              config.bn_eps)
        from metagna_tf.algorithms.maml import adapted_indices

        # the tensors whose scales the inner loop reports (--inner-params)
        self.scale_names = [self.tensor_names[i] for i in adapted_indices(config, tensor_names)]

    @property
    def algorithm(self) -> str:
        return self.config.algorithm

    @property
    def head_ways(self) -> int | None:
        """The one number of classes a linear head takes; None: any (the prototype head)."""
        return self.config.ways if self.config.head == "linear" else None

    @property
    def has_scales(self) -> bool:
        return algorithm(self.config.algorithm).scale_network is not None

    # ---- loading --------------------------------------------------------------------------
    @staticmethod
    def from_workdir(path, inner_steps: int | None = None, checkpoint: str = "best") -> AppModel:
        from metagna_tf.checkpoints import load_trained
        from metagna_tf.data import image_options

        model, info = load_trained(path, checkpoint)
        steps = model.config.inner_steps_test if inner_steps is None else inner_steps
        return _WorkdirModel(model, steps, image_options(model.config),
                             f"{path} ({info['checkpoint']})")

    @staticmethod
    def from_export(path, inner_steps: int | None = None) -> AppModel:
        from serving.versions import read_info, resolve_version_dir

        version_dir = resolve_version_dir(path)
        info = read_info(version_dir)
        if inner_steps is not None and inner_steps != info["inner_steps"]:
            raise ValueError(f"{path}: exported with {info['inner_steps']} inner steps; "
                             "export again with --inner-steps to change them")
        return _ExportModel(version_dir, info)

    # ---- the interface ----------------------------------------------------------------------
    @abc.abstractmethod
    def adapt(self, class_names, support_x, support_y) -> AdaptedState:
        """Adapt to uint8 support images labelled ``0..len(class_names)-1``."""

    @abc.abstractmethod
    def classify(self, state: AdaptedState, images) -> np.ndarray:
        """Class probabilities of uint8 images under a session's adapted state."""

    def adapted_classifier(self, state: AdaptedState):
        """The session's adapted classifier as a ``serving.adapted.AdaptedClassifier``."""
        from serving.adapted import AdaptedClassifier

        info = {**self.options.as_dict(), "algorithm": self.algorithm,
                "inner_steps": self.inner_steps, "source": self.source}
        return AdaptedClassifier(self.spec, state.adaptation(), state.class_names, info,
                                 self.config.dtype)


def _accuracy(probabilities, labels) -> float:
    return float(np.mean(np.argmax(probabilities, axis=-1) == np.asarray(labels)))


class _WorkdirModel(AppModel):
    def __init__(self, model, inner_steps: int, options: ImageOptions, source: str):
        super().__init__(model.config, model.tensor_names, inner_steps, options, source)
        from metagna_tf.prediction import Predictor

        self.predictor = Predictor(model, inner_steps)

    def adapt(self, class_names, support_x, support_y) -> AdaptedState:
        adaptation = self.predictor.adapt(support_x, support_y, len(class_names))
        support_probabilities = self.predictor.classify(adaptation, support_x)
        return AdaptedState(list(class_names), [f.numpy() for f in adaptation.fast],
                            [(m.numpy(), v.numpy()) for m, v in adaptation.stats],
                            adaptation.support_losses.numpy(), adaptation.scales.numpy(),
                            _accuracy(support_probabilities, support_y))

    def classify(self, state: AdaptedState, images) -> np.ndarray:
        return self.predictor.classify(state.adaptation(), images)


class _ExportModel(AppModel):
    def __init__(self, version_dir: Path, info: dict):
        source = f"{version_dir} model_info.json"
        config = Config.from_saved(info["config"], source=source)
        options = ImageOptions.from_info(info, source)
        super().__init__(config, info["tensor_names"], info["inner_steps"], options,
                         str(version_dir))
        self.stat_names = list(info["stat_names"])
        self.signatures = tf.saved_model.load(str(version_dir)).signatures

    def adapt(self, class_names, support_x, support_y) -> AdaptedState:
        args = dict(support_images=tf.constant(support_x, tf.uint8),
                    support_labels=tf.constant(support_y, tf.int32),
                    num_classes=tf.constant(len(class_names), tf.int32))
        # the trace and the support accuracy, then the weights (two runs of the same routine)
        traced = self.signatures["adapt_and_predict"](**args, query_images=args["support_images"])
        weights = self.signatures["adapt"](**args)
        flat = [weights[n].numpy() for n in self.stat_names]
        return AdaptedState(list(class_names), [weights[n].numpy() for n in self.tensor_names],
                            [(flat[2 * b], flat[2 * b + 1]) for b in range(BLOCKS)],
                            traced["support_loss"].numpy(), traced["arbiter_scales"].numpy(),
                            _accuracy(traced["probabilities"].numpy(), support_y))

    def classify(self, state: AdaptedState, images) -> np.ndarray:
        inputs = {n: tf.constant(f) for n, f in zip(self.tensor_names, state.fast, strict=True)}
        flat = [t for pair in state.stats for t in pair]
        inputs.update({n: tf.constant(t) for n, t in zip(self.stat_names, flat, strict=True)})
        out = self.signatures["classify"](**inputs, images=tf.constant(images, tf.uint8))
        return out["probabilities"].numpy()
