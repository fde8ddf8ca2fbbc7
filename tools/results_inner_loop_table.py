"""Markdown tables of the inner-loop study from its record (docs/results/inner_loop).

    python tools/results_inner_loop_table.py curves RUNS_DIR [--record docs/results/inner_loop]
    python tools/results_inner_loop_table.py tables [--record docs/results/inner_loop]
        [--section budget|indomain|cross_alphabet ...] [--write docs/results.md]

``curves`` copies every study run's validation curve (iteration, validation accuracy) from
``RUNS_DIR`` into ``$record/validation_curves.json``, so the budget table needs no run folder;
a finished run recorded earlier stays when its folder is gone (a new machine, say), or while
its folder holds a new, unfinished run of the same name (trained again from iteration 0: the
tables still hold the finished run's checkpoints); an unfinished one is dropped.

``tables`` prints (or only the ``--section`` parts; with ``--write docs/results.md``, writes
each into its region of that file, between the ``<!-- BEGIN/END ... --section NAME -->``
markers):

* the budget: per run, its iterations, its best validation accuracy and the plateau check.
  The curve is cut into fifths of the configured iterations. A run has plateaued when, over
  its last fifth, (a) the mean validation accuracy is at most ``PLATEAU_POINTS`` points above
  the best mean of any earlier fifth (the level the run had already reached) and (b) the best
  validation accuracy is at most ``PLATEAU_POINTS`` points above the best before it: the
  best-validation checkpoint is the one tested, and a noisy curve can keep raising it while
  its mean stays flat;
* per protocol and evaluation setting (``metagna_tf.compare`` records, the same episodes for
  every model): each model's accuracy (95% CI), its paired difference against MAML of the same
  seed (seed 0 for the single-seed models), and the authors' form against ours (seed 0); with
  more than one seed, the authors' form minus MAML over the seeds' mean per episode (its
  interval is over the episodes, the seeds held fixed) and each seed's own difference; from
  three seeds, also the t interval over those per-seed differences (the seeds as the sample);
* the prototype head beside the linear head, model by model (seed 0);
* the test-time inner steps (0, 1, 5, 10), with each model's gain over its head alone.

Run names are ``<model>[_proto]_seed<k>`` (tools/results_inner_loop.sh).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from metagna_tf.metrics import paired_difference

PLATEAU_POINTS = 0.5
MODELS = {"maml": "MAML", "authors": "Meta-GNA, authors' form", "ours": "Meta-GNA, ours",
          "lslr": "LSLR"}
PROTOCOLS = {"indomain": "in-domain (the standard character split)",
             "cross_alphabet": "cross-alphabet (no training alphabet at test time)"}
SETTINGS = [("5w1s", "5-way 1-shot, clean supports"), ("5w5s", "5-way 5-shot, clean supports"),
            ("5w1s_occlusion0.2", "5-way 1-shot, 20% of the support images occluded"),
            ("5w5s_occlusion0.2", "5-way 5-shot, 20% of the support images occluded"),
            ("5w1s_label0.2", "5-way 1-shot, 20% of the support labels swapped"),
            ("5w5s_label0.2", "5-way 5-shot, 20% of the support labels swapped")]


def parse(name: str) -> tuple[str, str, int]:
    """``authors_proto_seed1`` -> (authors, proto, 1); the linear head has no tag."""
    stem, _, seed = name.rpartition("_seed")
    model, _, head = stem.partition("_")
    return model, head or "linear", int(seed)


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def diff_text(d: dict) -> str:
    return f"{100 * d['mean']:+.2f} ± {100 * d['ci95']:.2f}" + (" *" if d["excludes_zero"] else "")


def collect_curves(runs: Path, record: Path) -> None:
    """Every run of ``runs`` replaces its recorded curve, unless the recorded run finished and
    the folder's is unfinished and does not continue it (trained again from iteration 0: the
    finished run stays until the new one finishes). A recorded run whose folder is not here
    is kept if it finished (its evaluations are in the record too) and dropped if not (it
    can't resume from here: trained again, it starts a new curve)."""
    path = record / "validation_curves.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    curves = {}
    for metrics in sorted(runs.glob("*/*/metrics.jsonl")):
        if metrics.parent.parent.name == "select":
            continue
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        config = json.loads((metrics.parent / "config.json").read_text())
        curves[f"{metrics.parent.parent.name}/{metrics.parent.name}"] = {
            "iterations": config["iterations"], "inner_lr": config["inner_lr"],
            "val_episodes": config["val_episodes"],
            "curve": [[r["iteration"], r["val_accuracy"]] for r in rows if "val_accuracy" in r]}
    kept = {name: run for name, run in earlier.items()
            if plateau(run)["done"] and (name not in curves or retraining(run, curves[name]))}
    dropped = sorted(set(earlier) - set(curves) - set(kept))
    behind = sorted(name for name in kept if name in curves)
    curves = dict(sorted({**curves, **kept}.items()))
    path.write_text(json.dumps(curves, indent=1) + "\n")
    print(f"{len(curves) - len(kept)} runs from {runs}, {len(kept)} finished runs kept from the "
          f"record -> {path}" + (f"; dropped unfinished: {', '.join(dropped)}" if dropped else "")
          + (f"; kept while trained again: {', '.join(behind)}" if behind else ""))


def retraining(recorded: dict, run: dict) -> bool:
    """``run`` is unfinished and is not ``recorded`` trained on (its curve does not start with
    the recorded one): the same run name trained again from the start."""
    return not plateau(run)["done"] and run["curve"][:len(recorded["curve"])] != recorded["curve"]


def fifths(run: dict) -> list[list[float]]:
    """The validation accuracies in each fifth of the configured iterations."""
    total = run["iterations"]
    return [[a for i, a in run["curve"] if k * total < 5 * i <= (k + 1) * total]
            for k in range(5)]


def plateau(run: dict) -> dict:
    """The last fifth of the configured iterations against the earlier fifths."""
    total = run["iterations"]
    curve = run["curve"]
    parts = fifths(run)
    done = bool(curve) and curve[-1][0] == total
    out = {"done": done, "at": curve[-1][0] if curve else 0,
           "best": max((a for _, a in curve), default=float("nan"))}
    if done and all(parts[3:]):
        earlier = [a for f in parts[:4] for a in f]
        last = float(np.mean(parts[4]))
        mean_gain = last - max(float(np.mean(f)) for f in parts[:4] if f)
        best_gain = max(parts[4]) - max(earlier)
        out.update(mean_gain=mean_gain, best_gain=best_gain,
                   plateau=100 * max(mean_gain, best_gain) <= PLATEAU_POINTS)
    return out


def budget_table(curves: dict) -> str:
    lines = ["| run | inner lr | iterations | best validation | mean: last fifth − best earlier "
             "fifth | best: last fifth − before | plateaued |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, run in curves.items():
        p = plateau(run)
        at = f"{p['at']} of {run['iterations']}" + ("" if p["done"] else " (training)")
        gains = (f"{100 * p['mean_gain']:+.2f} | {100 * p['best_gain']:+.2f}" if "plateau" in p
                 else " | ")
        verdict = ("yes" if p["plateau"] else "no") if "plateau" in p else ""
        lines.append(f"| {name} | {run['inner_lr']:g} | {at} | {pct(p['best'])} | {gains} | "
                     f"{verdict} |")
    return "\n".join(lines)


def setting_table(result: dict) -> str:
    """Linear-head models: accuracy, paired vs MAML (same seed), authors vs ours (seed 0)."""
    models = {m["name"]: m for m in result["models"] if m["name"] != "pixel_nn"}
    acc = {n: np.asarray(m["episode_accuracies"]) for n, m in models.items()}
    lines = ["| model | seed | accuracy (95% CI) | − MAML (same seed) | authors' − ours |",
             "| --- | --- | --- | --- | --- |"]
    linear = sorted((n for n in models if parse(n)[1] == "linear"),
                    key=lambda n: (list(MODELS).index(parse(n)[0]), parse(n)[2]))
    for name in linear:
        model, _, seed = parse(name)
        m = models[name]
        ref = f"maml_seed{seed}" if f"maml_seed{seed}" in acc else "maml_seed0"
        vs_maml = diff_text(paired_difference(acc[ref], acc[name])) \
            if model != "maml" and ref in acc else ""
        forms = ""
        if model == "authors" and seed == 0 and "ours_seed0" in acc:
            forms = diff_text(paired_difference(acc["ours_seed0"], acc[name]))
        lines.append(f"| {MODELS[model]} | {seed} | {pct(m['accuracy'])} ± {pct(m['ci95'])} | "
                     f"{vs_maml} | {forms} |")
    seeds = [s for s in range(10) if f"maml_seed{s}" in acc and f"authors_seed{s}" in acc]
    if len(seeds) > 1:
        maml = np.mean([acc[f"maml_seed{s}"] for s in seeds], axis=0)
        authors = np.mean([acc[f"authors_seed{s}"] for s in seeds], axis=0)
        # the interval is over episodes (the seeds' mean taken per episode), so it holds the
        # training seeds fixed; each seed's own difference shows how much they vary
        per_seed = ", ".join(
            f"{100 * (acc[f'authors_seed{s}'] - acc[f'maml_seed{s}']).mean():+.2f}" for s in seeds)
        # from three seeds on, also the t interval over the seeds' own differences (n - 1
        # dof): it counts the training run's variation, which the episode interval does not
        over_seeds = ""
        if len(seeds) > 2:
            by_seed = paired_difference([acc[f"maml_seed{s}"].mean() for s in seeds],
                                        [acc[f"authors_seed{s}"].mean() for s in seeds])
            over_seeds = f"; over the seeds: {diff_text(by_seed)}"
        lines.append(f"| **authors' form − MAML, mean of {len(seeds)} seeds** | | | "
                     f"{diff_text(paired_difference(maml, authors))} (per seed: {per_seed}"
                     f"{over_seeds}) | |")
    if "pixel_nn" in {m["name"] for m in result["models"]}:
        m = next(m for m in result["models"] if m["name"] == "pixel_nn")
        lines.append(f"| pixel nearest neighbour | | {pct(m['accuracy'])} ± {pct(m['ci95'])} | | |")
    return "\n".join(lines)


def head_table(result: dict) -> str:
    """Seed 0 of each model with the linear and the prototype head, on the same episodes."""
    acc = {m["name"]: (np.asarray(m["episode_accuracies"]), m) for m in result["models"]}
    lines = ["| model | linear head | prototype head | prototype − linear |",
             "| --- | --- | --- | --- |"]
    for model, label in MODELS.items():
        linear, proto = acc.get(f"{model}_seed0"), acc.get(f"{model}_proto_seed0")
        if linear is None and proto is None:
            continue
        cells = [f"{pct(x[1]['accuracy'])} ± {pct(x[1]['ci95'])}" if x else "" for x in
                 (linear, proto)]
        diff = diff_text(paired_difference(linear[0], proto[0])) if linear and proto else ""
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {diff} |")
    return "\n".join(lines)


def steps_table(result: dict) -> str:
    """Accuracy at each test-time step count (names ``run@steps``); after steps, the paired
    difference against the same model's head alone (0 steps)."""
    acc = {m["name"]: (np.asarray(m["episode_accuracies"]), m) for m in result["models"]}
    runs = sorted(dict.fromkeys(n.split("@")[0] for n in acc),  # model, head, then seed
                  key=lambda n: (list(MODELS).index(parse(n)[0]), parse(n)[1] != "linear",
                                 parse(n)[2]))
    counts = sorted({int(n.split("@")[1]) for n in acc if "@" in n})
    lines = ["| run | " + " | ".join(f"{k} step{'' if k == 1 else 's'}" for k in counts)
             + " |",
             "| --- |" + " --- |" * len(counts)]
    for run in runs:
        cells = []
        for k in counts:
            if f"{run}@{k}" not in acc:
                cells.append("")
                continue
            values, m = acc[f"{run}@{k}"]
            cell = f"{pct(m['accuracy'])} ± {pct(m['ci95'])}"
            if k and f"{run}@0" in acc:
                cell += f" ({diff_text(paired_difference(acc[f'{run}@0'][0], values))})"
            cells.append(cell)
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


SECTIONS = ("budget", *PROTOCOLS)


FOOTNOTE = "(* the paired 95% interval excludes zero)"


def section_text(record: Path, section: str) -> str:
    """One section's markdown, without the footnote ("" when nothing is recorded for it)."""
    parts = []
    if section == "budget":
        curves_path = record / "validation_curves.json"
        if curves_path.is_file():
            parts.append(f"**The budget** (`{curves_path.name}`; plateaued: over the last fifth, "
                         "neither the mean nor the best validation accuracy gains more than "
                         f"{PLATEAU_POINTS} points):")
            parts.append(budget_table(json.loads(curves_path.read_text())))
        return "\n\n".join(parts)
    protocol, title = section, PROTOCOLS[section]
    found = [(key, text) for key, text in SETTINGS
             if (record / f"{protocol}_{key}.json").is_file()]
    if not found:
        return ""
    parts.append(f"### {title}")
    for key, text in found:
        result = json.loads((record / f"{protocol}_{key}.json").read_text())
        parts.append(f"**{text}**, {result['episodes']} test episodes (`{protocol}_{key}.json`; "
                     "in-between columns: paired differences on the same episodes):")
        parts.append(setting_table(result))
        if any(parse(m["name"])[1] == "proto" for m in result["models"]
               if m["name"] != "pixel_nn"):
            parts.append(f"The heads, seed 0, {text}:")
            parts.append(head_table(result))
    for shots in (1, 5):
        path = record / f"{protocol}_steps_5w{shots}s.json"
        if path.is_file():
            result = json.loads(path.read_text())
            parts.append(f"**Test-time inner steps**, 5-way {shots}-shot, {result['episodes']} "
                         f"test episodes (`{path.name}`; in brackets: against the same model's "
                         "head alone, 0 steps):")
            parts.append(steps_table(result))
    return "\n\n".join(parts)


def tables(record: Path, sections: tuple[str, ...] = SECTIONS) -> None:
    """Print the sections asked for: the budget table and each protocol's tables."""
    written = {s: section_text(record, s) for s in sections}
    texts = [t for t in written.values() if t]
    if any(written[s] for s in sections if s in PROTOCOLS):
        texts.append(FOOTNOTE)
    if texts:
        print("\n\n".join(texts))


def markers(section: str) -> tuple[str, str]:
    return (f"<!-- BEGIN results_inner_loop_table.py tables --section {section} -->",
            f"<!-- END results_inner_loop_table.py tables --section {section} -->")


def write(record: Path, sections: tuple[str, ...], target: Path) -> None:
    """Replace each section's marked region of ``target`` (docs/results.md) in place.

    A protocol's region gets its own footnote. The file is replaced in one step (a temporary
    file renamed over it), and only after every section's markers were found, so a missing
    marker leaves it untouched.
    """
    text = target.read_text()
    for section in sections:
        begin, end = markers(section)
        if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
            raise SystemExit(f"{target}: needs exactly one '{begin}' followed by one '{end}' "
                             f"to write the {section} section")
        body = section_text(record, section)
        if not body:
            raise SystemExit(f"{record}: nothing recorded for the {section} section; "
                             f"{target} left as it was")
        if section in PROTOCOLS:
            body += "\n\n" + FOOTNOTE
        head, rest = text.split(begin)
        _, tail = rest.split(end)
        text = f"{head}{begin}\n{body}\n{end}{tail}"
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(target)
    print(f"{target}: wrote {', '.join(sections)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("curves", "tables"))
    p.add_argument("runs", nargs="?", type=Path, help="the study's runs folder (curves)")
    p.add_argument("--record", type=Path, default=Path("docs/results/inner_loop"))
    p.add_argument("--section", choices=SECTIONS, action="append",
                   help="tables: print only this part (repeatable; default: all)")
    p.add_argument("--write", type=Path, metavar="MARKDOWN",
                   help="tables: replace each section's marked region of this file "
                        "(docs/results.md) instead of printing")
    args = p.parse_args(argv)
    if args.command == "curves":
        if args.runs is None or not args.runs.is_dir():
            p.error(f"curves needs the study's runs folder (got {args.runs})")
        collect_curves(args.runs, args.record)
    elif args.write is not None:
        if not args.write.is_file():
            p.error(f"--write: no such file: {args.write}")
        write(args.record, tuple(args.section or SECTIONS), args.write)
    else:
        tables(args.record, tuple(args.section or SECTIONS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
