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
    return keras.optimizers.Adam(learning_rate=lr)


def build_model(config: Config) -> MetaLearner:
    """A compiled MetaLearner with its optimizer state created (so checkpoints restore fully)."""
    model = MetaLearner(config)
    model.compile(optimizer=make_optimizer(config), jit_compile=resolve_jit(config))
    model.optimizer.build(model.trainable_variables)
    return model


class WorkdirCheckpoints:
    def __init__(self, workdir: str | Path, model: MetaLearner, max_to_keep: int = 2):
        self.workdir = Path(workdir)
        self.model = model
        self.best_val = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=model.optimizer, best_val_accuracy=self.best_val,
            config=tf.Variable(model.config.to_json(), trainable=False))
        self.latest = tf.train.CheckpointManager(self.checkpoint, self.workdir / "checkpoints",
                                                 max_to_keep=max_to_keep)
        self.best = tf.train.CheckpointManager(self.checkpoint, self.workdir / "best",
                                               max_to_keep=1)

    @property
    def iteration(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def restore_latest(self) -> int:
        """Restore the latest checkpoint if any; returns the iteration reached (0 if none)."""
        if self.latest.latest_checkpoint:
            self.checkpoint.restore(self.latest.latest_checkpoint).assert_existing_objects_matched()
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
        raise FileNotFoundError(f"--workdir {workdir}: no {CONFIG_FILE}; train into it first "
                                "with python -m metagna_tf.train --workdir ...")
    return Config.from_dict(json.loads(path.read_text()), source=str(path))


def load_trained(workdir: str | Path, which: str = "best") -> tuple[MetaLearner, dict]:
    """The trained model of a workdir (``best`` on validation, falling back to ``latest``)."""
    config = read_config(workdir)
    model = build_model(config)
    ckpts = WorkdirCheckpoints(workdir, model)
    path = ckpts.best.latest_checkpoint if which == "best" else None
    path = path or ckpts.latest.latest_checkpoint
    if not path:
        raise FileNotFoundError(f"--workdir {workdir}: no checkpoint in {ckpts.latest.directory}")
    ckpts.checkpoint.read(path).expect_partial()
    return model, {"checkpoint": path, "iteration": ckpts.iteration}
