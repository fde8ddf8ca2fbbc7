"""Few-shot evaluation of a trained workdir: accuracy over episodes, mean and 95% CI.

The episodes are ``episode_setup.evaluation_episodes``: batch ``b`` comes from
``np.random.default_rng([seed, 2, b])`` with ``seed`` defaulting to 0 whatever the
training seed, so every model is evaluated on the same episodes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from metagna_tf.checkpoints import load_trained
from metagna_tf.data.episodes import ClassPool
from metagna_tf.episode_setup import EvaluationSettings, evaluation_episodes
from metagna_tf.metrics import mean_ci95
from metagna_tf.preprocessing import to_model_input


def model_accuracies(model, batches, steps: int, ways: int, inner_lr: float | None = None
                     ) -> np.ndarray:
    """Query accuracy per episode of ``batches`` after ``steps`` inner steps (at the trained
    inner learning rate, or at ``inner_lr``)."""
    dtype = model.config.dtype
    lr = tf.constant(model.config.inner_lr if inner_lr is None else inner_lr, dtype)

    @tf.function(reduce_retracing=True)
    def run(batch, lr):
        return model.episode_metrics(batch, steps, ways=ways, inner_lr=lr)[1]

    accs = []
    for sx, sy, qx, qy in batches:
        batch = {"support_x": to_model_input(sx, dtype), "support_y": tf.constant(sy),
                 "query_x": to_model_input(qx, dtype), "query_y": tf.constant(qy)}
        accs.append(run(batch, lr).numpy())
    return np.concatenate(accs)


def evaluate_workdir(workdir, settings: EvaluationSettings | None = None, *,
                     inner_steps: int | None = None, checkpoint: str = "best", data_dir=None,
                     download: bool = False, pool: ClassPool | None = None) -> dict:
    """Evaluate a trained workdir on the episodes of ``settings``; writes and returns the
    result JSON."""
    model, info = load_trained(workdir, checkpoint)
    config = model.config
    steps = config.inner_steps_test if inner_steps is None else inner_steps
    if steps < 0:
        raise ValueError(f"inner steps must be at least 0, got {steps}")
    episodes = evaluation_episodes(config, settings, data_dir=data_dir, download=download,
                                   pool=pool)
    accs = model_accuracies(model, episodes.batches, steps, episodes.spec.ways)
    mean, ci = mean_ci95(accs)
    recorded = episodes.describe()
    dataset = recorded.pop("dataset")
    result = {"accuracy": mean, "ci95": ci, **recorded, "episodes": int(accs.size),
              "inner_steps": steps, "algorithm": config.algorithm,
              "train_dataset": config.dataset, "train_split": config.train_split,
              "eval_dataset": dataset, "checkpoint": info["checkpoint"],
              "iteration": info["iteration"]}
    corruption, rate = result["support_corruption"], result["corruption_rate"]
    suffix = f"_{corruption}{rate:g}" if corruption != "none" else ""
    name = (f"eval_{dataset}_{result['split']}_{result['ways']}w{result['shots']}s_{steps}steps"
            f"{suffix}.json")
    (Path(workdir) / name).write_text(json.dumps(result, indent=2) + "\n")
    return result
