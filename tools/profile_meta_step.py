"""Where a meta-step's time goes: TensorFlow's profiler on the compiled train function.

    python tools/profile_meta_step.py [--shape omniglot_5w1s] [--algorithm maml]
        [--task-batching auto] [--steps 3] [--top 12] [--logdir DIR]
    python tools/profile_meta_step.py --workdir RUN [--steps 3]   # a training run's own config

Runs a few warm-up meta-steps on one fixed random meta-batch (as tools/bench.py does), then
traces ``--steps`` more with ``tf.profiler.experimental`` and sums the host's kernel events
by op type, read straight from the trace's XSpace protobuf (no profiler plugin needed). The
trace stays in ``--logdir`` for TensorBoard's Profile tab (``pip install xprof``) when given.
Shares are of the summed kernel time over both threads, so they hold on a busy machine too.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]


def op_type(event_name: str) -> str | None:
    """``"grad/Conv2DBackpropFilter_6:_MklNativeConv2DBackpropFilter"`` -> the op type.

    oneDNN's kernels are named after the op they implement; executor events
    (``ExecutorState::Process``) are not kernels.
    """
    if "::" in event_name:
        return None
    name, sep, kind = event_name.rpartition(":")
    for prefix in ("_MklNative", "_Mkl"):
        kind = kind.removeprefix(prefix)
    if not sep or not name or not kind[:1].isupper() or not kind.replace("_", "").isalnum():
        return None
    return kind


def kernel_times(logdir: str) -> collections.Counter:
    """Summed durations (ps) of the host's TensorFlow kernel events, by op type."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals: collections.Counter = collections.Counter()
    for path in Path(logdir).rglob("*.xplane.pb"):
        space = xplane_pb2.XSpace()
        space.ParseFromString(path.read_bytes())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            for line in plane.lines:
                for event in line.events:
                    kind = op_type(plane.event_metadata[event.metadata_id].name)
                    if kind:
                        totals[kind] += event.duration_ps
    return totals


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="omniglot_5w1s",
                        choices=["omniglot_5w1s", "mini_imagenet_5w1s", "mini_imagenet_5w5s"])
    parser.add_argument("--algorithm", default="maml")
    parser.add_argument("--task-batching", default="auto")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--logdir", help="keep the trace here (default: a temporary folder)")
    parser.add_argument("--workdir", help="profile this training run's config.json instead of "
                        "--shape/--algorithm/--task-batching (e.g. a study run)")
    args = parser.parse_args(argv)
    for flag in ("shape", "algorithm", "task_batching"):
        if args.workdir and getattr(args, flag) != parser.get_default(flag):
            parser.error(f"--workdir profiles the run's own config; drop --{flag.replace('_', '-')}")

    import numpy as np
    import tensorflow as tf

    from metagna_tf.checkpoints import build_model, read_config

    if args.workdir:
        config = read_config(args.workdir).replace(val_episodes=0)
    else:
        from bench import config_of  # the sibling script: tools/ is on sys.path when run as one

        config = config_of({"shape": args.shape, "config": {
            "algorithm": args.algorithm, "task_batching": args.task_batching}})
    model = build_model(config)
    rng = np.random.default_rng(0)
    b, s, c = config.meta_batch_size, config.image_size, config.channels
    ns, nq = config.ways * config.shots, config.ways * config.queries
    batch = {"support_x": rng.random((b, ns, s, s, c), dtype=np.float32),
             "support_y": np.tile(np.repeat(np.arange(config.ways), config.shots), (b, 1)),
             "query_x": rng.random((b, nq, s, s, c), dtype=np.float32),
             "query_y": np.tile(np.repeat(np.arange(config.ways), config.queries), (b, 1))}
    batch["support_y"] = batch["support_y"].astype(np.int32)
    batch["query_y"] = batch["query_y"].astype(np.int32)
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    model.make_train_function()
    for _ in range(2):  # trace and warm up outside the profile
        logs = model.train_function(iterator)
    float(np.asarray(logs["loss"]).ravel()[0])

    with tempfile.TemporaryDirectory() as scratch:
        logdir = args.logdir or scratch
        tf.profiler.experimental.start(logdir)
        for _ in range(args.steps):
            logs = model.train_function(iterator)
        float(np.asarray(logs["loss"]).ravel()[0])
        tf.profiler.experimental.stop()
        totals = kernel_times(logdir)
    if not totals:
        raise SystemExit("the trace holds no TensorFlow kernel events on the host")
    total = sum(totals.values())
    what = args.workdir or f"{args.algorithm} {args.shape}"
    print(f"{what} (task batching {config.batching}), {args.steps} "
          f"meta-steps traced; kernel time summed over threads {total / 1e12 / args.steps:.3f} "
          f"s/step")
    print("| op type | share of kernel time |")
    print("| --- | --- |")
    for kind, ps in totals.most_common(args.top):
        print(f"| {kind} | {100 * ps / total:.1f}% |")
    rest = total - sum(ps for _, ps in totals.most_common(args.top))
    print(f"| (all other op types) | {100 * rest / total:.1f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
