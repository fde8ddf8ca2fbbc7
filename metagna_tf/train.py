"""Meta-train MAML, first-order MAML or Meta-GNA.

    python -m metagna_tf.train --dataset omniglot --algorithm metagna --workdir runs/omni
        [--config NAME_OR_JSON] [flags overriding it]

Rerunning the same command on the same workdir resumes from its latest checkpoint.
Ends with a short JSON object on stdout (iteration, validation accuracy, elapsed time,
best checkpoint, workdir) and one sentence on stderr; every metric of every checkpoint
interval is in <workdir>/metrics.jsonl and TensorBoard (<workdir>/tensorboard).
"""

from __future__ import annotations

import argparse
import json
import sys

from metagna_tf import cli


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.parser("metagna_tf.train", __doc__)
    p.add_argument("--workdir", required=True, help="checkpoints, config.json, metrics, logs")
    p.add_argument("--split", dest="train_split",
                   help="classes to meta-train on: train (default) or all (cross-domain); "
                   "same as --train-split")
    p.add_argument("--verbose", default="auto", help="Keras verbosity: auto, 0, 1 or 2")
    p.add_argument("--strategy", choices=("default", "mirrored", "multiworker"),
                   default="default", help="tf.distribute: one device, all local devices, or "
                   "several machines (TF_CONFIG); see docs/scaling.md")
    cli.add_training_flags(p, exclude=("train_split",))
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace):
    config = cli.training_config(args)
    return config.replace(train_split=args.train_split) if args.train_split else config


def main(argv=None) -> None:
    args = parse_args(argv)
    from metagna_tf.training import readable_summary, run_summary, train

    config = config_from_args(args)
    verbose = args.verbose if args.verbose == "auto" else int(args.verbose)
    last = train(config, args.workdir, data_dir=args.data_dir, verbose=verbose,
                 download=args.download, strategy=args.strategy)
    summary = run_summary(args.workdir, last)
    print(json.dumps(summary))
    print(readable_summary(summary), file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
