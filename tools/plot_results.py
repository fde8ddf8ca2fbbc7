"""Plots for docs/results.md from the runs' metrics.jsonl files.

    python tools/plot_results.py runs/results --out docs

Writes ``val_accuracy.png`` (validation 5-way accuracy against iterations, one line per
run) and ``arbiter_scales.png`` (mean Arbiter output per weight tensor against
iterations, for each metagna run).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(config: dict) -> str:
    name = config["algorithm"]
    if name == "metagna":
        name += f" {config.get('gna_sample_grads', 'frozen_stats')}"
    return f"{name} (seed {config['seed']})"


def load(work: Path) -> tuple[dict, list[dict]]:
    config = json.loads((work / "config.json").read_text())
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines() if line]
    return config, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    works = sorted(p for p in args.runs.iterdir() if (p / "metrics.jsonl").is_file())

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for work in works:
        config, rows = load(work)
        ax.plot([r["iteration"] for r in rows], [100 * r["val_accuracy"] for r in rows],
                label=label(config),
                linestyle="-" if config["seed"] == 0 else "--")
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("validation accuracy, 5-way 1-shot (%)")
    ax.set_title("Omniglot (minimal sets), validation characters")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "val_accuracy.png", dpi=120)

    gna = [w for w in works if load(w)[0]["algorithm"] == "metagna"]
    if gna:
        cols = min(2, len(gna))
        rows_ = -(-len(gna) // cols)
        fig, axes = plt.subplots(rows_, cols, figsize=(7 * cols, 4.5 * rows_), squeeze=False)
        for ax, work in zip(axes.flat, gna, strict=False):
            config, rows = load(work)
            names = [k for k in rows[0] if k.startswith("arbiter_")]
            colors = plt.get_cmap("tab20").colors
            for i, name in enumerate(names):
                ax.plot([r["iteration"] for r in rows], [r[name] for r in rows],
                        label=name.removeprefix("arbiter_"), color=colors[i % len(colors)],
                        linestyle="-" if "kernel" in name else "--")
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_yscale("log")
            ax.set_xlabel("meta-iteration")
            ax.set_ylabel("mean Arbiter output a (training episodes)")
            ax.set_title(f"{label(config)}: a = 1 is MAML's step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(args.out / "arbiter_scales.png", dpi=120)
    print(f"wrote {args.out / 'val_accuracy.png'}" + (f" and {args.out / 'arbiter_scales.png'}"
                                                       if gna else ""))


if __name__ == "__main__":
    main()
