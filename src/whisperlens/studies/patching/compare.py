"""Patching runs of different model sizes side by side, by relative depth.

tiny.en has 4 encoder blocks and base 6, so their layer x layer matrices cannot be compared
cell by cell. The convention here: block ``l`` (0-based) of an ``n``-block encoder sits at
relative depth ``(l + 1) / n``, the share of the encoder's blocks that have run once its
output exists (tiny.en: 0.25, 0.5, 0.75, 1; base: 1/6, 1/3, 1/2, 2/3, 5/6, 1). Per run:

- ``triangles``: override, margin and effect on the diagonal (S = L), below it (S > L) and
  above it (S < L), with bootstrap 95 % CIs over pair directions (the run's summary);
- ``curves``: each block's diagonal cell (S = L) at its relative depth, with its CI;
- ``binned``: the matrix averaged onto a ``k x k`` grid of relative depth, ``k`` the fewest
  blocks among the runs: block ``l`` of ``n`` falls in bin ``ceil((l + 1) k / n) - 1`` (depth
  in ``(j / k, (j + 1) / k]``) and a bin is the row-weighted mean of its cells (no CI). The
  run with ``k`` blocks keeps its own matrix.

>>> comparison = run_compare([Path("runs/a-tiny"), Path("runs/a-base")], Path("runs/cmp"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from whisperlens.errors import WhisperlensError
from whisperlens.runs import FIGURES_DIR, SUMMARY_FILE, RunDir
from whisperlens.studies.patching.study import PatchingError
from whisperlens.studies.patching.summary import LAYER_MODES, TRIANGLE_METRICS

COMPARE_STUDY = "patching-compare"
COMPARE_FORMAT = 1
CONVENTION = "block l (0-based) of an n-block encoder is at relative depth (l + 1) / n"


def relative_depth(layer: int, n_layers: int) -> float:
    return (layer + 1) / n_layers


def depth_bin(layer: int, n_layers: int, n_bins: int) -> int:
    """The bin ``j`` whose depth interval ``(j / n_bins, (j + 1) / n_bins]`` holds ``layer``."""
    return -(-(layer + 1) * n_bins // n_layers) - 1  # ceil, in integers (no rounding at 0.5)


def load_summary(run: Path) -> dict[str, Any]:
    """The summary of a finished seed- or span-mode patching run, or a clear error."""
    path = Path(run) / SUMMARY_FILE
    if not path.is_file():
        raise PatchingError(f"{run} has no {SUMMARY_FILE}",
                            "pass the --out directory of a finished `whisperlens patch a|b` run")  # fmt: skip
    summary = json.loads(path.read_text(encoding="utf-8"))
    mode = summary.get("config", {}).get("mode")
    if summary.get("study") != "patching":
        raise PatchingError(f"{run} is not a patching run (study {summary.get('study')!r})",
                            "pass --out directories of `whisperlens patch a|b`")  # fmt: skip
    if mode not in LAYER_MODES:
        raise PatchingError(
            f"{run} is a {mode} mode run; comparing by relative depth needs source x target "
            "layer matrices", f"pass runs in {' or '.join(LAYER_MODES)} mode")  # fmt: skip
    if summary.get("triangles") is None:
        raise PatchingError(
            f"the summary of {run} has no 'triangles' (written by an older whisperlens)",
            "rerun its `whisperlens patch` command with the same options: it resumes with "
            "nothing to compute and rewrites summary.json",
        )
    return summary


def layer_curve(summary: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    """Each block's diagonal cell (S = L) of ``metric`` at its relative depth, with its CI."""
    m, n = summary["matrices"][metric], int(summary["n_layers"])
    return [
        {"layer": i, "relative_depth": relative_depth(i, n), "value": m["values"][i][i],
         "ci95": [m["ci95_low"][i][i], m["ci95_high"][i][i]], "n": m["n"][i][i]}
        for i in range(n)
    ]  # fmt: skip


def binned_matrix(summary: dict[str, Any], metric: str, n_bins: int) -> list[list[float | None]]:
    """The ``metric`` matrix on an ``n_bins x n_bins`` grid of relative depth: each bin the
    mean of the cells in it, weighted by their rows (None where no cell has a value)."""
    m, n = summary["matrices"][metric], int(summary["n_layers"])
    total = [[0.0] * n_bins for _ in range(n_bins)]
    weight = [[0] * n_bins for _ in range(n_bins)]
    for s in range(n):
        for t in range(n):
            value, rows = m["values"][s][t], m["n"][s][t]
            if value is not None and rows:
                i, j = depth_bin(s, n, n_bins), depth_bin(t, n, n_bins)
                total[i][j] += value * rows
                weight[i][j] += rows
    return [[total[i][j] / weight[i][j] if weight[i][j] else None for j in range(n_bins)]
            for i in range(n_bins)]  # fmt: skip


def run_label(summary: dict[str, Any]) -> str:
    c = summary["config"]
    return (f"{c['model']} ({summary['n_layers']} blocks), {c['experiment'].upper()} "
            f"{c['mode']}, {summary['n_pairs']} pairs")  # fmt: skip


def compare_summaries(summaries: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """The comparison (``summary.json`` of ``patch compare``; see the module docstring)."""
    n_bins = min(int(s["n_layers"]) for s in summaries)
    runs = []
    for summary, name in zip(summaries, names, strict=True):
        n = int(summary["n_layers"])
        runs.append({
            "run": name,
            "label": run_label(summary),
            "model": summary["config"]["model"],
            "experiment": summary["config"]["experiment"],
            "mode": summary["config"]["mode"],
            "n_layers": n,
            "n_pairs": summary["n_pairs"],
            "relative_depths": [relative_depth(i, n) for i in range(n)],
            "triangles": summary["triangles"],
            "curves": {m: layer_curve(summary, m) for m in TRIANGLE_METRICS},
            "binned": {m: binned_matrix(summary, m, n_bins) for m in TRIANGLE_METRICS},
        })  # fmt: skip
    return {"study": COMPARE_STUDY, "convention": CONVENTION, "n_bins": n_bins,
            "bin_edges": [j / n_bins for j in range(n_bins + 1)], "runs": runs}  # fmt: skip


def run_compare(runs: Sequence[Path], out: Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Compare finished patching runs into ``out``: ``summary.json``, ``report.html`` and
    the figures. Every run is checked before ``out`` is touched."""
    from whisperlens.studies.patching.report import compare_section, write_section

    if not runs:
        raise PatchingError("no runs to compare", "pass one or more patching run directories")
    summaries = [load_summary(r) for r in runs]
    comparison = compare_summaries(summaries, [str(r) for r in runs])
    try:
        run = RunDir.open(out, study=COMPARE_STUDY, config={"runs": [str(r) for r in runs]},
                          format_version=COMPARE_FORMAT, overwrite=overwrite,
                          inputs={"summaries": [Path(r) / SUMMARY_FILE for r in runs]},
                          artifacts=[FIGURES_DIR])  # fmt: skip
    except WhisperlensError as exc:
        raise PatchingError(exc.cause, exc.fix) from None
    with run:
        run.write_summary(comparison)
        write_section(run, compare_section(comparison), "whisperlens patching by relative depth",
                      {"runs": ", ".join(r["label"] for r in comparison["runs"])})  # fmt: skip
    return comparison
