"""Activation patching study (seed 001): experiments A and B in four modes.

>>> summary = run_patching(PatchConfig("a", Path("out"), n_pairs=30))  # doctest: +SKIP
>>> summary["headline"]["diagonal"]["override"]["value"]  # doctest: +SKIP

- :mod:`.engine`: clean states once, continuation with ``HookedWhisper.encode_from``,
  batched decoding after the carrier prefix and forced-choice scoring;
- :mod:`.study`: configuration, pairs, work units and rows (the metrics are defined there);
- :mod:`.summary`: layer x layer matrices with bootstrap CIs, baselines, the seed's numbers;
- :mod:`.report`: the report sections;
- :mod:`.compare`: runs of different model sizes side by side, by relative depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from whisperlens.errors import WhisperlensError
from whisperlens.runs import FIGURES_DIR, RunDir
from whisperlens.stimuli.wordlists import wordlist_files
from whisperlens.studies.patching.study import (
    FORMAT_VERSION,
    MODES,
    STUDY,
    PatchConfig,
    PatchingError,
    PatchTask,
    StimuliTask,
    Unit,
    build_directions,
    build_pairs,
    build_units,
    check_model,
    is_synthesized,
    load_model,
    unit_keys,
)
from whisperlens.studies.patching.summary import fill_clean_targets, summarize

__all__ = ["MODES", "PatchConfig", "PatchingError", "open_run", "run_patching"]


def open_run(config: PatchConfig, overwrite: bool = False) -> RunDir:
    """The run directory for ``config`` (created, resumed, or restarted with ``overwrite``)."""
    assert config.words is not None
    try:
        return RunDir.open(
            config.out, study=STUDY, config=config.settings(), format_version=FORMAT_VERSION,
            inputs={"words": wordlist_files(config.words)}, key="key", overwrite=overwrite,
            artifacts=[FIGURES_DIR],
        )  # fmt: skip
    except WhisperlensError as exc:
        raise PatchingError(exc.cause, exc.fix) from None


def run_patching(
    config: PatchConfig, *, executor: Any = None, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run every unit of ``config`` not yet in the run directory, then write the summary and
    report. Bad input (model, word list, counts) is refused before any row is written."""
    from whisperlens.executors import InlineExecutor

    executor = executor or InlineExecutor()
    directions = build_directions(config, build_pairs(config))
    units = build_units(config, directions)
    with open_run(config, overwrite) as run:  # refuses a bad --out before any work
        model = load_model(str(config.model))
        check_model(config, directions, model)
        n_layers = int(model.n_decoder_layers if config.mode == "decoder" else model.n_layers)
        keys = {id(u): unit_keys(u, n_layers) for u in units}
        pending = [u for u in units if any(k not in run.done for k in keys[id(u)])]
        n_rows = sum(len(k) for k in keys.values())
        if pending:
            synthesize_missing(pending, executor, progress)
            desc = f"patch {config.experiment} {config.mode}"
            with run.progress(n_rows, desc, progress) as bar:
                for _unit, rows in executor.map(PatchTask(config), pending):
                    fresh = [r for r in rows if r["key"] not in run.done]
                    run.extend(fresh)
                    bar.update(len(fresh))
        rows = fill_clean_targets(run.rows(k for u in units for k in keys[id(u)]))
        summary = summarize(config.settings(), rows, n_layers)
        run.write_summary(summary)
        write_report(run, summary)
    return summary


def synthesize_missing(units: Sequence[Unit], executor: Any, progress: bool) -> None:
    """Synthesize the stimuli of ``units`` that the TTS cache lacks, on ``executor``'s
    workers, which exit before the patching workers start (no TTS engine in their memory)."""
    from tqdm import tqdm

    words = {w: None for u in units for d in u.directions for w in (d.source, d.target)}
    missing = [w for w in words if not is_synthesized(w)]
    if missing:
        with tqdm(total=len(missing), desc="stimuli", disable=not progress, unit="word") as bar:
            for _ in executor.map(StimuliTask(), missing):
                bar.update(1)


def write_report(run: RunDir, summary: dict[str, Any]) -> None:
    """The study's report section, rendered on its own into ``report.html``."""
    from whisperlens.studies.patching.report import report_section, write_section

    write_section(run, report_section(summary), "whisperlens activation patching",
                  summary["config"])  # fmt: skip
