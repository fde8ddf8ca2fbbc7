"""The meta-model SavedModel: signatures, the TF1 loader, saved_model_cli, REST bodies, bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from metagna_tf.algorithms.maml import MetaLearner
from metagna_tf.checkpoints import load_trained
from metagna_tf.data import image_options
from metagna_tf.data.images import load_image
from metagna_tf.prediction import Predictor, read_support
from serving.export import export_meta_model
from serving.tf1_loader import LoadedModel
from serving.versions import read_info
from tests.cli_runner import run_module
from tests.conftest import tiny_config
from tests.tf_serving_stub import TFServingStub, decode_columnar

SAVED_MODEL_CLI = Path(sys.executable).with_name("saved_model_cli")


@pytest.fixture(scope="module")
def model(trained_workdir):
    return load_trained(trained_workdir)[0]


@pytest.fixture(scope="module")
def exported(exported_model):
    return exported_model  # conftest: exported once per run, read-only


@pytest.fixture(scope="module")
def task(model, support_and_queries):
    support_dir, queries, _ = support_and_queries
    options = image_options(model.config)
    classes, sx, sy = read_support(support_dir, options)
    qx = np.stack([load_image(q, options) for q in queries])
    return classes, sx, sy, qx


@pytest.fixture(scope="module")
def predictor(model):
    """The library's adapt-then-classify at the export's 3 steps (traced once, reused)."""
    return Predictor(model, 3)


@pytest.fixture(scope="module")
def expected(predictor, task):
    """The library's probabilities for the shared task: what every served path must give."""
    _, sx, sy, qx = task
    return predictor.predict(sx, sy, qx)


@pytest.fixture(scope="module")
def reloaded(exported):
    """The export loaded back by TensorFlow 2 (``tf.saved_model.load``)."""
    return tf.saved_model.load(str(exported))


@pytest.fixture(scope="module")
def tf1_model(exported):
    loaded = LoadedModel(str(exported))
    yield loaded
    loaded.close()


def run_cli(*args, check=True):
    proc = run_module(*args)
    if check and proc.returncode:
        raise AssertionError(f"{args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def predict_reference(trained_workdir, support_and_queries) -> dict:
    """The predict CLI's JSON for the shared task: what every serving path must reproduce."""
    support_dir, queries, _ = support_and_queries
    return json.loads(run_cli("metagna_tf.predict", "--workdir", trained_workdir,
                              "--support", support_dir, "--query", *queries).stdout)


def test_export_layout_and_model_info(exported, model):
    assert exported.name == "1" and (exported / "saved_model.pb").is_file()
    info = read_info(exported.parent)
    assert info["image_size"] == 28 and info["channels"] == 1 and info["invert"] is True
    assert info["inner_steps"] == model.config.inner_steps_test == 3
    assert info["tensor_names"] == model.tensor_names


def test_every_signature_after_reload_matches_the_library(reloaded, model, task, predictor,
                                                          expected):
    classes, sx, sy, qx = task
    sig = reloaded.signatures
    assert set(sig) == {"serving_default", "adapt_and_predict", "adapt", "classify"}
    args = dict(support_images=tf.constant(sx), support_labels=tf.constant(sy),
                num_classes=tf.constant(len(classes)))
    out = sig["adapt_and_predict"](**args, query_images=tf.constant(qx))
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(tf.nn.softmax(out["logits"]).numpy(), expected, atol=1e-5)
    adapted = predictor.adapt(sx, sy)
    np.testing.assert_allclose(out["support_loss"].numpy(), adapted.support_losses.numpy(),
                               rtol=1e-5)
    assert out["arbiter_scales"].shape == (3, len(model.tensor_names))
    np.testing.assert_allclose(out["arbiter_scales"].numpy(), adapted.scales.numpy(), rtol=1e-5)
    default = sig["serving_default"](**args, query_images=tf.constant(qx))
    np.testing.assert_array_equal(default["probabilities"].numpy(), out["probabilities"].numpy())

    weights = sig["adapt"](**args)  # adapt once, classify many times
    expected_names = model.tensor_names + [f"bn{b}_{k}" for b in range(1, 5)
                                           for k in ("mean", "variance")]
    assert sorted(weights) == sorted(expected_names)
    for half in (qx[:7], qx[7:]):
        got = sig["classify"](**weights, images=tf.constant(half))["probabilities"].numpy()
        np.testing.assert_allclose(got, predictor.predict(sx, sy, half), atol=1e-5)


def test_any_number_of_classes_and_shots(reloaded, predictor, task):
    _, sx, sy, qx = task
    keep = sy < 3  # 3 classes, 5 shots each
    out = reloaded.signatures["adapt_and_predict"](
        support_images=tf.constant(sx[keep]), support_labels=tf.constant(sy[keep]),
        num_classes=tf.constant(3), query_images=tf.constant(qx[:4]))
    assert out["probabilities"].shape == (4, 3)
    np.testing.assert_allclose(out["probabilities"].numpy(),
                               predictor.predict(sx[keep], sy[keep], qx[:4]), atol=1e-5)


def test_maml_export_reports_unit_scales_and_takes_the_next_version(tmp_path):
    config = tiny_config(dtype="float32", activation="relu", downsample="stride",
                         algorithm="maml", image_size=28)
    path = export_meta_model(MetaLearner(config), tmp_path / "maml", inner_steps=2)
    rng = np.random.default_rng(0)
    sx = rng.integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    out = tf.saved_model.load(str(path)).signatures["adapt_and_predict"](
        support_images=tf.constant(sx), support_labels=tf.constant([0, 1, 0, 1], tf.int32),
        num_classes=tf.constant(2), query_images=tf.constant(sx[:1]))
    np.testing.assert_array_equal(out["arbiter_scales"].numpy(), np.ones((2, 14)))
    assert out["support_loss"].shape == (3,)
    # versions: the next free number; an existing version is never replaced
    model = MetaLearner(config)
    assert export_meta_model(model, path.parent).name == "2"
    with pytest.raises(FileExistsError, match="already exists"):
        export_meta_model(model, path.parent, version=1)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]


