"""The interface through which a study plugs into ``reproduce``.

A :class:`Study` contributes

- ``parts(scale)``: its runs (:class:`Part`), each a runner writing its own run directory
  under the reproduce directory (``patching-a/``, ``steering-love_hate/``, ``sae/``) and
  returning that run's summary; a study's run directory resumes by itself;
- ``claims(results)``: the seed's headline claims, each with our measurement and a verdict
  (:class:`~whisperlens.studies.reproduce.claims.Claim`);
- ``sections(results)``: its part of the report: an overview (question, method, the seed's
  numbers beside ours) followed by the studies' own report sections.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from whisperlens.errors import WhisperlensError
from whisperlens.report import Section
from whisperlens.studies.reproduce.claims import Claim

# tiny: a smoke test of every part (tests); quick: the main job on 2 CPU cores in minutes;
# full: the seeds' sizes.
Scale = Literal["tiny", "quick", "full"]
SCALES: tuple[Scale, ...] = get_args(Scale)
Runner = Callable[[Path, Any, bool], dict[str, Any]]  # (run dir, executor, progress) -> summary


class ReproduceError(WhisperlensError, ValueError):
    """A reproduce run that cannot go ahead."""


@dataclass(frozen=True)
class Part:
    """One study run inside the reproduce directory."""

    name: str  # its subdirectory and row key ("patching-a"); also its report anchor prefix
    settings: dict[str, Any]  # the study config without its output path (the run identity)
    run: Runner


@dataclass(frozen=True)
class PartResult:
    """A finished part: where it is, its summary and how long this reproduce spent on it."""

    name: str
    path: Path
    summary: dict[str, Any]
    wall_s: float  # seconds of the run that finished it (a resumed part: the last stretch)


Results = Mapping[str, PartResult]


@dataclass(frozen=True)
class Study:
    """A study as ``reproduce`` sees it (see the module docstring)."""

    id: str  # "patching"; the overview section's id
    seed: str  # "001"
    title: str
    parts: Callable[[Scale], list[Part]]
    claims: Callable[[Results], list[Claim]]
    sections: Callable[[Results], list[Section]]
    wired: bool = True  # False: a slot not yet filled in (refused before any work)
