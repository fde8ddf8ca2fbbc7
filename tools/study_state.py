"""Carry a study's unfinished runs from one machine to the next.

A run resumes from its workdir (``checkpoints/``, ``best/``, ``metrics.jsonl``,
``config.json``). When the machine itself is replaced, the workdirs go with it; this tool
keeps, in a folder that is committed, what resuming needs and nothing more: each run's config,
its metrics rows, its latest checkpoint and its best checkpoint (about 2.7 MB per run for the
Omniglot Conv-4 with Adam's moments), each with a ``checkpoint`` index naming only that one.

    python tools/study_state.py save RUNS_DIR STATE_DIR [RUN...]
    python tools/study_state.py restore STATE_DIR RUNS_DIR

``save`` mirrors the runs under RUNS_DIR (all, or the RUNs named, e.g.
``indomain/maml_seed1``) into STATE_DIR, replacing older checkpoints there. Pause the
training processes first (``kill -STOP``) so that the metrics rows and the checkpoint are of
one moment; the index is read either way, so a checkpoint being written is never taken.
``restore`` copies each saved run into RUNS_DIR unless RUNS_DIR already holds it at the same
iteration or further. Rows of ``metrics.jsonl`` written after the latest checkpoint are
dropped by training itself when it resumes.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

KEPT = ("config.json", "metrics.jsonl")
FOLDERS = ("checkpoints", "best")  # the latest checkpoints, the best one
INDEX = "checkpoint"


def checkpoint_prefix(folder: Path) -> str | None:
    """The name (e.g. ``ckpt-1200``) of the checkpoint a folder's index points at."""
    index = folder / INDEX
    if not index.is_file():
        return None
    found = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', index.read_text(), re.MULTILINE)
    if not found:
        raise ValueError(f"{index}: no model_checkpoint_path line")
    name = Path(found.group(1)).name  # written relative; an absolute path keeps its name
    if not (folder / f"{name}.index").is_file():
        raise FileNotFoundError(f"{index}: names {name}, but {folder / name}.index is missing")
    return name


def iteration(run: Path) -> int:
    """The iteration of a run's latest checkpoint (-1: none yet)."""
    name = checkpoint_prefix(run / "checkpoints") if (run / "checkpoints").is_dir() else None
    return int(name.rsplit("-", 1)[1]) if name else -1


def copy_checkpoint(source: Path, target: Path) -> None:
    """Copy the checkpoint ``source``'s index names into ``target``, alone, with its own index."""
    name = checkpoint_prefix(source)
    if target.exists():
        shutil.rmtree(target)
    if name is None:
        return
    target.mkdir(parents=True)
    for part in source.glob(f"{name}.*"):
        shutil.copy2(part, target / part.name)
    (target / INDEX).write_text(f'model_checkpoint_path: "{name}"\n'
                                f'all_model_checkpoint_paths: "{name}"\n')


def copy_run(source: Path, target: Path) -> None:
    """A run's config, metrics and latest and best checkpoints; the rest of ``target`` stays."""
    staging = target.with_name(target.name + ".partial")  # an interrupted copy leaves no run
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name in KEPT:
        if (source / name).is_file():
            shutil.copy2(source / name, staging / name)
    for folder in FOLDERS:
        copy_checkpoint(source / folder, staging / folder)
    target.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        (target / name).unlink(missing_ok=True)
    for folder in FOLDERS:
        if (target / folder).exists():
            shutil.rmtree(target / folder)
    for part in staging.iterdir():
        part.rename(target / part.name)
    staging.rmdir()


def runs_under(root: Path) -> list[str]:
    """The run folders (those holding a config.json) under ``root``, as relative names."""
    return sorted(str(p.parent.relative_to(root)) for p in root.rglob("config.json")
                  if not p.parent.name.endswith(".partial"))


def save(runs: Path, state: Path, names: list[str]) -> list[str]:
    names = names or runs_under(runs)
    missing = [n for n in names if not (runs / n / "config.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{runs}: no run {', '.join(missing)} (no config.json)")
    lines = []
    for name in names:
        copy_run(runs / name, state / name)
        lines.append(f"saved {name} at iteration {iteration(state / name)}")
    return lines


def restore(state: Path, runs: Path) -> list[str]:
    if not state.is_dir():
        raise FileNotFoundError(f"{state}: no saved study state")
    lines = []
    for name in runs_under(state):
        saved, here = iteration(state / name), iteration(runs / name)
        if here >= saved:
            lines.append(f"kept {name}: {runs / name} is at {here}, the saved state at {saved}")
            continue
        config = runs / name / "config.json"
        if config.is_file() and (json.loads(config.read_text())
                                 != json.loads((state / name / "config.json").read_text())):
            raise ValueError(f"{runs / name}: its config.json differs from the saved run's "
                             f"({state / name}); move it away to restore the saved run")
        copy_run(state / name, runs / name)
        lines.append(f"restored {name} at iteration {saved}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("save", help="keep the runs' resumable state in STATE_DIR")
    p.add_argument("runs", type=Path, metavar="RUNS_DIR")
    p.add_argument("state", type=Path, metavar="STATE_DIR")
    p.add_argument("names", nargs="*", metavar="RUN")
    p = sub.add_parser("restore", help="put saved runs back where training resumes them")
    p.add_argument("state", type=Path, metavar="STATE_DIR")
    p.add_argument("runs", type=Path, metavar="RUNS_DIR")
    args = parser.parse_args(argv)
    try:
        if args.command == "save":
            lines = save(args.runs, args.state, args.names)
        else:
            lines = restore(args.state, args.runs)
    except (OSError, ValueError) as error:
        print(f"study_state: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