def test_saved_model_cli_show_and_run(exported, expected, task, tmp_path):
    _, sx, sy, qx = task
    show = subprocess.run([SAVED_MODEL_CLI, "show", "--dir", exported, "--all"],
                          capture_output=True, text=True, timeout=300, check=True).stdout
    for name in ("serving_default", "adapt_and_predict", "adapt", "classify"):
        assert f"signature_def['{name}']" in show
    for name in ("support_images", "support_labels", "num_classes", "query_images",
                 "probabilities", "support_loss", "arbiter_scales", "bn4_variance", "head_kernel"):
        assert f"['{name}']" in show
    for name, array in (("sx", sx), ("sy", sy), ("qx", qx), ("n", np.int32(5))):
        np.save(tmp_path / f"{name}.npy", array)
    out_dir = tmp_path / "out"
    subprocess.run([SAVED_MODEL_CLI, "run", "--dir", exported, "--tag_set", "serve",
                    "--signature_def", "adapt_and_predict", "--inputs",
                    f"support_images={tmp_path / 'sx.npy'};support_labels={tmp_path / 'sy.npy'};"
                    f"query_images={tmp_path / 'qx.npy'};num_classes={tmp_path / 'n.npy'}",
                    "--outdir", out_dir],
                   capture_output=True, text=True, timeout=300, check=True)
    probabilities = np.load(out_dir / "probabilities.npy")
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_client_body_through_the_tf1_loader_gives_predict(exported, predict_reference,
                                                          support_and_queries, tf1_model):
    support_dir, queries, _ = support_and_queries
    body = json.loads(run_cli("serving.client", "--model", exported.parent, "--support",
                              support_dir, "--query", *queries, "--print-body").stdout)
    assert body["signature_name"] == "adapt_and_predict"
    assert set(body["inputs"]) == {"support_images", "support_labels", "num_classes",
                                   "query_images"}
    signature, inputs = decode_columnar(body)
    out = tf1_model.run(signature, inputs)
    reference = predict_reference
    for row, pred in zip(out["probabilities"], reference["predictions"], strict=True):
        np.testing.assert_allclose(row, [pred["probabilities"][c] for c in reference["classes"]],
                                   atol=1e-5)


