"""Config presets, JSON files and flag overrides."""

from __future__ import annotations

import json

import pytest

from metagna_tf.config import PRESETS, Config, load_config
from metagna_tf.train import config_from_args, parse_args


def test_presets_are_valid():
    for name in PRESETS:
        assert isinstance(load_config(name), Config)


def test_json_round_trip_and_overrides(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(Config(ways=3, inner_lr=0.2).to_json())
    args = parse_args(["--workdir", "w", "--config", str(path), "--ways", "4", "--split", "all"])
    config = config_from_args(args)
    assert (config.ways, config.inner_lr, config.train_split) == (4, 0.2, "all")
    assert Config.from_dict(json.loads(config.to_json())) == config


def test_bad_config_values_are_named(tmp_path):
    with pytest.raises(ValueError, match="config: algorithm='reptile' is invalid"):
        Config(algorithm="reptile")
    path = tmp_path / "bad.json"
    path.write_text('{"wayz": 5}')
    with pytest.raises(ValueError, match=r"bad.json: unknown config key\(s\) \['wayz'\]"):
        load_config(str(path))
    with pytest.raises(ValueError, match="--config 'nope' is neither a preset"):
        load_config("nope")


def test_every_config_key_has_a_flag_shared_by_train_and_tune():
    import dataclasses

    args = parse_args(["--workdir", "w", "--no-rotations", "--arbiter-bound", "clip",
                       "--protocol", "cross_alphabet", "--bn-eps", "0.01"])
    config = config_from_args(args)
    assert (config.rotations, config.arbiter_bound, config.protocol, config.bn_eps) == (
        False, "clip", "cross_alphabet", 0.01)
    for field in dataclasses.fields(Config):
        assert hasattr(args, field.name), field.name
    with pytest.raises(SystemExit):
        parse_args(["--workdir", "w", "--downsample", "pool"])  # argparse names the choices


def test_a_saved_config_without_a_later_key_keeps_the_value_it_was_made_with(tmp_path):
    from metagna_tf.checkpoints import read_config

    assert Config().arbiter_bound == "tanh"  # the default the validation split chose
    saved = Config(algorithm="metagna").to_dict()
    del saved["arbiter_bound"]  # a run made before the key existed: it had the clip bound
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert read_config(tmp_path).arbiter_bound == "clip"
    assert Config.from_saved({**saved, "arbiter_bound": "tanh"}).arbiter_bound == "tanh"
    # an old run's model (its Keras config, as a .keras file or a checkpoint holds it) builds
    # its Arbiter with the bound it was trained with: Config.from_saved is the one place
    from metagna_tf.algorithms.maml import MetaLearner

    old_model = MetaLearner.from_config({"config": {**saved, "arbiter_hidden": 8}})
    assert old_model.arbiter.bound == "clip"
    partial = tmp_path / "partial.json"  # a --config file of overrides takes today's defaults
    partial.write_text('{"ways": 3}')
    assert load_config(str(partial)).arbiter_bound == "tanh"


def test_resuming_ignores_keys_the_algorithm_does_not_use(tmp_path):
    from metagna_tf.training import check_workdir_config

    for algorithm in ("maml", "metagna", "maml_lslr"):
        work = tmp_path / algorithm
        work.mkdir()
        (work / "config.json").write_text(Config(algorithm=algorithm, arbiter_bound="clip",
                                                 arbiter_hidden=8).to_json())
        resumed = Config(algorithm=algorithm)  # today's defaults: tanh bound, 32 hidden units
        if algorithm == "maml":
            check_workdir_config(work, resumed)  # no Arbiter: nothing that matters changed
            continue
        with pytest.raises(ValueError, match="arbiter_bound: 'clip' -> 'tanh'"):
            check_workdir_config(work, resumed)
    check_workdir_config(tmp_path / "maml_lslr", Config(algorithm="maml_lslr", arbiter_bound="clip"))


def test_progress_bar_hides_per_tensor_scales_only():
    from metagna_tf.training import ConciseProgbar

    bar = ConciseProgbar(["conv1_kernel", "head_bias"])
    logs = {"loss": 1.0, "accuracy": 0.5, "arbiter_scale": 2.0, "arbiter_conv1_kernel": 3.0,
            "val_arbiter_head_bias": 4.0, "val_loss": 1.1}
    assert bar._shown(logs) == {"loss": 1.0, "accuracy": 0.5, "arbiter_scale": 2.0,
                                "val_loss": 1.1}


def test_tensorflow_flavour_check_names_the_problem():
    from metagna_tf.install_check import installed_flavours, tensorflow_problem

    assert tensorflow_problem(["tensorflow-cpu"]) is None
    assert "tensorflow-cpu, tensorflow" in tensorflow_problem(["tensorflow-cpu", "tensorflow"])
    assert '".[cpu]"' in tensorflow_problem([])
    assert len(installed_flavours()) == 1  # this environment, installed with ".[cpu]"
