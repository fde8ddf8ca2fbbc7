"""Median time of one meta-step, maml vs metagna side by side, and their ratio.

metagna uses the default ``gna_sample_grads="frozen_stats"``.

    python tools/bench_meta_step.py [--repeats 5] [--steps 5] [--shapes omniglot_5w1s ...]
    python tools/bench_meta_step.py --jacobian        # also metagna with Jacobian sample norms
    python tools/bench_meta_step.py --jit-compare     # also XLA vs plain graph for maml

Each repeat times ``--steps`` calls of the compiled train function that ``fit()`` runs
(after a warm-up that traces and runs two steps), on one fixed meta-batch so that data
loading is excluded; algorithms are interleaved within every repeat so machine noise hits
them alike. Prints medians and ratios; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from metagna_tf.algorithms.maml import MetaLearner  # noqa: E402
from metagna_tf.config import PRESETS, Config  # noqa: E402

SHAPES = {
    "omniglot_5w1s": {**PRESETS["omniglot_5w1s"], "meta_batch_size": 32},
    "omniglot_5w5s": {**PRESETS["omniglot_5w1s"], "shots": 5, "meta_batch_size": 32},
    "mini_imagenet_5w1s": {**PRESETS["mini_imagenet_5w1s"], "meta_batch_size": 4},
}


def batch_dataset(config: Config, seed: int = 0) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    b, s, c = config.meta_batch_size, config.image_size, config.channels
    ns, nq = config.ways * config.shots, config.ways * config.queries
    data = {"support_x": rng.random((b, ns, s, s, c), dtype=np.float32),
            "support_y": np.tile(np.repeat(np.arange(config.ways), config.shots), (b, 1)).astype(np.int32),
            "query_x": rng.random((b, nq, s, s, c), dtype=np.float32),
            "query_y": np.tile(np.repeat(np.arange(config.ways), config.queries), (b, 1)).astype(np.int32)}
    return tf.data.Dataset.from_tensors(data).repeat()


def prepared(config: Config, jit: bool):
    """A compiled model, an iterator over one fixed meta-batch, and the warm-up time
    (tracing, compilation and two meta-steps)."""
    model = MetaLearner(config)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
    iterator = iter(batch_dataset(config))
    start = time.perf_counter()
    model.make_train_function()
    time_steps(model, iterator, 2)
    return model, iterator, time.perf_counter() - start


def time_steps(model, iterator, steps: int) -> float:
    """Seconds per meta-step of the compiled train function (the one fit() runs), synced."""
    start = time.perf_counter()
    for _ in range(steps):
        logs = model.train_function(iterator)
    float(logs["loss"])  # wait for the last step's result
    return (time.perf_counter() - start) / steps


def compare(variants: dict[str, tuple[Config, bool]], repeats: int, steps: int) -> dict:
    models = {name: prepared(cfg, jit) for name, (cfg, jit) in variants.items()}
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (model, iterator, _) in models.items():
            times[name].append(time_steps(model, iterator, steps))
    return {name: (statistics.median(t), models[name][2]) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--jacobian", action="store_true",
                        help="also time metagna with --gna-sample-grads jacobian (slow: ~n "
                             "backward passes per inner step)")
    parser.add_argument("--jit-compare", action="store_true",
                        help="also time maml with XLA (jit_compile=True) against plain graphs")
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPU cores; "
          f"median of {args.repeats} repeats x {args.steps} meta-steps")
    header = f"{'shape':<20} {'maml s/step':>12} {'metagna s/step':>15} {'metagna/maml':>13}"
    if args.jacobian:
        header += f" {'metagna-jacobian s/step':>24} {'jacobian/maml':>14}"
    print(header)
    for shape in args.shapes:
        base = Config.from_dict({**SHAPES[shape], "algorithm": "maml"})
        variants = {"maml": (base, False), "metagna": (base.replace(algorithm="metagna"), False)}
        if args.jacobian:
            variants["jacobian"] = (base.replace(algorithm="metagna",
                                                 gna_sample_grads="jacobian"), False)
        result = compare(variants, args.repeats, args.steps)
        (maml, _), (gna, _) = result["maml"], result["metagna"]
        line = f"{shape:<20} {maml:>12.3f} {gna:>15.3f} {gna / maml:>12.2f}x"
        if args.jacobian:
            jac = result["jacobian"][0]
            line += f" {jac:>24.3f} {jac / maml:>13.2f}x"
        print(line, flush=True)
    if args.jit_compare:
        base = Config.from_dict({**SHAPES["omniglot_5w1s"], "algorithm": "maml"})
        result = compare({"graph": (base, False), "xla": (base, True)}, args.repeats, args.steps)
        (graph, graph_first), (xla, xla_first) = result["graph"], result["xla"]
        print(f"maml omniglot_5w1s: graph {graph:.3f} s/step (warm-up {graph_first:.1f} s), "
              f"XLA {xla:.3f} s/step (warm-up incl. compilation {xla_first:.1f} s): "
              f"XLA/graph {xla / graph:.2f}x")


if __name__ == "__main__":
    main()
