"""Adapt to a support folder and export the adapted classifier for any runtime.

    python -m serving.export_adapted --workdir runs/omniglot_metagna --support my_support/
        --output exported/my_classifier [--format saved_model,onnx,tflite] [--inner-steps N]

The support folder holds one subfolder per class (its name is the class name), as for
``metagna_tf.predict``. Writes, in OUTPUT:

    saved_model/<version>/   TF Serving layout; serving_default(images) -> probabilities, label
    model.onnx               input "images" (uint8 NHWC), output "probabilities"; class names
                             and preprocessing in the model's metadata
    model.tflite             TFLite builtins only; same input and output
    classes.json             class names and preprocessing

Existing files are not replaced unless --overwrite (a new saved_model version is added).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metagna_tf.cli import run

FORMATS = ("saved_model", "onnx", "tflite")
FILES = {"onnx": "model.onnx", "tflite": "model.tflite"}


def adapted_classifier(model, class_names, support_x, support_y, inner_steps: int | None = None,
                       source: dict | None = None):
    """Adapt ``model`` (a MetaLearner) to uint8 support images -> ``AdaptedClassifier``."""
    from metagna_tf.data import image_options
    from metagna_tf.prediction import Predictor
    from serving.adapted import AdaptedClassifier

    config = model.config
    predictor = Predictor(model, inner_steps)
    steps = predictor.steps
    adaptation = predictor.adapt(support_x, support_y, len(class_names))
    options = image_options(config)
    info = {**options.as_dict(), "algorithm": config.algorithm, "inner_steps": steps,
            "source": source or {}}
    return AdaptedClassifier(model.backbone.spec, adaptation, class_names, info, config.dtype)


def write_formats(classifier, output: str | Path, formats=FORMATS, *, version: int | None = None,
                  overwrite: bool = False) -> dict[str, str]:
    """Write the requested formats and classes.json into ``output``; returns their paths."""
    from serving.adapted import write_classes, write_onnx, write_saved_model, write_tflite

    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; choose from {', '.join(FORMATS)}")
    output = Path(output)
    targets = [output / FILES[f] for f in formats if f in FILES] + [output / "classes.json"]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s): pass --overwrite or "
                              "choose another --output")
    written = {}
    # the slow conversions first, classes.json last: a failure leaves no misleading index
    if "onnx" in formats:
        written["onnx"] = str(write_onnx(classifier, output / FILES["onnx"]))
    if "tflite" in formats:
        written["tflite"] = str(write_tflite(classifier, output / FILES["tflite"]))
    if "saved_model" in formats:
        written["saved_model"] = str(write_saved_model(classifier, output / "saved_model",
                                                       version))
    written["classes"] = str(write_classes(classifier, output / "classes.json"))
    return written


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m serving.export_adapted", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True,
                   help="a training workdir, or a checkpoint folder such as a copied best/")
    p.add_argument("--support", required=True, help="folder of class subfolders of images")
    p.add_argument("--output", required=True, help="folder to write the formats into")
    p.add_argument("--format", default=",".join(FORMATS),
                   help=f"comma-separated subset of {','.join(FORMATS)} (default: all)")
    p.add_argument("--inner-steps", type=int, help="default: the run's inner_steps_test")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    p.add_argument("--version", type=int, help="saved_model version (default: the next free one)")
    p.add_argument("--overwrite", action="store_true", help="replace model.onnx, model.tflite "
                   "and classes.json if present")
    args = p.parse_args(argv)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        p.error(f"--format: unknown or empty {unknown or args.format!r}; choose from "
                f"{','.join(FORMATS)}")
    import json

    from metagna_tf.checkpoints import load_trained
    from metagna_tf.data import image_options
    from metagna_tf.prediction import read_support

    model, info = load_trained(args.workdir, args.checkpoint)
    try:
        classes, support_x, support_y = read_support(args.support, image_options(model.config))
    except (ValueError, FileNotFoundError) as err:
        raise type(err)(f"--support: {err}") from err
    classifier = adapted_classifier(model, classes, support_x, support_y, args.inner_steps,
                                    source={"workdir": str(args.workdir), **info,
                                            "support": str(args.support)})
    print(json.dumps(write_formats(classifier, args.output, formats, version=args.version,
                                   overwrite=args.overwrite)))


if __name__ == "__main__":
    run(main)
