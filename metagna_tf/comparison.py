"""Paired comparison: every model (and baseline) on the very same evaluation episodes.

Per model: mean query accuracy and its normal 95% CI over episodes. Per pair
(``b`` minus ``a``): the mean per-episode accuracy difference with a paired 95%
t interval (``metrics.paired_difference``), which can tell a real difference
from noise where two overlapping CIs cannot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from metagna_tf.baselines import baseline_accuracies
from metagna_tf.checkpoints import load_trained
from metagna_tf.episode_setup import EvaluationSettings, evaluation_episodes
from metagna_tf.evaluation import model_accuracies
from metagna_tf.metrics import mean_ci95, paired_difference

# what makes two comparisons' episodes the same (with episodes_sha256 where both have it)
EPISODE_SETTINGS = ("dataset", "split", "protocol", "ways", "shots", "queries", "episodes", "seed",
                    "support_corruption", "corruption_rate")


def short_names(paths: Sequence[str]) -> list[str]:
    """The last path component, or more of the path where two would clash."""
    parts = [Path(p).parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def compare(workdirs: Sequence[str], settings: EvaluationSettings | None = None, *,
            baselines: Sequence[str] = (), inner_steps: Sequence[int] | None = None,
            inner_lrs: Sequence[float] | None = None, checkpoint: str = "best", data_dir=None,
            download: bool = False, reuse: dict | None = None,
            keep_earlier: bool = False) -> dict:
    """Every model of ``workdirs`` (and each of ``baselines``) on the episodes of ``settings``
    (default dataset and protocol: the first model's).

    ``inner_steps``, ``inner_lrs``: test-time inner steps and learning rates (default: each
    model's own); every model is evaluated at each combination (at 0 steps once).
    ``reuse``: an earlier result on the same episodes; its models (the same checkpoint
    contents, by SHA-256, inner steps and learning rate) are taken from it instead of being evaluated
    again. ``keep_earlier``: its other models are kept in the result as they are, except
    those from one of ``workdirs`` (retrained since: evaluated anew), so a study can grow
    over several machines whose run folders are gone."""
    if keep_earlier and not reuse:
        raise ValueError("keep_earlier needs an earlier result (reuse)")
    if not workdirs:
        raise ValueError("compare: give at least one workdir")
    loaded = [(w, *load_trained(w, checkpoint)) for w in workdirs]
    first = loaded[0][1].config
    for w, model, _ in loaded[1:]:
        c = model.config
        if (c.image_size, c.channels, c.dataset) != (first.image_size, first.channels,
                                                      first.dataset):
            raise ValueError(f"{w}: trained on {c.dataset} {c.image_size}x{c.image_size}x"
                             f"{c.channels}, unlike {workdirs[0]} ({first.dataset} "
                             f"{first.image_size}x{first.image_size}x{first.channels})")
    episodes = evaluation_episodes(first, settings, data_dir=data_dir, download=download)
    spec, batches = episodes.spec, episodes.batches
    record = episodes.describe() | {"episodes_sha256": fingerprint(batches)}
    earlier = reusable(reuse, record) if reuse else {}

    entries = []
    digests = {w: checkpoint_sha256(info["checkpoint"]) for w, _, info in loaded}
    names = short_names(workdirs)
    for lr in inner_lrs or []:
        if not lr > 0:
            raise ValueError(f"inner learning rate must be positive, got {lr}")
    for name, (workdir, model, info) in zip(names, loaded, strict=True):
        own_lr = model.config.inner_lr
        for steps in (inner_steps or [None]):
            k = model.config.inner_steps_test if steps is None else steps
            if k < 0:
                raise ValueError(f"inner steps must be at least 0, got {k}")
            # no step, no learning rate: the prototype head alone is evaluated once
            for given in (inner_lrs or [None]) if k > 0 else [None]:
                label = name + (f"@{k}" if inner_steps and len(inner_steps) > 1 else "")
                label += f"@lr{given:g}" if given is not None and len(inner_lrs) > 1 else ""
                lr = None if given == own_lr else given  # the model's own rate is its default
                key = model_key(digests[workdir], k, lr=lr)
                accuracies = earlier[key]["accuracies"] if key in earlier else \
                    model_accuracies(model, batches, k, spec.ways, inner_lr=lr)
                entries.append({"name": label, "workdir": str(workdir),
                                "algorithm": model.config.algorithm, "inner_steps": k,
                                "inner_lr": own_lr if lr is None else lr, "test_inner_lr": lr,
                                "checkpoint": info["checkpoint"],
                                "checkpoint_sha256": digests[workdir], "reused": key in earlier,
                                "accuracies": accuracies})
    for baseline in baselines:  # cheap: always evaluated, and checked against ``reuse``
        accuracies = baseline_accuracies(baseline, batches)
        before = earlier.get(model_key(None, 0, baseline))
        if before is not None and not np.allclose(before["accuracies"], accuracies, atol=1e-6):
            raise ValueError(f"reuse: the {baseline} baseline scores differently there, so its "
                             "episodes are not these")
        entries.append({"name": baseline, "workdir": None, "algorithm": baseline,
                        "inner_steps": 0, "checkpoint": None, "checkpoint_sha256": None,
                        "reused": False, "accuracies": accuracies})
    if keep_earlier:
        entries += kept(earlier, entries)
    models = []
    for e in entries:
        mean, ci = mean_ci95(e["accuracies"])
        models.append({k: v for k, v in e.items() if k != "accuracies"}
                      | {"accuracy": mean, "ci95": ci,
                         "episode_accuracies": [round(float(a), 6) for a in e["accuracies"]]})
    pairs = [{"a": a["name"], "b": b["name"],
              "difference": paired_difference(a["accuracies"], b["accuracies"])}
             for i, a in enumerate(entries) for b in entries[i + 1:]]
    return record | {"models": models, "pairs": pairs}


def fingerprint(batches) -> str:
    """SHA-256 of the evaluation episodes (every support and query image and label)."""
    digest = hashlib.sha256()
    for batch in batches:
        for array in batch:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def checkpoint_sha256(prefix: str) -> str:
    """SHA-256 of a checkpoint's files (its index and data shards): what identifies a model."""
    digest = hashlib.sha256()
    files = sorted(Path(prefix).parent.glob(Path(prefix).name + ".*"))
    if not files:
        raise ValueError(f"{prefix}: no checkpoint files")
    for path in files:
        digest.update(path.name.removeprefix(Path(prefix).name).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def model_key(checkpoint_digest: str | None, steps: int, baseline: str | None = None,
              lr: float | None = None) -> tuple:
    """What makes two evaluations the same on the same episodes (``lr``: a test-time inner
    learning rate other than the model's own, None for its own)."""
    if baseline:
        return ("baseline", baseline, steps)
    return ("model", checkpoint_digest, steps, None if lr is None else float(lr))


def reusable(previous: dict, settings: dict) -> dict:
    """The models of ``previous`` by key (per-episode accuracies as arrays), if its episodes
    are these."""
    for key in EPISODE_SETTINGS:
        if previous.get(key) != settings[key]:
            raise ValueError(f"reuse: {key} is {previous.get(key)!r} there and {settings[key]!r} "
                             "here, so its episodes are not these")
    if previous.get("episodes_sha256", settings["episodes_sha256"]) != settings["episodes_sha256"]:
        raise ValueError("reuse: its episodes differ from these (episodes_sha256); the data "
                         "changed since")
    found = {}
    for m in previous["models"]:
        baseline = m["algorithm"] if m.get("workdir") is None else None
        key = model_key(m.get("checkpoint_sha256"), m["inner_steps"], baseline,
                        m.get("test_inner_lr"))
        entry = {k: v for k, v in m.items() if k not in ("accuracy", "ci95", "episode_accuracies")}
        found[key] = entry | {"accuracies": np.asarray(m["episode_accuracies"], np.float64)}
    return found


def kept(earlier: dict, entries: list[dict]) -> list[dict]:
    """The earlier models not evaluated now, except those of a workdir evaluated now."""
    used = {model_key(e["checkpoint_sha256"], e["inner_steps"],
                      e["algorithm"] if e["workdir"] is None else None, e.get("test_inner_lr"))
            for e in entries}
    workdirs = {Path(e["workdir"]).resolve() for e in entries if e["workdir"] is not None}
    names = {e["name"] for e in entries}
    out = []
    for key, m in earlier.items():
        if key in used or (m.get("workdir") is not None
                           and Path(m["workdir"]).resolve() in workdirs):
            continue
        if m["name"] in names:
            raise ValueError(f"reuse: its model {m['name']} ({m.get('workdir')}) has the name of "
                             "a model here from another workdir; rename one of the folders")
        names.add(m["name"])
        out.append(m | {"reused": True})
    return out


def table(result: dict) -> str:
    """A small plain-text table of ``compare``'s result (accuracies in %)."""
    title = (f"{result['dataset']} {result['split']} ({result['protocol']}), {result['ways']}-way "
             f"{result['shots']}-shot, {result['episodes']} episodes, seed {result['seed']}")
    if result["support_corruption"] != "none":
        title += f", {result['support_corruption']} corruption {result['corruption_rate']:g}"
    width = max(len(m["name"]) for m in result["models"])
    lines = [title, f"{'model':<{width}}  accuracy (95% CI)"]
    lines += [f"{m['name']:<{width}}  {100 * m['accuracy']:6.2f} +/- {100 * m['ci95']:.2f}"
              for m in result["models"]]
    lines.append("paired differences (b - a, paired t 95% CI):")
    for p in result["pairs"]:
        d = p["difference"]
        mark = " *" if d["excludes_zero"] else ""
        lines.append(f"  {p['b']} - {p['a']}: {100 * d['mean']:+.2f} +/- {100 * d['ci95']:.2f}"
                     f"{mark}")
    lines.append("  (* the interval excludes zero)")
    return "\n".join(lines)
