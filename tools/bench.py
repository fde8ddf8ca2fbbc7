"""Meta-training speed and memory, side by side in one run (medians; ratios are the figures).

    python tools/bench.py [--quick] [--repeats 5] [--json out.json]

Every measurement runs in its own process (fresh peak memory; logical devices configured
before TensorFlow starts) and prints:

* seconds per meta-step of the compiled train function (fixed meta-batch: no data loading)
  for maml, fomaml, metagna at Omniglot 5-way 1-shot (meta-batch 32, 28x28, 64 filters) and
  mini-ImageNet 5-way 1-shot and 5-shot (meta-batch 4, 84x84, 32 filters), per task-batching
  formulation (loop, grouped, stacked) as ratios to the loop, and with 2 logical CPU devices (mirrored);
* seconds per iteration as ``train()`` runs it (data pipeline, ``fit()``, metrics,
  checkpoints): what a user waits for;
* peak resident memory (whole process) of each, and of a 5-step inner loop with and without
  ``--inner-checkpointing``;
* bfloat16 against float32 compute;
* the machine's float32 GEMM rate and the meta-step's achieved GFLOP/s from its counted FLOPs
  (TensorFlow's profiler on the task-batched graph: forward, backward and second order).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]

SHAPES = {
    "omniglot_5w1s": {"preset": "omniglot_5w1s", "meta_batch_size": 32},
    "mini_imagenet_5w1s": {"preset": "mini_imagenet_5w1s", "meta_batch_size": 4},
    "mini_imagenet_5w5s": {"preset": "mini_imagenet_5w5s", "meta_batch_size": 4},
}


# ---- one measurement, in a child process -------------------------------------------------------
def config_of(spec: dict):
    from metagna_tf.config import PRESETS, Config

    shape = SHAPES[spec["shape"]]
    values = {**PRESETS[shape["preset"]], "meta_batch_size": shape["meta_batch_size"],
              "val_episodes": 0, **spec.get("config", {})}
    return Config.from_dict(values)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure_step(spec: dict) -> dict:
    """Median seconds per compiled meta-step on one fixed meta-batch."""
    import numpy as np
    import tensorflow as tf

    if spec.get("logical_cpus", 1) > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * spec["logical_cpus"])
    from metagna_tf.checkpoints import build_model
    from metagna_tf.distribution import distribute, make_strategy

    config = config_of(spec)
    strategy = make_strategy(spec.get("strategy", "default"))
    with strategy.scope():
        model = build_model(config)
    rng = np.random.default_rng(0)
    b, s, c = config.meta_batch_size, config.image_size, config.channels
    ns, nq = config.ways * config.shots, config.ways * config.queries
    data = {"support_x": rng.random((b, ns, s, s, c), dtype=np.float32),
            "support_y": np.tile(np.repeat(np.arange(config.ways), config.shots),
                                 (b, 1)).astype(np.int32),
            "query_x": rng.random((b, nq, s, s, c), dtype=np.float32),
            "query_y": np.tile(np.repeat(np.arange(config.ways), config.queries),
                               (b, 1)).astype(np.int32)}

    def make(replicas):
        first, local, total = replicas
        per = b // total
        part = {k: v[first * per:(first + local) * per] for k, v in data.items()}
        split = [{k: v[i * per:(i + 1) * per] for k, v in part.items()} for i in range(local)]
        ds = tf.data.Dataset.from_tensor_slices(
            {k: np.stack([p[k] for p in split]) for k in data})
        return ds.repeat()

    iterator = iter(distribute(strategy, make))
    model.make_train_function()
    for _ in range(2):
        logs = model.train_function(iterator)
    float(np.asarray(logs["loss"]).ravel()[0])
    times = []
    for _ in range(spec.get("repeats", 5)):
        start = time.perf_counter()
        for _ in range(spec.get("steps", 3)):
            logs = model.train_function(iterator)
        float(np.asarray(logs["loss"]).ravel()[0])
        times.append((time.perf_counter() - start) / spec.get("steps", 3))
    out = {"s_per_step": statistics.median(times), "peak_rss_mb": peak_rss_mb(),
           "replicas": strategy.num_replicas_in_sync, "batching": config.batching}
    if spec.get("count_flops"):
        out["gflop_per_step"] = count_flops(model, data) / 1e9
    return out


def count_flops(model, data) -> float:
    """FLOPs of one meta-step as TensorFlow's profiler counts them (registered op costs)."""
    import tensorflow as tf

    keys = ("support_x", "support_y", "query_x", "query_y")
    specs = [tf.TensorSpec(data[k].shape, tf.as_dtype(data[k].dtype)) for k in keys]

    @tf.function(input_signature=specs)
    def step(*args):
        return model.meta_gradients(*args)[3]

    graph = step.get_concrete_function().graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def measure_train(spec: dict) -> dict:
    """Seconds per iteration as train() runs it, from its own metrics (after warm-up)."""
    from metagna_tf.training import read_metrics, train

    config = config_of(spec).replace(iterations=3 * spec["every"],
                                     checkpoint_every=spec["every"])
    with tempfile.TemporaryDirectory() as work:
        train(config, work, verbose=0)
        rows = read_metrics(work)
    elapsed = [r["elapsed_s"] for r in rows]
    per_iteration = (elapsed[-1] - elapsed[0]) / (2 * spec["every"])  # epochs 2 and 3
    return {"s_per_iteration": per_iteration, "peak_rss_mb": peak_rss_mb(),
            "batching": config.batching}


