"""Print the markdown results table from the eval_*.json and metrics.jsonl of run workdirs.

    python tools/results_table.py runs/results
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows(runs: Path):
    for work in sorted(p for p in runs.iterdir() if (p / "config.json").is_file()):
        config = json.loads((work / "config.json").read_text())
        metrics = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
        best = max(metrics, key=lambda r: r.get("val_accuracy", -1))
        evals = {}
        for path in work.glob("eval_*.json"):
            result = json.loads(path.read_text())
            evals[(result["ways"], result["shots"])] = result
        yield work.name, config, metrics[-1], best, evals


def fmt(result) -> str:
    if result is None:
        return "-"
    return f"{100 * result['accuracy']:.2f} ± {100 * result['ci95']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    args = parser.parse_args()
    print("| run | algorithm | seed | iterations | best val 5w1s (iter) | test 5-way 1-shot | "
          "test 20-way 1-shot | wall time |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, config, last, best, evals in rows(args.runs):
        algorithm = config["algorithm"]
        if algorithm == "metagna":
            algorithm += f" ({config.get('gna_sample_grads', 'frozen_stats')})"
        print(f"| {name} | {algorithm} | {config['seed']} | {last['iteration']} | "
              f"{100 * best['val_accuracy']:.2f} ({best['iteration']}) | {fmt(evals.get((5, 1)))} | "
              f"{fmt(evals.get((20, 1)))} | {last['elapsed_s'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
