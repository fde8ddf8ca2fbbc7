"""Export the meta-learned initialization plus its adaptation routine for TF Serving.

    python -m serving.export --workdir runs/omniglot_metagna --output exported/metagna
        [--version N] [--inner-steps N] [--checkpoint best|latest]

Writes ``OUTPUT/<version>/`` (a TF Serving model base path; the version defaults
to the next free number) holding a SavedModel with the signatures
``adapt_and_predict`` (= ``serving_default``), ``adapt`` and ``classify``, and
``assets.extra/model_info.json`` (image size, channels, preprocessing, names).
Prints the version folder. See docs/serving.md for the request bodies.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metagna_tf.cli import run


def export_meta_model(model, output: str | Path, *, version: int | None = None,
                      inner_steps: int | None = None, source: dict | None = None) -> Path:
    """Write ``model`` (a ``MetaLearner``) as ``output/<version>/``; returns that folder."""
    import tensorflow as tf

    from metagna_tf.data import image_options
    from serving.meta_model import MetaModelModule
    from serving.versions import INFO_FILE, new_version_dir

    config = model.config
    steps = config.inner_steps_test if inner_steps is None else inner_steps
    module = MetaModelModule(model, steps)
    options = image_options(config)
    info = {
        "format": "metagna-tf meta-model",
        "signatures": ["adapt_and_predict", "adapt", "classify", "serving_default"],
        **options.as_dict(), "dtype": config.dtype, "algorithm": config.algorithm,
        "inner_steps": steps, "tensor_names": module.tensor_names,
        "head_ways": module.head_ways,  # None: any number of classes (prototype head)
        "stat_names": module.stat_names, "source": source or {}, "config": config.to_dict(),
    }
    with new_version_dir(output, version) as (tmp, final):
        tf.saved_model.save(module, str(tmp), signatures=module.signatures())
        (tmp / "assets.extra").mkdir(exist_ok=True)
        (tmp / "assets.extra" / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return final


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m serving.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True,
                   help="a training workdir, or a checkpoint folder such as a copied best/")
    p.add_argument("--output", required=True, help="TF Serving model base path to write into")
    p.add_argument("--version", type=int, help="version number (default: the next free one)")
    p.add_argument("--inner-steps", type=int,
                   help="inner steps on the server (default: the run's inner_steps_test)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    args = p.parse_args(argv)
    from metagna_tf.checkpoints import load_trained

    model, info = load_trained(args.workdir, args.checkpoint)
    path = export_meta_model(model, args.output, version=args.version,
                             inner_steps=args.inner_steps,
                             source={"workdir": str(args.workdir), **info})
    print(path)


if __name__ == "__main__":
    run(main)
