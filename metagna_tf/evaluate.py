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

from metagna_tf import cli


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.parser("metagna_tf.evaluate", __doc__)
    p.add_argument("--workdir", required=True)
    cli.add_episode_flags(p, dataset_default="the training dataset")
    p.add_argument("--inner-steps", type=int, help="default: the config's inner_steps_test")
    cli.add_checkpoint_flag(p)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    from metagna_tf.evaluation import evaluate_workdir

    result = evaluate_workdir(args.workdir, cli.evaluation_settings(args),
                              inner_steps=args.inner_steps, checkpoint=args.checkpoint,
                              data_dir=args.data_dir, download=args.download)
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
    cli.run(main)