def test_client_over_http_prints_predict_json(exported, predict_reference, support_and_queries):
    support_dir, queries, _ = support_and_queries
    reference = predict_reference
    with TFServingStub({"metagna": str(exported)}) as base:
        out = run_cli("serving.client", "--url", f"{base}/metagna", "--model", exported,
                      "--support", support_dir, "--query", *queries)
        got = json.loads(out.stdout)
        bad = run_cli("serving.client", "--url", f"{base}/nothing", "--model", exported,
                      "--support", support_dir, "--query", queries[0], check=False)
    assert got["classes"] == reference["classes"] and got["inner_steps"] == 3
    for a, b in zip(got["predictions"], reference["predictions"], strict=True):
        assert a["file"] == b["file"] and a["label"] == b["label"]
        for c in got["classes"]:
            assert a["probabilities"][c] == pytest.approx(b["probabilities"][c], abs=1e-5)
    assert bad.returncode == 2 and "HTTP 404" in bad.stderr and "Traceback" not in bad.stderr


BAD_REQUESTS = {
    "label >= num_classes": (lambda sx, sy, q: (sx, np.where(sy == 4, 5, sy), 5, q),
                             "support_labels must be in 0..num_classes-1"),
    "negative label": (lambda sx, sy, q: (sx, np.where(sy == 4, -1, sy), 5, q),
                       "support_labels must be in 0..num_classes-1"),
    "a class without images": (lambda sx, sy, q: (sx, np.where(sy == 4, 3, sy), 5, q),
                               "every class 0..num_classes-1 needs at least one support image"),
    "empty support set": (lambda sx, sy, q: (sx[:0], sy[:0], 5, q), "support_images is empty"),
    "one class": (lambda sx, sy, q: (sx[sy == 0], sy[sy == 0], 1, q),
                  "num_classes must be at least 2"),
    "labels and images differ": (lambda sx, sy, q: (sx, sy[:-1], 5, q),
                                 "one label per support image"),
    "wrong image size": (lambda sx, sy, q: (sx[:, :27], sy, 5, q),
                         "support_images must be uint8 images of shape [n, 28, 28, 1]"),
    "wrong channel count": (lambda sx, sy, q: (sx, sy, 5, np.repeat(q, 3, axis=-1)),
                            "images must be uint8 images of shape [n, 28, 28, 1]"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_named_and_the_model_keeps_serving(case, tf1_model, expected, task):
    _, sx, sy, qx = task
    make, message = BAD_REQUESTS[case]
    s, y, n, q = make(sx, sy, qx)
    inputs = {"support_images": s, "support_labels": y, "num_classes": n, "query_images": q}
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        tf1_model.run("adapt_and_predict", inputs)
    good = {"support_images": sx, "support_labels": sy, "num_classes": 5, "query_images": qx}
    out = tf1_model.run("adapt_and_predict", good)
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)


def test_export_cli_and_its_errors(trained_workdir, tmp_path):
    out = run_cli("serving.export", "--workdir", trained_workdir, "--output", tmp_path / "m",
                  "--version", "7", "--inner-steps", "1")
    assert out.stdout.strip().endswith(str(tmp_path / "m" / "7"))
    assert read_info(tmp_path / "m")["inner_steps"] == 1
    again = run_cli("serving.export", "--workdir", trained_workdir, "--output", tmp_path / "m",
                    "--version", "7", check=False)
    assert again.returncode == 2 and f"{tmp_path / 'm' / '7'} already exists" in again.stderr
    missing = run_cli("serving.export", "--workdir", tmp_path / "none", "--output",
                      tmp_path / "x", check=False)
    assert missing.returncode == 2 and "no such workdir" in missing.stderr
    # a copied best/ folder is self-contained
    best = tmp_path / "best_copy"
    shutil.copytree(trained_workdir / "best", best)
    run_cli("serving.export", "--workdir", best, "--output", tmp_path / "from_best")
