"""Claims: a seed's headline statement, its number, our measurement with a CI, and a verdict.

Each study of ``reproduce`` turns its run summaries into a list of :class:`Claim`; the
report opens with them as one table, each row linking to the section with the evidence.
Verdicts follow stated rules in each study's module (a CI against the seed's number, an
ordering of two CIs, a cosine against its random null), never a judgement by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import numpy as np

from whisperlens.stats import bootstrap_ci

Verdict = Literal["reproduced", "not reproduced", "reproduced, explained otherwise"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)


@dataclass(frozen=True)
class Measure:
    """One number we measured: a value, its 95 % CI (None where a CI does not apply) and n."""

    label: str  # what it is ("diagonal override")
    value: float | None
    ci95: tuple[float | None, float | None] | None = None
    n: int | None = None  # the sample the CI resamples (rows, clips, directions)

    def text(self) -> str:
        """``diagonal override 0.84 [0.82, 0.86] (n=1738)``."""
        if self.value is None:
            return f"{self.label} n/a"
        out = f"{self.label} {_num(self.value)}"
        if self.ci95 is not None and None not in self.ci95:
            lo, hi = self.ci95
            out += f" [{_num(lo)}, {_num(hi)}]"
        return out + (f" (n={self.n})" if self.n is not None else "")


@dataclass(frozen=True)
class Claim:
    """A seed's headline claim beside our measurement of it."""

    id: str  # unique, HTML-id safe ("001-diagonal"); the claims table links rows by it
    seed: str  # "000", "001", "003"
    claim: str  # the seed's statement, as published
    seed_value: str  # the seed's number(s), or "qualitative"
    measures: tuple[Measure, ...]  # ours, with CIs
    verdict: Verdict
    explanation: str  # why the verdict, and how our numbers differ from the seed's
    evidence: str  # id of the report section holding the evidence

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")

    @property
    def ours(self) -> str:
        return "; ".join(m.text() for m in self.measures)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ours": self.ours}


def _num(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.1e}"


def stat_measure(label: str, stat: dict[str, Any]) -> Measure:
    """A Measure from a study summary's ``{"value", "ci95", "n"}`` statistic."""
    lo, hi = stat.get("ci95") or (None, None)
    return Measure(label, stat.get("value"), (lo, hi), stat.get("n"))


def mean_measure(label: str, values: Sequence[float], seed: int = 0) -> Measure:
    """The mean of independent values (one per clip, per direction) with a bootstrap CI."""
    vals = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(vals) == 0:
        return Measure(label, None, (None, None), 0)
    lo, hi = bootstrap_ci(vals, seed=seed)
    return Measure(label, float(vals.mean()), (lo, hi), len(vals))


def above(a: Measure, b: Measure) -> bool:
    """Whether ``a``'s CI lies entirely above ``b``'s (the ordering is not chance)."""
    if a.ci95 is None or b.ci95 is None or a.ci95[0] is None or b.ci95[1] is None:
        return False
    return a.ci95[0] > b.ci95[1]


def contains(m: Measure, x: float) -> bool:
    """Whether ``m``'s CI contains ``x``."""
    if m.ci95 is None or m.ci95[0] is None or m.ci95[1] is None:
        return False
    return m.ci95[0] <= x <= m.ci95[1]
