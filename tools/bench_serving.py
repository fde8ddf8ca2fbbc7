"""Serving latency, side by side in one run (medians of repeated calls; ratios are the figures).

    python tools/bench_serving.py [--repeats 30] [--workdir W] [--app]

1. ``adapt_and_predict`` (5-way 5-shot, 15 queries) through the SavedModel loaded with the
   TF1 loader (as TF Serving and saved_model_cli load it) versus the in-process library
   (``prediction.Predictor``), at the Omniglot shapes (28x28x1, Conv-4 64 filters, strides)
   and the mini-ImageNet shapes (84x84x3, 32 filters, max-pooling). Goal: within 1.2x.
2. The adapted classifier at batch 1 and 64: onnxruntime and TFLite (LiteRT) versus the
   TensorFlow SavedModel of the same classifier. Goal: onnxruntime at least 10x faster at
   batch 1.
3. With ``--app``: the Gradio app's cold start (process launch to first page) and one
   adapt + classify round trip through ``gradio_client``.

Models are untrained (timing does not depend on the weights) unless ``--workdir`` is given;
Meta-GNA (the Arbiter's extra backward pass included). Threads: TensorFlow's defaults, and
onnxruntime/LiteRT with as many threads as the machine has cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from metagna_tf.algorithms.maml import MetaLearner  # noqa: E402
from metagna_tf.config import PRESETS, Config  # noqa: E402

SHAPES = {"omniglot 28x28x1": "omniglot_5w1s", "mini-ImageNet 84x84x3": "mini_imagenet_5w1s"}


def median_time(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def episode(config: Config, rng, ways=5, shots=5, queries=15):
    s, c = config.image_size, config.channels
    sx = rng.integers(0, 256, (ways * shots, s, s, c), dtype=np.uint8)
    sy = np.repeat(np.arange(ways, dtype=np.int32), shots)
    qx = rng.integers(0, 256, (queries, s, s, c), dtype=np.uint8)
    return sx, sy, qx


def bench_meta_model(model, repeats: int, tmp: Path) -> dict:
    from metagna_tf.prediction import Predictor
    from serving.export import export_meta_model
    from serving.tf1_loader import LoadedModel

    config = model.config
    steps = config.inner_steps_test
    sx, sy, qx = episode(config, np.random.default_rng(0))
    path = export_meta_model(model, tmp / config.dataset)
    served = LoadedModel(str(path))
    inputs = {"support_images": sx, "support_labels": sy, "num_classes": 5, "query_images": qx}
    fast = Predictor(model, steps)

    def in_process():
        adaptation = fast.adapt(sx, sy, 5)
        return fast.classify(adaptation, qx)

    out = {"inner_steps": steps,
           "saved_model_tf1_s": median_time(lambda: served.run("adapt_and_predict", inputs),
                                            repeats),
           "in_process_s": median_time(in_process, repeats)}
    out["ratio_saved_model_to_in_process"] = out["saved_model_tf1_s"] / out["in_process_s"]
    served.close()
    return out


def bench_adapted(model, repeats: int, tmp: Path) -> dict:
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    from serving.adapted import write_onnx, write_saved_model, write_tflite
    from serving.export_adapted import adapted_classifier

    config = model.config
    rng = np.random.default_rng(1)
    sx, sy, _ = episode(config, rng)
    classifier = adapted_classifier(model, [f"c{i}" for i in range(5)], sx, sy)
    out_dir = tmp / f"adapted_{config.dataset}"
    saved = tf.saved_model.load(str(write_saved_model(classifier, out_dir / "saved_model")))
    tf_fn = saved.signatures["probabilities"]
    threads = os.cpu_count() or 1
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(write_onnx(classifier, out_dir / "model.onnx")), options,
                                   providers=["CPUExecutionProvider"])
    interpreter = Interpreter(model_path=str(write_tflite(classifier, out_dir / "model.tflite")),
                              num_threads=threads)
    tfl_in = interpreter.get_input_details()[0]["index"]
    tfl_out = interpreter.get_output_details()[0]["index"]
    results = {}
    for batch in (1, 64):
        images = rng.integers(0, 256, (batch, config.image_size, config.image_size,
                                       config.channels), dtype=np.uint8)
        interpreter.resize_tensor_input(tfl_in, images.shape)
        interpreter.allocate_tensors()

        def tflite(images=images):
            interpreter.set_tensor(tfl_in, images)
            interpreter.invoke()
            return interpreter.get_tensor(tfl_out)

        t_tf = median_time(lambda images=images: tf_fn(images=tf.constant(images)), repeats)
        t_onnx = median_time(lambda images=images: session.run(["probabilities"],
                                                               {"images": images}), repeats)
        t_tfl = median_time(tflite, repeats)
        results[f"batch_{batch}"] = {
            "tensorflow_s": t_tf, "onnxruntime_s": t_onnx, "tflite_s": t_tfl,
            "onnxruntime_speedup_vs_tf": t_tf / t_onnx, "tflite_speedup_vs_tf": t_tf / t_tfl}
    return results


def bench_app(workdir: Path, repeats: int) -> dict:
    """Cold start (launch -> first page) and adapt + classify round trips of the app."""
    import socket
    import subprocess
    import urllib.request

    from gradio_client import Client, handle_file

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "serving.app", "--workdir", str(workdir),
                             "--port", str(port)], cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - start > 300:
                    raise RuntimeError("the app did not start") from None
                time.sleep(0.2)
        cold = time.perf_counter() - start
        client = Client(url, verbose=False)
        tmp = Path(tempfile.mkdtemp())
        rng = np.random.default_rng(2)
        from PIL import Image

        names, files = [], []
        for c in range(5):
            paths = []
            for i in range(5):
                p = tmp / f"c{c}_{i}.png"
                Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(p)
                paths.append(handle_file(str(p)))
            names.append(f"class {c}")
            files.append(paths)
        query = [handle_file(str(tmp / "c0_0.png"))] * 15
        pad = 10 - len(names)  # the page has 10 class slots

        def round_trip():
            client.predict(len(names), *names, *[""] * pad, *files, *[None] * pad,
                           api_name="/adapt")
            client.predict(query, None, api_name="/classify")

        trip = median_time(round_trip, max(3, repeats // 5), warmup=1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"cold_start_s": cold, "adapt_and_classify_round_trip_s": trip}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--workdir", type=Path, help="a trained workdir (default: untrained "
                        "models at the presets' shapes)")
    parser.add_argument("--app", action="store_true", help="also time the Gradio app "
                        "(needs --workdir)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    report = {"machine": {"cpus": os.cpu_count(), "tensorflow": tf.__version__},
              "meta_model": {}, "adapted_classifier": {}}
    for label, preset in SHAPES.items():
        if args.workdir is not None and label.startswith("mini"):
            continue
        if args.workdir is not None:
            from metagna_tf.checkpoints import load_trained

            model = load_trained(args.workdir)[0]
        else:
            tf.keras.utils.set_random_seed(0)
            model = MetaLearner(Config.from_dict({**PRESETS[preset], "algorithm": "metagna"}))
        report["meta_model"][label] = bench_meta_model(model, args.repeats, tmp)
        report["adapted_classifier"][label] = bench_adapted(model, args.repeats, tmp)
        print(json.dumps({label: {"meta_model": report["meta_model"][label],
                                  "adapted_classifier": report["adapted_classifier"][label]}},
                         indent=1), flush=True)
    if args.app:
        if args.workdir is None:
            parser.error("--app needs --workdir (a trained model)")
        report["app"] = bench_app(args.workdir, args.repeats)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
