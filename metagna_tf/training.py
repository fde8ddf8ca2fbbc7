"""``train(config, workdir)``: meta-training with ``fit()``, checkpoints and resume.

The CLI, the tests and a notebook all call this function. Rerunning it on an
existing workdir continues from the latest checkpoint with exactly the
episodes an uninterrupted run would have drawn (meta-batch ``t`` comes from
``np.random.default_rng([seed, 0, t])``, ``episode_setup``); a finished run is not retrained.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import keras
import tensorflow as tf

from metagna_tf.checkpoints import CONFIG_FILE, WorkdirCheckpoints, build_model
from metagna_tf.config import Config
from metagna_tf.distribution import distribute, is_chief, make_strategy
from metagna_tf.episode_setup import (
    training_dataset,
    training_samplers,
    validation_batches,
    validation_dataset,
)

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
# Keys that may differ when a workdir is trained further (everything else must match).
# (the last three change how the same maths is computed)
RESUMABLE_CHANGES = {"iterations", "checkpoint_every", "val_episodes", "jit", "task_batching",
                     "inner_checkpointing"}


class NonFiniteLossError(FloatingPointError):
    pass


def check_workdir_config(workdir: Path, config: Config) -> None:
    path = workdir / CONFIG_FILE
    if not path.is_file():
        return
    old = Config.from_saved(json.loads(path.read_text()), source=str(path)).to_dict()
    new = config.to_dict()
    ignored = RESUMABLE_CHANGES | config.inert_keys
    changed = {k: (old[k], new[k]) for k in new if old[k] != new[k] and k not in ignored}
    if changed:
        detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
        raise ValueError(f"--workdir {workdir} holds a run with a different config ({detail}); "
                         "use a new --workdir, or the same flags to resume")


class ConciseProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar showing loss, accuracy and the mean Arbiter scale only.

    The per-tensor scales (``arbiter_conv1_kernel`` ...) stay in the logs, so TensorBoard
    and ``metrics.jsonl`` keep them; a terminal line of all 14 would not fit.
    """

    def __init__(self, per_tensor_names):
        super().__init__()
        self.hidden = {f"{prefix}arbiter_{n}" for n in per_tensor_names
                       for prefix in ("", "val_")}

    def _shown(self, logs):
        return {k: v for k, v in (logs or {}).items() if k not in self.hidden}

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._shown(logs))

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(batch, self._shown(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._shown(logs))

    def on_test_end(self, logs=None):
        super().on_test_end(self._shown(logs))


class _Bookkeeping(keras.callbacks.Callback):
    """Stops at ``iterations``, refuses non-finite losses, checkpoints and logs each interval."""

    def __init__(self, ckpts: WorkdirCheckpoints, total: int, metrics_path: Path | None,
                 elapsed_before: float = 0.0):
        super().__init__()
        self.ckpts = ckpts
        self.total = total
        self.metrics_path = metrics_path
        self.non_finite_at = None
        self.started = time.time() - elapsed_before  # wall time accumulates across resumes

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            self.non_finite_at = self.ckpts.iteration
            self.model.stop_training = True
        elif self.ckpts.iteration >= self.total:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.non_finite_at is not None:
            return  # never overwrite the last good checkpoint
        logs = {k: float(v) for k, v in (logs or {}).items()}
        row = {"iteration": self.ckpts.iteration,
               "elapsed_s": round(time.time() - self.started, 2), **logs}
        if self.metrics_path is not None:  # the chief
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        self.ckpts.save(logs.get("val_accuracy"))


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop rows written after the checkpoint we resume from."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in rows if json.loads(r)["iteration"] <= iteration]
    path.write_text("".join(r + "\n" for r in kept))


def read_metrics(workdir: str | Path) -> list[dict]:
    path = Path(workdir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train(config: Config, workdir: str | Path, data_dir=None, verbose="auto",
          download: bool = False, strategy: str = "default") -> dict:
    """Meta-train into ``workdir`` (resuming if it holds a run); returns the last metrics row.

    Owns the whole run: the ``tf.distribute`` strategy (``distribution.py``), seeding (the
    config's seed; episodes use their own generators), data, the model built under the
    strategy's scope, ``fit()``, checkpoints and metrics (written by the chief only).

    Data: ``data_dir``, else ``$METAGNA_DATA_DIR``, else TFDS if ``download`` or cached, else
    (Omniglot) the bundled minimal sets (``data.source_dir``).
    """
    workdir = Path(workdir)
    distributed = make_strategy(strategy)  # first: a multi-worker strategy precedes other ops
    chief = is_chief(distributed)
    check_workdir_config(workdir, config)
    set_global_determinism(config.seed)
    train_sampler, val_sampler = training_samplers(config, data_dir, download)
    if chief:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / CONFIG_FILE).write_text(config.to_json() + "\n")
    if distributed.num_replicas_in_sync > 1:
        log.info("%s strategy: %d replicas, %d tasks each per meta-batch", strategy,
                 distributed.num_replicas_in_sync,
                 config.meta_batch_size // distributed.num_replicas_in_sync)

    with distributed.scope():
        model = build_model(config)
    ckpts = WorkdirCheckpoints(workdir, model, write=chief)
    start = ckpts.restore_latest()
    metrics_path = workdir / METRICS_FILE
    if chief:
        _truncate_metrics(metrics_path, start)
    if start >= config.iterations:
        log.info("%s: already trained for %d iterations (asked %d); nothing to do",
                 workdir, start, config.iterations)
        rows = read_metrics(workdir)
        return rows[-1] if rows else {"iteration": start}
    if start:
        log.info("%s: resuming from iteration %d", workdir, start)

    train_ds = distribute(distributed, lambda replicas: training_dataset(
        train_sampler, config, start, replicas))
    val_ds, batches = None, None
    if val_sampler is not None:
        batches = validation_batches(config)
        val_ds = distribute(distributed, lambda replicas: validation_dataset(
            val_sampler, config, replicas))
    every = config.checkpoint_every
    rows = read_metrics(workdir)
    bookkeeping = _Bookkeeping(ckpts, config.iterations, metrics_path if chief else None,
                               elapsed_before=rows[-1]["elapsed_s"] if rows else 0.0)
    callbacks = [bookkeeping]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(workdir / "tensorboard")))
    if verbose != 0:
        callbacks.append(ConciseProgbar(model.scale_names))
    # The validation episodes repeat and each validation reads exactly one cycle of them
    # (validation_steps): a distributed dataset read to its end can leave one replica's metric
    # update behind (measured here: a wrong validation accuracy); a known step count cannot.
    model.fit(train_ds, validation_data=val_ds, steps_per_epoch=every, validation_steps=batches,
              epochs=math.ceil(config.iterations / every), initial_epoch=start // every,
              callbacks=callbacks, verbose=verbose, shuffle=False)
    if bookkeeping.non_finite_at is not None:
        kept = ckpts.latest_path() or "none yet"
        raise NonFiniteLossError(
            f"non-finite meta-loss at iteration {bookkeeping.non_finite_at}: training stopped; "
            f"the last good checkpoint ({kept}) is kept. Lower --meta-lr or --inner-lr.")
    rows = read_metrics(workdir)
    return rows[-1] if rows else {"iteration": ckpts.iteration}


