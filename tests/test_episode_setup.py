"""The episodes of train, evaluate, compare and tune: seeded streams, pinned to recorded runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from metagna_tf import cli, compare, episode_setup
from metagna_tf.comparison import fingerprint
from metagna_tf.config import Config, base_config
from metagna_tf.data import load_pool
from tests.test_episodes import make_pool

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "sample_aware"


def dataset_digest(elements) -> str:
    digest = hashlib.sha256()
    for element in elements:
        for key in ("support_x", "support_y", "query_x", "query_y"):
            digest.update(np.ascontiguousarray(element[key]).tobytes())
    return digest.hexdigest()


def test_evaluation_batch_b_comes_from_the_seed_and_stream_2():
    sampler = episode_setup.make_sampler(Config(), "test", episode_setup.episode_spec(
        Config(), ways=3, shots=1, queries=2), pool=make_pool())
    batches = episode_setup.eval_batches(sampler, episodes=45, seed=7)
    assert [len(b[0]) for b in batches] == [20, 20, 5]
    for b, batch in enumerate(batches):
        again = sampler.sample_batch(np.random.default_rng([7, 2, b]), len(batch[0]))
        for part, expected in zip(batch, again, strict=True):
            np.testing.assert_array_equal(part, expected)
    corrupted = episode_setup.eval_batches(sampler, 45, seed=7, corruption="label", rate=0.5)
    for clean, bad in zip(batches, corrupted, strict=True):  # the same episodes, other labels
        for i in (0, 2, 3):
            np.testing.assert_array_equal(bad[i], clean[i])
    assert any(not np.array_equal(bad[1], clean[1])
               for clean, bad in zip(batches, corrupted, strict=True))
    with pytest.raises(ValueError, match="episodes must be at least 1, got 0"):
        episode_setup.eval_batches(sampler, 0)


def test_training_meta_batch_t_comes_from_the_config_seed_and_stream_0():
    config = Config(ways=3, shots=1, queries=2, meta_batch_size=2, seed=5, val_episodes=3)
    sampler = episode_setup.make_sampler(config, "train", pool=make_pool())
    for t, element in enumerate(episode_setup.training_dataset(sampler, config, start=4)
                                .take(2).as_numpy_iterator()):
        sx, sy, qx, qy = sampler.sample_batch(np.random.default_rng([5, 0, 4 + t]), 2)
        np.testing.assert_array_equal(element["support_y"], sy)
        np.testing.assert_array_equal(element["query_x"], qx.astype(np.float32) / 255)
    assert episode_setup.validation_batches(config) == 2
    val = list(episode_setup.validation_dataset(sampler, config).take(4).as_numpy_iterator())
    for t in (0, 1):
        _, sy, _, qy = sampler.sample_batch(np.random.default_rng([5, 1, t]), 2)
        for cycle in (t, t + 2):  # repeated: each validation reads the same cycle
            np.testing.assert_array_equal(val[cycle]["support_y"], sy)
            np.testing.assert_array_equal(val[cycle]["query_y"], qy)


# the comparisons in docs/results: their flags give back their recorded episodes
@pytest.mark.parametrize("recorded", ["indomain_5w1s", "cross_alphabet_5w5s_label0.2",
                                      "indomain_5w5s_occlusion0.2", "indomain_bound_val_5w1s"])
def test_recorded_evaluation_episodes_are_drawn_again(recorded, omniglot_dir):
    result = json.loads((RESULTS / f"{recorded}.json").read_text())
    flags = ["--workdirs", "unused", "--dataset", result["dataset"], "--split", result["split"],
             "--protocol", result["protocol"], "--episodes", result["episodes"], "--ways",
             result["ways"], "--shots", result["shots"], "--queries", result["queries"],
             "--seed", result["seed"], "--support-corruption", result["support_corruption"],
             "--corruption-rate", result["corruption_rate"]]
    settings = cli.evaluation_settings(compare.parse_args(list(map(str, flags))))
    config = base_config("omniglot_5w1s", "omniglot")  # the models' data settings
    episodes = episode_setup.evaluation_episodes(config, settings, data_dir=omniglot_dir)
    assert episodes.describe() == {k: result[k] for k in episodes.describe()}
    assert fingerprint(episodes.batches) == result["episodes_sha256"]


# recorded from training.py before the episode setup moved to episode_setup.py (5ba57eb)
TRAINING_DIGESTS = {
    0: ("e6e64c5779bf72d0cd12743542a11570276def181a1e6acecf07f38eed8ffb03",
        "e21266b6adda48ec34a77e8338f9a3e3fcfb003a9cd05262beeb64e485b8b7f8"),
    3: ("0c8eb17d9effec0c58ee1be17dd23da9e120d3ca152a83ac41cc5b6c501069fc",
        "3e808d327ed4acbb426b12a1624aa8405b6d2edc686b9620190f707448eb5477"),
}


@pytest.mark.parametrize("seed", sorted(TRAINING_DIGESTS))
def test_training_episodes_are_those_of_earlier_runs(seed, omniglot_dir):
    config = base_config("omniglot_5w1s", "omniglot").replace(seed=seed, meta_batch_size=4,
                                                              val_episodes=6)
    train, val = episode_setup.training_samplers(config, omniglot_dir)
    assert train.pool.num_classes == 4 * 169  # the training characters and their rotations
    assert val.pool.num_classes == 24
    trained = dataset_digest(episode_setup.training_dataset(train, config, start=5)
                             .take(2).as_numpy_iterator())
    validated = dataset_digest(episode_setup.validation_dataset(val, config)
                               .take(2).as_numpy_iterator())
    assert (trained, validated) == TRAINING_DIGESTS[seed]


def test_evaluation_pools_never_rotate(omniglot_dir):
    config = base_config("omniglot_5w1s", "omniglot").replace(train_split="all")
    settings = episode_setup.EvaluationSettings(split="all", episodes=1)
    batches = episode_setup.evaluation_episodes(config, settings, data_dir=omniglot_dir).batches
    rotated = load_pool("omniglot", "all", config, omniglot_dir)
    plain = load_pool("omniglot", "all", config.replace(rotations=False), omniglot_dir)
    assert rotated.num_classes == 4 * plain.num_classes
    sampler = episode_setup.make_sampler(config.replace(rotations=False), "all",
                                         pool=plain)
    np.testing.assert_array_equal(batches[0][0], episode_setup.eval_batches(sampler, 1)[0][0])
