"""Confidence intervals against scipy and against the normal approximation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from whisperlens.stats import bootstrap_ci, mean_or_none, wilson_interval


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (412, 500), (1, 1)])
def test_wilson_matches_scipy(k: int, n: int) -> None:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-6)


def test_wilson_without_data_is_uninformative() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bootstrap_of_the_mean_matches_the_normal_interval() -> None:
    sample = np.random.default_rng(3).normal(2.0, 1.5, size=400)
    lo, hi = bootstrap_ci(sample, n_resamples=4000, seed=1)
    half = 1.959964 * sample.std(ddof=1) / math.sqrt(len(sample))
    assert lo == pytest.approx(sample.mean() - half, abs=0.03)
    assert hi == pytest.approx(sample.mean() + half, abs=0.03)
    assert bootstrap_ci(sample, seed=1) == bootstrap_ci(sample, seed=1)  # seeded


def test_bootstrap_of_a_ratio_over_rows() -> None:
    rows = np.array([[1, 3], [1, 2], [0, 4]], dtype=float)  # errors, reference words
    lo, hi = bootstrap_ci(rows, lambda x: x[..., 0].sum(1) / x[..., 1].sum(1), seed=0)
    assert 0.0 <= lo <= 2 / 9 <= hi <= 0.5  # no resample is worse than all-row-2 (1/2)
    assert math.isnan(bootstrap_ci([])[0])


def test_mean_or_none() -> None:
    assert mean_or_none([]) is None and mean_or_none([1.0, 2.0]) == 1.5