def run_summary(workdir: str | Path, last: dict) -> dict:
    """What ``train`` prints: where the run got to and its best checkpoint.

    ``last`` is ``train``'s return value (the last metrics row); the full metrics stay in
    ``metrics.jsonl`` and TensorBoard. ``workdir`` is kept as given (the user's spelling).
    """
    best = tf.train.latest_checkpoint(str(Path(workdir) / "best"))
    best_val = None
    if best:
        best_val = float(tf.train.load_variable(best, "best_val_accuracy/.ATTRIBUTES/"
                                                      "VARIABLE_VALUE"))
    return {"iteration": last["iteration"], "val_accuracy": last.get("val_accuracy"),
            "elapsed_s": last.get("elapsed_s"), "best_checkpoint": best,
            "best_val_accuracy": best_val, "workdir": str(workdir)}


def readable_summary(summary: dict) -> str:
    """One sentence for the terminal, e.g. ``runs/omni: 300 iterations in 1 min 52 s; ...``."""
    elapsed = summary["elapsed_s"]
    took = "" if elapsed is None else f" in {_duration(elapsed)}"
    text = f"{summary['workdir']}: {summary['iteration']} iterations{took}"
    if summary["val_accuracy"] is None:
        return text + "; no validation episodes, so no best checkpoint (see metrics.jsonl)."
    text += f"; validation accuracy {100 * summary['val_accuracy']:.1f}%"
    if summary["best_checkpoint"]:
        text += (f", best {100 * summary['best_val_accuracy']:.1f}% in "
                 f"{summary['best_checkpoint']}")
    return text + " (all metrics: metrics.jsonl, TensorBoard)."


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"


def set_global_determinism(seed: int) -> None:
    """Seeds Keras/TF/NumPy's global generators (weight init); episodes use explicit rngs."""
    keras.utils.set_random_seed(seed)  # also seeds Python and NumPy

