"""Adapted classifiers: BatchNorm folding, SavedModel, ONNX (onnxruntime), TFLite (LiteRT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from metagna_tf.checkpoints import load_trained
from metagna_tf.data import image_options
from metagna_tf.data.images import load_image
from metagna_tf.prediction import Predictor, read_support
from serving.adapted import read_onnx_metadata
from serving.export_adapted import adapted_classifier, write_formats
from serving.versions import read_info
from tests.cli_runner import run_module


@pytest.fixture(scope="module")
def setup(trained_workdir, support_and_queries):
    model, _ = load_trained(trained_workdir)
    support_dir, queries, truth = support_and_queries
    options = image_options(model.config)
    classes, sx, sy = read_support(support_dir, options)
    qx = np.stack([load_image(q, options) for q in queries])
    return model, classes, sx, sy, qx


@pytest.fixture(scope="module")
def written(setup, tmp_path_factory):
    model, classes, sx, sy, _ = setup
    classifier = adapted_classifier(model, classes, sx, sy)
    out = tmp_path_factory.mktemp("adapted")
    return classifier, out, write_formats(classifier, out)


def tflite_probabilities(path, images):
    interpreter = Interpreter(model_path=str(path))
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images)
    interpreter.invoke()
    return interpreter.get_tensor(outp["index"])


def test_folded_classifier_equals_the_adapted_model(setup, written):
    model, _, sx, sy, qx = setup
    classifier, _, _ = written
    expected = Predictor(model).predict(sx, sy, qx)
    np.testing.assert_allclose(classifier.probabilities(qx).numpy(), expected, atol=1e-5)


def test_onnx_model_is_valid_and_matches_tensorflow(setup, written):
    _, classes, _, _, qx = setup
    classifier, out, paths = written
    assert paths["onnx"] == str(out / "model.onnx")
    proto = onnx.load(paths["onnx"])
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version in (17, 18)
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["probabilities"]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    session = ort.InferenceSession(paths["onnx"], providers=["CPUExecutionProvider"])
    meta = read_onnx_metadata(session)
    assert meta["classes"] == classes  # the class names round-trip
    assert (meta["image_size"], meta["channels"], meta["invert"]) == (28, 1, True)
    reference = classifier.probabilities(qx).numpy()
    for batch in (qx[:1], qx):
        got = session.run(["probabilities"], {"images": batch})[0]
        np.testing.assert_allclose(got, reference[:len(batch)], atol=1e-4)


def test_tflite_uses_builtins_and_matches_tensorflow(setup, written):
    _, _, _, _, qx = setup
    classifier, _, paths = written
    reference = classifier.probabilities(qx).numpy()
    for batch in (qx[:1], qx):
        np.testing.assert_allclose(tflite_probabilities(paths["tflite"], batch),
                                   reference[:len(batch)], atol=1e-4)
    # builtins only: LiteRT's plain interpreter (no Flex delegate) ran it above


def test_saved_model_returns_probabilities_and_class_names(setup, written):
    _, classes, _, _, qx = setup
    classifier, out, paths = written
    assert Path(paths["saved_model"]) == out / "saved_model" / "1"
    loaded = tf.saved_model.load(paths["saved_model"])
    result = loaded.signatures["serving_default"](images=tf.constant(qx))
    probabilities = result["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, classifier.probabilities(qx).numpy(), atol=1e-6)
    labels = [b.decode() for b in result["label"].numpy()]
    assert labels == [classes[i] for i in probabilities.argmax(axis=-1)]
    assert read_info(out / "saved_model")["classes"] == classes
    with pytest.raises(tf.errors.InvalidArgumentError, match="images must be uint8 images"):
        loaded.signatures["serving_default"](images=tf.constant(qx[:, :20]))
    assert json.loads((out / "classes.json").read_text())["classes"] == classes


def test_existing_files_are_not_replaced_without_overwrite(written):
    classifier, out, _ = written
    before = (out / "model.onnx").read_bytes()
    with pytest.raises(FileExistsError, match="model.onnx"):
        write_formats(classifier, out, ["onnx"])
    assert (out / "model.onnx").read_bytes() == before
    write_formats(classifier, out, ["onnx"], overwrite=True)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_export_adapted_and_onnx_predict_clis_agree_with_predict(trained_workdir,
                                                                 support_and_queries, tmp_path):
    support_dir, queries, truth = support_and_queries

    def cli(*args):
        proc = run_module(*args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    paths = cli("serving.export_adapted", "--workdir", trained_workdir, "--support", support_dir,
                "--output", tmp_path / "out", "--format", "onnx")
    assert set(paths) == {"onnx", "classes"}
    onnx_json = cli("serving.onnx_predict", "--model", paths["onnx"], "--query", *queries)
    predict_json = cli("metagna_tf.predict", "--workdir", trained_workdir, "--support",
                       support_dir, "--query", *queries)
    assert onnx_json["classes"] == predict_json["classes"]
    assert onnx_json["inner_steps"] == predict_json["inner_steps"] == 3
    for a, b in zip(onnx_json["predictions"], predict_json["predictions"], strict=True):
        assert a["file"] == b["file"] and a["label"] == b["label"]
        for c in a["probabilities"]:
            assert a["probabilities"][c] == pytest.approx(b["probabilities"][c], abs=1e-4)
    # the tiny test model already gets most held-out drawings of new characters right
    correct = sum(p["label"] == t for p, t in zip(onnx_json["predictions"], truth, strict=True))
    assert correct >= 0.6 * len(truth), correct
