"""Adapt to labelled support images, then classify query images.

    python -m metagna_tf.predict --workdir runs/omni --support SUPPORT_DIR --query a.png b.jpg

SUPPORT_DIR holds one subfolder per class (the folder name is the class name).
Prints JSON ``{"classes": [...], "predictions": [{"file", "label", "probabilities"}]}``.
"""

from __future__ import annotations

import json

from metagna_tf import cli


def main(argv=None) -> None:
    p = cli.parser("metagna_tf.predict", __doc__)
    p.add_argument("--workdir", required=True)
    p.add_argument("--support", required=True, help="folder of class subfolders")
    p.add_argument("--query", required=True, nargs="+", help="image files or folders")
    p.add_argument("--inner-steps", type=int, help="default: the config's inner_steps_test")
    cli.add_checkpoint_flag(p)
    args = p.parse_args(argv)
    from metagna_tf.prediction import predict_folder

    print(json.dumps(predict_folder(args.workdir, args.support, args.query, args.inner_steps,
                                    args.checkpoint)))


if __name__ == "__main__":
    cli.run(main)
