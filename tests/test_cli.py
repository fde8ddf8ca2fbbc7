"""End to end through the CLIs and the trainer: train -> evaluate -> predict, resume, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metagna_tf.algorithms.maml import MetaLearner
from metagna_tf.config import Config
from metagna_tf.training import (
    NonFiniteLossError,
    read_metrics,
    readable_summary,
    set_global_determinism,
    train,
)
from tests.cli_runner import run_module

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "omniglot", "--ways", "3", "--shots", "1", "--queries", "1",
        "--meta-batch-size", "2", "--filters", "8", "--val-episodes", "4", "--verbose", "0"]


def cli(module, *args, data_dir=None, check=True, process=False):
    """``python -m metagna_tf.<module>``: in this process (tests/cli_runner.py), or with
    ``process=True`` in a new interpreter (the entry points themselves)."""
    env = {} if data_dir is None else {"METAGNA_DATA_DIR": str(data_dir)}
    if process:
        proc = subprocess.run([sys.executable, "-m", f"metagna_tf.{module}", *map(str, args)],
                              capture_output=True, text=True, cwd=REPO, timeout=600,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env})
    else:
        proc = run_module(f"metagna_tf.{module}", *args, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def omniglot_support(omniglot_dir, root: Path, classes=3, per_class=2):
    """Support folders and odd-format query files cut from the real zip."""
    with zipfile.ZipFile(omniglot_dir / "images_background_small1.zip") as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".png"))
        chars = sorted({n.rsplit("/", 2)[0] for n in names})[:classes]
        queries = []
        for c, char in enumerate(chars):
            files = [n for n in names if n.startswith(char + "/")]
            folder = root / "support" / f"class_{c}"
            folder.mkdir(parents=True)
            for i, member in enumerate(files[:per_class]):
                (folder / f"{i}.png").write_bytes(zf.read(member))
            query = root / "query" / f"q{c}.png"
            query.parent.mkdir(exist_ok=True)
            query.write_bytes(zf.read(files[per_class]))
            queries.append(query)
    # other formats, modes and sizes go through the same conversion
    img = Image.open(queries[0]).convert("RGB").resize((64, 64))
    img.save(root / "query" / "q0.jpg")
    Image.open(queries[1]).convert("RGBA").resize((200, 200)).save(root / "query" / "q1_rgba.png")
    return root / "support", [*queries, root / "query" / "q0.jpg", root / "query" / "q1_rgba.png"]


def test_train_evaluate_predict_through_the_clis(omniglot_dir, tmp_path):
    work = tmp_path / "run"
    out = cli("train", "--workdir", work, "--algorithm", "metagna", "--iterations", "4",
              "--checkpoint-every", "2", *TINY, data_dir=omniglot_dir, process=True)
    last = last_json(out.stdout)  # short: the per-tensor metrics stay in metrics.jsonl
    rows = read_metrics(work)
    assert [r["iteration"] for r in rows] == [2, 4]
    assert "arbiter_conv1_kernel" in rows[-1] and "val_arbiter_conv1_kernel" in rows[-1]
    best = max(rows, key=lambda r: r["val_accuracy"])  # the first of equals is kept
    assert last == {"iteration": 4, "val_accuracy": rows[-1]["val_accuracy"],
                    "elapsed_s": rows[-1]["elapsed_s"],
                    "best_checkpoint": str(work / "best" / f"ckpt-{best['iteration']}"),
                    "best_val_accuracy": pytest.approx(best["val_accuracy"], abs=1e-7),
                    "workdir": str(work)}
    # the terminal's last line is the printed summary's sentence; its wording and its duration
    # format ("12.3 s", or "1 min 5 s" on a loaded machine) are checked in
    # test_the_closing_sentence_reads_seconds_minutes_and_runs_without_validation
    assert out.stderr.strip().splitlines()[-1] == readable_summary(last)
    config = json.loads((work / "config.json").read_text())
    assert config["algorithm"] == "metagna" and config["filters"] == 8
    assert (work / "best" / "checkpoint").is_file()
    assert any((work / "tensorboard").rglob("events.out.tfevents.*"))

    out = cli("evaluate", "--workdir", work, "--episodes", "10", "--ways", "4",
              data_dir=omniglot_dir, process=True)
    result = last_json(out.stdout)
    assert f"4-way 1-shot: {100 * result['accuracy']:.1f} +/- " in out.stderr
    assert result["episodes"] == 10 and result["ways"] == 4 and result["shots"] == 1
    assert result["algorithm"] == "metagna" and 0 <= result["accuracy"] <= 1
    assert result["ci95"] > 0 and result["eval_dataset"] == "omniglot"
    assert json.loads((work / "eval_omniglot_test_4w1s_3steps.json").read_text()) == result

    support, queries = omniglot_support(omniglot_dir, tmp_path)
    out = cli("predict", "--workdir", work, "--support", support, "--query", *queries,
              process=True)
    pred = last_json(out.stdout)
    assert pred["classes"] == ["class_0", "class_1", "class_2"]
    assert [p["file"] for p in pred["predictions"]] == [str(q) for q in queries]
    for p in pred["predictions"]:
        assert p["label"] in pred["classes"]
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)


def tiny(**changes):
    base = dict(dataset="omniglot", algorithm="metagna", ways=3, shots=1, queries=1,
                meta_batch_size=2, filters=8, val_episodes=4, iterations=4, checkpoint_every=2)
    return Config(**{**base, **changes})


class Interrupted(Exception):
    pass


def test_resume_reproduces_the_uninterrupted_run(omniglot_dir, tmp_path, monkeypatch):
    config = tiny()
    set_global_determinism(0)
    train(config, tmp_path / "straight", omniglot_dir, verbose=0)

    from metagna_tf import training
    original = training._Bookkeeping.on_epoch_end

    def crash_after_first_checkpoint(self, epoch, logs=None):
        original(self, epoch, logs)
        raise Interrupted

    monkeypatch.setattr(training._Bookkeeping, "on_epoch_end", crash_after_first_checkpoint)
    set_global_determinism(0)
    with pytest.raises(Interrupted):
        train(config, tmp_path / "resumed", omniglot_dir, verbose=0)
    monkeypatch.setattr(training._Bookkeeping, "on_epoch_end", original)
    assert [r["iteration"] for r in read_metrics(tmp_path / "resumed")] == [2]
    set_global_determinism(123)  # a different init: the checkpoint must win
    train(config, tmp_path / "resumed", omniglot_dir, verbose=0)

    a, b = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "resumed")
    assert [r["iteration"] for r in b] == [2, 4]
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), key
    import tensorflow as tf
    for name, _ in tf.train.list_variables(str(tmp_path / "straight" / "checkpoints" / "ckpt-4")):
        if name.startswith("model/") or "optimizer/_variables" in name:
            va = tf.train.load_variable(str(tmp_path / "straight" / "checkpoints" / "ckpt-4"), name)
            vb = tf.train.load_variable(str(tmp_path / "resumed" / "checkpoints" / "ckpt-4"), name)
            np.testing.assert_allclose(vb, va, rtol=1e-4, atol=1e-6, err_msg=name)

    # a finished run is not retrained
    stamp = (tmp_path / "resumed" / "checkpoints" / "checkpoint").stat().st_mtime_ns
    assert train(config, tmp_path / "resumed", omniglot_dir, verbose=0)["iteration"] == 4
    assert (tmp_path / "resumed" / "checkpoints" / "checkpoint").stat().st_mtime_ns == stamp


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(omniglot_dir, tmp_path,
                                                                   monkeypatch):
    work = tmp_path / "run"
    config = tiny(iterations=2)
    train(config, work, omniglot_dir, verbose=0)
    good = sorted(p.name for p in (work / "checkpoints").iterdir())
    original = MetaLearner._update_metrics

    def poisoned(self, loss, acc, scales, count=1):
        return original(self, loss * float("nan"), acc, scales, count)

    monkeypatch.setattr(MetaLearner, "_update_metrics", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"non-finite meta-loss at iteration 3.*"
                                                 r"ckpt-2\) is kept"):
        train(config.replace(iterations=4), work, omniglot_dir, verbose=0)
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == good
    assert [r["iteration"] for r in read_metrics(work)] == [2]


def test_diverging_inner_loop_is_reported_from_the_cli(omniglot_dir, tmp_path):
    out = cli("train", "--workdir", tmp_path / "w", "--algorithm", "maml", "--inner-lr", "1e30",
              "--iterations", "2", "--checkpoint-every", "1", *TINY, data_dir=omniglot_dir,
              check=False)
    assert out.returncode == 3, out.stderr[-2000:]
    assert "error: non-finite meta-loss at iteration 1" in out.stderr
    assert not list((tmp_path / "w" / "checkpoints").glob("ckpt-*"))


def test_bad_inputs_give_clear_errors(omniglot_dir, tmp_path):
    out = cli("train", "--workdir", tmp_path / "a", "--iterations", "1", *TINY, "--ways", "30",
              data_dir=omniglot_dir, check=False)
    assert out.returncode == 2
    assert "error: omniglot val: ways=30 but only 24 classes" in out.stderr

    out = cli("train", "--workdir", tmp_path / "b", "--data-dir", tmp_path / "nowhere",
              "--iterations", "1", *TINY, check=False)
    assert out.returncode == 2 and "no such directory" in out.stderr

    out = cli("train", "--workdir", tmp_path / "c", "--algorithm", "reptile", *TINY, check=False)
    assert out.returncode == 2
    assert "argument --algorithm: invalid choice: 'reptile'" in out.stderr

    work = tmp_path / "d"
    train(tiny(iterations=1, checkpoint_every=1), work, omniglot_dir, verbose=0)
    out = cli("train", "--workdir", work, "--iterations", "1", "--checkpoint-every", "1",
              *TINY, "--inner-lr", "0.4", data_dir=omniglot_dir, check=False)
    assert out.returncode == 2
    assert "holds a run with a different config (inner_lr: 0.1 -> 0.4)" in out.stderr

    support = tmp_path / "support"
    (support / "only").mkdir(parents=True)
    Image.new("L", (28, 28)).save(support / "only" / "a.png")
    query = tmp_path / "q.png"
    Image.new("L", (28, 28)).save(query)
    out = cli("predict", "--workdir", work, "--support", support, "--query", query, check=False)
    assert out.returncode == 2
    assert f"{support}: needs at least 2 classes, got 1 (['only'])" in out.stderr

    (support / "other").mkdir()
    (support / "other" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    out = cli("predict", "--workdir", work, "--support", support, "--query", query, check=False)
    assert out.returncode == 2
    assert f"{support / 'other' / 'broken.jpg'}: not a readable image" in out.stderr
    assert "BytesIO" not in out.stderr  # no PIL object repr in the message

    out = cli("evaluate", "--workdir", tmp_path / "empty", check=False, process=True)
    assert out.returncode == 2
    # TensorFlow's start-up lines are hidden unless --verbose (a new process shows them)
    assert "oneDNN" not in out.stderr and "absl::InitializeLog" not in out.stderr
    assert f"{tmp_path / 'empty'}: no such workdir, checkpoint folder or checkpoint" in out.stderr


def test_a_closed_output_pipe_ends_quietly():
    """``python -m metagna_tf.predict ... | head`` must not print an error when head exits."""
    code = ("from metagna_tf import cli\n"
            "def main():\n"
            "    for _ in range(10000):\n"
            "        print('x' * 1000, flush=True)\n"
            "cli.run(main)\n")
    proc = subprocess.run(["bash", "-c", f'{sys.executable} -c "$CODE" | head -c 10 >/dev/null; '
                           'echo "rc=${PIPESTATUS[0]}" >&2'],
                          env={**os.environ, "CODE": code}, capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert "error" not in proc.stderr.lower() and "Traceback" not in proc.stderr, proc.stderr
    assert "rc=141" in proc.stderr


def test_the_closing_sentence_reads_seconds_minutes_and_runs_without_validation():
    summary = {"iteration": 4, "val_accuracy": 0.5, "elapsed_s": 12.34,
               "best_checkpoint": "runs/x/best/ckpt-2", "best_val_accuracy": 0.75,
               "workdir": "runs/x"}
    assert readable_summary(summary) == (
        "runs/x: 4 iterations in 12.3 s; validation accuracy 50.0%, best 75.0% in "
        "runs/x/best/ckpt-2 (all metrics: metrics.jsonl, TensorBoard).")
    summary = {"iteration": 300, "val_accuracy": None, "elapsed_s": 125.4,
               "best_checkpoint": None, "best_val_accuracy": None, "workdir": "runs/x"}
    assert readable_summary(summary) == ("runs/x: 300 iterations in 2 min 5 s; no validation "
                                         "episodes, so no best checkpoint (see metrics.jsonl).")
    summary.update(elapsed_s=3725.0, val_accuracy=0.9, best_val_accuracy=0.925,
                   best_checkpoint="runs/x/best/ckpt-250")
    assert readable_summary(summary) == (
        "runs/x: 300 iterations in 1 h 2 min; validation accuracy 90.0%, best 92.5% in "
        "runs/x/best/ckpt-250 (all metrics: metrics.jsonl, TensorBoard).")


def test_evaluate_and_compare_share_their_episode_flags():
    from metagna_tf import cli as cli_module
    from metagna_tf import compare, evaluate
    from metagna_tf.episode_setup import EvaluationSettings

    flags = ["--dataset", "omniglot", "--split", "val", "--episodes", "40", "--ways", "20",
             "--shots", "5", "--queries", "3", "--seed", "4", "--support-corruption", "label",
             "--corruption-rate", "0.4", "--checkpoint", "latest", "--data-dir", "d",
             "--download"]
    a = evaluate.parse_args(["--workdir", "w", *flags])
    b = compare.parse_args(["--workdirs", "w", "v", *flags])
    expected = EvaluationSettings(split="val", episodes=40, seed=4, dataset="omniglot",
                                  ways=20, shots=5, queries=3, corruption="label",
                                  corruption_rate=0.4)
    assert cli_module.evaluation_settings(a) == cli_module.evaluation_settings(b) == expected
    for args in (a, b):
        assert (args.checkpoint, args.data_dir, args.download) == ("latest", "d", True)
    protocol = compare.parse_args(["--workdirs", "w", "--protocol", "cross_alphabet"])
    assert cli_module.evaluation_settings(protocol).protocol == "cross_alphabet"
    assert cli_module.evaluation_settings(evaluate.parse_args(["--workdir", "w"])) == \
        EvaluationSettings(corruption_rate=0.2)  # the flag's default, unused without corruption
    # compare.py stands alone: it loads no other command's module
    code = "import sys, metagna_tf.compare; print(sorted(m for m in sys.modules " \
           "if m in ('metagna_tf.evaluate', 'metagna_tf.train', 'metagna_tf.predict', " \
           "'metagna_tf.tune')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]"
