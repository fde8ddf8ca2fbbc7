"""REST client for a TF Serving model exported by ``serving.export``.

    python -m serving.client --url http://HOST:8501/v1/models/metagna \\
        --model exported/metagna --support my_support/ --query a.png b.jpg [--print-body]

Builds the request from image files with the training conversion
(``metagna_tf.data.images``: size, channels, inversion), posts it to
``URL:predict`` (``signature_name`` + the columnar ``inputs`` form, since the
support and query counts differ) and prints the same JSON as
``metagna_tf.predict``. The conversion's settings come from the exported folder
(``--model``, its ``assets.extra/model_info.json``) or from ``--image-size``,
``--channels`` and ``--invert``/``--no-invert``. ``--print-body`` prints the
request body instead of sending it.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from metagna_tf import cli

if TYPE_CHECKING:
    from metagna_tf.data.images import ImageOptions

SIGNATURE = "adapt_and_predict"


def request_body(support_x, support_y, num_classes: int, query_x,
                 signature: str = SIGNATURE) -> dict:
    """The ``:predict`` body for ``adapt_and_predict`` (uint8 images, int labels)."""
    return {"signature_name": signature, "inputs": {
        "support_images": np.asarray(support_x, np.uint8).tolist(),
        "support_labels": np.asarray(support_y, np.int32).tolist(),
        "num_classes": int(num_classes),
        "query_images": np.asarray(query_x, np.uint8).tolist()}}


def post_predict(url: str, body: Mapping, timeout: float = 120.0) -> dict:
    """POST ``body`` to ``url:predict``; returns the decoded ``outputs`` (a dict)."""
    data = json.dumps(body).encode()
    req = urllib.request.Request(url.rstrip("/") + ":predict", data=data,
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            reply = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        text = err.read().decode(errors="replace")
        try:
            text = json.loads(text).get("error", text)
        except json.JSONDecodeError:
            pass
        raise ValueError(f"{url}: the server refused the request (HTTP {err.code}): {text}") from err
    except urllib.error.URLError as err:
        raise ConnectionError(f"{url}: cannot reach the server ({err.reason})") from err
    outputs = reply.get("outputs")
    if not isinstance(outputs, dict):
        raise ValueError(f"{url}: unexpected response without named outputs: {str(reply)[:200]}")
    return outputs


def preprocessing(model_dir=None, image_size=None, channels=None, invert=None) -> ImageOptions:
    """The conversion settings: from an exported folder, else all three given explicitly."""
    from metagna_tf.data.images import ImageOptions

    if model_dir is not None:
        from serving.versions import read_info

        return ImageOptions.from_info(read_info(model_dir), f"{model_dir} model_info.json")
    if image_size is None or channels is None or invert is None:
        raise ValueError("give the exported model folder (--model), or the image size, channels "
                         "and inversion (--image-size, --channels and --invert/--no-invert), so "
                         "images are converted as in training")
    try:
        return ImageOptions(int(image_size), int(channels), bool(invert))
    except ValueError as err:
        raise ValueError(f"--image-size {image_size} --channels {channels}: {err}") from err


def adapt_and_predict(url: str, classes: Sequence[str], support_x, support_y, query_x,
                      files: Sequence, timeout: float = 120.0) -> dict:
    """Send one request; returns ``metagna_tf.predict``'s JSON for ``files``."""
    from metagna_tf.prediction import prediction_json

    outputs = post_predict(url, request_body(support_x, support_y, len(classes), query_x),
                           timeout)
    steps = len(outputs["support_loss"]) - 1
    return prediction_json(classes, files, np.asarray(outputs["probabilities"]), steps)


def main(argv=None) -> None:
    p = cli.parser("serving.client", __doc__)
    p.add_argument("--url", help="model URL, e.g. http://localhost:8501/v1/models/metagna "
                   "(required unless --print-body)")
    p.add_argument("--support", required=True, help="folder of class subfolders of images")
    p.add_argument("--query", required=True, nargs="+", help="image files or folders")
    p.add_argument("--model", help="the exported folder (serving.export --output, or a version)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--channels", type=int, choices=(1, 3))
    p.add_argument("--invert", action=argparse.BooleanOptionalAction,
                   help="Omniglot-style inversion (dark strokes on light -> bright on dark)")
    p.add_argument("--print-body", action="store_true", help="print the request body, send nothing")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds")
    args = p.parse_args(argv)
    if not args.print_body and not args.url:
        p.error("--url is required unless --print-body")
    from metagna_tf.data.images import load_image
    from metagna_tf.prediction import expand_queries, read_support

    try:
        options = preprocessing(args.model, args.image_size, args.channels, args.invert)
    except ValueError as err:
        p.error(str(err))
    try:
        classes, support_x, support_y = read_support(args.support, options)
    except (ValueError, FileNotFoundError) as err:
        raise type(err)(f"--support: {err}") from err
    files = expand_queries(args.query)
    query_x = np.stack([load_image(f, options) for f in files])
    if args.print_body:
        print(json.dumps(request_body(support_x, support_y, len(classes), query_x)))
        return
    print(json.dumps(adapt_and_predict(args.url, classes, support_x, support_y, query_x, files,
                                       args.timeout)))


if __name__ == "__main__":
    cli.run(main)
