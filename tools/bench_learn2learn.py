"""Our training iteration against learn2learn's, side by side, as a user waits for each.

    python tools/bench_learn2learn.py --l2l-python /path/to/l2l-venv/bin/python \
        [--zips ../shared/data/omniglot] [--repeats 2] [--short 10] [--long 70] [--json out.json]

The setting of issue 22: Omniglot 5-way 1-shot, 1 query, meta-batch 32, 1 second-order inner
step, 2 threads. Each side's seconds per iteration is the difference of a ``--long`` and a
``--short`` run divided by their difference in iterations, so start-up, data loading and graph
tracing cancel:

* learn2learn 0.2.0 through ``../shared/bench/learn2learn_meta_step.py`` (it takes the
  difference inside one process; its venv's set-up is in that folder's README);
* ours through ``python -m metagna_tf.train`` (whole processes, validation off, no
  checkpoint before the end), for each ``--algorithms`` (maml, metagna by default).

Runs are interleaved (learn2learn, then each of ours, ``--repeats`` times) and each side keeps
its smallest figure: noise only adds time. Prints one row per side and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SETTING = ["--dataset", "omniglot", "--ways", "5", "--shots", "1", "--queries", "1",
           "--meta-batch-size", "32", "--inner-steps", "1", "--val-episodes", "0"]


def ours(algorithm: str, iterations: int, zips: Path, extra: list[str]) -> float:
    """Wall seconds of one whole train CLI process."""
    with tempfile.TemporaryDirectory() as work:
        cmd = [sys.executable, "-m", "metagna_tf.train", "--algorithm", algorithm,
               "--iterations", str(iterations), "--checkpoint-every", str(iterations),
               "--workdir", str(Path(work) / "run"), "--data-dir", str(zips), "--verbose", "0",
               *SETTING, *extra]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        elapsed = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"train failed:\n{proc.stderr[-2000:]}")
    return elapsed


def learn2learn(python: str, zips: Path, short: int, long: int) -> float:
    """learn2learn's own figure: seconds per iteration from one process."""
    script = SHARED / "bench" / "learn2learn_meta_step.py"
    proc = subprocess.run([python, str(script), "--zips", str(zips), "--short", str(short),
                           "--long", str(long)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"learn2learn failed:\n{proc.stderr[-2000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    result = json.loads(line)
    return float(result["learn2learn_s_per_iteration"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--l2l-python", required=True, help="the python of learn2learn's venv")
    p.add_argument("--zips", type=Path, default=SHARED / "data" / "omniglot")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--short", type=int, default=10)
    p.add_argument("--long", type=int, default=70)
    p.add_argument("--algorithms", nargs="+", default=["maml", "metagna"])
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="more train flags for our side (e.g. --task-batching loop)")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    span = args.long - args.short
    figures: dict[str, list[float]] = {"learn2learn": []}
    for _ in range(args.repeats):
        figures["learn2learn"].append(learn2learn(args.l2l_python, args.zips, args.short,
                                                  args.long))
        for algorithm in args.algorithms:
            long_s = ours(algorithm, args.long, args.zips, args.extra)
            short_s = ours(algorithm, args.short, args.zips, args.extra)
            figures.setdefault(algorithm, []).append((long_s - short_s) / span)
        print(json.dumps({k: [round(v, 4) for v in vs] for k, vs in figures.items()}),
              file=sys.stderr)
    best = {k: min(v) for k, v in figures.items()}
    anchor = best["learn2learn"]
    print(f"{'side':<14}{'s/iteration':>12}{'x learn2learn':>15}")
    for side, value in best.items():
        print(f"{side:<14}{value:>12.4f}{value / anchor:>15.2f}")
    if "maml" in best and "metagna" in best:
        print(f"metagna / maml: {best['metagna'] / best['maml']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"best": best, "runs": figures,
                                               "repeats": args.repeats, "short": args.short,
                                               "long": args.long}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
