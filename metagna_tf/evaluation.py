"""Few-shot evaluation of a trained workdir: accuracy over episodes, mean and 95% CI.

Test episodes come from ``np.random.default_rng([seed, 2, b])`` for batch ``b``
with ``seed`` defaulting to 0 whatever the training seed, so every model is
evaluated on the same episodes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from metagna_tf.checkpoints import load_trained
from metagna_tf.corruption import corrupt_batch
from metagna_tf.data import EpisodeSampler, EpisodeSpec, load_pool
from metagna_tf.data.episodes import ClassPool
from metagna_tf.metrics import mean_ci95
from metagna_tf.preprocessing import to_model_input

EVAL_STREAM = 2


def eval_batches(sampler: EpisodeSampler, episodes: int, seed: int = 0, batch_size: int = 20,
                 corruption: str = "none", rate: float = 0.0) -> list[tuple]:
    """The evaluation episodes as uint8 batches ``(sx, sy, qx, qy)``, the same for every model.

    Batch ``b`` comes from ``np.random.default_rng([seed, EVAL_STREAM, b])``; a support
    corruption (``corruption.py``) uses its own seeded generator, so it changes the support
    sets of these very episodes and nothing else.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    batches = []
    for b in range(math.ceil(episodes / batch_size)):
        n = min(batch_size, episodes - b * batch_size)
        sx, sy, qx, qy = sampler.sample_batch(np.random.default_rng([seed, EVAL_STREAM, b]), n)
        if corruption != "none":
            sx, sy = corrupt_batch(sx, sy, corruption, rate, seed, b)
        batches.append((sx, sy, qx, qy))
    return batches


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


def episode_accuracies(model, sampler: EpisodeSampler, episodes: int, steps: int, seed: int = 0,
                       batch_size: int = 20, corruption: str = "none",
                       rate: float = 0.0) -> np.ndarray:
    """Query accuracy of each of ``episodes`` episodes after ``steps`` inner steps."""
    batches = eval_batches(sampler, episodes, seed, batch_size, corruption, rate)
    return model_accuracies(model, batches, steps, sampler.spec.ways)


def evaluate_workdir(workdir, *, dataset=None, data_dir=None, split="test", episodes=600,
                     ways=None, shots=None, queries=None, inner_steps=None, seed=0,
                     checkpoint="best", pool: ClassPool | None = None,
                     download: bool = False, corruption: str = "none",
                     corruption_rate: float = 0.0) -> dict:
    """Evaluate a trained workdir; writes and returns the result JSON."""
    model, info = load_trained(workdir, checkpoint)
    config = model.config
    dataset = dataset or config.dataset
    spec = EpisodeSpec(ways or config.ways, shots or config.shots, queries or config.queries)
    steps = config.inner_steps_test if inner_steps is None else inner_steps
    if steps < 0:
        raise ValueError(f"inner steps must be at least 0, got {steps}")
    if pool is None:
        pool = load_pool(dataset, split, config.replace(dataset=dataset, rotations=False),
                         data_dir, download)
    sampler = EpisodeSampler(pool, spec, source=f"{dataset} {split}")
    accs = episode_accuracies(model, sampler, episodes, steps, seed, corruption=corruption,
                              rate=corruption_rate)
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
