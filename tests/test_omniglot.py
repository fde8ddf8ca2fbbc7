"""Omniglot from the official zips (the shared minimal sets) and their folders."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest

from metagna_tf.config import Config
from metagna_tf.data import load_pool, omniglot, resolve_data_dir
from metagna_tf.data.images import ImageError
from tools.make_omniglot_split import OUT, character_keys, stratified_split


def test_minimal_zips_hold_242_distinct_characters(omniglot_dir):
    by_set = omniglot.read_characters(omniglot_dir, image_size=28)
    keys = [k for chars in by_set.values() for k in chars]
    assert len(keys) == len(set(keys)) == 242
    assert sum(len(v) for chars in by_set.values() for v in chars.values()) == 242 * 20
    # Greek and Latin, in both zips, are read once (from the first zip)
    assert any(k.startswith("Greek/") for k in by_set["images_background_small1"])
    assert not any(k.startswith("Greek/") for k in by_set["images_background_small2"])


def test_images_are_strokes_as_one_on_zero(omniglot_dir):
    pool = omniglot.load(omniglot_dir, "val", image_size=28)
    assert pool.images.shape[1:] == (28, 28, 1) and pool.images.dtype == np.uint8
    # strokes are a minority of pixels, and bright after inversion
    assert 0.02 < (pool.images > 127).mean() < 0.4


def test_committed_split_is_disjoint_stratified_and_reproducible(omniglot_dir):
    split = json.loads(OUT.read_text())
    train, val, test = (set(split[k]) for k in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    assert len(train | val | test) == 242
    assert (len(train), len(val), len(test)) == (169, 24, 49)
    alphabets = {k.split("/")[0] for k in train | val | test}
    for part in (train, val, test):
        assert {k.split("/")[0] for k in part} == alphabets  # every alphabet in every split
    regenerated = stratified_split(character_keys(omniglot_dir), seed=split["seed"])
    assert regenerated == {k: split[k] for k in ("train", "val", "test")}


def test_rotations_make_new_training_classes(omniglot_dir):
    config = Config(dataset="omniglot")
    train = load_pool("omniglot", "train", config, omniglot_dir)
    assert train.num_classes == 4 * 169
    first = train.class_names.index("Balinese/character01")
    rotated = train.class_names.index("Balinese/character01@rot90")
    a = train.images[train.class_indices[first]]
    b = train.images[train.class_indices[rotated]]
    np.testing.assert_array_equal(np.rot90(a, 1, axes=(1, 2)), b)
    test = load_pool("omniglot", "test", config, omniglot_dir)
    assert test.num_classes == 49  # no rotations outside training


def test_extracted_folders_read_like_zips(omniglot_dir, tmp_path):
    with zipfile.ZipFile(omniglot_dir / "images_background_small1.zip") as zf:
        zf.extractall(tmp_path)
    shutil.copy(omniglot_dir / "images_background_small2.zip", tmp_path)
    a = omniglot.read_characters(omniglot_dir, 28)
    b = omniglot.read_characters(tmp_path, 28)
    assert a.keys() == b.keys()
    for s in a:
        assert a[s].keys() == b[s].keys()
        for k in a[s]:
            np.testing.assert_array_equal(a[s][k], b[s][k])


def test_full_set_uses_background_evaluation_split(tmp_path):
    # a tiny stand-in for images_background.zip + images_evaluation.zip
    from PIL import Image

    for set_name, alphabets in (("images_background", ["A", "B"]), ("images_evaluation", ["C"])):
        for alphabet in alphabets:
            for c in range(12):
                folder = tmp_path / set_name / alphabet / f"character{c + 1:02d}"
                folder.mkdir(parents=True)
                for d in range(3):
                    Image.new("1", (105, 105), 1).save(folder / f"{c:02d}_{d:02d}.png")
    by_set = omniglot.read_characters(tmp_path, 28)
    train = omniglot.split_characters(by_set, "train")
    val = omniglot.split_characters(by_set, "val")
    test = omniglot.split_characters(by_set, "test")
    assert sorted(val) == ["A/character10", "B/character10"]
    assert len(train) == 22 and len(test) == 12 and all(k.startswith("C/") for k in test)


def test_corrupt_image_is_named(omniglot_dir, tmp_path):
    broken = tmp_path / "images_background_small1.zip"
    with zipfile.ZipFile(omniglot_dir / "images_background_small1.zip") as src, \
            zipfile.ZipFile(broken, "w") as dst:
        for i, info in enumerate(src.infolist()):
            data = src.read(info)
            dst.writestr(info, b"not a png" if i == 3 else data)
        bad = src.infolist()[3].filename
    with pytest.raises(ImageError, match=f"{broken}:{bad}: not a readable image"):
        omniglot.read_characters(tmp_path, 28)


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"in {tmp_path}.*--data-dir or set "
                                                r"METAGNA_DATA_DIR"):
        omniglot.load(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=r"--data-dir=/no/such/dir: no such directory"):
        resolve_data_dir("/no/such/dir")


def test_non_image_files_are_counted_and_named(omniglot_dir, tmp_path, caplog):
    import logging

    with zipfile.ZipFile(omniglot_dir / "images_background_small2.zip") as zf:
        zf.extractall(tmp_path)
    stray = tmp_path / "images_background_small2" / "Tagalog" / "character01" / "notes.txt"
    stray.write_text("not an image")
    with caplog.at_level(logging.WARNING):
        by_set = omniglot.read_characters(tmp_path, 28)
    assert len(by_set["images_background_small2"]) == 156
    assert "skipped 1 file(s) that are not images" in caplog.text and str(stray) in caplog.text


def test_tfds_fallback_without_a_data_dir(monkeypatch):
    """No --data-dir nor METAGNA_DATA_DIR: TFDS 'omniglot' (mocked offline by TFDS's own tool;
    its download host taken as reachable: the offline check has its own tests)."""
    monkeypatch.setattr("metagna_tf.data.download.check_reachable", lambda urls: None)
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
        test = omniglot.load(None, "test", image_size=20)
        train = omniglot.load(None, "train", image_size=20, rotations=True)
    assert test.images.shape == (30, 20, 20, 1) and test.images.dtype == np.uint8
    assert train.num_classes % 4 == 0 and train.images.shape[0] == 4 * 30
