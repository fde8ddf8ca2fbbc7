"""Episode sampler invariants and the tf.data stream."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from metagna_tf.data.episodes import ClassPool, EpisodeSampler, EpisodeSpec


def make_pool(classes=8, per_class=6, size=4):
    # every image is distinct: its first pixel encodes (class, index)
    images = np.zeros((classes * per_class, size, size, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(classes * per_class)
    indices = [np.arange(c * per_class, (c + 1) * per_class) for c in range(classes)]
    return ClassPool(images, indices, [f"c{c}" for c in range(classes)])


def image_ids(x):
    return x[:, 0, 0, 0].astype(int)


def test_episode_invariants():
    pool = make_pool()
    sampler = EpisodeSampler(pool, EpisodeSpec(ways=5, shots=2, queries=3))
    rng = np.random.default_rng(0)
    for _ in range(50):
        sx, sy, qx, qy = sampler.sample(rng)
        assert sx.shape == (10, 4, 4, 1) and qx.shape == (15, 4, 4, 1)
        assert sorted(np.unique(sy)) == list(range(5)) and sorted(np.unique(qy)) == list(range(5))
        assert np.all(np.bincount(sy) == 2) and np.all(np.bincount(qy) == 3)
        s_ids, q_ids = image_ids(sx), image_ids(qx)
        assert len(set(s_ids)) == 10 and len(set(q_ids)) == 15  # no replacement
        assert not set(s_ids) & set(q_ids)  # support and query disjoint
        # one class per label, distinct classes across labels
        s_class, q_class = s_ids // 6, q_ids // 6
        label_class = {int(y): int(c) for y, c in zip(sy, s_class, strict=True)}
        assert len(set(label_class.values())) == 5
        assert all(label_class[int(y)] == int(c) for y, c in zip(qy, q_class, strict=True))


def test_labels_are_shuffled_per_episode():
    sampler = EpisodeSampler(make_pool(), EpisodeSpec(ways=5, shots=1, queries=1))
    rng = np.random.default_rng(1)
    firsts = {tuple(sampler.sample(rng)[1]) for _ in range(20)}
    assert len(firsts) > 1


def test_streams_are_deterministic_and_resumable():
    sampler = EpisodeSampler(make_pool(), EpisodeSpec(ways=3, shots=1, queries=2))
    a = sampler.batch_for((0, 0), 5, meta_batch_size=4)
    b = sampler.batch_for((0, 0), 5, meta_batch_size=4)
    c = sampler.batch_for((1, 0), 5, meta_batch_size=4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    # the tf.data stream from start=3 yields batches 3, 4, ... of the stream
    ds = sampler.dataset((0, 0), start=3, meta_batch_size=4, count=2)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 2
    expected = sampler.batch_for((0, 0), 4, meta_batch_size=4)
    np.testing.assert_allclose(batches[1]["support_x"], expected[0] / 255, rtol=1e-6)
    np.testing.assert_array_equal(batches[1]["query_y"], expected[3])
    assert batches[0]["support_x"].shape == (4, 3, 4, 4, 1)


def test_small_classes_are_skipped_with_a_warning(caplog):
    pool = make_pool(classes=6, per_class=6)
    pool.class_indices[2] = pool.class_indices[2][:2]
    with caplog.at_level(logging.WARNING):
        sampler = EpisodeSampler(pool, EpisodeSpec(ways=3, shots=1, queries=2), source="fixture")
    assert sampler.pool.num_classes == 5
    assert "fixture: skipped 1 class(es) with fewer than 3 images" in caplog.text
    assert "c2" in caplog.text


def test_too_many_ways_names_both_numbers():
    with pytest.raises(ValueError, match=r"ways=9 but only 8 classes"):
        EpisodeSampler(make_pool(classes=8), EpisodeSpec(ways=9, shots=1, queries=1))
