"""Baselines without meta-learning, evaluated on the same episodes as the models.

``pixel_nn``: each query gets the label of its nearest support image in pixel
space (Euclidean distance on the model input, ``value / 255``). A meta-learned
model that does not beat it on a protocol has learned nothing that transfers there.
"""

from __future__ import annotations

import numpy as np

BASELINES = ("pixel_nn",)


def pixel_nn_accuracy(support_x, support_y, query_x, query_y) -> float:
    """1-nearest-neighbour accuracy of one episode (uint8 images)."""
    s = support_x.reshape(len(support_x), -1).astype(np.float64) / 255
    q = query_x.reshape(len(query_x), -1).astype(np.float64) / 255
    distances = (q * q).sum(1)[:, None] - 2 * q @ s.T + (s * s).sum(1)[None, :]
    predicted = np.asarray(support_y)[np.argmin(distances, axis=1)]
    return float(np.mean(predicted == np.asarray(query_y)))


def baseline_accuracies(name: str, batches) -> np.ndarray:
    """Per-episode accuracy of baseline ``name`` on ``episode_setup.eval_batches`` batches."""
    if name != "pixel_nn":
        raise ValueError(f"unknown baseline {name!r}; known: {BASELINES}")
    return np.asarray([pixel_nn_accuracy(*episode) for sx, sy, qx, qy in batches
                       for episode in zip(sx, sy, qx, qy, strict=True)])
