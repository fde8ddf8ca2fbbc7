"""Paired statistics, seeded support corruption, the pixel baseline and the compare CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from metagna_tf.baselines import pixel_nn_accuracy
from metagna_tf.corruption import KINDS, corrupt_batch, corrupt_support, corrupted_count
from metagna_tf.metrics import mean_ci95, paired_difference
from tests.cli_runner import run_module


def test_paired_interval_on_a_constructed_example():
    a = np.array([0.2, 0.8, 0.4, 0.8, 0.0, 0.6, 0.2, 0.6])
    d = np.array([0.2, 0.2, 0.2, 0.2, 0.0, 0.2, 0.2, 0.2])  # b - a: mean 0.175
    result = paired_difference(a, a + d)
    assert result["mean"] == pytest.approx(0.175)
    # t(0.975, 7) = 2.364624; sd(d) = 0.0707107; half-width = t * sd / sqrt(8)
    assert result["ci95"] == pytest.approx(2.364624 * 0.0707107 / math.sqrt(8), rel=1e-5)
    assert result["excludes_zero"] and result["interval"] == "paired t, 95%"
    # the same two columns, unpaired, overlap: the pairing is what separates them
    (ma, ca), (mb, cb) = mean_ci95(a), mean_ci95(a + d)
    assert ma + ca > mb - cb
    flat = paired_difference(a, a)
    assert flat["mean"] == 0 and flat["ci95"] == 0 and not flat["excludes_zero"]
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference(a, a[:3])


def episode(rng, ways=5, shots=1, size=12):
    x = rng.integers(1, 256, (ways * shots, size, size, 1), dtype=np.uint8)
    y = np.repeat(np.arange(ways, dtype=np.int32), shots)
    return x, y


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "none"])
def test_corruption_is_seeded_counted_and_identical_for_every_model(kind):
    rng = np.random.default_rng(0)
    sx, sy = map(np.stack, zip(*[episode(rng, shots=4) for _ in range(3)], strict=True))
    a = corrupt_batch(sx, sy, kind, 0.2, seed=0, batch=1)
    b = corrupt_batch(sx, sy, kind, 0.2, seed=0, batch=1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    other = corrupt_batch(sx, sy, kind, 0.2, seed=0, batch=2)
    assert not (np.array_equal(a[0], other[0]) and np.array_equal(a[1], other[1]))
    x, y, mask = corrupt_support(sx[0], sy[0], kind, 0.2, np.random.default_rng(5))
    k = corrupted_count(20, 0.2)
    assert k == 4
    changed = np.any(x != sx[0], axis=(1, 2, 3)) | (y != sy[0])
    assert np.array_equal(changed, mask) or kind == "rotation"  # a rotation may map to itself
    if kind == "label":
        assert mask.sum() == 4 and sorted(y) == sorted(sy[0])  # swaps: every class keeps images
    else:
        assert mask.sum() == k and np.array_equal(y, sy[0])


def test_label_corruption_in_one_shot_keeps_every_class():
    rng = np.random.default_rng(1)
    x, y = episode(rng)
    cx, cy, mask = corrupt_support(x, y, "label", 0.2, rng)  # k = 1 -> one swap of two labels
    assert mask.sum() == 2 and set(cy) == set(y)
    np.testing.assert_array_equal(cx, x)
    assert corrupt_support(x, y, "none", 0.5, rng)[2].sum() == 0
    with pytest.raises(ValueError, match="must be one of"):
        corrupt_support(x, y, "blur", 0.2, rng)


def test_pixel_nearest_neighbour():
    support = np.zeros((2, 4, 4, 1), np.uint8)
    support[1] = 255
    query = np.stack([np.full((4, 4, 1), 30, np.uint8), np.full((4, 4, 1), 200, np.uint8)])
    assert pixel_nn_accuracy(support, [0, 1], query, [0, 1]) == 1.0
    assert pixel_nn_accuracy(support, [0, 1], query, [1, 0]) == 0.0


@pytest.mark.slow
def test_compare_cli_on_two_models(trained_workdir, tmp_path, omniglot_dir):
    import shutil

    other = tmp_path / "copy" / "metagna"
    shutil.copytree(trained_workdir, other)  # same weights: the paired difference is exactly 0
    proc = run_module("metagna_tf.compare", "--workdirs", trained_workdir, other, "--episodes",
                      "12", "--pixel-nn", "--inner-steps", "0", "2", "--support-corruption",
                      "label", "--output", tmp_path / "c.json",
                      env={"METAGNA_DATA_DIR": str(omniglot_dir)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert json.loads((tmp_path / "c.json").read_text()) == result
    names = [m["name"] for m in result["models"]]
    assert len(names) == 5 and names[-1] == "pixel_nn"
    assert names[0].endswith("@0") and names[1].endswith("@2")
    assert len(result["pairs"]) == 10
    assert result["support_corruption"] == "label" and result["corruption_rate"] == 0.2
    same = [p for p in result["pairs"]
            if p["a"].rsplit("@")[-1] == p["b"].rsplit("@")[-1] and "pixel_nn" not in p["b"]]
    for pair in same:  # identical copies on identical episodes
        assert pair["difference"]["mean"] == 0 and pair["difference"]["ci95"] == 0
    assert "paired differences" in proc.stderr and "pixel_nn" in proc.stderr


def test_compare_reuses_an_earlier_result_on_the_same_episodes(trained_workdir, tmp_path,
                                                               omniglot_dir):
    import shutil

    other = tmp_path / "other" / "metagna"
    shutil.copytree(trained_workdir, other)
    flags = ["--episodes", "8", "--pixel-nn", "--support-corruption", "occlusion"]

    def compare(*args):
        return run_module("metagna_tf.compare", *args,
                          env={"METAGNA_DATA_DIR": str(omniglot_dir)})

    first = compare("--workdirs", str(trained_workdir), *flags, "--output", str(tmp_path / "a.json"))
    assert first.returncode == 0, first.stderr[-3000:]
    earlier = json.loads(first.stdout)
    assert len(earlier["episodes_sha256"]) == 64
    # a model is known by its checkpoint's contents: the copy elsewhere is the same model, and
    # a model whose weights differ (here: its recorded digest) is evaluated
    record = json.loads((tmp_path / "a.json").read_text())
    assert len(record["models"][0]["checkpoint_sha256"]) == 64
    record["models"][0]["checkpoint_sha256"] = "0" * 64
    (tmp_path / "b.json").write_text(json.dumps(record))
    proc = compare("--workdirs", str(trained_workdir), str(other), *flags,
                   "--reuse", str(tmp_path / "a.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert [m["reused"] for m in result["models"]] == [True, True, False]
    assert result["models"][0]["episode_accuracies"] == earlier["models"][0]["episode_accuracies"]
    assert result["models"][1]["episode_accuracies"] == earlier["models"][0]["episode_accuracies"]
    assert result["episodes_sha256"] == earlier["episodes_sha256"]
    retrained = compare("--workdirs", str(other), *flags, "--reuse", str(tmp_path / "b.json"))
    assert retrained.returncode == 0, retrained.stderr[-3000:]
    assert [m["reused"] for m in json.loads(retrained.stdout)["models"]] == [False, False]
    # other episodes: a clear error naming the setting, nothing evaluated on the wrong episodes
    bad = compare("--workdirs", str(trained_workdir), "--episodes", "8", "--pixel-nn",
                  "--reuse", str(tmp_path / "a.json"))
    assert bad.returncode == 2 and "support_corruption" in bad.stderr, bad.stderr[-2000:]
    (tmp_path / "junk.json").write_text("[1, 2]")
    junk = compare("--workdirs", str(trained_workdir), "--reuse", str(tmp_path / "junk.json"))
    assert junk.returncode == 2 and "not a metagna_tf.compare result" in junk.stderr


@pytest.mark.slow
def test_compare_keeps_earlier_models_whose_folders_are_gone(trained_workdir, tmp_path,
                                                            omniglot_dir):
    """--keep-earlier: a study grows over machines; models recorded earlier stay in the
    result (folder gone or not), except those of a folder evaluated now."""
    flags = ["--episodes", "6", "--pixel-nn", "--shots", "1"]

    def compare(*args):
        return run_module("metagna_tf.compare", *args,
                          env={"METAGNA_DATA_DIR": str(omniglot_dir)})

    first = compare("--workdirs", str(trained_workdir), *flags, "--output", str(tmp_path / "a.json"))
    assert first.returncode == 0, first.stderr[-3000:]
    record = json.loads(first.stdout)
    gone = dict(record["models"][0], name="maml_seed0", workdir=str(tmp_path / "gone" / "maml"),
                checkpoint_sha256="1" * 64, algorithm="maml")
    stale = dict(record["models"][0], checkpoint_sha256="2" * 64)  # this folder, retrained since
    record["models"] = [gone, stale, record["models"][1]]
    (tmp_path / "b.json").write_text(json.dumps(record))
    proc = compare("--workdirs", str(trained_workdir), *flags, "--reuse", str(tmp_path / "b.json"),
                   "--keep-earlier", "--output", str(tmp_path / "c.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert [(m["name"], m["reused"]) for m in result["models"]] == [
        ("metagna", False), ("pixel_nn", False), ("maml_seed0", True)]
    assert result["models"][2]["episode_accuracies"] == gone["episode_accuracies"]
    assert {(p["a"], p["b"]) for p in result["pairs"]} == {
        ("metagna", "pixel_nn"), ("metagna", "maml_seed0"), ("pixel_nn", "maml_seed0")}
    assert "maml_seed0" in proc.stderr
    # an earlier model from another folder under a name used here: an error, nothing written
    gone["name"] = "metagna"
    record["models"] = [gone]
    (tmp_path / "d.json").write_text(json.dumps(record))
    clash = compare("--workdirs", str(trained_workdir), *flags, "--reuse", str(tmp_path / "d.json"),
                    "--keep-earlier", "--output", str(tmp_path / "e.json"))
    assert clash.returncode == 2 and "rename" in clash.stderr, clash.stderr[-2000:]
    assert not (tmp_path / "e.json").exists()
    alone = compare("--workdirs", str(trained_workdir), "--keep-earlier")
    assert alone.returncode == 2 and "--keep-earlier needs --reuse" in alone.stderr


@pytest.mark.slow
def test_compare_at_test_time_learning_rates(trained_workdir, tmp_path, omniglot_dir):
    """--inner-lr: every model at each test-time inner learning rate; a vanishing rate is the
    prototype head alone, the model's own rate is its default evaluation."""
    flags = ["--episodes", "8", "--shots", "5", "--support-corruption", "label"]

    def compare(*args):
        return run_module("metagna_tf.compare", "--workdirs", trained_workdir, *flags, *args,
                          env={"METAGNA_DATA_DIR": str(omniglot_dir)})

    proc = compare("--inner-steps", "0", "2", "--inner-lr", "0.1", "1e-7", "3",
                   "--output", str(tmp_path / "a.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    models = {m["name"]: m for m in json.loads(proc.stdout)["models"]}
    assert list(models) == ["metagna@0", "metagna@2@lr0.1", "metagna@2@lr1e-07", "metagna@2@lr3"]
    assert [m["inner_lr"] for m in models.values()] == [0.1, 0.1, 1e-7, 3.0]
    assert [m["test_inner_lr"] for m in models.values()] == [None, None, 1e-7, 3.0]
    acc = {n: m["episode_accuracies"] for n, m in models.items()}
    assert acc["metagna@2@lr1e-07"] == acc["metagna@0"]
    assert acc["metagna@2@lr3"] != acc["metagna@2@lr0.1"]
    default = compare("--inner-steps", "2", "--reuse", str(tmp_path / "a.json"))
    assert default.returncode == 0, default.stderr[-3000:]
    [model] = json.loads(default.stdout)["models"]
    assert model["reused"] and model["episode_accuracies"] == acc["metagna@2@lr0.1"]
    bad = compare("--inner-lr", "0")
    assert bad.returncode == 2 and "inner learning rate must be positive" in bad.stderr
