"""``reproduce``: the three seed studies in one run directory, one summary and one report.

The reproduce directory is itself a :class:`~whisperlens.runs.RunDir` (study "reproduce";
one row per finished part, with its wall time) whose artifacts are the parts' own run
directories. A part with a row and a ``summary.json`` is not run again; any other part is
run, and its run directory resumes from its rows, so an interrupted reproduce loses at most
the unit in flight. ``--overwrite`` discards the whole directory.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisperlens.errors import WhisperlensError
from whisperlens.runs import SUMMARY_FILE, RunDir
from whisperlens.studies.reproduce import report
from whisperlens.studies.reproduce.base import (
    SCALES,
    Part,
    PartResult,
    ReproduceError,
    Scale,
    Study,
)
from whisperlens.studies.reproduce.patching import PATCHING
from whisperlens.studies.reproduce.sae import SAE
from whisperlens.studies.reproduce.steering import STEERING

STUDY = "reproduce"
FORMAT_VERSION = 1
STUDIES: dict[str, Study] = {s.id: s for s in (PATCHING, STEERING, SAE)}
log = logging.getLogger("whisperlens")


@dataclass(frozen=True)
class ReproduceConfig:
    """One reproduce run. The CLI parses argv into this; :func:`run_reproduce` takes it."""

    out: Path  # the reproduce directory (each part's run directory goes under it)
    scale: Scale = "quick"  # tiny (smoke test), quick (minutes on 2 cores), full (the seeds')
    studies: tuple[str, ...] = tuple(STUDIES)  # which studies; the product runs all three

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.scale not in SCALES:
            raise ReproduceError(f"unknown scale {self.scale!r}", f"use one of {SCALES}")
        unknown = [s for s in self.studies if s not in STUDIES]
        if unknown or not self.studies:
            raise ReproduceError(f"unknown or no studies {unknown}", f"use some of {list(STUDIES)}")
        ordered = tuple(s for s in STUDIES if s in self.studies)  # one order, no repeats
        object.__setattr__(self, "studies", ordered)

    def selected(self) -> list[Study]:
        return [STUDIES[s] for s in self.studies]


def plan(config: ReproduceConfig) -> list[tuple[Study, list[Part]]]:
    """Every selected study with its parts; refuses a study whose slot is not wired."""
    for study in config.selected():
        if not study.wired:
            raise ReproduceError(
                f"the {study.id} study (seed {study.seed}) is not wired into reproduce yet "
                f"(whisperlens/studies/reproduce/{study.id}.py)",
                "wire it, or select the others explicitly, e.g. --study patching --study steering",
            )
    return [(study, study.parts(config.scale)) for study in config.selected()]


def settings(config: ReproduceConfig, planned: list[tuple[Study, list[Part]]]) -> dict[str, Any]:
    """The run's identity: scale, studies and every part's own config."""
    return {"scale": config.scale, "studies": list(config.studies),
            "parts": {p.name: p.settings for _, parts in planned for p in parts}}  # fmt: skip


def run_part(run: RunDir, part: Part, executor: Any, progress: bool, index: str) -> PartResult:
    """Run (or resume) one part, or read it back when this reproduce already finished it."""
    path = run.file(part.name)
    if part.name in run.done and (path / SUMMARY_FILE).is_file():
        summary = json.loads((path / SUMMARY_FILE).read_text(encoding="utf-8"))
        log.info("%s %s: done earlier, read from %s", index, part.name, path)
        return PartResult(part.name, path, summary, float(run.done[part.name]["wall_s"]))
    log.info("%s %s -> %s", index, part.name, path)
    start = time.perf_counter()
    try:
        summary = part.run(path, executor, progress)
    except WhisperlensError as exc:
        raise ReproduceError(f"{part.name}: {exc.cause}", exc.fix) from None
    wall = time.perf_counter() - start
    summary = json.loads(json.dumps(summary, default=str))  # as it reads back from disk
    if part.name in run.done:  # its summary had gone missing: re-summarised above
        wall = float(run.done[part.name]["wall_s"])
    else:
        run.append({"part": part.name, "study": summary.get("study"), "wall_s": round(wall, 2)})
    log.info("%s %s: %.0f s", index, part.name, wall)
    return PartResult(part.name, path, summary, wall)


def run_reproduce(
    config: ReproduceConfig, *, executor: Any = None, overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Run every part not yet finished, then write ``summary.json`` and ``report.html``."""
    planned = plan(config)  # refuses an unwired study before touching the directory
    names = [p.name for _, parts in planned for p in parts]
    ident = settings(config, planned)
    try:
        run = RunDir.open(config.out, study=STUDY, config=ident, format_version=FORMAT_VERSION,
                          key="part", artifacts=names, overwrite=overwrite)  # fmt: skip
    except WhisperlensError as exc:
        raise ReproduceError(exc.cause, exc.fix) from None
    with run:
        run.start()  # the parts' directories follow: the run has started
        results: dict[str, PartResult] = {}
        for _study, parts in planned:
            for part in parts:
                index = f"[{len(results) + 1}/{len(names)}]"
                results[part.name] = run_part(run, part, executor, progress, index)
        claims = [c for study, _ in planned for c in study.claims(results)]
        sections = [s for study, _ in planned for s in study.sections(results)]
        # as it reads back from summary.json (tuples as lists), resumed or not
        summary = json.loads(json.dumps(combined_summary(ident, results, claims), default=str))
        run.write_summary(summary)
        sections.append(report.run_section(list(results.values()), ident))
        metadata = {"scale": config.scale, "studies": ", ".join(config.studies),
                    "verdicts": json.dumps(summary["verdicts"])}  # fmt: skip
        report.render("whisperlens: reproducing the seed studies", claims, sections, metadata,
                      run.path)  # fmt: skip
    return summary


def combined_summary(
    ident: dict[str, Any], results: dict[str, PartResult], claims: list[Any]
) -> dict[str, Any]:
    verdicts: dict[str, int] = {}
    for c in claims:
        verdicts[c.verdict] = verdicts.get(c.verdict, 0) + 1
    return {
        "study": STUDY,
        "config": ident,
        "claims": [c.to_dict() for c in claims],
        "verdicts": verdicts,
        "wall_s": {name: round(r.wall_s, 2) for name, r in results.items()},
        "parts": {name: {"path": name, "summary": r.summary} for name, r in results.items()},
    }
