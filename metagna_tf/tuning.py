"""Hyperparameter search over the meta-learner with keras-tuner.

``MetaTuner`` is a ``keras_tuner.Tuner`` whose ``run_trial`` trains an ordinary
workdir (``training.train``) per trial, so ``evaluate``, ``predict`` and the
exports work on any trial, and scores it on a fixed, seeded set of validation
episodes, the same for every trial (``objective_accuracy``). The oracle's
state lives in ``<workdir>/oracle``: rerunning the command continues the
search; an interrupted trial is retried (its workdir resumes from its last
checkpoint); finished trials are not rerun.

The search space (``DEFAULT_SPACE``, overridable from a JSON file; ``null``
fixes a key at the configured value) maps config keys to

    {"type": "float", "min": a, "max": b, "log": true}   # log-uniform (or uniform)
    {"type": "int", "min": a, "max": b}
    {"type": "choice", "values": [...]}
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path

import keras_tuner
import numpy as np

from metagna_tf.config import Config
from metagna_tf.json_files import read_json_object

log = logging.getLogger(__name__)

DEFAULT_SPACE: dict[str, dict] = {
    "inner_lr": {"type": "float", "min": 0.02, "max": 0.5, "log": True},
    "inner_steps": {"type": "int", "min": 1, "max": 3},
    "meta_lr": {"type": "float", "min": 3e-4, "max": 3e-3, "log": True},
    "arbiter_hidden": {"type": "choice", "values": [16, 32, 64]},
    "arbiter_a_max": {"type": "choice", "values": [10.0, 100.0]},
}
TUNERS = ("random", "bayesian", "hyperband")
OBJECTIVE = "val_accuracy"
OBJECTIVE_STREAM_SEED = 0


def load_space(path: str | Path | None, algorithm: str) -> dict[str, dict]:
    """``DEFAULT_SPACE`` updated by the JSON file at ``path``, checked key by key."""
    space = dict(DEFAULT_SPACE)
    source = "search space"
    if path is not None:
        source = f"search space {path}"
        override = read_json_object(path, source, "a JSON object of config keys")
        for key, value in override.items():
            if value is None:
                space.pop(key, None)
            else:
                space[key] = value
    inert = Config(algorithm=algorithm).inert_keys  # algorithms/table.py
    dropped = sorted(k for k in space if k in inert)
    if dropped:
        log.info("%s: %s does not read %s; not searching them", source, algorithm, dropped)
    space = {k: v for k, v in space.items() if k not in inert}
    fields = {f.name: f for f in dataclasses.fields(Config)}
    for key, spec in space.items():
        check_entry(key, spec, fields, source)
    if not space:
        raise ValueError(f"{source}: nothing to search (every key fixed)")
    return space


def check_entry(key: str, spec, fields: dict, source: str) -> None:
    if key not in fields:
        raise ValueError(f"{source}: unknown key {key!r}; config keys: {sorted(fields)}")
    if key in ("iterations", "checkpoint_every", "seed", "dataset", "algorithm"):
        raise ValueError(f"{source}: {key!r} is set by the tune command, not searched")
    if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "choice"):
        raise ValueError(f"{source}: {key!r} needs {{\"type\": \"float\"|\"int\"|\"choice\", "
                         f"...}}, got {spec!r}")
    kind = spec["type"]
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{source}: {key!r} has an empty or missing list of values")
        for v in values:
            try:
                Config().replace(**{key: v})
            except (ValueError, TypeError) as err:
                raise ValueError(f"{source}: {key!r} value {v!r} is invalid ({err})") from err
        return
    low, high = spec.get("min"), spec.get("max")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ValueError(f"{source}: {key!r} needs numeric min and max, got {low!r}, {high!r}")
    if not low < high:
        raise ValueError(f"{source}: {key!r} has an empty range (min {low} >= max {high})")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ValueError(f"{source}: {key!r} is an int range; min and max must be integers")
    if spec.get("log") and low <= 0:
        raise ValueError(f"{source}: {key!r} has a log range that needs min > 0, got {low}")
    if kind == "float" and fields[key].type not in ("float", float):
        raise ValueError(f"{source}: {key!r} is not a float config key")
    for v in (low, high):
        try:
            Config().replace(**{key: int(v) if kind == "int" else float(v)})
        except (ValueError, TypeError) as err:
            raise ValueError(f"{source}: {key!r} bound {v!r} is invalid ({err})") from err


def hyperparameters(space: dict[str, dict]) -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    for key, spec in space.items():
        if spec["type"] == "float":
            hp.Float(key, float(spec["min"]), float(spec["max"]),
                     sampling="log" if spec.get("log") else "linear")
        elif spec["type"] == "int":
            hp.Int(key, int(spec["min"]), int(spec["max"]))
        else:
            hp.Choice(key, spec["values"])
    return hp


def objective_accuracy(workdir: Path, episodes: int, data_dir=None, download=False) -> float:
    """Mean query accuracy of the trial's final model on fixed validation episodes."""
    from metagna_tf.checkpoints import load_trained
    from metagna_tf.episode_setup import EvaluationSettings, evaluation_episodes
    from metagna_tf.evaluation import model_accuracies

    model, _ = load_trained(workdir, "latest")
    c = model.config
    settings = EvaluationSettings(split="val", episodes=episodes, seed=OBJECTIVE_STREAM_SEED)
    batches = evaluation_episodes(c, settings, data_dir=data_dir, download=download).batches
    return float(np.mean(model_accuracies(model, batches, c.inner_steps_test, c.ways)))


