"""Is the episode pipeline a bottleneck? Episodes/s produced vs episodes/s the trainer consumes.

    python tools/bench_data.py [--images-per-class 600] [--repeats 3] [--seconds 5] [--steps 2]

Producer: ``EpisodeSampler.dataset`` (the tf.data pipeline the trainer iterates:
NumPy sampling in ``tf.numpy_function``, uint8 -> float32 / 255, parallel map,
prefetch) over a synthetic in-memory ClassPool shaped like mini-ImageNet's
training split (64 classes x ``--images-per-class`` uint8 84x84x3 images), for
5-way 5-shot 15-query episodes in meta-batches of 4. Also the bare NumPy
sampler, for reference.

Consumer: ``MetaLearner`` with the ``mini_imagenet_5w5s`` preset (MAML,
second order, 5 inner steps, Conv-4 32 filters, max-pool) and meta-batch 4,
compiled with Adam and ``jit_compile=False``; ``fit`` on one cached meta-batch
(so data loading is excluded), timed after a warm-up call.

Prints the medians over ``--repeats`` and the ratio produced / consumed
(target >= 10x). The pool is random data: sampling cost does not depend on
pixel values.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def synthetic_pool(classes: int, per_class: int, size: int = 84):
    from metagna_tf.data import ClassPool

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (classes * per_class, size, size, 3), dtype=np.uint8)
    indices = [np.arange(c * per_class, (c + 1) * per_class) for c in range(classes)]
    return ClassPool(images, indices, [f"n{c:08d}" for c in range(classes)])


def produced(sampler, meta_batch: int, seconds: float, repeats: int) -> list[float]:
    """Episodes/s out of the tf.data pipeline, one figure per repeat."""
    rates = []
    for r in range(repeats):
        it = iter(sampler.dataset((r, 0), 0, meta_batch))
        for _ in range(5):  # warm-up: pipeline start, prefetch buffers
            next(it)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            next(it)
            n += 1
        rates.append(n * meta_batch / (time.perf_counter() - start))
    return rates


def sampled_numpy(sampler, meta_batch: int, seconds: float) -> float:
    rng = np.random.default_rng(0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sampler.sample_batch(rng, meta_batch)
        n += 1
    return n * meta_batch / (time.perf_counter() - start)


def consumed(sampler, meta_batch: int, steps: int, repeats: int) -> list[float]:
    """Episodes/s the MAML trainer processes (meta-steps/s x meta-batch), one per repeat."""
    import keras

    from metagna_tf.algorithms.maml import MetaLearner
    from metagna_tf.config import PRESETS, Config

    config = Config.from_dict({**PRESETS["mini_imagenet_5w5s"], "algorithm": "maml",
                               "meta_batch_size": meta_batch})
    model = MetaLearner(config)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    data = sampler.dataset((0, 0), 0, meta_batch).take(1).cache().repeat()
    model.fit(data, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)  # warm-up: tracing
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
        rates.append(steps * meta_batch / (time.perf_counter() - start))
    return rates


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, default=64)
    p.add_argument("--images-per-class", type=int, default=600)
    p.add_argument("--meta-batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0, help="per producer repeat")
    p.add_argument("--steps", type=int, default=2, help="meta-steps per consumer repeat")
    args = p.parse_args(argv)

    import tensorflow as tf

    from metagna_tf.data import EpisodeSampler, EpisodeSpec

    mb = args.meta_batch_size
    pool = synthetic_pool(args.classes, args.images_per_class)
    sampler = EpisodeSampler(pool, EpisodeSpec(ways=5, shots=5, queries=15), source="synthetic")
    print(f"pool: {args.classes} classes x {args.images_per_class} uint8 84x84x3 images "
          f"({pool.images.nbytes / 2**20:.0f} MiB, synthetic); episodes 5-way 5-shot 15-query; "
          f"meta-batch {mb}; {os.cpu_count()} CPU(s); TF {tf.__version__}")
    numpy_rate = sampled_numpy(sampler, mb, args.seconds)
    print(f"NumPy sampler alone:        {numpy_rate:9.1f} episodes/s")
    prod = produced(sampler, mb, args.seconds, args.repeats)
    print(f"tf.data pipeline produces:  {statistics.median(prod):9.1f} episodes/s  "
          f"(median of {args.repeats}: {', '.join(f'{r:.1f}' for r in prod)})")
    cons = consumed(sampler, mb, args.steps, args.repeats)
    print(f"MAML trainer consumes:      {statistics.median(cons):9.2f} episodes/s  "
          f"= {statistics.median(cons) / mb:.3f} meta-steps/s x {mb} "
          f"(median of {args.repeats}: {', '.join(f'{r:.2f}' for r in cons)}; "
          "mini_imagenet_5w5s, second order, 5 inner steps, jit off)")
    ratio = statistics.median(prod) / statistics.median(cons)
    print(f"ratio produced / consumed:  {ratio:9.1f}x  (target >= 10x: "
          f"{'met' if ratio >= 10 else 'NOT met'})")


if __name__ == "__main__":
    main()
