"""The app's handlers, called directly with real Omniglot drawings (no server, no browser)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gradio as gr
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from serving import app_handlers as h
from serving.app_model import AppModel


@pytest.fixture(scope="module")
def model(trained_workdir):
    return AppModel.from_workdir(trained_workdir)


@pytest.fixture(scope="module")
def uploads(support_and_queries, tmp_path_factory):
    """The task's files copied into a folder standing in for Gradio's upload folder."""
    support_dir, queries, truth = support_and_queries
    root = tmp_path_factory.mktemp("uploads")
    names, files = [], []
    for folder in sorted(support_dir.iterdir()):
        names.append(folder.name)
        files.append([str(shutil.copy(p, root / f"{folder.name}__{p.name}"))
                      for p in sorted(folder.iterdir())])
    query_files = [str(shutil.copy(q, root / q.name)) for q in queries]
    return root, names, files, query_files, truth


def pad(values, fill=None):
    return list(values) + [fill] * (h.MAX_CLASSES - len(values))


def do_adapt(model, uploads, names=None, files=None, count=5, limits=None):
    root, default_names, default_files, _, _ = uploads
    return h.adapt(model, count, pad(names or default_names, ""), pad(files or default_files),
                   [root], limits or h.Limits())


def test_adapt_then_classify_held_out_drawings(model, uploads):
    root, names, _, queries, truth = uploads
    state, losses, scales, text = do_adapt(model, uploads)
    assert state.class_names == names and len(state.fast) == 14 and len(state.stats) == 4
    assert list(losses.columns) == ["inner step", "support loss"] and len(losses) == 4
    assert losses["support loss"].iloc[-1] < losses["support loss"].iloc[0]  # adaptation helped
    assert len(scales) == 3 * 14 and set(scales["inner step"]) == {1, 2, 3}
    assert "5 classes" in text and "25 images" in text and "metagna" in text
    gallery, rows, first = h.classify(model, state, queries, None, [root], h.Limits())
    assert len(gallery) == len(rows) == len(queries)
    predicted = [row[1].rsplit(" (", 1)[0] for row in rows]
    assert sum(p == t for p, t in zip(predicted, truth, strict=True)) >= 0.6 * len(truth)
    assert set(first) == set(names) and sum(first.values()) == pytest.approx(1.0, abs=1e-5)
    assert gallery[0][1].startswith(predicted[0])


def test_camera_image_is_converted_like_a_file(model, uploads):
    root, _, _, queries, _ = uploads
    state = do_adapt(model, uploads)[0]
    rgb = np.asarray(Image.open(queries[0]).convert("RGB"))  # as gr.Image(type="numpy") gives it
    _, rows_file, _ = h.classify(model, state, [queries[0]], None, [root], h.Limits())
    _, rows_cam, first = h.classify(model, state, None, rgb, [root], h.Limits())
    assert rows_cam[0][0] == "webcam/clipboard image"
    assert rows_cam[0][1:] == rows_file[0][1:]


def test_onnx_download_holds_the_session_classifier(model, uploads):
    root, names, _, queries, _ = uploads
    state = do_adapt(model, uploads)[0]
    path = h.export_onnx(model, state)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == names
    images = np.stack([h.read_upload(q, model, [root], h.Limits()) for q in queries])
    expected = model.classify(state, images)
    got = session.run(["probabilities"], {"images": images})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_saved_model_backend_gives_the_same_results(model, uploads, exported_model):
    root, names, files, queries, _ = uploads
    served = AppModel.from_export(exported_model.parent)  # serving.export of trained_workdir
    assert served.options == model.options and served.inner_steps == model.inner_steps
    a = do_adapt(model, uploads)[0]
    b = do_adapt(served, uploads)[0]
    np.testing.assert_allclose(b.support_loss, a.support_loss, rtol=1e-5)
    np.testing.assert_allclose(b.scales, a.scales, rtol=1e-5)
    assert a.support_accuracy == b.support_accuracy
    images = np.stack([h.read_upload(q, model, [root], h.Limits()) for q in queries])
    np.testing.assert_allclose(served.classify(b, images), model.classify(a, images), atol=1e-5)


def bad_cases(uploads, tmp_path):
    root, names, files, _, _ = uploads
    corrupt = root / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    text = root / "notes.png"
    text.write_text("hello")
    big = root / "big.png"
    big.write_bytes(b"\0" * (2 * 1024 * 1024 + 1))
    outside = tmp_path / "elsewhere.png"
    shutil.copy(files[0][0], outside)
    return {
        "a class without images": (dict(files=files[:4] + [[]]), "Class 5 ('" + names[4]
                                   + "') has no images"),
        "fewer than 2 classes": (dict(count=1), "Use 2 to 10 classes"),
        "duplicate class name": (dict(names=names[:4] + [names[0].upper()]),
                                 "are both named"),
        "corrupt file": (dict(files=files[:4] + [[str(corrupt)]]),
                         "corrupt.png: not a readable image"),
        "non-image file": (dict(files=files[:4] + [[str(text)]]),
                           "notes.png: not a readable image"),
        "image over the size limit": (dict(files=files[:4] + [[str(big)]],
                                           limits=h.Limits(max_file_mb=2)),
                                      "big.png is 2.0 MB: images up to 2 MB"),
        "too many files": (dict(files=files[:4] + [files[4] * 5],
                                limits=h.Limits(max_images_per_class=20)),
                           "has 25 images: upload at most 20"),
        "a path outside the uploads": (dict(files=files[:4] + [[str(outside)]]),
                                       "elsewhere.png: not an uploaded file"),
    }


def test_bad_uploads_are_named_and_the_session_keeps_working(model, uploads, tmp_path):
    root, _, _, queries, _ = uploads
    state = do_adapt(model, uploads)[0]
    before = [f.copy() for f in state.fast]
    for case, (kwargs, message) in bad_cases(uploads, tmp_path).items():
        with pytest.raises(gr.Error) as err:
            do_adapt(model, uploads, **kwargs)
        assert message in err.value.message, (case, err.value.message)
        # the session's state is untouched and still classifies
        for a, b in zip(state.fast, before, strict=True):
            np.testing.assert_array_equal(a, b)
        h.classify(model, state, queries[:2], None, [root], h.Limits())


def test_classify_errors_say_what_to_do(model, uploads):
    root, _, _, queries, _ = uploads
    with pytest.raises(gr.Error, match="Adapt first"):
        h.classify(model, None, queries, None, [root], h.Limits())
    state = do_adapt(model, uploads)[0]
    with pytest.raises(gr.Error, match="Add images to classify"):
        h.classify(model, state, [], None, [root], h.Limits())
    with pytest.raises(gr.Error, match="classify at most 3 at once"):
        h.classify(model, state, queries[:4], None, [root], h.Limits(max_queries=3))
    with pytest.raises(gr.Error, match="Adapt first"):
        h.export_onnx(model, None)


def test_decompression_bombs_are_refused(model, uploads, monkeypatch):
    root = uploads[0]
    bomb = root / "bomb.png"
    Image.new("L", (3000, 3000)).save(bomb)  # 9 Mpx, small file
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # the app sets its limit so
    with pytest.raises(gr.Error, match="bomb.png: too many pixels"):
        h.read_upload(str(bomb), model, [root], h.Limits())


def test_examples_fill_five_classes(omniglot_dir, tmp_path):
    examples = h.Examples.from_omniglot(omniglot_dir)
    count, names, supports, queries = examples.fill()
    assert count == 5 and len(names) == len(supports) == h.MAX_CLASSES
    assert all(len(s) == 5 for s in supports[:5]) and supports[5:] == [None] * 5
    assert len(queries) == 10 and all(Path(q).is_relative_to(examples.folder) for q in queries)
    folder = tmp_path / "mine"
    for name in ("cats", "dogs"):
        (folder / name).mkdir(parents=True)
        for i in range(7):
            Image.new("RGB", (32, 32), (i * 30, 0, 0)).save(folder / name / f"{i}.jpg")
    count, names, supports, queries = h.Examples.from_class_folders(folder).fill()
    assert count == 2 and names[:2] == ["cats", "dogs"] and len(queries) == 4