class MetaTuner(keras_tuner.Tuner):
    """Each trial: train a workdir with the trial's config, score it on fixed val episodes."""

    def __init__(self, oracle, *, base: Config, workdir: Path, iterations: int, unit: int,
                 objective_episodes: int, data_dir=None, download=False, verbose=0):
        super().__init__(oracle=oracle, hypermodel=None, directory=str(workdir),
                         project_name="oracle")
        self.base = base
        self.root = Path(workdir)
        self.iterations = iterations
        self.unit = unit
        self.objective_episodes = objective_episodes
        self.data_dir = data_dir
        self.download = download
        self.verbose = verbose

    def trial_dir(self, trial_id: str) -> Path:
        return self.root / "trials" / trial_id

    def trial_config(self, values: dict) -> Config:
        iterations = self.iterations
        if "tuner/epochs" in values:  # Hyperband's budget for this round
            iterations = int(values["tuner/epochs"]) * self.unit
        searched = {k: v for k, v in values.items() if not k.startswith("tuner/")}
        return self.base.replace(**searched, iterations=iterations,
                                 checkpoint_every=min(self.unit, iterations))

    def run_trial(self, trial, *args, **kwargs):
        from metagna_tf.training import train

        values = trial.hyperparameters.values
        config = self.trial_config(values)
        work = self.trial_dir(trial.trial_id)
        previous = values.get("tuner/trial_id")
        if previous and not work.exists():  # Hyperband: continue the earlier round's model
            shutil.copytree(self.trial_dir(previous), work)
            for stale in ("metrics.jsonl", "result.json"):
                (work / stale).unlink(missing_ok=True)
        start = time.time()
        train(config, work, data_dir=self.data_dir, verbose=self.verbose, download=self.download)
        score = objective_accuracy(work, self.objective_episodes, self.data_dir, self.download)
        seconds = time.time() - start
        (work / "result.json").write_text(json.dumps(
            {"trial_id": trial.trial_id, OBJECTIVE: score, "seconds": round(seconds, 1),
             "iterations": config.iterations, "hyperparameters": values}, indent=1) + "\n")
        write_hparams(self.root / "tensorboard" / trial.trial_id, values, score,
                      config.iterations)
        return {OBJECTIVE: score}


