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
