"""tools/study_state.py: a study's unfinished runs saved to a folder and restored elsewhere."""

from __future__ import annotations

import json

import pytest
import tensorflow as tf

from tools.study_state import main


def fake_run(root, name, steps, best_at, value=0.0, config=None):
    """A workdir as training leaves it: config, metrics rows, latest (2 kept) and best."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config or {"iterations": 1000}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"iteration": s}) + "\n"
                                               for s in steps))
    (run / "tensorboard").mkdir()
    weight = tf.Variable(value)
    latest = tf.train.CheckpointManager(tf.train.Checkpoint(w=weight), run / "checkpoints", 2)
    best = tf.train.CheckpointManager(tf.train.Checkpoint(w=weight), run / "best", 1)
    for step in steps:
        weight.assign(value + step)
        if step == best_at:
            best.save(checkpoint_number=step)
        latest.save(checkpoint_number=step)
    return run


def restored_value(folder):
    weight = tf.Variable(-1.0)
    tf.train.Checkpoint(w=weight).restore(tf.train.latest_checkpoint(str(folder))).expect_partial()
    return float(weight.numpy())


def test_save_keeps_only_what_resuming_needs_and_restore_puts_it_back(tmp_path, capsys):
    runs, state, elsewhere = tmp_path / "runs", tmp_path / "state", tmp_path / "elsewhere"
    fake_run(runs, "indomain/maml_seed1", [100, 200, 300], best_at=200)
    fake_run(runs, "cross_alphabet/ours_seed0", [100], best_at=100, value=10.0)
    assert main(["save", str(runs), str(state)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "saved cross_alphabet/ours_seed0 at iteration 100",
        "saved indomain/maml_seed1 at iteration 300"]
    saved = state / "indomain/maml_seed1"
    assert sorted(p.name for p in saved.iterdir()) == ["best", "checkpoints", "config.json",
                                                       "metrics.jsonl"]
    assert sorted(p.name for p in (saved / "checkpoints").iterdir()) == [
        "checkpoint", "ckpt-300.data-00000-of-00001", "ckpt-300.index"]  # not ckpt-200
    assert "ckpt-200" not in (saved / "checkpoints/checkpoint").read_text()

    assert main(["restore", str(state), str(elsewhere)]) == 0
    assert "restored indomain/maml_seed1 at iteration 300" in capsys.readouterr().out
    back = elsewhere / "indomain/maml_seed1"
    assert restored_value(back / "checkpoints") == 300.0
    assert restored_value(back / "best") == 200.0
    assert restored_value(elsewhere / "cross_alphabet/ours_seed0/checkpoints") == 110.0
    assert (back / "metrics.jsonl").read_text() == (
        runs / "indomain/maml_seed1/metrics.jsonl").read_text()
    # training goes on from the restored folder: a new save lands beside it, the index follows
    weight = tf.Variable(0.0)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(w=weight), back / "checkpoints", 2)
    manager.restore_or_initialize()
    assert float(weight.numpy()) == 300.0
    manager.save(checkpoint_number=400)
    assert tf.train.latest_checkpoint(str(back / "checkpoints")).endswith("ckpt-400")


def test_save_replaces_older_state_and_restore_never_goes_back(tmp_path, capsys):
    runs, state = tmp_path / "runs", tmp_path / "state"
    run = fake_run(runs, "indomain/maml_seed1", [100, 200], best_at=100)
    main(["save", str(runs), str(state), "indomain/maml_seed1"])
    # the run goes on here; a second save replaces the first one's checkpoints
    latest = tf.train.CheckpointManager(tf.train.Checkpoint(w=tf.Variable(7.0)),
                                        run / "checkpoints", 2)
    latest.save(checkpoint_number=300)
    main(["save", str(runs), str(state)])
    assert sorted(p.name for p in (state / "indomain/maml_seed1/checkpoints").iterdir()) == [
        "checkpoint", "ckpt-300.data-00000-of-00001", "ckpt-300.index"]
    capsys.readouterr()
    # a local run at least as far along is kept as it is
    assert main(["restore", str(state), str(runs)]) == 0
    assert "kept indomain/maml_seed1: " in capsys.readouterr().out
    assert restored_value(run / "checkpoints") == 7.0


def test_errors_name_the_run_or_folder(tmp_path, capsys):
    runs, state = tmp_path / "runs", tmp_path / "state"
    fake_run(runs, "indomain/maml_seed1", [100, 200], best_at=100)
    assert main(["save", str(runs), str(state), "indomain/maml_seed9"]) == 2
    assert "no run indomain/maml_seed9 (no config.json)" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "nothing"), str(runs)]) == 2
    assert "nothing: no saved study state" in capsys.readouterr().err
    # a different run under the same name is not overwritten
    main(["save", str(runs), str(state)])
    other = tmp_path / "other"
    fake_run(other, "indomain/maml_seed1", [100], best_at=100, config={"iterations": 5})
    assert main(["restore", str(state), str(other)]) == 2
    err = capsys.readouterr().err
    assert "indomain/maml_seed1: its config.json differs from the saved run's" in err
    with pytest.raises(SystemExit):
        main(["copy", str(runs)])


def test_restore_replaces_a_run_left_behind(tmp_path, capsys):
    runs, state, behind = tmp_path / "runs", tmp_path / "state", tmp_path / "behind"
    fake_run(runs, "indomain/maml_seed1", [100, 200, 300], best_at=300)
    main(["save", str(runs), str(state)])
    old = fake_run(behind, "indomain/maml_seed1", [100], best_at=100, value=50.0)
    assert main(["restore", str(state), str(behind)]) == 0
    assert "restored indomain/maml_seed1 at iteration 300" in capsys.readouterr().out
    assert restored_value(old / "checkpoints") == 300.0
    assert restored_value(old / "best") == 300.0
    assert sorted(p.name for p in (old / "checkpoints").iterdir()) == [
        "checkpoint", "ckpt-300.data-00000-of-00001", "ckpt-300.index"]
    assert len((old / "metrics.jsonl").read_text().splitlines()) == 3
    assert (old / "tensorboard").is_dir()  # what the state does not hold is left alone
