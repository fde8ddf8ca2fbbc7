"""Paired comparison: every model (and baseline) on the very same evaluation episodes.

Per model: mean query accuracy and its normal 95% CI over episodes. Per pair
(``b`` minus ``a``): the mean per-episode accuracy difference with a paired 95%
t interval (``metrics.paired_difference``), which can tell a real difference
from noise where two overlapping CIs cannot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from metagna_tf.baselines import baseline_accuracies
from metagna_tf.checkpoints import load_trained
from metagna_tf.data import EpisodeSampler, EpisodeSpec, load_pool
from metagna_tf.evaluation import eval_batches, model_accuracies
from metagna_tf.metrics import mean_ci95, paired_difference


def short_names(paths: Sequence[str]) -> list[str]:
    """The last path component, or more of the path where two would clash."""
    parts = [Path(p).parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def compare(workdirs: Sequence[str], *, baselines: Sequence[str] = (),
            inner_steps: Sequence[int] | None = None, dataset: str | None = None,
            data_dir=None, split: str = "test", episodes: int = 600, ways: int | None = None,
            shots: int | None = None, queries: int | None = None, seed: int = 0,
            checkpoint: str = "best", corruption: str = "none", corruption_rate: float = 0.0,
            protocol: str | None = None, download: bool = False) -> dict:
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
    dataset = dataset or first.dataset
    protocol = protocol or first.protocol
    spec = EpisodeSpec(ways or first.ways, shots or first.shots, queries or first.queries)
    pool_config = first.replace(dataset=dataset, rotations=False, protocol=protocol)
    pool = load_pool(dataset, split, pool_config, data_dir, download)
    sampler = EpisodeSampler(pool, spec, source=f"{dataset} {split}")
    batches = eval_batches(sampler, episodes, seed, corruption=corruption, rate=corruption_rate)

    entries = []
    names = short_names(workdirs)
    for name, (workdir, model, info) in zip(names, loaded, strict=True):
        for steps in (inner_steps or [None]):
            k = model.config.inner_steps_test if steps is None else steps
            if k < 0:
                raise ValueError(f"inner steps must be at least 0, got {k}")
            label = f"{name}@{k}" if inner_steps and len(inner_steps) > 1 else name
            entries.append({"name": label, "workdir": str(workdir),
                            "algorithm": model.config.algorithm, "inner_steps": k,
                            "checkpoint": info["checkpoint"],
                            "accuracies": model_accuracies(model, batches, k, spec.ways)})
    for baseline in baselines:
        entries.append({"name": baseline, "workdir": None, "algorithm": baseline,
                        "inner_steps": 0, "checkpoint": None,
                        "accuracies": baseline_accuracies(baseline, batches)})
    models = []
    for e in entries:
        mean, ci = mean_ci95(e["accuracies"])
        models.append({k: v for k, v in e.items() if k != "accuracies"}
                      | {"accuracy": mean, "ci95": ci,
                         "episode_accuracies": [round(float(a), 6) for a in e["accuracies"]]})
    pairs = [{"a": a["name"], "b": b["name"],
              "difference": paired_difference(a["accuracies"], b["accuracies"])}
             for i, a in enumerate(entries) for b in entries[i + 1:]]
    return {"dataset": dataset, "split": split, "protocol": protocol, "ways": spec.ways,
            "shots": spec.shots, "queries": spec.queries, "episodes": episodes, "seed": seed,
            "support_corruption": corruption,
            "corruption_rate": corruption_rate if corruption != "none" else 0.0,
            "models": models, "pairs": pairs}


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
