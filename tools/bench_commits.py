"""Two versions of the code side by side: the compiled meta-step of each shape, interleaved.

    git worktree add /tmp/before <REV>
    python tools/bench_commits.py --before /tmp/before [--after .] [--repeats 2] [--json out.json]

For each shape of ``tools/bench.py`` (Omniglot 5-way 1-shot, meta-batch 32; mini-ImageNet
5-way 1-shot and 5-shot, meta-batch 4) and each algorithm, runs ``tools/bench.py``'s own
measurement (seconds per compiled meta-step on one fixed meta-batch, the default task layout)
in a fresh process of each tree, ``before`` then ``after``, ``--repeats`` times, with
``PYTHONPATH`` set to that tree (so each imports its own code, whatever is installed). Prints
each side's smallest figure (noise only adds time) and the ratio after / before.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = [("omniglot_5w1s", "maml"), ("omniglot_5w1s", "metagna"),
         ("mini_imagenet_5w1s", "maml"), ("mini_imagenet_5w1s", "metagna"),
         ("mini_imagenet_5w5s", "maml"), ("mini_imagenet_5w5s", "metagna")]


def step_time(tree: Path, shape: str, algorithm: str, repeats: int) -> float:
    spec = {"kind": "step", "shape": shape, "config": {"algorithm": algorithm},
            "repeats": repeats, "steps": 2 if shape.startswith("mini") else 3}
    env = {**os.environ, "PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(tree / "tools" / "bench.py"), "--child",
                           json.dumps(spec)], capture_output=True, text=True, env=env,
                          cwd=tree, timeout=3600)
    if proc.returncode:
        raise SystemExit(f"{tree}: {shape} {algorithm} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["s_per_step"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True, help="the earlier tree (a worktree)")
    p.add_argument("--after", type=Path, default=REPO)
    p.add_argument("--repeats", type=int, default=2, help="interleaved runs per side")
    p.add_argument("--inner-repeats", type=int, default=3, help="bench.py's repeats per run")
    p.add_argument("--shapes", nargs="+", help="only these shapes")
    p.add_argument("--json")
    args = p.parse_args(argv)
    cases = [c for c in CASES if not args.shapes or c[0] in args.shapes]
    rows = []
    print(f"{'shape':<20}{'algorithm':<10}{'before s':>10}{'after s':>10}{'after/before':>14}",
          flush=True)
    for shape, algorithm in cases:
        times = {"before": [], "after": []}
        for _ in range(args.repeats):
            for side in ("before", "after"):
                tree = getattr(args, side).resolve()
                times[side].append(step_time(tree, shape, algorithm, args.inner_repeats))
        before, after = min(times["before"]), min(times["after"])
        rows.append({"shape": shape, "algorithm": algorithm, "before": times["before"],
                     "after": times["after"], "ratio": after / before})
        print(f"{shape:<20}{algorithm:<10}{before:>10.3f}{after:>10.3f}{after / before:>14.2f}",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
