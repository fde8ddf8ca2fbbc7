"""Accuracy summaries over episodes: mean and 95% confidence interval."""

from __future__ import annotations

import math

import numpy as np


def mean_ci95(values) -> tuple[float, float]:
    """Mean and half-width of the normal 95% CI, ``1.96 * std / sqrt(n)`` (sample std, ddof=1)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("mean_ci95: no values")
    if values.size == 1:
        return float(values[0]), math.nan
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(values.size))


def paired_difference(a, b) -> dict:
    """Mean of ``b - a`` over paired episodes with its 95% t interval (Student, n - 1 dof).

    The per-episode differences remove the between-episode variance that two separate
    confidence intervals keep, so a real difference between two models evaluated on the
    same episodes shows up with far fewer episodes.
    """
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_difference: need two equal-length 1-D arrays, got {a.shape} "
                         f"and {b.shape}")
    d = b - a
    n = d.size
    if n < 2:
        raise ValueError("paired_difference: needs at least 2 paired episodes")
    mean = float(d.mean())
    half = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "ci95": half, "low": mean - half, "high": mean + half,
            "excludes_zero": bool(mean - half > 0 or mean + half < 0), "episodes": int(n),
            "interval": "paired t, 95%"}
