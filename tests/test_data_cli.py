"""Every on-disk format through the CLIs: train 2 iterations, then evaluate (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metagna_tf.config import PRESETS, Config
from tests.fixtures_images import (
    make_csv,
    make_cub,
    make_cub_tgz,
    make_folder,
    make_pickle_cache,
    make_rfs,
    make_tree,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--config", "mini_imagenet_5w1s", "--algorithm", "maml", "--ways", "2", "--shots", "1",
         "--queries", "1", "--meta-batch-size", "1", "--inner-steps", "1",
         "--inner-steps-test", "1", "--iterations", "2", "--checkpoint-every", "1",
         "--image-size", "16", "--filters", "8", "--val-episodes", "2", "--verbose", "0"]


def run_cli(module: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("METAGNA_DATA_DIR", None)
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)
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


@pytest.mark.slow
@pytest.mark.parametrize("make", [make_pickle_cache, make_rfs, make_csv, make_tree],
                         ids=["pickle", "rfs", "csv", "tree"])
def test_mini_imagenet_formats_train_and_evaluate(tmp_path, make):
    result = train_and_evaluate("mini_imagenet", make(tmp_path / "data"), tmp_path / "run")
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
