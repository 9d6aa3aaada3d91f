"""``whisperlens reproduce``: the three seed studies in one run directory and one report.

>>> summary = run_reproduce(ReproduceConfig(Path("runs/repro"), scale="quick"))  # doctest: +SKIP
>>> [c["verdict"] for c in summary["claims"]]  # doctest: +SKIP

- :mod:`.base`: the :class:`Study` interface (parts, claims, sections) every study fills;
- :mod:`.claims`: :class:`Claim` and :class:`Measure`, the verdict vocabulary;
- :mod:`.patching` (seed 001), :mod:`.steering` (seed 000), :mod:`.sae` (seed 003): the studies;
- :mod:`.run`: :class:`ReproduceConfig`, :func:`run_reproduce`, the combined summary;
- :mod:`.report`: the combined ``report.html``, claims table first.
"""

from __future__ import annotations

from whisperlens.studies.reproduce.base import (
    SCALES,
    Part,
    PartResult,
    ReproduceError,
    Scale,
    Study,
)
from whisperlens.studies.reproduce.claims import VERDICTS, Claim, Measure, Verdict
from whisperlens.studies.reproduce.run import STUDIES, ReproduceConfig, run_reproduce

__all__ = [
    "SCALES",
    "STUDIES",
    "VERDICTS",
    "Claim",
    "Measure",
    "Part",
    "PartResult",
    "ReproduceConfig",
    "ReproduceError",
    "Scale",
    "Study",
    "Verdict",
    "run_reproduce",
]
