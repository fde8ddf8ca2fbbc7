"""Every on-disk format through the CLIs: train 2 iterations, then evaluate (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metagna_tf.config import PRESETS, Config
from tests.cli_runner import run_module
from tests.fixtures_images import (
    make_csv,
    make_cub,
    make_cub_tgz,
    make_folder,
    make_pickle_cache,
    make_rfs,
    make_tree,
)

SMALL = ["--config", "mini_imagenet_5w1s", "--algorithm", "maml", "--ways", "2", "--shots", "1",
         "--queries", "1", "--meta-batch-size", "1", "--inner-steps", "1",
         "--inner-steps-test", "1", "--iterations", "2", "--checkpoint-every", "1",
         "--image-size", "16", "--filters", "8", "--val-episodes", "2", "--verbose", "0"]


def run_cli(module: str, *args: str) -> dict:
    proc = run_module(module, *args, env={"METAGNA_DATA_DIR": None})
    assert proc.returncode == 0, f"{module} {' '.join(args)} failed:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def train_and_evaluate(dataset: str, data_dir: Path, workdir: Path, *train_flags: str,
                       eval_dataset: str | None = None, eval_dir: Path | None = None) -> dict:
    last = run_cli("metagna_tf.train", "--dataset", dataset, "--data-dir", str(data_dir),
                   "--workdir", str(workdir), *SMALL, *train_flags)
    assert last["iteration"] == 2
    config = json.loads((workdir / "config.json").read_text())
    assert config["dataset"] == dataset and config["image_size"] == 16
    result = run_cli("metagna_tf.evaluate", "--workdir", str(workdir),
                     "--dataset", eval_dataset or dataset, "--data-dir", str(eval_dir or data_dir),
                     "--split", "test", "--episodes", "4")
    assert result["episodes"] == 4 and 0.0 <= result["accuracy"] <= 1.0
    return result


@pytest.fixture(scope="module")
def mini_imagenet_run(tmp_path_factory) -> Path:
    """A model trained through the CLI on the pickle-cache format, evaluated there too."""
    root = tmp_path_factory.mktemp("mini_run")
    result = train_and_evaluate("mini_imagenet", make_pickle_cache(root / "data"), root / "run")
    assert result["eval_dataset"] == "mini_imagenet"
    return root / "run"


@pytest.mark.slow
@pytest.mark.parametrize("make", [make_rfs, make_csv, make_tree], ids=["rfs", "csv", "tree"])
def test_mini_imagenet_formats_through_the_cli(mini_imagenet_run, tmp_path, make):
    """The other formats read by the evaluate CLI: one training, on the pickle cache (trained
    and evaluated there by the fixture), serves all; every split of every format is read
    directly in test_data_sources.py."""
    result = run_cli("metagna_tf.evaluate", "--workdir", str(mini_imagenet_run), "--dataset",
                     "mini_imagenet", "--data-dir", str(make(tmp_path / "data")), "--split",
                     "test", "--episodes", "4")
    assert result["episodes"] == 4 and 0.0 <= result["accuracy"] <= 1.0
    assert result["eval_dataset"] == "mini_imagenet"


@pytest.mark.slow
def test_cross_domain_mini_imagenet_all_to_cub(tmp_path):
    """Meta-train on every mini-ImageNet class (--split all), evaluate on CUB novel classes."""
    mini = make_pickle_cache(tmp_path / "mini")
    cub_dir = make_cub(tmp_path / "cub")
    result = train_and_evaluate("mini_imagenet", mini, tmp_path / "run", "--split", "all",
                                eval_dataset="cub", eval_dir=cub_dir)
    assert result["train_dataset"] == "mini_imagenet" and result["train_split"] == "all"
    assert result["eval_dataset"] == "cub" and result["split"] == "test"
    packed = run_cli("metagna_tf.evaluate", "--workdir", str(tmp_path / "run"), "--dataset",
                     "cub", "--data-dir", str(make_cub_tgz(tmp_path / "tgz")), "--split", "test",
                     "--episodes", "4")
    assert packed["accuracy"] == result["accuracy"]  # same images from the .tgz, same episodes


@pytest.mark.slow
@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_train_and_evaluate(tmp_path, channels):
    """Mixed formats, modes and sizes; greyscale models through a JSON config file."""
    config = Config.from_dict(PRESETS["mini_imagenet_5w1s"]).replace(dataset="folder",
                                                                      channels=channels)
    (tmp_path / "config.json").write_text(config.to_json())
    result = train_and_evaluate("folder", make_folder(tmp_path / "data"), tmp_path / "run",
                                "--config", str(tmp_path / "config.json"))
    assert result["eval_dataset"] == "folder"
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["channels"] == channels
