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
