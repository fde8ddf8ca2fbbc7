"""A linear-head model (the authors' form) through every export and the app, at its own class
count (3 here, not the usual 5), and the clear errors at any other."""

from __future__ import annotations

import shutil

import gradio as gr
import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf

from metagna_tf.checkpoints import load_trained
from metagna_tf.config import Config
from metagna_tf.data import image_options
from metagna_tf.data.images import load_image
from metagna_tf.prediction import Predictor, read_support
from serving import app_handlers as h
from serving.adapted import write_onnx
from serving.app_model import AppModel
from serving.export import export_meta_model
from serving.export_adapted import adapted_classifier
from tests.conftest import SERVING_CONFIG

WAYS = 3


@pytest.fixture(scope="module")
def workdir(omniglot_dir, tmp_path_factory):
    """The real training loop, 2 iterations, a 3-way linear head, the joint Arbiter."""
    from metagna_tf.training import set_global_determinism, train

    work = tmp_path_factory.mktemp("linear") / "authors"
    set_global_determinism(0)
    config = Config(**{**SERVING_CONFIG, "ways": WAYS, "iterations": 2, "checkpoint_every": 1,
                       "val_episodes": 4, "head": "linear", "arbiter_form": "joint",
                       "inner_params": "no_bn", "inner_steps": 2, "inner_steps_test": 2})
    train(config, work, omniglot_dir, verbose=0)
    return work


@pytest.fixture(scope="module")
def task(workdir, support_and_queries):
    """3 of the 5 held-out characters: 5 support images each, and their 5 queries each."""
    support_dir, queries, truth = support_and_queries
    model = load_trained(workdir)[0]
    options = image_options(model.config)
    classes, sx, sy = read_support(support_dir, options)
    keep = sy < WAYS
    qx = np.stack([load_image(q, options) for q, t in zip(queries, truth, strict=True)
                   if t in classes[:WAYS]])
    return model, classes[:WAYS], sx[keep], sy[keep], qx


def test_meta_model_export_takes_the_heads_class_count_only(task, tmp_path):
    model, classes, sx, sy, qx = task
    assert model.head is not None and model.head.ways == WAYS
    exported = export_meta_model(model, tmp_path / "metagna")
    sig = tf.saved_model.load(str(exported)).signatures
    args = dict(support_images=tf.constant(sx), support_labels=tf.constant(sy))
    out = sig["adapt_and_predict"](**args, num_classes=tf.constant(WAYS),
                                   query_images=tf.constant(qx))
    expected = Predictor(model).predict(sx, sy, qx)
    assert out["probabilities"].shape == (len(qx), WAYS)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    assert out["arbiter_scales"].shape == (2, 6)  # 2 steps, 4 kernels + the head's W and b
    weights = sig["adapt"](**args, num_classes=tf.constant(WAYS))
    got = sig["classify"](**weights, images=tf.constant(qx))["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    keep = sy < 2
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"num_classes must be {WAYS}: the linear head of this model"):
        sig["adapt_and_predict"](support_images=tf.constant(sx[keep]),
                                 support_labels=tf.constant(sy[keep]),
                                 num_classes=tf.constant(2), query_images=tf.constant(qx))


def test_adapted_onnx_classifier_matches_and_refuses_another_count(task, tmp_path):
    model, classes, sx, sy, qx = task
    classifier = adapted_classifier(model, classes, sx, sy)
    path = write_onnx(classifier, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"images": qx})
    np.testing.assert_allclose(probabilities, Predictor(model).predict(sx, sy, qx), atol=1e-5)
    keep = sy < 2
    with pytest.raises(ValueError, match=f"linear head classifies exactly {WAYS}"):
        adapted_classifier(model, classes[:2], sx[keep], sy[keep])


def test_the_app_fixes_its_number_of_classes_to_the_head(workdir, support_and_queries,
                                                         tmp_path):
    support_dir, queries, _ = support_and_queries
    app_model = AppModel.from_workdir(workdir)
    assert app_model.head_ways == WAYS and h.class_range(app_model.head_ways) == (WAYS, WAYS)
    assert app_model.scale_names[-2:] == ["head_kernel", "head_bias"]
    names, files = [], []
    for folder in sorted(support_dir.iterdir())[:WAYS]:
        names.append(folder.name)
        files.append([str(shutil.copy(p, tmp_path / f"{folder.name}__{p.name}"))
                      for p in sorted(folder.iterdir())])
    pad = h.MAX_CLASSES - WAYS
    state, _, scales, text = h.adapt(app_model, WAYS, names + [""] * pad, files + [None] * pad,
                                     [tmp_path], h.Limits())
    assert f"{WAYS} classes" in text and len(scales) == 2 * 6
    query = str(shutil.copy(queries[0], tmp_path / queries[0].name))
    _, rows, _ = h.classify(app_model, state, [query], None, [tmp_path], h.Limits())
    assert rows[0][1].rsplit(" (", 1)[0] in names
    with pytest.raises(gr.Error, match=f"linear head classifies exactly {WAYS} classes"):
        h.adapt(app_model, 2, names[:2] + [""] * (h.MAX_CLASSES - 2),
                files[:2] + [None] * (h.MAX_CLASSES - 2), [tmp_path], h.Limits())
