"""What a linear head predicts before any inner step, and why.

    python tools/zero_step_head.py --workdirs runs/maml runs/metagna [--episodes 600]
        [--shots 1] [--protocol cross_alphabet] [--json out.json]

On the evaluation episodes (episode seed 0, the episodes ``metagna_tf.compare`` tests), each
query's zero-step logits ``W^T h + b`` (``h``: its features under the support set's BatchNorm
statistics, as ``classify`` computes them) split into a part every query of the episode shares
and a part that differs between queries:

    W^T h + b = (W^T mean(h) + b) + W^T (h - mean(h))     (mean over the episode's queries)

A head whose shared part spreads the classes further apart than the individual part does
predicts the same class for every query of an episode: 1/ways accuracy in every episode, with
no variation between episodes. Printed per model: the accuracy, the share of episodes whose
queries all get one class, how often each of the head's outputs is predicted, and the two
parts' ranges over the classes (the shared part's per episode, the individual part's per query;
means over the episodes); the JSON adds the norms of the head's W and b.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from metagna_tf.checkpoints import load_trained  # noqa: E402
from metagna_tf.episode_setup import EvaluationSettings, evaluation_episodes  # noqa: E402
from metagna_tf.preprocessing import to_model_input  # noqa: E402


def episode_head(model, support_x, support_y, query_x, query_y) -> dict:
    """One episode (0-255 images, as the samplers give them) through the head with 0 steps."""
    config = model.config
    if model.head is None:
        raise SystemExit(f"{config.algorithm} with --head {config.head}: the prototype head is "
                         "fitted to the support set; this analysis is for a linear head")
    adaptation = model.adapt(to_model_input(support_x, config.dtype)[None],
                             tf.constant(support_y)[None], steps=0)
    queries = tf.cast(to_model_input(query_x, config.dtype)[None], config.compute_dtype)
    h = model.backbone.forward(adaptation.fast[:-2], queries, stats=adaptation.stats)
    h = tf.cast(h[0], tf.float64).numpy()
    w, b = (tf.cast(p[0], tf.float64).numpy() for p in adaptation.fast[-2:])
    shared = h.mean(axis=0) @ w + b  # [ways]
    individual = (h - h.mean(axis=0)) @ w  # [m, ways]
    predicted = (shared + individual).argmax(axis=-1)
    return {"logits": shared + individual, "predicted": predicted,
            "accuracy": float(np.mean(predicted == np.asarray(query_y))),
            "shared_range": float(np.ptp(shared)),
            "individual_range": float(np.ptp(individual, axis=1).mean())}


def summarize(records: list[dict], ways: int) -> dict:
    accuracy = np.array([r["accuracy"] for r in records]) * 100
    counts = np.bincount(np.concatenate([r["predicted"] for r in records]), minlength=ways)
    return {"episodes": len(records), "accuracy": float(accuracy.mean()),
            "accuracy_std": float(accuracy.std()),
            "one_class_episodes": float(np.mean([len(set(r["predicted"].tolist())) == 1
                                                 for r in records])),
            "predicted_per_output": counts.tolist(),
            "shared_range": float(np.mean([r["shared_range"] for r in records])),
            "individual_range": float(np.mean([r["individual_range"] for r in records]))}


def table(report: list[dict]) -> str:
    """The report as a markdown table."""
    lines = ["| run | protocol | accuracy, 0 steps (std over episodes) | episodes with one output "
             "for every query | queries per head output | range over outputs: shared part | "
             "individual part |", "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['name']} | {r['protocol']} | {r['accuracy']:.2f} ({r['accuracy_std']:.2f}) "
              f"| {100 * r['one_class_episodes']:.1f}% | {r['predicted_per_output']} | "
              f"{r['shared_range']:.3f} | {r['individual_range']:.3f} |" for r in report]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdirs", nargs="+", required=True)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--protocol", choices=("standard", "cross_alphabet"),
                   help="default: each model's own")
    p.add_argument("--data-dir")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    from metagna_tf.comparison import fingerprint, short_names

    report = []
    for name, workdir in zip(short_names(args.workdirs), args.workdirs, strict=True):
        model, _ = load_trained(workdir)
        settings = EvaluationSettings(episodes=args.episodes,
                                      protocol=args.protocol or model.config.protocol,
                                      ways=model.head_ways, shots=args.shots,
                                      queries=args.queries)
        chosen = evaluation_episodes(model.config, settings, data_dir=args.data_dir)
        records = [episode_head(model, sx, sy, qx, qy) for bx, by, qxs, qys in chosen.batches
                   for sx, sy, qx, qy in zip(bx, by, qxs, qys, strict=True)]
        w, b = (float(tf.norm(v)) for v in model.head.params)
        report.append({"name": name, "protocol": chosen.config.protocol, "shots": args.shots,
                       "episodes_sha256": fingerprint(chosen.batches),
                       "head_kernel_norm": w, "head_bias_norm": b,
                       **summarize(records, model.head_ways)})
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
