"""Classify images with an exported ONNX classifier (onnxruntime).

    python -m serving.onnx_predict --model exported/my_classifier/model.onnx --query a.png b.jpg

Prints the same JSON as ``metagna_tf.predict``. Images go through the training
conversion (``metagna_tf.data.images``), with the size, channels and inversion
recorded in the model's metadata.
"""

from __future__ import annotations

import json

from metagna_tf import cli


class OnnxClassifier:
    """An exported ``model.onnx`` with its class names and preprocessing."""

    def __init__(self, path, threads: int | None = None):
        import onnxruntime as ort

        from metagna_tf.data.images import ImageOptions
        from serving.adapted import read_onnx_metadata

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ValueError(f"{path}: not a loadable ONNX model ({err})") from err
        self.meta = read_onnx_metadata(self.session)
        self.classes = list(self.meta["classes"])
        self.options = ImageOptions.from_info(self.meta, f"{path} metadata")

    def probabilities(self, images):
        """uint8 images (n, H, W, C), converted as in training -> (n, classes) probabilities."""
        return self.session.run(["probabilities"], {"images": images})[0]


def main(argv=None) -> None:
    p = cli.parser("serving.onnx_predict", __doc__)
    p.add_argument("--model", required=True, help="model.onnx written by serving.export_adapted")
    p.add_argument("--query", required=True, nargs="+", help="image files or folders")
    args = p.parse_args(argv)
    import numpy as np

    from metagna_tf.data.images import load_image
    from metagna_tf.prediction import expand_queries, prediction_json

    classifier = OnnxClassifier(args.model)
    files = expand_queries(args.query)
    images = np.stack([load_image(f, classifier.options) for f in files])
    print(json.dumps(prediction_json(classifier.classes, files, classifier.probabilities(images),
                                     classifier.meta.get("inner_steps", 0))))


if __name__ == "__main__":
    cli.run(main)
