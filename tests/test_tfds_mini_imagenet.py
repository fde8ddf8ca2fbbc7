"""The TFDS ``mini_imagenet`` builder over dummy data generated in tmp (nothing committed)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from metagna_tf.data.tfds_mini_imagenet import Builder
from tests.fixtures_images import PER_CLASS, SPLIT_CLASSES, make_pickle_cache, make_tree


class MiniImagenetTest(tfds.testing.DatasetBuilderTestCase):
    """TFDS's own builder checks (registration, info, splits, example counts, reload)."""

    DATASET_CLASS = Builder
    SPLITS = {"train": SPLIT_CLASSES["train"] * PER_CLASS,
              "validation": SPLIT_CLASSES["val"] * PER_CLASS,
              "test": SPLIT_CLASSES["test"] * PER_CLASS}

    @classmethod
    def setUpClass(cls):
        cls._dummy_root = Path(tempfile.mkdtemp(prefix="mini_imagenet_dummy_"))
        cls.EXAMPLE_DIR = str(make_tree(cls._dummy_root / "dummy_data"))
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls._dummy_root, ignore_errors=True)


def test_tfds_load_from_pickle_cache(tmp_path):
    """What a user runs: ``tfds.load("mini_imagenet")`` with a manual_dir of pickles."""
    manual = make_pickle_cache(tmp_path / "manual")
    config = tfds.download.DownloadConfig(manual_dir=str(manual))
    ds = tfds.load("mini_imagenet", split="test", data_dir=str(tmp_path / "tfds"),
                   download_and_prepare_kwargs={"download_config": config})
    examples = list(tfds.as_numpy(ds))
    assert len(examples) == SPLIT_CLASSES["test"] * PER_CLASS
    assert all(ex["image"].shape == (84, 84, 3) and ex["image"].dtype == np.uint8
               for ex in examples)
    assert {int(ex["label"]) for ex in examples} == {80, 81, 82}
    assert {ex["class_name"].decode() for ex in examples} == {"n00000200", "n00000201",
                                                              "n00000202"}