def write_hparams(logdir: Path, values: dict, score: float, step: int) -> None:
    """One trial for TensorBoard's HParams dashboard."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp_api

    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp_api.hparams({k: v for k, v in values.items() if not k.startswith("tuner/")},
                       trial_id=logdir.name)
        tf.summary.scalar(OBJECTIVE, score, step=step)


def make_oracle(tuner: str, space: dict, trials: int, max_epochs: int, seed: int):
    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    hp = hyperparameters(space)
    if tuner == "random":
        return keras_tuner.oracles.RandomSearchOracle(objective, max_trials=trials,
                                                     hyperparameters=hp, seed=seed)
    if tuner == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(
            objective, max_trials=trials, hyperparameters=hp, seed=seed,
            num_initial_points=min(trials, max(2, trials // 3)))
    if tuner == "hyperband":
        return keras_tuner.oracles.HyperbandOracle(objective, max_epochs=max_epochs, factor=3,
                                                   hyperband_iterations=1,
                                                   hyperparameters=hp, seed=seed)
    raise ValueError(f"unknown tuner {tuner!r}; choose from {TUNERS}")


def trial_rows(workdir: Path) -> list[dict]:
    rows = []
    for path in sorted((Path(workdir) / "oracle").glob("trial_*/trial.json")):
        trial = json.loads(path.read_text())
        trial_id = trial["trial_id"]
        result_path = Path(workdir) / "trials" / trial_id / "result.json"
        result = json.loads(result_path.read_text()) if result_path.is_file() else {}
        values = trial["hyperparameters"]["values"]
        rows.append({"trial": trial_id, "status": trial["status"],
                     OBJECTIVE: result.get(OBJECTIVE, trial.get("score")),
                     "seconds": result.get("seconds"), "iterations": result.get("iterations"),
                     **{k: v for k, v in values.items() if not k.startswith("tuner/")}})
    return rows


def write_table(rows: list[dict], path: Path) -> str:
    """Write the trials as CSV; return them as a fixed-width text table."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    cells = [[fmt(row.get(k)) for k in keys] for row in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) if cells else len(k)
              for i, k in enumerate(keys)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    return "\n".join(lines)


def tune(base: Config, workdir: str | Path, *, tuner: str = "random", trials: int = 10,
         iterations_per_trial: int = 500, space_file=None, objective_episodes: int = 200,
         data_dir=None, download: bool = False, verbose=0) -> dict:
    """Run (or continue) a search; returns the best trial's row, after writing
    ``trials.csv`` and ``best_config.json`` into ``workdir``."""
    workdir = Path(workdir)
    if trials < 1 or iterations_per_trial < 1 or objective_episodes < 1:
        raise ValueError("trials, iterations per trial and objective episodes must be positive")
    space = load_space(space_file, base.algorithm)
    unit = min(base.checkpoint_every, iterations_per_trial)
    max_epochs = max(2, math.ceil(iterations_per_trial / unit))
    settings = {"tuner": tuner, "trials": trials, "iterations_per_trial": iterations_per_trial,
                "objective_episodes": objective_episodes, "space": space,
                "base": base.to_dict()}
    settings_path = workdir / "tune_settings.json"
    if settings_path.is_file():
        old = json.loads(settings_path.read_text())
        changed = sorted(k for k in settings if k != "trials" and old.get(k) != settings[k])
        if changed:
            raise ValueError(f"{workdir} holds a search with other settings ({', '.join(changed)});"
                             " use a new workdir, or the same command to continue it")
    workdir.mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(settings, indent=1) + "\n")
    oracle = make_oracle(tuner, space, trials, max_epochs, base.seed)
    meta_tuner = MetaTuner(oracle, base=base, workdir=workdir, iterations=iterations_per_trial,
                           unit=unit, objective_episodes=objective_episodes, data_dir=data_dir,
                           download=download, verbose=verbose)
    if tuner != "hyperband":
        meta_tuner.oracle.max_trials = trials  # a rerun may extend the search
    meta_tuner.search()
    rows = trial_rows(workdir)
    table = write_table(rows, workdir / "trials.csv")
    done = [r for r in rows if r[OBJECTIVE] is not None and r["status"] == "COMPLETED"]
    if not done:
        raise RuntimeError(f"{workdir}: no trial completed; see {workdir / 'oracle'}")
    best = max(done, key=lambda r: r[OBJECTIVE])
    best_config = json.loads((workdir / "trials" / best["trial"] / "config.json").read_text())
    (workdir / "best_config.json").write_text(json.dumps(best_config, indent=2,
                                                         sort_keys=True) + "\n")
    return {"best": best, "table": table, "trials": len(rows)}
