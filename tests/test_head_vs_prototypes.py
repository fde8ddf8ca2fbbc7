"""tools/head_vs_prototypes.py: the adapted head against a nearest-class-mean classifier on the
same adapted features, and the cosine between the head's change and the centred class means."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from metagna_tf.algorithms.maml import MetaLearner
from metagna_tf.preprocessing import to_model_input
from tests.conftest import random_episode, tiny_config
from tools.head_vs_prototypes import column_cosines, episode, summarize, table


def test_column_cosines_against_a_hand_computation():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(3, 4))  # [ways, d]
    centred = means - means.mean(axis=0)
    np.testing.assert_allclose(column_cosines(2.5 * centred.T, means), 1.0)
    np.testing.assert_allclose(column_cosines(-centred.T, means), -1.0)
    delta = rng.normal(size=(4, 3))
    by_hand = [delta[:, c] @ centred[c] / np.linalg.norm(delta[:, c]) / np.linalg.norm(centred[c])
               for c in range(3)]
    np.testing.assert_allclose(column_cosines(delta, means), by_hand)
    assert np.all(column_cosines(np.zeros((4, 3)), means) == 0)  # no change: 0, not nan


def test_episode_matches_the_models_head_and_a_nearest_mean_by_hand():
    keras.utils.set_random_seed(3)
    config = tiny_config(head="linear", inner_params="no_bn", ways=3, shots=2, queries=2)
    model = MetaLearner(config)
    data = random_episode(config, seed=4)
    support, query = (np.round(data[k][0] * 255) for k in ("support_x", "query_x"))
    sy, qy = data["support_y"][0], data["query_y"][0]
    record = episode(model, 2, support, sy, query, qy)

    adaptation = model.adapt(to_model_input(support, config.dtype)[None], tf.constant(sy)[None],
                             steps=2)
    logits = model.classify(adaptation, to_model_input(query, config.dtype)[None]).numpy()[0]
    assert record["head"] == np.mean(logits.argmax(-1) == qy)

    def features(images):
        x = tf.cast(to_model_input(images, config.dtype)[None], config.compute_dtype)
        return model.backbone.forward(adaptation.fast[:-2], x, stats=adaptation.stats)[0].numpy()

    h_s, h_q = features(support), features(query)
    means = np.stack([h_s[sy == c].mean(axis=0) for c in range(3)])
    nearest = np.argmin(((h_q[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert record["prototypes"] == np.mean(nearest == qy)
    assert record["agreement"] == np.mean(nearest == logits.argmax(-1))
    w0 = model.head.params[0].numpy()
    dw = adaptation.fast[-2][0].numpy() - w0
    assert record["cos"] == pytest.approx(column_cosines(dw, means).mean(), rel=1e-6)
    assert model.head.params[0].numpy() == pytest.approx(w0)  # the model is left as it was


def test_the_prototype_head_is_refused_and_the_table_pairs_head_with_prototypes():
    model = MetaLearner(tiny_config(head="proto"))
    data = random_episode(model.config)
    with pytest.raises(SystemExit, match="prototype head"):
        episode(model, 1, data["support_x"][0], data["support_y"][0], data["query_x"][0],
                data["query_y"][0])
    records = [{"head": 0.8, "prototypes": 0.9, "agreement": 0.9, "cos": 0.99},
               {"head": 0.6, "prototypes": 0.8, "agreement": 0.7, "cos": 0.97}]
    summary = summarize(records)
    assert summary["head"] == pytest.approx(0.7) and summary["cos"] == pytest.approx(0.98)
    assert summary["head_minus_prototypes"]["mean"] == pytest.approx(-0.15)
    row = table([{"name": "ours_seed0", "protocol": "cross_alphabet", "steps": 5,
                  **summary}]).splitlines()[2]
    assert row.startswith("| ours_seed0 | cross_alphabet | 5 | 70.00 | 85.00 | -15.00 ± ")
    assert row.endswith("| 80.0% | 0.980 |")
