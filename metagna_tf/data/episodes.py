"""Episodes: the class pool of a split, the NumPy sampler, tf.data assembly.

Sampling uses an explicit ``np.random.Generator``; meta-batch ``t`` of a stream
comes from ``np.random.default_rng([*stream, t])`` (training uses ``(seed, 0)``),
so a resumed run sees exactly the episodes an uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from metagna_tf.preprocessing import to_model_input

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ClassPool:
    """Images of one split: ``images[class_indices[c]]`` are class ``c``'s images.

    ``images`` is uint8 ``(N, H, W, C)``; ``preprocessing.to_model_input`` makes it model input.
    """

    images: np.ndarray
    class_indices: list[np.ndarray]
    class_names: list[str]

    def __post_init__(self) -> None:
        if len(self.class_indices) != len(self.class_names):
            raise ValueError("ClassPool: class_indices and class_names differ in length")
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"ClassPool: images must be uint8 (N, H, W, C), got "
                             f"{self.images.dtype} {self.images.shape}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def drop_small_classes(self, min_images: int, source: str) -> ClassPool:
        """Classes with fewer than ``min_images`` images are skipped, with a warning."""
        keep = [i for i, idx in enumerate(self.class_indices) if len(idx) >= min_images]
        dropped = [name for name, idx in zip(self.class_names, self.class_indices, strict=True)
                   if len(idx) < min_images]
        if dropped:
            log.warning("%s: skipped %d class(es) with fewer than %d images (shots + queries): %s",
                        source, len(dropped), min_images, ", ".join(dropped[:10])
                        + (" ..." if len(dropped) > 10 else ""))
        return ClassPool(self.images, [self.class_indices[i] for i in keep],
                         [self.class_names[i] for i in keep])


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
    ways: int
    shots: int
    queries: int


class EpisodeSampler:
    """Samples N-way K-shot episodes without replacement from a ClassPool."""

    def __init__(self, pool: ClassPool, spec: EpisodeSpec, source: str = "dataset"):
        pool = pool.drop_small_classes(spec.shots + spec.queries, source)
        if spec.ways > pool.num_classes:
            raise ValueError(f"{source}: ways={spec.ways} but only {pool.num_classes} classes "
                             f"have at least shots+queries={spec.shots + spec.queries} images")
        self.pool = pool
        self.spec = spec

    def sample(self, rng: np.random.Generator):
        """One episode: (support_x, support_y, query_x, query_y) as uint8/int32 arrays.

        Classes are distinct, images of a class are distinct, support and query
        are disjoint; labels 0..ways-1 are assigned in a random order.
        """
        ways, shots, queries = self.spec.ways, self.spec.shots, self.spec.queries
        classes = rng.choice(self.pool.num_classes, size=ways, replace=False)
        support, query = [], []
        for c in classes:
            idx = self.pool.class_indices[c]
            chosen = idx[rng.choice(len(idx), size=shots + queries, replace=False)]
            support.append(chosen[:shots])
            query.append(chosen[shots:])
        labels = rng.permutation(ways).astype(np.int32)
        support_y = np.repeat(labels, shots)
        query_y = np.repeat(labels, queries)
        s_order = rng.permutation(len(support_y))
        q_order = rng.permutation(len(query_y))
        support_idx = np.concatenate(support)[s_order]
        query_idx = np.concatenate(query)[q_order]
        return (self.pool.images[support_idx], support_y[s_order],
                self.pool.images[query_idx], query_y[q_order])

    def sample_batch(self, rng: np.random.Generator, meta_batch_size: int):
        episodes = [self.sample(rng) for _ in range(meta_batch_size)]
        return tuple(np.stack(parts) for parts in zip(*episodes, strict=True))

    def batch_for(self, stream, index: int, meta_batch_size: int):
        """Meta-batch number ``index`` of ``stream`` (a tuple of ints, e.g. ``(seed, 0)``)."""
        return self.sample_batch(np.random.default_rng([*stream, index]), meta_batch_size)

    def dataset(self, stream, start: int, meta_batch_size: int, count: int | None = None,
                dtype: str = "float32", replicas: tuple[int, int, int] = (0, 1, 1)
                ) -> tf.data.Dataset:
        """Meta-batches ``start, start+1, ...`` of ``stream`` as dicts of float images and labels.

        ``replicas = (first, local, total)``: for ``tf.distribute``, this input pipeline feeds
        replicas ``first .. first + local - 1`` of ``total``; it yields, for each meta-batch,
        one slice of ``meta_batch_size / total`` tasks per local replica, in replica order
        (the order in which a worker's replicas pull elements). The slices of meta-batch ``t``
        are the tasks a single device would see at step ``t``, so runs match and resume
        exactly whatever the number of replicas.
        """
        first, local, total = replicas
        if meta_batch_size % total:
            raise ValueError(f"meta_batch_size={meta_batch_size} must be divisible by the "
                             f"number of replicas ({total})")
        per_replica = meta_batch_size // total
        shape = self.pool.images.shape[1:]
        ns = self.spec.ways * self.spec.shots
        nq = self.spec.ways * self.spec.queries

        def draw(index):
            step, replica = divmod(int(index), local)
            batch = self.batch_for(stream, start + step, meta_batch_size)
            lo = (first + replica) * per_replica
            return tuple(part[lo:lo + per_replica] for part in batch)

        def fetch(index):
            sx, sy, qx, qy = tf.numpy_function(draw, [index],
                                               [tf.uint8, tf.int32, tf.uint8, tf.int32])
            sx.set_shape([per_replica, ns, *shape])
            qx.set_shape([per_replica, nq, *shape])
            sy.set_shape([per_replica, ns])
            qy.set_shape([per_replica, nq])
            return {"support_x": to_model_input(sx, dtype), "support_y": sy,
                    "query_x": to_model_input(qx, dtype), "query_y": qy}

        indices = (tf.data.Dataset.counter(0, dtype=tf.int64) if count is None
                   else tf.data.Dataset.range(0, count * local))
        return indices.map(fetch, num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=True).prefetch(tf.data.AUTOTUNE)
