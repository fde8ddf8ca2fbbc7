"""How close an adapted linear head comes to the support set's class means (prototypes).

    python tools/head_vs_prototypes.py --workdirs runs/ours runs/maml [--episodes 600]
        [--shots 5] [--support-corruption label --corruption-rate 0.2] [--steps 5]
        [--json out.json]

On the evaluation episodes ``metagna_tf.compare`` tests (episode seed 0, the same corruption),
each model adapts its linear head and backbone with its own inner loop for ``--steps`` steps;
then, on the adapted features (support BatchNorm statistics, as ``classify`` computes them):

* **head**: the adapted head's query accuracy (what ``compare`` reports);
* **prototypes**: a nearest-class-mean classifier on the same adapted features, its classes'
  means taken over the support images *as labelled* (the wrong labels included): the
  prototype head of ``--head proto`` (``inner_loop.prototype_head``), with no step;
* **agreement**: the share of queries on which the two predict the same class;
* **cos(dW, means)**: the cosine between each class's column of the head's change over the
  steps (adapted W minus the meta-learned W) and that class's support mean minus the mean of
  all support features, averaged over the classes: near 1 when the steps wrote the centred
  class means into the head, as one long step from near-uniform outputs does (the gradient of
  the cross-entropy with respect to W is then a sum of each class's support features).

Printed per model with the paired difference head - prototypes (95% t interval over the
episodes); the JSON adds the per-episode values.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from metagna_tf.algorithms.inner_loop import head_logits, prototype_head  # noqa: E402
from metagna_tf.checkpoints import find_checkpoint, load_trained  # noqa: E402
from metagna_tf.corruption import KINDS  # noqa: E402
from metagna_tf.episode_setup import EvaluationSettings, evaluation_episodes  # noqa: E402
from metagna_tf.metrics import paired_difference  # noqa: E402
from metagna_tf.preprocessing import to_model_input  # noqa: E402


def column_cosines(delta_w, means) -> np.ndarray:
    """Cosine per class between ``delta_w`` [d, ways] and centred class ``means`` [ways, d]."""
    centred = means - means.mean(axis=0, keepdims=True)
    num = np.sum(delta_w.T * centred, axis=1)
    den = np.linalg.norm(delta_w, axis=0) * np.linalg.norm(centred, axis=1)
    return num / np.maximum(den, 1e-30)


def episode(model, steps, support_x, support_y, query_x, query_y) -> dict:
    """One episode (0-255 images, as the samplers give them)."""
    config = model.config
    if model.head is None:
        raise SystemExit(f"{config.algorithm} with --head {config.head}: the prototype head is "
                         "the class means already; this analysis is for a linear head")
    sy = tf.constant(support_y)[None]
    adaptation = model.adapt(to_model_input(support_x, config.dtype)[None], sy, steps=steps)
    backbone, fast, stats = model.backbone.forward, adaptation.fast, adaptation.stats

    def features(images):
        x = tf.cast(to_model_input(images, config.dtype)[None], config.compute_dtype)
        return tf.cast(backbone(fast[:-2], x, stats=stats), tf.float64)

    h_s, h_q = features(support_x), features(query_x)
    head = [tf.cast(p, tf.float64) for p in fast[-2:]]
    by_head = tf.argmax(head_logits(h_q, head), -1)[0].numpy()
    protos = prototype_head(h_s, sy, model.head_ways)
    by_means = tf.argmax(head_logits(h_q, list(protos)), -1)[0].numpy()
    w0 = tf.cast(model.head.params[0], tf.float64).numpy()
    means = (protos[0][0].numpy() / 2.0).T  # [ways, d]: W = 2 mu
    query_y = np.asarray(query_y)
    return {"head": float(np.mean(by_head == query_y)),
            "prototypes": float(np.mean(by_means == query_y)),
            "agreement": float(np.mean(by_head == by_means)),
            "cos": float(np.mean(column_cosines(head[0][0].numpy() - w0, means)))}


def summarize(records: list[dict]) -> dict:
    values = {k: np.array([r[k] for r in records]) for k in records[0]}
    return {"episodes": len(records),
            **{k: float(v.mean()) for k, v in values.items()},
            "head_minus_prototypes": paired_difference(values["prototypes"], values["head"]),
            "per_episode": {k: v.tolist() for k, v in values.items()}}


def table(report: list[dict]) -> str:
    lines = ["| run | protocol | steps | head | prototypes | head − prototypes | agreement | "
             "cos(dW, means) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report:
        d = r["head_minus_prototypes"]
        lines.append(f"| {r['name']} | {r['protocol']} | {r['steps']} | {100 * r['head']:.2f} | "
                     f"{100 * r['prototypes']:.2f} | {100 * d['mean']:+.2f} ± "
                     f"{100 * d['ci95']:.2f}{' *' if d['excludes_zero'] else ''} | "
                     f"{100 * r['agreement']:.1f}% | {r['cos']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdirs", nargs="+", required=True)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--steps", type=int, help="test-time inner steps (default: each model's)")
    p.add_argument("--support-corruption", choices=KINDS, default="none")
    p.add_argument("--corruption-rate", type=float, default=0.2)
    p.add_argument("--protocol", choices=("standard", "cross_alphabet"),
                   help="default: each model's own")
    p.add_argument("--data-dir")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from metagna_tf.comparison import checkpoint_sha256, fingerprint, short_names

    report = []
    for name, workdir in zip(short_names(args.workdirs), args.workdirs, strict=True):
        model, _ = load_trained(workdir)
        steps = model.config.inner_steps_test if args.steps is None else args.steps
        settings = EvaluationSettings(episodes=args.episodes,
                                      protocol=args.protocol or model.config.protocol,
                                      ways=model.head_ways, shots=args.shots,
                                      queries=args.queries, corruption=args.support_corruption,
                                      corruption_rate=args.corruption_rate)
        chosen = evaluation_episodes(model.config, settings, data_dir=args.data_dir)
        records = [episode(model, steps, sx, sy, qx, qy) for bx, by, qxs, qys in chosen.batches
                   for sx, sy, qx, qy in zip(bx, by, qxs, qys, strict=True)]
        prefix = find_checkpoint(workdir)
        report.append({"name": name, "workdir": str(workdir), "checkpoint": prefix,
                       "checkpoint_sha256": checkpoint_sha256(prefix),
                       "protocol": chosen.config.protocol, "steps": steps,
                       "shots": args.shots, "support_corruption": args.support_corruption,
                       "corruption_rate": args.corruption_rate,
                       "episodes_sha256": fingerprint(chosen.batches), **summarize(records)})
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
