"""A run's tested checkpoint before and after a budget raise, on the same test episodes.

    python tools/budget_check.py indomain/maml_seed1 --before 9a20d98 \
        [--record docs/results/inner_loop] [--output budget_check_maml1_20000.txt]

When a protocol's budget is raised, a run trains on and its best-validation checkpoint can
move. ``evaluate`` (tools/results_inner_loop.sh) then replaces the run's rows in the records
``<protocol>_5w*s*.json``. This compares the run's record at git revision ``--before`` (the
earlier checkpoint) with the one in the working tree (the later), per evaluation setting,
paired over the same 600 episodes (``metagna_tf.metrics.paired_difference``; the episodes'
SHA-256 must match), and adds the plateau check of the run's validation curve by fifths
(``validation_curves.json``), so the budget's bullet in docs/results.md can quote both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_inner_loop_table import SETTINGS, fifths, plateau  # noqa: E402

from metagna_tf.metrics import paired_difference  # noqa: E402


def record_at(revision: str | None, path: Path) -> dict:
    """The JSON record at a git revision (``None``: the working tree)."""
    if revision is None:
        return json.loads(path.read_text())
    # "./": the path is taken from the current folder, as everywhere else in this script
    shown = subprocess.run(["git", "show", f"{revision}:./{path.as_posix()}"],
                           capture_output=True, text=True, check=False)
    if shown.returncode:
        raise SystemExit(f"budget_check: no {path} at revision {revision}: {shown.stderr.strip()}")
    return json.loads(shown.stdout)


def entry(record: dict, name: str, where: str) -> dict:
    for model in record["models"]:
        if model["name"] == name:
            return model
    raise SystemExit(f"budget_check: no model '{name}' in the record {where}")


def checkpoint_label(model: dict) -> str:
    return f"{Path(model['checkpoint']).name}, SHA-256 {model['checkpoint_sha256'][:12]}..."


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="protocol/name, e.g. indomain/maml_seed1")
    p.add_argument("--before", required=True,
                   help="git revision whose records hold the earlier checkpoint")
    p.add_argument("--record", type=Path, default=Path("docs/results/inner_loop"))
    p.add_argument("--output", type=Path, help="also write the text here")
    args = p.parse_args(argv)
    protocol, _, name = args.run.partition("/")
    if not name:
        p.error(f"run '{args.run}': expected protocol/name, e.g. indomain/maml_seed1")

    rows, labels = [], None
    for key, title in SETTINGS:
        path = args.record / f"{protocol}_{key}.json"
        before, after = record_at(args.before, path), record_at(None, path)
        if before["episodes_sha256"] != after["episodes_sha256"]:
            raise SystemExit(f"budget_check: {path}: the episodes differ between {args.before} "
                             "and the working tree")
        a = entry(before, name, f"{path} at {args.before}")
        b = entry(after, name, f"{path} (working tree)")
        if a["checkpoint_sha256"] == b["checkpoint_sha256"]:
            raise SystemExit(f"budget_check: {name} has the same checkpoint in both records of "
                             f"{path}: nothing to compare")
        labels = labels or (checkpoint_label(a), checkpoint_label(b))
        d = paired_difference(a["episode_accuracies"], b["episode_accuracies"])
        rows.append(f"{title:<52} {100 * a['accuracy']:6.2f}  {100 * b['accuracy']:6.2f}  "
                    f"{100 * d['mean']:+.2f} +/- {100 * d['ci95']:.2f}"
                    + (" *" if d["excludes_zero"] else ""))

    lines = [f"{args.run}: the tested (best-validation) checkpoint in the records of {args.before}",
             f"  ({labels[0]}) against the one in the working tree ({labels[1]}),",
             "  paired over the same 600 test episodes per setting (5 queries per class, seed 0):",
             f"  python tools/budget_check.py {args.run} --before {args.before}",
             "",
             f"{'setting':<52} {'before':>6}  {'after':>6}  after - before, paired 95%",
             *rows, "(* the interval excludes zero)", ""]
    curves = json.loads((args.record / "validation_curves.json").read_text())
    run = curves.get(args.run)
    if run is not None:
        check = plateau(run)
        total = run["iterations"]
        parts = ", ".join(f"{100 * np.mean(f):.2f}/{100 * max(f):.2f}" if f else "-"
                          for f in fifths(run))
        lines.append(f"Validation by fifths of {total} iterations (mean/best): {parts}.")
        if "plateau" in check:
            lines.append(f"Plateau check: mean {100 * check['mean_gain']:+.2f}, best "
                         f"{100 * check['best_gain']:+.2f}: "
                         + ("plateaued." if check["plateau"] else "NOT plateaued."))
        else:
            lines.append(f"Plateau check: not yet (at {check['at']} of {total}).")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
