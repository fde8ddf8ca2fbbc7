"""Corrupted support sets for evaluation: a few high-loss support samples, seeded.

The situation Meta-GNA's paper describes: the initialization fits most support
samples and not a few. ``corrupt_support`` damages ``k = max(1, round(rate * n))``
of an episode's ``n`` support images (queries are never touched):

* ``occlusion``: a square of half the image side, at a random place, set to 0;
* ``noise``: additive Gaussian noise, standard deviation 64 (of 255), clipped;
* ``rotation``: rotated by 90, 180 or 270 degrees;
* ``label``: ``ceil(k / 2)`` pairs of images of different classes swap labels, so every
  class keeps at least one image (in a 1-shot episode at least two images are mislabelled).

The generator is ``np.random.default_rng([seed, CORRUPTION_STREAM, batch])``, separate from
the episodes' own, so corrupted and clean evaluations see the same episodes and every
model sees the same corruption.
"""

from __future__ import annotations

import math

import numpy as np

KINDS = ("none", "occlusion", "noise", "rotation", "label")
CORRUPTION_STREAM = 3
NOISE_STD = 64.0


def corrupted_count(n: int, rate: float) -> int:
    return max(1, round(rate * n)) if rate > 0 else 0


def corrupt_support(support_x: np.ndarray, support_y: np.ndarray, kind: str, rate: float,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One episode's uint8 support images and labels -> (images, labels, corrupted mask)."""
    if kind not in KINDS:
        raise ValueError(f"support corruption must be one of {KINDS}, got {kind!r}")
    if not 0 <= rate <= 1:
        raise ValueError(f"corruption rate must be in [0, 1], got {rate}")
    x, y = support_x.copy(), support_y.copy()
    n = len(y)
    mask = np.zeros(n, bool)
    k = corrupted_count(n, rate)
    if kind == "none" or k == 0:
        return x, y, mask
    if kind == "label":
        for _ in range(math.ceil(k / 2)):  # swaps of distinct, not yet swapped images
            free = np.flatnonzero(~mask)
            i = int(rng.choice(free))
            others = free[(y[free] != y[i])]
            if not len(others):
                break
            j = int(rng.choice(others))
            y[i], y[j] = y[j], y[i]
            mask[[i, j]] = True
        return x, y, mask
    chosen = rng.choice(n, size=k, replace=False)
    mask[chosen] = True
    size = x.shape[1]
    for i in chosen:
        if kind == "occlusion":
            side = max(1, size // 2)
            top, left = rng.integers(0, size - side + 1, size=2)
            x[i, top:top + side, left:left + side] = 0
        elif kind == "noise":
            noisy = x[i].astype(np.float64) + rng.normal(0.0, NOISE_STD, x[i].shape)
            x[i] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        else:  # rotation
            x[i] = np.rot90(x[i], int(rng.integers(1, 4)), axes=(0, 1))
    return x, y, mask


def corrupt_batch(support_x, support_y, kind: str, rate: float, seed: int, batch: int):
    """A batch of episodes (leading task axis), each corrupted with the batch's generator."""
    rng = np.random.default_rng([seed, CORRUPTION_STREAM, batch])
    xs, ys = [], []
    for x, y in zip(support_x, support_y, strict=True):
        cx, cy, _ = corrupt_support(x, y, kind, rate, rng)
        xs.append(cx)
        ys.append(cy)
    return np.stack(xs), np.stack(ys)
