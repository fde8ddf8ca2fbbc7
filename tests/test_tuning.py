"""keras-tuner search: two trials, an interrupted trial retried, resume, train from the winner."""

from __future__ import annotations

import json

import pytest

from metagna_tf import tuning
from metagna_tf.config import Config
from metagna_tf.tuning import load_space, tune
from tests.cli_runner import run_module

TINY = dict(dataset="omniglot", algorithm="metagna", ways=3, shots=1, queries=1,
            meta_batch_size=2, filters=8, val_episodes=4, checkpoint_every=2)


class Interrupted(BaseException):
    """Like a Ctrl-C: keras-tuner does not catch it, the trial stays RUNNING."""


@pytest.mark.slow
def test_search_resumes_retries_and_its_winner_trains(omniglot_dir, tmp_path, monkeypatch):
    work = tmp_path / "search"
    base = Config(**TINY)
    original = tuning.MetaTuner.run_trial
    calls = []

    def interrupt_second(self, trial, *args, **kwargs):
        calls.append(trial.trial_id)
        if len(calls) == 2:
            raise Interrupted
        return original(self, trial, *args, **kwargs)

    monkeypatch.setattr(tuning.MetaTuner, "run_trial", interrupt_second)
    with pytest.raises(Interrupted):
        tune(base, work, trials=2, iterations_per_trial=4, objective_episodes=8,
             data_dir=omniglot_dir)
    monkeypatch.setattr(tuning.MetaTuner, "run_trial", original)
    first = work / "trials" / calls[0] / "result.json"
    stamp = first.stat().st_mtime_ns
    # rerunning continues: the interrupted trial is retried, the finished one is not rerun
    result = tune(base, work, trials=2, iterations_per_trial=4, objective_episodes=8,
                  data_dir=omniglot_dir)
    assert first.stat().st_mtime_ns == stamp
    assert result["trials"] == 2
    rows = list((work / "trials.csv").read_text().splitlines())
    assert rows[0].startswith("trial,status,val_accuracy,seconds,iterations")
    assert len(rows) == 3 and all(",COMPLETED," in r for r in rows[1:])
    assert calls[1] in {r.split(",")[0] for r in rows[1:]}
    best = json.loads((work / "best_config.json").read_text())
    assert best["inner_lr"] == result["best"]["inner_lr"]
    assert any((work / "tensorboard").rglob("events.out.tfevents.*"))
    # each trial is an ordinary workdir; the winner's config trains with the train command
    proc = run_module("metagna_tf.train", "--config", work / "best_config.json", "--iterations",
                      "2", "--workdir", tmp_path / "winner", "--verbose", "0",
                      env={"METAGNA_DATA_DIR": str(omniglot_dir)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = json.loads((tmp_path / "winner" / "config.json").read_text())
    assert trained["inner_lr"] == best["inner_lr"] and trained["iterations"] == 2
    # a search with other settings in the same folder is refused, naming them
    with pytest.raises(ValueError, match="other settings \\(iterations_per_trial\\)"):
        tune(base, work, trials=2, iterations_per_trial=6, objective_episodes=8,
             data_dir=omniglot_dir)


@pytest.mark.parametrize("space, message", [
    ('{"inner_lrr": {"type": "float", "min": 0.1, "max": 1}}', "unknown key 'inner_lrr'"),
    ('{"inner_lr": {"type": "float", "min": 0.5, "max": 0.5}}', "'inner_lr' has an empty range"),
    ('{"inner_steps": {"type": "int", "min": 0, "max": 2}}', "'inner_steps' bound 0 is invalid"),
    ('{"arbiter_hidden": {"type": "choice", "values": []}}', "'arbiter_hidden' has an empty"),
    ('{"meta_lr": {"type": "float", "min": 0, "max": 1, "log": true}}', "log range"),
    ('{"iterations": {"type": "int", "min": 1, "max": 5}}', "'iterations' is set by the tune"),
    ('[1, 2]', "expected a JSON object"),
    ('{"inner_lr": ', "not valid JSON"),
])
def test_bad_search_spaces_name_the_key(tmp_path, space, message):
    path = tmp_path / "space.json"
    path.write_text(space)
    with pytest.raises(ValueError, match=message):
        load_space(path, "metagna")


def test_space_defaults_and_overrides(tmp_path):
    assert set(load_space(None, "metagna")) == set(tuning.DEFAULT_SPACE)
    assert "arbiter_hidden" not in load_space(None, "maml")  # no Arbiter to tune
    path = tmp_path / "space.json"
    path.write_text('{"arbiter_a_max": null, "inner_steps": {"type": "choice", "values": [1, 5]}}')
    space = load_space(path, "metagna")
    assert "arbiter_a_max" not in space and space["inner_steps"]["values"] == [1, 5]
