"""tools/analyze_adaptation.py on linear-head models: the head and the adapted tensors reach the
inner loop, and each tensor's recorded step norm is what the update rule says it is (the
authors' alpha is the step's norm over the learning rate; ours multiplies the gradient's)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from metagna_tf.algorithms.maml import MetaLearner
from tests.conftest import random_episode, tiny_config
from tools.analyze_adaptation import summarize, trace_episode


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
