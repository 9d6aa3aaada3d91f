"""Confidence intervals every study reports: Wilson for proportions, percentile bootstrap.

Both are seeded and deterministic, so a resumed or re-run study writes the same summary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Z95 = 1.959964  # two-sided 95 % normal quantile


def wilson_interval(n_success: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % by default); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = n_success / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over resampled rows of ``values``.

    ``values`` is [n] or [n, k]; ``statistic`` maps resamples [n_resamples, n(, k)] to
    [n_resamples] (default: the mean of a 1-D sample). NaN bounds for an empty sample.
    """
    data = np.asarray(values, dtype=float)
    if len(data) == 0:
        return math.nan, math.nan
    stat = statistic or (lambda x: x.mean(axis=1))
    idx = np.random.default_rng(seed).integers(0, len(data), size=(n_resamples, len(data)))
    boot = stat(data[idx])
    tail = (1 - level) / 2
    return float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail))


def mean_or_none(values: Sequence[float]) -> float | None:
    """The mean, or None for an empty sequence (JSON-friendly)."""
    return sum(values) / len(values) if len(values) else None
