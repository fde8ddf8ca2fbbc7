"""Meta-train MAML, first-order MAML or Meta-GNA.

    python -m metagna_tf.train --dataset omniglot --algorithm metagna --workdir runs/omni
        [--config NAME_OR_JSON] [flags overriding it]

Rerunning the same command on the same workdir resumes from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import json

from metagna_tf.cli import run

# flag -> Config field; the flags override --config.
OVERRIDES = {
    "dataset": str, "algorithm": str, "ways": int, "shots": int, "queries": int,
    "meta_batch_size": int, "inner_steps": int, "inner_steps_test": int, "inner_lr": float,
    "meta_lr": float, "lr_schedule": str, "iterations": int, "checkpoint_every": int,
    "val_episodes": int, "seed": int, "jit": str, "image_size": int, "channels": int, "filters": int,
    "gna_direction": str, "gna_sample_grads": str, "dtype": str,
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m metagna_tf.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="checkpoints, config.json, metrics, logs")
    p.add_argument("--config", help="a preset name or a JSON file of config keys")
    p.add_argument("--data-dir", help="dataset folder (default: $METAGNA_DATA_DIR, else TFDS)")
    p.add_argument("--split", dest="train_split",
                   help="classes to meta-train on: train (default) or all (cross-domain)")
    p.add_argument("--verbose", default="auto", help="Keras verbosity: auto, 0, 1 or 2")
    for name, kind in OVERRIDES.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace):
    from metagna_tf.config import default_config, load_config

    config = load_config(args.config) if args.config else default_config(args.dataset or "omniglot")
    changes = {k: getattr(args, k) for k in [*OVERRIDES, "train_split"]
               if getattr(args, k) is not None}
    return config.replace(**changes)


def main(argv=None) -> None:
    args = parse_args(argv)
    from metagna_tf.training import set_global_determinism, train

    config = config_from_args(args)
    set_global_determinism(config.seed)
    verbose = args.verbose if args.verbose == "auto" else int(args.verbose)
    last = train(config, args.workdir, data_dir=args.data_dir, verbose=verbose)
    print(json.dumps(last))


if __name__ == "__main__":
    run(main)
