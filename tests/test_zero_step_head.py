"""tools/zero_step_head.py: the split of a linear head's zero-step logits into the part every
query shares and the part that differs adds up to the logits the model classifies with."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from metagna_tf.algorithms.maml import MetaLearner
from metagna_tf.preprocessing import to_model_input
from tests.conftest import random_episode, tiny_config
from tools.zero_step_head import episode_head, summarize, table


def test_shared_and_individual_parts_add_up_to_the_models_logits():
    keras.utils.set_random_seed(5)
    config = tiny_config(head="linear", inner_params="no_bn", ways=3, queries=2)
    model = MetaLearner(config)
    episode = random_episode(config, seed=6)
    support, query = (np.round(episode[k][0] * 255) for k in ("support_x", "query_x"))
    record = episode_head(model, support, episode["support_y"][0], query,
                          episode["query_y"][0])
    adaptation = model.adapt(to_model_input(support, config.dtype)[None],
                             tf.constant(episode["support_y"][0])[None], steps=0)
    logits = model.classify(adaptation, to_model_input(query, config.dtype)[None]).numpy()[0]
    np.testing.assert_allclose(record["logits"], logits, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(record["predicted"], logits.argmax(-1))
    assert record["accuracy"] == np.mean(logits.argmax(-1) == episode["query_y"][0])
    shared = logits.mean(axis=0)  # the shared part is the logits' mean over the queries
    assert record["shared_range"] == pytest.approx(np.ptp(shared))
    assert record["individual_range"] == pytest.approx(np.ptp(logits - shared, axis=1).mean())


def test_summary_counts_episodes_with_one_class_for_every_query():
    one = {"predicted": np.array([2, 2, 2]), "accuracy": 1 / 3, "shared_range": 2.0,
           "individual_range": 0.5}
    mixed = {"predicted": np.array([0, 1, 2]), "accuracy": 1.0, "shared_range": 0.0,
             "individual_range": 1.5}
    summary = summarize([one, mixed], ways=4)
    assert summary["one_class_episodes"] == 0.5
    assert summary["predicted_per_output"] == [1, 1, 4, 0]
    assert summary["accuracy"] == pytest.approx(100 * (1 / 3 + 1) / 2)
    assert summary["shared_range"] == 1.0 and summary["individual_range"] == 1.0


def test_the_prototype_head_is_refused_by_name():
    model = MetaLearner(tiny_config(head="proto"))
    episode = random_episode(model.config)
    with pytest.raises(SystemExit, match="prototype head"):
        episode_head(model, episode["support_x"][0], episode["support_y"][0],
                     episode["query_x"][0], episode["query_y"][0])


def test_table_gives_one_row_per_run_with_its_protocol():
    report = [{"name": "authors_seed0", "protocol": "cross_alphabet", "accuracy": 20.0,
               "accuracy_std": 0.0, "one_class_episodes": 1.0,
               "predicted_per_output": [0, 0, 15, 0, 0], "shared_range": 1.5541,
               "individual_range": 0.3384}]
    lines = table(report).splitlines()
    assert len(lines) == 3 and "shared part" in lines[0]
    assert lines[2] == ("| authors_seed0 | cross_alphabet | 20.00 (0.00) | 100.0% | "
                        "[0, 0, 15, 0, 0] | 1.554 | 0.338 |")
