"""Workdir layout and checkpoints (``tf.train.Checkpoint``).

    <workdir>/config.json        the full Config
    <workdir>/checkpoints/       latest checkpoints (every --checkpoint-every iterations)
    <workdir>/best/              the checkpoint with the best validation accuracy
    <workdir>/metrics.jsonl      one row per checkpoint interval
    <workdir>/tensorboard/       TensorBoard scalars

Each checkpoint holds the model, the optimizer (its ``iterations`` is the
iteration count), the best validation accuracy so far and the config JSON.
``CheckpointManager`` writes the data files before updating its index file,
so an interrupted save leaves the previous checkpoint in force.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from metagna_tf.algorithms.maml import MetaLearner, resolve_jit
from metagna_tf.config import Config

CONFIG_FILE = "config.json"


def make_optimizer(config: Config) -> keras.optimizers.Optimizer:
    lr = config.meta_lr
    if config.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(config.meta_lr, decay_steps=config.iterations)
    optimizer = keras.optimizers.Adam(learning_rate=lr)
    if config.precision == "mixed_float16":  # float16 gradients underflow without it
        # dynamic scaling; it starts lower than Keras' 2**15, since the meta-gradient flows
        # back through the float16 inner loop, where large scales overflow (65504)
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0**8)
    return optimizer


def build_model(config: Config) -> MetaLearner:
    """A compiled MetaLearner with its optimizer state created (so checkpoints restore fully)."""
    model = MetaLearner(config)
    model.compile(optimizer=make_optimizer(config), jit_compile=resolve_jit(config))
    model.optimizer.build(model.trainable_variables)
    return model


class WorkdirCheckpoints:
    """The workdir's latest and best checkpoints.

    ``write=False`` (a non-chief worker of a multi-worker run) restores from the workdir
    like the chief but saves into a throwaway folder: every worker takes part in a save,
    only the chief's lands in the workdir.
    """

    def __init__(self, workdir: str | Path, model: MetaLearner, max_to_keep: int = 2,
                 write: bool = True):
        self.workdir = Path(workdir)
        self.model = model
        self.best_val = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=model.optimizer, best_val_accuracy=self.best_val,
            config=tf.Variable(model.config.to_json(), trainable=False))
        target = self.workdir if write else Path(tempfile.mkdtemp(prefix="metagna_worker_"))
        self.latest = tf.train.CheckpointManager(self.checkpoint, target / "checkpoints",
                                                 max_to_keep=max_to_keep)
        self.best = tf.train.CheckpointManager(self.checkpoint, target / "best",
                                               max_to_keep=1)

    @property
    def iteration(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def latest_path(self) -> str | None:
        return tf.train.latest_checkpoint(str(self.workdir / "checkpoints"))

    def restore_latest(self) -> int:
        """Restore the workdir's latest checkpoint if any; returns the iteration reached."""
        path = self.latest_path()
        if path:  # holds the best validation accuracy so far too
            self.checkpoint.restore(path).assert_existing_objects_matched()
        return self.iteration

    def save(self, val_accuracy: float | None) -> None:
        step = self.iteration
        if val_accuracy is not None and val_accuracy > float(self.best_val.numpy()):
            self.best_val.assign(val_accuracy)
            self.best.save(checkpoint_number=step)
        self.latest.save(checkpoint_number=step)


def read_config(workdir: str | Path) -> Config:
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{workdir}: no {CONFIG_FILE}; train into it first "
                                "with python -m metagna_tf.train --workdir ...")
    return Config.from_saved(json.loads(path.read_text()), source=str(path))


def find_checkpoint(path: str | Path, which: str = "best") -> str:
    """The checkpoint prefix that ``path`` designates.

    ``path`` is a training workdir (its ``best`` checkpoint, else its latest; ``which="latest"``
    takes the latest), a checkpoint folder such as a copied ``best/``, or a prefix such as
    ``.../checkpoints/ckpt-300``.
    """
    if which not in ("best", "latest"):
        raise ValueError(f"checkpoint must be 'best' or 'latest', got {which!r}")
    path = Path(path)
    if path.is_dir() and ((path / "checkpoints").is_dir() or (path / CONFIG_FILE).is_file()):
        found = tf.train.latest_checkpoint(str(path / "best")) if which == "best" else None
        found = found or tf.train.latest_checkpoint(str(path / "checkpoints"))
        if not found:
            raise FileNotFoundError(f"{path}: no checkpoint in {path / 'checkpoints'} yet")
        return found
    if path.is_dir():
        found = tf.train.latest_checkpoint(str(path))
        if not found:
            raise FileNotFoundError(f"{path}: neither a training workdir nor a checkpoint folder "
                                    "(no config.json, checkpoints/ or checkpoint index file)")
        return found
    if Path(f"{path}.index").is_file():
        return str(path)
    raise FileNotFoundError(f"{path}: no such workdir, checkpoint folder or checkpoint")


def checkpoint_config(prefix: str) -> Config:
    """The Config stored inside a checkpoint (every checkpoint holds its run's config)."""
    try:
        text = tf.train.load_variable(prefix, "config/.ATTRIBUTES/VARIABLE_VALUE")
    except (tf.errors.NotFoundError, ValueError) as err:
        raise ValueError(f"{prefix}: not a metagna-tf checkpoint (no config inside)") from err
    return Config.from_saved(json.loads(text.decode() if isinstance(text, bytes) else text),
                             source=f"{prefix} (config)")


def load_trained(path: str | Path, which: str = "best") -> tuple[MetaLearner, dict]:
    """The meta-learned model of a workdir or checkpoint, for inference.

    Restores the model only (no optimizer, no compile), built from the config stored in
    the checkpoint, so a copied ``best/`` folder is self-contained. Every model variable
    must be found in the checkpoint.
    """
    prefix = find_checkpoint(path, which)
    config = checkpoint_config(prefix)
    model = MetaLearner(config)
    keys = {name for name, _ in tf.train.list_variables(prefix)}
    if any(k.startswith("model/backbone/") for k in keys):
        status = tf.train.Checkpoint(model=model).read(prefix)
    else:
        # Written before Conv4 exposed its variables as attributes: the backbone is reachable
        # only through the optimizer's variable list (model.trainable_variables' order), so an
        # optimizer serves as the restore vehicle and is then dropped.
        vehicle = make_optimizer(config)
        vehicle.build(model.trainable_variables)
        status = tf.train.Checkpoint(model=model, optimizer=vehicle).read(prefix)
    status.expect_partial()  # the optimizer's slots are not needed for inference
    status.assert_existing_objects_matched()
    try:
        iteration = int(tf.train.load_variable(prefix,
                                               "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.NotFoundError, ValueError):
        iteration = None
    return model, {"checkpoint": prefix, "iteration": iteration}
