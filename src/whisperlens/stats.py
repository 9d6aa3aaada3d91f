"""Statistics every study reports: Wilson and percentile-bootstrap confidence intervals,
paired sign-flip permutation p-values, and Holm / Benjamini-Hochberg adjusted p-values.

All are seeded and deterministic, so a resumed or re-run study writes the same summary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from whisperlens.errors import WhisperlensError

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


class StatsError(WhisperlensError, ValueError):
    """Input a statistic cannot use (non-finite values, p-values outside [0, 1])."""


N_EXACT_MAX = 16  # sign_flip_pvalue enumerates all 2^n sign patterns up to this many pairs
N_DRAWS = 10_000  # Monte Carlo sign patterns beyond that


def sign_flip_pvalue(
    diffs: Sequence[float] | np.ndarray,
    *,
    n_exact_max: int = N_EXACT_MAX,
    n_draws: int = N_DRAWS,
    seed: int = 0,
) -> float:
    """One-sided paired permutation p-value that the mean of ``diffs`` is above zero.

    Under the null each paired difference is symmetric about zero, so its sign is a coin
    flip. p is the share of sign patterns whose sum is at least the observed sum: exact over
    all 2^n patterns (the observed one included) for n <= ``n_exact_max``, else a seeded
    Monte Carlo estimate (1 + hits) / (1 + n_draws). NaN for an empty sample.
    """
    d_N = np.asarray(diffs, dtype=float).reshape(-1)
    if not np.isfinite(d_N).all():
        raise StatsError("sign_flip_pvalue got non-finite differences", "drop them first")
    n = len(d_N)
    if n == 0:
        return math.nan
    observed = d_N.sum()
    tol = 1e-10 * max(float(np.abs(d_N).sum()), 1e-300)  # float error of a reordered sum
    if n <= n_exact_max:
        bits_PN = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        sums_P = (1 - 2 * bits_PN) @ d_N
        return float(np.mean(sums_P >= observed - tol))
    signs_PN = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_draws, n))
    hits = int(np.sum(signs_PN @ d_N >= observed - tol))
    return (1 + hits) / (1 + n_draws)


def smallest_sign_flip_pvalue(
    n: int, *, n_exact_max: int = N_EXACT_MAX, n_draws: int = N_DRAWS
) -> float:
    """The smallest p :func:`sign_flip_pvalue` can return for n pairs (all differences
    positive): 2^-n when exact, 1 / (1 + n_draws) under Monte Carlo."""
    return 0.5**n if n <= n_exact_max else 1 / (1 + n_draws)


def _pvalues(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    p = np.asarray(pvalues, dtype=float).reshape(-1)
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise StatsError("p-values must be finite and in [0, 1]", "drop missing tests first")
    return p


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error): the i-th smallest p times
    (m - i + 1), made non-decreasing in p and capped at 1. Reject where adjusted <= alpha."""
    p = _pvalues(pvalues)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate): min over j >= i of
    p_(j) m / j, capped at 1. Reject where adjusted <= q (the step-up procedure at q)."""
    p = _pvalues(pvalues)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def mean_or_none(values: Sequence[float]) -> float | None:
    """The mean, or None for an empty sequence (JSON-friendly)."""
    return sum(values) / len(values) if len(values) else None
