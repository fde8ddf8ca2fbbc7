"""Compare trained models on the very same episodes, with paired confidence intervals.

    python -m metagna_tf.compare --workdirs runs/maml runs/metagna [...] --episodes 600
        [--pixel-nn] [--inner-steps 0 1 3 10] [--inner-lr 0.1 0.025]
        [--reuse OLD.json [--keep-earlier]]
        [same flags as evaluate]

Prints a JSON object (stdout) and a small table (stderr): per model the mean
query accuracy with its 95% CI; per pair the mean per-episode difference with a
paired 95% t interval. ``--pixel-nn`` adds the pixel-space nearest-neighbour
baseline; several ``--inner-steps`` evaluate every model at each step count
(0 = the prototype head alone), several ``--inner-lr`` at each test-time inner
learning rate (for Meta-GNA and LSLR the learned scales multiply it, as in
training).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from metagna_tf import cli


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.parser("metagna_tf.compare", __doc__)
    p.add_argument("--workdirs", nargs="+", required=True)
    p.add_argument("--pixel-nn", action="store_true", help="add the pixel nearest-neighbour "
                   "baseline")
    p.add_argument("--inner-steps", type=int, nargs="+",
                   help="test-time inner steps (default: each model's inner_steps_test)")
    p.add_argument("--inner-lr", type=float, nargs="+",
                   help="test-time inner learning rates (default: each model's own)")
    cli.add_episode_flags(p, dataset_default="the first model's")
    p.add_argument("--protocol", choices=("standard", "cross_alphabet"),
                   help="class split protocol (default: the first model's)")
    cli.add_checkpoint_flag(p)
    p.add_argument("--output", help="also write the JSON to this file")
    p.add_argument("--reuse", metavar="JSON", help="an earlier --output on the same episodes: "
                   "models in it (the same checkpoint contents, inner steps and learning rate) "
                   "are not evaluated again; an error if its episodes differ")
    p.add_argument("--keep-earlier", action="store_true", help="with --reuse: keep its other "
                   "models too (unless from one of --workdirs), to extend a study whose earlier "
                   "run folders are gone")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    reuse = None
    if args.reuse:
        try:
            reuse = json.loads(Path(args.reuse).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"--reuse {args.reuse}: cannot read it ({e})") from e
        if not isinstance(reuse, dict) or not isinstance(reuse.get("models"), list):
            raise ValueError(f"--reuse {args.reuse}: not a metagna_tf.compare result")
    elif args.keep_earlier:
        raise ValueError("--keep-earlier needs --reuse JSON")
    from metagna_tf.comparison import compare, table

    result = compare(args.workdirs, cli.evaluation_settings(args),
                     baselines=["pixel_nn"] if args.pixel_nn else [],
                     inner_steps=args.inner_steps, inner_lrs=args.inner_lr,
                     checkpoint=args.checkpoint, data_dir=args.data_dir,
                     download=args.download, reuse=reuse, keep_earlier=args.keep_earlier)
    text = json.dumps(result)
    if args.output:  # written whole, then renamed: an interrupted run leaves the old file
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        partial.write_text(json.dumps(result, indent=1) + "\n")
        partial.replace(out)
    print(text)
    print(table(result), file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