def measure_gemm(spec: dict) -> dict:
    import tensorflow as tf

    n = spec.get("n", 2048)
    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    f = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    f().numpy()
    times = []
    for _ in range(7):
        start = time.perf_counter()
        f().numpy()
        times.append(time.perf_counter() - start)
    return {"gflops": 2 * n ** 3 / statistics.median(times) / 1e9}


def child(spec: dict) -> dict:
    kind = spec["kind"]
    return {"step": measure_step, "train": measure_train, "gemm": measure_gemm}[kind](spec)


# ---- the parent: run every measurement, print the tables ----------------------------------------
def run(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True, cwd=REPO, timeout=3600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1][:300] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="Omniglot only, fewer repeats")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    import tensorflow as tf

    report = {"machine": {"cpus": os.cpu_count(), "tensorflow": tf.__version__}}
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores; medians of "
          f"{args.repeats} repeats", flush=True)
    gemm = run({"kind": "gemm"})
    report["gemm_gflops"] = gemm.get("gflops")
    print(f"float32 GEMM (2048^3): {gemm.get('gflops', float('nan')):.0f} GFLOP/s", flush=True)
    shapes = ["omniglot_5w1s"] if args.quick else list(SHAPES)
    rows = []
    print(f"{'shape':<20}{'algorithm':<10}{'batching':<9}{'devices':>8}{'s/step':>9}"
          f"{'steps/s':>9}{'tasks/s':>9}{'vs loop':>9}{'peak MB':>9}", flush=True)
    for shape in shapes:
        for algorithm in ("maml", "fomaml", "metagna"):
            loop_time = None
            for batching, devices in (("loop", 1), ("grouped", 1), ("stacked", 1), ("auto", 2)):
                if devices == 2 and algorithm == "fomaml":
                    continue
                spec = {"kind": "step", "shape": shape, "repeats": args.repeats,
                        "config": {"algorithm": algorithm, "task_batching": batching},
                        "count_flops": batching == "grouped" and algorithm != "fomaml"}
                if devices == 2:
                    spec.update(logical_cpus=2, strategy="mirrored")
                result = run(spec)
                row = {"shape": shape, "algorithm": algorithm, "batching": batching,
                       "devices": devices, **result}
                rows.append(row)
                if "error" in result:
                    print(f"{shape:<20}{algorithm:<10}{batching:<9}{devices:>8}  error: "
                          f"{result['error']}", flush=True)
                    continue
                t = result["s_per_step"]
                loop_time = t if batching == "loop" else loop_time
                tasks = SHAPES[shape]["meta_batch_size"] / t
                print(f"{shape:<20}{algorithm:<10}{result['batching']:<9}{devices:>8}{t:>9.3f}"
                      f"{1 / t:>9.2f}{tasks:>9.1f}{loop_time / t if loop_time else 1:>8.2f}x"
                      f"{result['peak_rss_mb']:>9.0f}", flush=True)
    report["meta_step"] = rows
    # GFLOP/s achieved
    flops = [r for r in rows if r.get("gflop_per_step")]
    for r in flops:
        r["achieved_gflops"] = r["gflop_per_step"] / r["s_per_step"]
        print(f"{r['shape']} {r['algorithm']} grouped: {r['gflop_per_step']:.1f} GFLOP/step, "
              f"{r['achieved_gflops']:.0f} GFLOP/s = "
              f"{100 * r['achieved_gflops'] / report['gemm_gflops']:.0f}% of the GEMM rate",
              flush=True)
    # what the train command waits for
    report["train_iteration"] = []
    for algorithm in ("maml", "metagna"):
        for batching in ("loop", "auto"):
            result = run({"kind": "train", "shape": "omniglot_5w1s", "every": 20,
                          "config": {"algorithm": algorithm, "task_batching": batching}})
            report["train_iteration"].append({"algorithm": algorithm, "batching": batching,
                                              **result})
            print(f"train() omniglot_5w1s {algorithm} {result.get('batching', batching)}: "
                  f"{result.get('s_per_iteration', float('nan')):.3f} s/iteration", flush=True)
    # memory of a long inner loop, precision
    report["memory"] = []
    memory_cases = [("omniglot_5w1s", 5, 2, 3)]
    if not args.quick:
        memory_cases.append(("mini_imagenet_5w1s", 10, 1, 1))
    for shape, steps, repeats, calls in memory_cases:
        for checkpointing in (False, True):
            result = run({"kind": "step", "shape": shape, "repeats": repeats, "steps": calls,
                          "config": {"algorithm": "metagna", "inner_steps": steps,
                                     "inner_checkpointing": checkpointing,
                                     "task_batching": "loop"}})
            report["memory"].append({"shape": shape, "inner_steps": steps,
                                     "inner_checkpointing": checkpointing, **result})
            print(f"{shape} metagna, {steps} inner steps, inner checkpointing "
                  f"{checkpointing}: {result.get('s_per_step', float('nan')):.3f} s/step, "
                  f"peak {result.get('peak_rss_mb', float('nan')):.0f} MB", flush=True)
    report["precision"] = []
    for precision in ("float32", "bfloat16"):
        result = run({"kind": "step", "shape": "omniglot_5w1s", "repeats": args.repeats,
                      "config": {"algorithm": "maml", "precision": precision,
                                 "task_batching": "grouped"}})
        report["precision"].append({"precision": precision, **result})
        print(f"maml grouped {precision}: {result.get('s_per_step', float('nan')):.3f} s/step",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
