"""Helper for tests/test_distribution.py, run in a subprocess (devices are configured once
per process, before TensorFlow initializes them).

    python tests/distributed_run.py train --workdir W --strategy mirrored --logical-cpus 2 \\
        --iterations 4 [--data-dir D]
    python tests/distributed_run.py gradients --logical-cpus 2

Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

TINY = dict(dataset="omniglot", algorithm="metagna", ways=3, shots=1, queries=1,
            meta_batch_size=4, filters=8, val_episodes=8, checkpoint_every=2, inner_lr=0.1)


def logical_cpus(n: int) -> None:
    if n > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])


def gradients() -> dict:
    """Meta-gradients of one meta-batch: one device vs mirrored over the logical CPUs."""
    from metagna_tf.algorithms.maml import EPISODE_KEYS, MetaLearner
    from tests.conftest import random_episode, tiny_config

    config = tiny_config(algorithm="metagna", meta_batch_size=4, dtype="float32")
    data = random_episode(config, seed=21, tasks=4)
    single = MetaLearner(config)
    weights = single.get_weights()
    _, _, _, expected = single.meta_gradients(*(tf.constant(data[k]) for k in EPISODE_KEYS))
    strategy = tf.distribute.MirroredStrategy(
        devices=[d.name for d in tf.config.list_logical_devices("CPU")])
    with strategy.scope():
        model = MetaLearner(config)
    model.set_weights(weights)
    replicas = strategy.num_replicas_in_sync
    per = 4 // replicas

    def shard(context):
        i = context.replica_id_in_sync_group
        return {k: tf.constant(v[i * per:(i + 1) * per]) for k, v in data.items()}

    values = strategy.experimental_distribute_values_from_function(shard)

    def step(batch):
        grads = model.meta_gradients(*(batch[k] for k in EPISODE_KEYS))[3]
        return [g / replicas for g in grads]

    per_replica = strategy.run(step, args=(values,))
    got = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in per_replica]
    errors = [float(np.max(np.abs(a.numpy() - b.numpy())) / (np.max(np.abs(b.numpy())) + 1e-30))
              for a, b in zip(got, expected, strict=True)]
    return {"replicas": replicas, "max_relative_error": max(errors)}


def train_run(args) -> dict:
    from metagna_tf.config import Config
    from metagna_tf.training import read_metrics, train

    config = Config(**{**TINY, "iterations": args.iterations})
    last = train(config, args.workdir, data_dir=args.data_dir, verbose=0, strategy=args.strategy)
    weights = None
    if (Path(args.workdir) / "checkpoints").is_dir():
        from metagna_tf.checkpoints import load_trained

        model, _ = load_trained(args.workdir, "latest")
        weights = [float(np.sum(np.abs(w))) for w in model.get_weights()]
    return {"last": last, "rows": read_metrics(args.workdir), "weights": weights,
            "replicas": tf.distribute.get_strategy().num_replicas_in_sync}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("train", "gradients"))
    p.add_argument("--workdir")
    p.add_argument("--strategy", default="default")
    p.add_argument("--logical-cpus", type=int, default=1)
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--data-dir")
    args = p.parse_args()
    if args.strategy != "multiworker":
        logical_cpus(args.logical_cpus)
    out = gradients() if args.mode == "gradients" else train_run(args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
