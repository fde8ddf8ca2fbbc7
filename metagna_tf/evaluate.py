"""Evaluate a trained workdir: mean query accuracy and 95% CI over episodes.

    python -m metagna_tf.evaluate --workdir runs/omni [--dataset omniglot] [--split test]
        [--episodes 600] [--ways 5] [--shots 1] [--queries 1] [--inner-steps 3] [--seed 0]
        [--support-corruption none|occlusion|noise|rotation|label --corruption-rate 0.2]

Prints one JSON object and writes it into the workdir.
"""

from __future__ import annotations

import argparse
import json
import sys

from metagna_tf.cli import run


def add_corruption_flags(p: argparse.ArgumentParser) -> None:
    from metagna_tf.corruption import KINDS

    p.add_argument("--support-corruption", choices=KINDS, default="none",
                   help="damage a fraction of each episode's support images (seeded; the same "
                   "for every model; see metagna_tf/corruption.py)")
    p.add_argument("--corruption-rate", type=float, default=0.2,
                   help="fraction of support images corrupted per episode (at least one)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m metagna_tf.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--dataset", help="evaluation dataset (default: the training dataset)")
    p.add_argument("--data-dir", help="dataset folder (default as for train)")
    p.add_argument("--download", action="store_true", help="fetch the dataset through TFDS")
    p.add_argument("--split", default="test")
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--ways", type=int)
    p.add_argument("--shots", type=int)
    p.add_argument("--queries", type=int)
    p.add_argument("--inner-steps", type=int, help="default: the config's inner_steps_test")
    p.add_argument("--seed", type=int, default=0, help="episode seed (same for every model)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    add_corruption_flags(p)
    args = p.parse_args(argv)
    from metagna_tf.evaluation import evaluate_workdir

    result = evaluate_workdir(args.workdir, dataset=args.dataset, data_dir=args.data_dir,
                              split=args.split, episodes=args.episodes, ways=args.ways,
                              shots=args.shots, queries=args.queries,
                              inner_steps=args.inner_steps, seed=args.seed,
                              checkpoint=args.checkpoint, download=args.download,
                              corruption=args.support_corruption,
                              corruption_rate=args.corruption_rate)
    print(json.dumps(result))
    print(readable(result), file=sys.stderr)


def readable(result: dict) -> str:
    """``5-way 1-shot: 87.0 +/- 2.1 % over 200 episodes`` (+ corruption, if any)."""
    text = (f"{result['ways']}-way {result['shots']}-shot: {100 * result['accuracy']:.1f} +/- "
            f"{100 * result['ci95']:.1f} % over {result['episodes']} episodes")
    if result.get("support_corruption", "none") != "none":
        text += (f" ({result['support_corruption']} corruption of "
                 f"{result['corruption_rate']:g} of the support images)")
    return text


if __name__ == "__main__":
    run(main)
