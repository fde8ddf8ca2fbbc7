"""Markdown tables of the sample-aware study from ``metagna_tf.compare`` JSON files.

    python tools/results_sample_aware_table.py docs/results/sample_aware

One table per protocol and evaluation setting: each model's accuracy (95% CI) and its
paired difference against MAML on the same episodes (Meta-GNA seed k against MAML seed k;
ablations, seed 0, against MAML seed 0 and Meta-GNA seed 0), plus the three-seed
comparison: the per-episode mean over seeds of Meta-GNA minus that of MAML (a paired t
interval over episodes; it does not include the variation between seeds, which the per-seed
rows show); the validation comparison that chooses the Arbiter's output bound; test-time
inner steps; and the test-time step size (every seed at 0 steps and at 3 steps of several
inner learning rates).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from metagna_tf.metrics import paired_difference  # noqa: E402

SETTINGS = [("5w1s", "5-way 1-shot"), ("5w5s", "5-way 5-shot"),
            ("5w5s_occlusion0.2", "5-way 5-shot, occlusion of 20% of the support images"),
            ("5w5s_label0.2", "5-way 5-shot, labels of 20% of the support images swapped")]
PROTOCOLS = [("indomain", "in-domain (the standard character split)"),
             ("cross_alphabet", "cross-alphabet (no training alphabet at test time)")]


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def diff_text(d: dict) -> str:
    mark = " *" if d["excludes_zero"] else ""
    return f"{100 * d['mean']:+.2f} ± {100 * d['ci95']:.2f}{mark}"


def reference(name: str) -> str | None:
    """The MAML run a row is paired with: the same seed for Meta-GNA, seed 0 otherwise."""
    if name.startswith("maml_seed"):
        return None
    if name.startswith("metagna_seed"):
        return "maml_seed" + name.rsplit("seed", 1)[1]
    return "maml_seed0"


def is_ablation(name: str) -> bool:
    return name != "pixel_nn" and not name.startswith(("maml_seed", "metagna_seed"))


def order(name: str) -> tuple:
    """MAML and Meta-GNA by seed, then the ablations, then the pixel baseline."""
    if name.startswith(("maml_seed", "metagna_seed")):
        algorithm, seed = name.rsplit("_seed", 1)
        return (0, int(seed) if seed.isdigit() else 99, algorithm, "")
    return (2 if name == "pixel_nn" else 1, 0, "", name)


def table(result: dict) -> str:
    models = {m["name"]: m for m in sorted(result["models"], key=lambda m: order(m["name"]))}
    acc = {n: np.asarray(m["episode_accuracies"]) for n, m in models.items()}
    ablations = any(is_ablation(n) for n in models) and "metagna_seed0" in acc
    head = "| model | accuracy (95% CI) | paired difference vs MAML (same seed) |"
    lines = [head + (" vs Meta-GNA seed 0 |" if ablations else ""),
             "| --- | --- | --- |" + (" --- |" if ablations else "")]
    for name, m in models.items():
        ref = reference(name)
        diff = diff_text(paired_difference(acc[ref], acc[name])) if ref in acc else ""
        row = f"| {name} | {pct(m['accuracy'])} ± {pct(m['ci95'])} | {diff} |"
        if ablations:
            vs_gna = paired_difference(acc["metagna_seed0"], acc[name])
            row += f" {diff_text(vs_gna)} |" if is_ablation(name) else " |"
        lines.append(row)
    seeds = [s for s in range(3) if f"maml_seed{s}" in acc and f"metagna_seed{s}" in acc]
    if len(seeds) > 1:
        maml = np.mean([acc[f"maml_seed{s}"] for s in seeds], axis=0)
        gna = np.mean([acc[f"metagna_seed{s}"] for s in seeds], axis=0)
        d = paired_difference(maml, gna)
        per_seed = [100 * paired_difference(acc[f"maml_seed{s}"], acc[f"metagna_seed{s}"])["mean"]
                    for s in seeds]
        lines.append(f"| **Meta-GNA − MAML, {len(seeds)} seeds** | | {diff_text(d)} (per seed: "
                     + ", ".join(f"{x:+.2f}" for x in per_seed) + ") |")
    return "\n".join(lines)


def column_label(column: str) -> str:
    steps, _, lr = column.partition("@lr")
    return "head alone (0 steps)" if steps == "0" else f"{steps} steps, lr {lr}"


def column_order(column: str) -> tuple:
    steps, _, lr = column.partition("@lr")
    return (int(steps), -float(lr) if lr else 0.0)


def stepsize_table(result: dict) -> str:
    """Each model at 0 steps and at 3 steps of each test-time inner learning rate (names
    ``model@steps[@lrX]``): accuracy, and after steps the paired difference against the same
    model's head alone; the last row: Meta-GNA minus MAML over the seeds, per column."""
    acc = {m["name"]: np.asarray(m["episode_accuracies"]) for m in result["models"]}
    stats = {m["name"]: m for m in result["models"]}
    bases = sorted({n.split("@")[0] for n in acc}, key=order)
    columns = sorted({n.split("@", 1)[1] for n in acc if "@" in n}, key=column_order)
    lines = ["| model | " + " | ".join(column_label(c) for c in columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for base in bases:
        cells = []
        for column in columns:
            name, head = f"{base}@{column}", f"{base}@0"
            if name not in acc:
                cells.append("")
                continue
            cell = f"{pct(stats[name]['accuracy'])} ± {pct(stats[name]['ci95'])}"
            if column != "0" and head in acc:
                cell += f" ({diff_text(paired_difference(acc[head], acc[name]))})"
            cells.append(cell)
        lines.append(f"| {base} | " + " | ".join(cells) + " |")
    cells = []
    for column in columns:
        seeds = [s for s in range(3)
                 if f"maml_seed{s}@{column}" in acc and f"metagna_seed{s}@{column}" in acc]
        if len(seeds) < 2:
            cells.append("")
            continue
        maml = np.mean([acc[f"maml_seed{s}@{column}"] for s in seeds], axis=0)
        gna = np.mean([acc[f"metagna_seed{s}@{column}"] for s in seeds], axis=0)
        cells.append(diff_text(paired_difference(maml, gna)))
    if any(cells):
        lines.append("| **Meta-GNA − MAML, seeds 0-2** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/sample_aware")
    for protocol, title in PROTOCOLS:
        if not any(folder.glob(f"{protocol}_*.json")):
            continue
        print(f"### {title}\n")
        for key, setting in SETTINGS:
            path = folder / f"{protocol}_{key}.json"
            if not path.is_file():
                continue
            result = json.loads(path.read_text())
            print(f"**{setting}**, {result['episodes']} test episodes "
                  f"(`{protocol}_{key}.json`):\n")
            print(table(result) + "\n")
        path = folder / f"{protocol}_bound_val_5w1s.json"
        if path.is_file():
            result = json.loads(path.read_text())
            print(f"**The Arbiter's output bound, on the validation split**, 5-way 1-shot, "
                  f"{result['episodes']} validation episodes (`{path.name}`):\n")
            print(table(result) + "\n")
        for shots in (1, 5):
            path = folder / f"{protocol}_steps_5w{shots}s.json"
            if path.is_file():
                result = json.loads(path.read_text())
                print(f"**Test-time inner steps**, 5-way {shots}-shot "
                      f"(0 = the prototype head alone):\n")
                print("| model | " + " | ".join(m["name"] for m in result["models"]) + " |")
                print("| --- |" + " --- |" * len(result["models"]))
                print("| accuracy | " + " | ".join(f"{pct(m['accuracy'])} ± {pct(m['ci95'])}"
                                                   for m in result["models"]) + " |\n")
        for key, setting in (("5w5s", "5-way 5-shot"),
                             ("5w5s_label0.2", "5-way 5-shot, 20% of the support labels swapped")):
            path = folder / f"{protocol}_stepsize_{key}.json"
            if path.is_file():
                result = json.loads(path.read_text())
                print(f"**Test-time step size**, {setting}, {result['episodes']} test episodes "
                      f"(`{path.name}`; in brackets: against the same model's head alone):\n")
                print(stepsize_table(result) + "\n")
    print("(* the paired 95% interval excludes zero)")


if __name__ == "__main__":
    main()
