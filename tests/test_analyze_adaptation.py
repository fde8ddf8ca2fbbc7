"""tools/analyze_adaptation.py on linear-head models: the head and the adapted tensors reach the
inner loop, and each tensor's recorded step norm is what the update rule says it is (the
authors' alpha is the step's norm over the learning rate; ours multiplies the gradient's)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from metagna_tf.algorithms.maml import MetaLearner
from tests.conftest import random_episode, tiny_config
from tools.analyze_adaptation import summarize, trace_episode, with_earlier


@pytest.mark.parametrize("form", ["joint", "per_tensor"])
def test_trace_records_each_adapted_tensors_step(form):
    keras.utils.set_random_seed(3)
    config = tiny_config(algorithm="metagna", head="linear", arbiter_form=form,
                         inner_params="no_bn", inner_lr=0.05)
    model = MetaLearner(config)
    episode = random_episode(config, seed=4)
    images = np.round(episode["support_x"][0] * 255)  # the tool reads 0-255 images
    records = trace_episode(model, images, episode["support_y"][0], steps=2)
    assert len(records) == 3 and "final_mean_loss" in records[-1]
    for record in records[:-1]:  # 4 kernels, the head's W and b
        assert record["scales"].shape == record["step_norms"].shape == (6,)
        factor = 1.0 if form == "joint" else record["grad_norms"]
        np.testing.assert_allclose(record["step_norms"],
                                   config.inner_lr * record["scales"] * factor, rtol=1e-8)
    summary = summarize(model, [records], steps=2)
    assert summary["tensors"] == model.scale_names
    assert summary["arbiter_form"] == form
    np.testing.assert_allclose(summary["steps"][1]["step_norm_mean_per_tensor"],
                               records[1]["step_norms"])


def test_keep_earlier_keeps_models_not_analysed_again_on_the_same_episodes(tmp_path):
    settings = {"protocol": "cross_alphabet", "ways": 5, "shots": 1, "episodes": 100}
    earlier = {**settings, "models": [{"name": "maml_seed0", "v": 1}, {"name": "ours_seed0",
                                                                         "v": 1}]}
    report = {**settings, "episodes_sha256": "ab",
              "models": [{"name": "ours_seed0", "v": 2}, {"name": "authors_seed0", "v": 2}]}
    merged = with_earlier(earlier, report, tmp_path / "alpha.json")  # no digest then: accepted
    assert merged == [{"name": "maml_seed0", "v": 1}, {"name": "ours_seed0", "v": 2},
                      {"name": "authors_seed0", "v": 2}]
    with pytest.raises(SystemExit, match="alpha.json has shots 5"):
        with_earlier({**earlier, "shots": 5}, report, tmp_path / "alpha.json")
    with pytest.raises(SystemExit, match="episodes_sha256"):
        with_earlier({**earlier, "episodes_sha256": "cd"}, report, tmp_path / "alpha.json")
