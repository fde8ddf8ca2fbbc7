"""``tf.distribute`` for meta-training: strategies, per-replica episode streams, the chief.

``--strategy default`` runs on one device. ``mirrored`` splits each meta-batch
across the local devices (every GPU, else every logical CPU device);
``multiworker`` across the devices of several machines (``TF_CONFIG``; see
docs/scaling.md). Replica ``r`` of ``R`` takes tasks ``[r B/R, (r+1) B/R)`` of
the very meta-batch a single device would draw at that step, so a distributed
run sees the same tasks and resumes exactly. Only the chief writes the workdir.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Create the strategy (before any other TensorFlow op when ``multiworker``)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy multiworker needs TF_CONFIG (the cluster and this "
                             "worker's task); see docs/scaling.md")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; choose from {STRATEGIES}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The one process that writes checkpoints, metrics and summaries."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def distribute(strategy: tf.distribute.Strategy, make_dataset):
    """``make_dataset(replicas=(first, local, total))`` per input pipeline, distributed.

    With one replica in all, the plain dataset (``replicas=(0, 1, 1)``) is returned.
    """
    if strategy.num_replicas_in_sync == 1 and not isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return make_dataset(replicas=(0, 1, 1))

    def per_pipeline(context: tf.distribute.InputContext):
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local
        return make_dataset(replicas=(first, local, context.num_replicas_in_sync))

    return strategy.distribute_datasets_from_function(per_pipeline)
