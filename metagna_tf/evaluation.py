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
from metagna_tf.episode_setup import evaluation_episodes
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


def evaluate_workdir(workdir, *, dataset=None, data_dir=None, split="test", episodes=600,
                     ways=None, shots=None, queries=None, inner_steps=None, seed=0,
                     checkpoint="best", pool: ClassPool | None = None,
                     download: bool = False, corruption: str = "none",
                     corruption_rate: float = 0.0) -> dict:
    """Evaluate a trained workdir; writes and returns the result JSON."""
    model, info = load_trained(workdir, checkpoint)
    config = model.config
    dataset = dataset or config.dataset
    steps = config.inner_steps_test if inner_steps is None else inner_steps
    if steps < 0:
        raise ValueError(f"inner steps must be at least 0, got {steps}")
    spec, batches = evaluation_episodes(
        config, split=split, episodes=episodes, seed=seed, dataset=dataset, ways=ways,
        shots=shots, queries=queries, corruption=corruption, corruption_rate=corruption_rate,
        data_dir=data_dir, download=download, pool=pool)
    accs = model_accuracies(model, batches, steps, spec.ways)
    mean, ci = mean_ci95(accs)
    result = {"accuracy": mean, "ci95": ci, "episodes": int(accs.size), "ways": spec.ways,
              "shots": spec.shots, "queries": spec.queries, "inner_steps": steps,
              "algorithm": config.algorithm, "train_dataset": config.dataset,
              "train_split": config.train_split, "eval_dataset": dataset, "split": split,
              "seed": seed, "checkpoint": info["checkpoint"], "iteration": info["iteration"],
              "protocol": config.protocol, "support_corruption": corruption,
              "corruption_rate": corruption_rate if corruption != "none" else 0.0}
    suffix = f"_{corruption}{corruption_rate:g}" if corruption != "none" else ""
    name = f"eval_{dataset}_{split}_{spec.ways}w{spec.shots}s_{steps}steps{suffix}.json"
    (Path(workdir) / name).write_text(json.dumps(result, indent=2) + "\n")
    return result
