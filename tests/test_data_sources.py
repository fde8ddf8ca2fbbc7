"""mini-ImageNet (4 formats), CUB (folder, .tgz, Chen json, TFDS) and image folders."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from metagna_tf.config import PRESETS, Config
from metagna_tf.data import (
    SOURCES,
    EpisodeSampler,
    EpisodeSpec,
    cub,
    folder,
    image_options,
    load_pool,
    mini_imagenet,
)
from metagna_tf.data.images import ImageError, ImageOptions, load_image
from tests.fixtures_images import (
    PER_CLASS,
    SIZE,
    SPLIT_CLASSES,
    make_chen_json,
    make_csv,
    make_cub,
    make_cub_tgz,
    make_folder,
    make_pickle_cache,
    make_rfs,
    make_tree,
    split_arrays,
)

MAKERS = {"pickle": make_pickle_cache, "rfs": make_rfs, "csv": make_csv, "tree": make_tree}


@pytest.fixture(scope="module", params=list(MAKERS))
def mini_dir(request, tmp_path_factory):
    root = MAKERS[request.param](tmp_path_factory.mktemp(request.param))
    return request.param, root


def test_mini_imagenet_every_format_every_split(mini_dir):
    fmt, root = mini_dir
    assert mini_imagenet.detect_format(root) == fmt
    names = {}
    for split in ("train", "val", "test"):
        pool = mini_imagenet.load(root, split, image_size=12, channels=3)
        assert pool.images.dtype == np.uint8 and pool.images.shape[1:] == (12, 12, 3)
        assert pool.num_classes == SPLIT_CLASSES[split]
        assert all(len(idx) == PER_CLASS for idx in pool.class_indices)
        names[split] = set(pool.class_names)
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"])
    everything = mini_imagenet.load(root, "all", image_size=12, channels=1)
    assert everything.num_classes == sum(SPLIT_CLASSES.values())
    assert everything.images.shape == (sum(SPLIT_CLASSES.values()) * PER_CLASS, 12, 12, 1)
    assert set(everything.class_names) == names["train"] | names["val"] | names["test"]


@pytest.mark.parametrize("fmt", ["pickle", "rfs"])
def test_pickles_keep_pixels_exactly(tmp_path, fmt):
    root = MAKERS[fmt](tmp_path)
    images, labels = split_arrays()["val"]
    pool = mini_imagenet.load(root, "val", image_size=SIZE, channels=3)
    for name, idx in zip(pool.class_names, pool.class_indices, strict=True):
        expected = images[[i for i, n in enumerate(labels) if n == name]]
        np.testing.assert_array_equal(pool.images[idx], expected)


def test_pickle_cache_validation_name_and_rfs_numeric_names(tmp_path):
    root = make_pickle_cache(tmp_path / "p", val_name="validation")
    assert mini_imagenet.load(root, "val", image_size=8, channels=3).num_classes == 3
    root = make_rfs(tmp_path / "r", with_names=False)
    pool = mini_imagenet.load(root, "test", image_size=8, channels=3)
    assert pool.class_names == ["class7", "class8", "class9"]


def test_mini_imagenet_missing_and_bad_input(tmp_path, caplog):
    with pytest.raises(FileNotFoundError, match="no mini-ImageNet found"):
        mini_imagenet.load(tmp_path, "train", image_size=8, channels=3)
    root = make_csv(tmp_path / "csv")
    (root / "val.csv").unlink()
    assert mini_imagenet.load(root, "train", image_size=8, channels=3).num_classes == 4
    with pytest.raises(FileNotFoundError, match="val.csv"):
        mini_imagenet.load(root, "val", image_size=8, channels=3)
    next((root / "images").glob("n00000200*")).unlink()
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\) listed in .*test.csv"):
        mini_imagenet.load(root, "test", image_size=8, channels=3)
    (root / "train.csv").write_text("name;cls\nx;y\n")
    with pytest.raises(ValueError, match="train.csv.*filename,label"):
        mini_imagenet.load(root, "train", image_size=8, channels=3)

    tree = make_tree(tmp_path / "tree")
    (tree / "train" / "n00000099").mkdir()
    bad = tree / "train" / "n00000001" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        mini_imagenet.load(tree, "train", image_size=8, channels=3)
    bad.unlink()
    with caplog.at_level(logging.WARNING):
        pool = mini_imagenet.load(tree, "train", image_size=8, channels=3)
    assert pool.num_classes == 4
    assert "skipped 1 class folder(s)" in caplog.text and "n00000099" in caplog.text

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "mini-imagenet-cache-train.pkl").write_bytes(pickle.dumps({"images": [1]}))
    with pytest.raises(ValueError, match="mini-imagenet-cache-train.pkl.*'image_data'"):
        mini_imagenet.load(wrong, "train", image_size=8, channels=3)


def test_chen_split_rule():
    folders = [f"{i:03d}.Bird" for i in range(1, 201)]
    base, val, novel = (cub.chen_split(folders[::-1], s) for s in ("train", "val", "test"))
    assert (len(base), len(val), len(novel)) == (100, 50, 50)
    assert not (set(base) & set(val)) and not (set(val) & set(novel))
    assert base[:2] == ["001.Bird", "003.Bird"] and val[:2] == ["002.Bird", "006.Bird"]
    assert novel[:2] == ["004.Bird", "008.Bird"]


def test_cub_folder_tgz_and_chen_json_agree(tmp_path, caplog):
    raw = make_cub(tmp_path / "raw")
    by_split = {s: cub.load(raw, s, image_size=10, channels=3) for s in ("train", "val", "test")}
    assert [p.num_classes for p in by_split.values()] == [4, 2, 2]
    assert by_split["test"].class_names == ["004.Bird_4", "008.Bird_8"]
    # CUB_200_2011 itself as --data-dir, and one greyscale + one CMYK JPEG converted to RGB
    inner = cub.load(raw / "CUB_200_2011", "test", image_size=10, channels=3)
    np.testing.assert_array_equal(inner.images, by_split["test"].images)
    cmyk = raw / "CUB_200_2011/images/004.Bird_4/Bird_4_0001.jpg"
    np.testing.assert_array_equal(by_split["test"].images[1], load_image(cmyk, ImageOptions(10, 3)))

    with caplog.at_level(logging.WARNING):
        packed = cub.load(make_cub_tgz(tmp_path / "tgz", evil=True), "test", image_size=10,
                          channels=3)
    np.testing.assert_array_equal(packed.images, by_split["test"].images)
    assert "skipped 1 member(s)" in caplog.text
    assert not (tmp_path / "escape.jpg").exists()

    make_chen_json(raw)
    listed = cub.load(raw, "test", image_size=10, channels=3)
    assert listed.class_names == by_split["test"].class_names
    np.testing.assert_array_equal(listed.images, by_split["test"].images)
    assert cub.load(raw, "all", image_size=10, channels=3).num_classes == 8
    (raw / "val.json").unlink()
    with pytest.raises(FileNotFoundError, match="val.json"):
        cub.load(raw, "val", image_size=10, channels=3)


def test_cub_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="CUB_200_2011"):
        cub.load(tmp_path, "test", image_size=10, channels=3)
    raw = make_cub(tmp_path / "raw")
    make_chen_json(raw)
    (raw / "CUB_200_2011/images/008.Bird_8/Bird_8_0002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="008.Bird_8/Bird_8_0002.jpg"):
        cub.load(raw, "test", image_size=10, channels=3)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "CUB_200_2011.tgz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="CUB_200_2011.tgz"):
        cub.load(tmp_path / "t", "test", image_size=10, channels=3)


def test_cub_tfds_fallback_with_mocked_tfds(monkeypatch):
    """``caltech_birds2011`` through ``tfds.load``, with its examples replaced offline (and its
    download host taken as reachable: the offline check has its own tests, test_download.py)."""
    monkeypatch.setattr("metagna_tf.data.download.check_reachable", lambda urls: None)
    labels = np.arange(8, dtype=np.int64).repeat(3)

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        assert self.name == "caltech_birds2011"
        images = np.random.default_rng(0).integers(0, 256, (len(labels), 20, 30, 3), np.uint8)
        names = np.array([f"bird_{lab}".encode() for lab in labels])
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels,
                                                   "label_name": names})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset, policy=tfds.testing.MockPolicy.USE_CODE):
        pool = cub.load(None, "test", image_size=10, channels=3)
    assert pool.class_names == ["004.bird_3", "008.bird_7"]
    assert pool.images.shape == (6, 10, 10, 3)


@pytest.mark.parametrize("channels", [1, 3])
def test_folder_any_format_mode_and_size(tmp_path, channels):
    root = make_folder(tmp_path / "f")
    pool = folder.load(root, "train", image_size=14, channels=channels)
    assert pool.images.shape == (4 * PER_CLASS, 14, 14, channels)
    for name, idx in zip(pool.class_names, pool.class_indices, strict=True):
        paths = sorted((root / "train" / name).iterdir())
        expected = np.stack([load_image(p, ImageOptions(14, channels)) for p in paths])  # the predict path
        np.testing.assert_array_equal(pool.images[idx], expected)
    assert folder.load(root, "all", image_size=14, channels=channels).num_classes == 10
    (root / "val").rename(root / "validation")
    with pytest.raises(FileNotFoundError, match="val"):
        folder.load(root, "val", image_size=14, channels=channels)


def test_folder_flat_layout_and_errors(tmp_path, caplog):
    root = make_folder(tmp_path / "flat", split_layout=False)
    (root / "notes.txt").write_text("stray")
    (root / "class_0" / "labels.csv").write_text("x")
    with caplog.at_level(logging.WARNING):
        pool = folder.load(root, "train", image_size=8, channels=3)
    assert pool.num_classes == 4
    assert "same classes" in caplog.text and "1 non-image file(s)" in caplog.text
    assert "notes.txt" in caplog.text
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        folder.load(None, "test", image_size=8, channels=3)
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no class subfolders with images"):
        folder.load(empty, "test", image_size=8, channels=3)


def test_registry_presets_and_episodes(tmp_path):
    assert {"mini_imagenet", "cub", "folder"} <= set(SOURCES)
    root = make_tree(tmp_path / "tree")
    config = Config.from_dict(PRESETS["mini_imagenet_5w1s"]).replace(
        ways=2, shots=1, queries=1, image_size=16)
    pool = load_pool("mini_imagenet", "test", config, root)
    assert pool.images.shape[1:] == (16, 16, 3)
    assert image_options(config) == ImageOptions(image_size=16, channels=3, invert=False)
    assert image_options(Config(dataset="omniglot")) == ImageOptions(28, 1, invert=True)
    sampler = EpisodeSampler(pool, EpisodeSpec(2, 1, 1), source="mini_imagenet test")
    sx, sy, qx, qy = sampler.sample(np.random.default_rng(0))
    assert sx.shape == (2, 16, 16, 3) and sorted(sy) == [0, 1] and sorted(qy) == [0, 1]
    cross = Config.from_dict(PRESETS["mini_imagenet_to_cub_5w5s"])
    assert (cross.dataset, cross.train_split, cross.shots, cross.meta_batch_size) == (
        "mini_imagenet", "all", 5, 2)


def test_prepare_csv_to_pickle_cache(tmp_path):
    raw = make_csv(tmp_path / "raw")
    out = tmp_path / "prepared"
    mini_imagenet.prepare(raw, out)
    assert mini_imagenet.detect_format(out) == "pickle"
    for split in ("train", "test"):
        a = mini_imagenet.load(raw, split, image_size=84, channels=3)
        b = mini_imagenet.load(out, split, image_size=84, channels=3)
        assert a.class_names == b.class_names
        np.testing.assert_array_equal(a.images, b.images)


def test_image_options_read_the_keys_exports_record():
    # a model_info.json as serving.export has written it since the first release
    info = {"format": "metagna-tf meta-model", "image_size": 28, "channels": 1, "invert": True,
            "dtype": "float32", "algorithm": "metagna", "inner_steps": 3}
    options = ImageOptions.from_info(info, "old/1 model_info.json")
    assert options == ImageOptions(28, 1, invert=True) and options.shape == (28, 28, 1)
    assert options.as_dict() == {"image_size": 28, "channels": 1, "invert": True}
    assert ImageOptions.from_info(options.as_dict()) == options
    # the ONNX metadata is JSON-decoded per key: the same values
    assert ImageOptions.from_info({"classes": ["a"], "image_size": 84, "channels": 3,
                                   "invert": False}) == ImageOptions(84, 3)
    with pytest.raises(ValueError, match=r"old/1 model_info.json: lacks the preprocessing "
                                         r"key\(s\) \['invert'\]"):
        ImageOptions.from_info({"image_size": 28, "channels": 1}, "old/1 model_info.json")
    with pytest.raises(ValueError, match="m.onnx metadata: .*channels must be 1 or 3, got 4"):
        ImageOptions.from_info({"image_size": 28, "channels": 4, "invert": False},
                               "m.onnx metadata")
    with pytest.raises(ValueError, match="image_size must be a positive integer, got 0"):
        ImageOptions(0, 1)
    with pytest.raises(ValueError, match="invert must be True or False, got 'yes'"):
        ImageOptions(28, 1, "yes")
