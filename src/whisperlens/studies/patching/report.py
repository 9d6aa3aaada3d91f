"""The patching study's report section: our matrices beside the seed's, baselines, breakdowns."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from whisperlens.report import Block, Figure, Section, Series, Table, heatmap, line_plot
from whisperlens.report.figures import format_number, new_figure
from whisperlens.runs import FIGURES_DIR, RunDir

SEED_MODE_NOTE = (
    "What seed mode measures: the seed's hook replaces the whole output of encoder block L "
    "(all 1500 frames) with the source word's block-S output. The encoder output, and so the "
    "transcript, then depends only on (source word, S, L), not on the target audio: the "
    "diagonal S = L is exactly the clean run of the source word (its 'override accuracy' is "
    "clean source recognition), and off the diagonal it measures how well blocks L+1.. cope "
    "with states from block S. It does not measure whether source states override a target."
)
SPAN_MODE_NOTE = (
    "Span mode replaces only the target word's frames (plus a margin), aligned at word "
    "onset, keeping the target's carrier and padding frames: the question the seed meant "
    "to ask, whether the source word's states override the target word in its context."
)


COMPONENT_NOTE = (
    "Component mode patches one part of block L in the target word's frames (plus a "
    "margin) with the source's value at the same block: the attention output, the MLP "
    "output, or the residual after attention; the block reruns on the patched value."
)
INTERPOLATE_NOTE = (
    "Interpolate mode sets block L's output in the target word's frames to (1 - alpha) x "
    "target + alpha x source (S = L, aligned at word onset): alpha 0 is the clean target, "
    "alpha 1 the span patch."
)
DECODER_NOTE = (
    "Decoder mode leaves the encoder alone and replaces one decoder block's cross-attention "
    "output (columns: decoder blocks) with its value under the source audio for the same "
    "tokens: which decoder block reads the word's identity from the audio."
)
MODE_NOTES = {"seed": SEED_MODE_NOTE, "span": SPAN_MODE_NOTE, "component": COMPONENT_NOTE,
              "interpolate": INTERPOLATE_NOTE, "decoder": DECODER_NOTE}  # fmt: skip


def interpolation_figure(summary: dict[str, Any], metric: str) -> Figure:
    """``metric`` against alpha, one line (with its CI band) per layer."""
    m = summary["matrices"][metric]
    alphas = [float(a) for a in m["rows"]]
    series = [
        Series(f"layer {t}", [_nan(row[i]) for row in m["values"]],
               [_nan(row[i]) for row in m["ci95_low"]], [_nan(row[i]) for row in m["ci95_high"]])
        for i, t in enumerate(m["columns"])
    ]  # fmt: skip
    fig = line_plot(alphas, series, title=f"{metric} against alpha", xlabel="alpha",
                    ylabel=metric)  # fmt: skip
    return Figure.from_matplotlib(f"Interpolation {metric}", fig, "Bands: 95 % bootstrap CIs.")


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _grid(matrix: dict[str, Any], key: str) -> list[list[float]]:
    return [[math.nan if v is None else float(v) for v in row] for row in matrix[key]]


def matrix_figure(summary: dict[str, Any], metric: str, title: str, **kwargs: Any) -> Figure:
    m = summary["matrices"][metric]
    fig = heatmap(
        _grid(m, "values"), ci_low=_grid(m, "ci95_low"), ci_high=_grid(m, "ci95_high"),
        row_labels=m["rows"], col_labels=[str(c) for c in m["columns"]], title=title,
        xlabel="decoder block" if m["row_name"] == "decoder site" else "target layer L",
        ylabel=m["row_name"], **kwargs,
    )  # fmt: skip
    return Figure.from_matplotlib(title, fig, "Cells: value with its 95 % bootstrap CI.")


def seed_comparison_figure(summary: dict[str, Any]) -> Figure:
    """Our override matrix, the seed's published one and the difference, side by side."""
    published = summary["seed"]["override"]
    ours = summary["matrices"]["override"]
    n_ours, n_seed = len(ours["values"]), len(published)
    panels: list[tuple[list[list[float]], str, dict[str, Any]]] = [
        (_grid(ours, "values"), f"ours ({summary['config']['model']})",
         {"vmin": 0.0, "vmax": 1.0}),
        (published, "seed 001 (tiny, gTTS, published)", {"vmin": 0.0, "vmax": 1.0}),
    ]  # fmt: skip
    diff = summary["seed"]["override_difference"]
    if diff is not None:
        panels.append((_grid({"v": diff}, "v"), "ours - seed", {"vmin": -1.0, "vmax": 1.0,
                                                               "cmap": "RdBu_r"}))  # fmt: skip
    fig = new_figure(4.6 * len(panels), 4.2)
    for i, (values, title, style) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        arr = np.ma.masked_invalid(np.asarray(values, dtype=float))
        im = ax.imshow(arr, aspect="auto", interpolation="nearest",
                       cmap=style.get("cmap", "viridis"), vmin=style["vmin"], vmax=style["vmax"])  # fmt: skip
        n = arr.shape[0]
        ax.set_xticks(range(n), labels=[str(j) for j in range(n)])
        ax.set_yticks(range(n), labels=[str(j) for j in range(n)])
        ax.set(title=title, xlabel="target layer L", ylabel="source layer S")
        for r in range(n):
            for c in range(n):
                ax.text(c, r, format_number(float(arr.data[r, c])), ha="center", va="center",
                        fontsize=8, color=_ink(float(arr.data[r, c]), style))  # fmt: skip
        fig.colorbar(im, ax=ax, fraction=0.046)
    note = "" if n_ours == n_seed else f" (layers differ: {n_ours} vs {n_seed}, no difference)"
    return Figure.from_matplotlib(
        "Override beside the seed", fig, f"Override accuracy, ours and the seed's{note}."
    )


def _ink(value: float, style: dict[str, Any]) -> str:
    """Readable text on a viridis cell (dark below ~0.55) or a diverging one (always black)."""
    return "white" if "cmap" not in style and value < 0.55 else "black"


def _symmetric(matrix: dict[str, Any]) -> dict[str, float]:
    """Colour limits centred on 0."""
    top = max([abs(v) for row in matrix["values"] for v in row if v is not None] or [1.0])
    return {"vmin": -top, "vmax": top}


def _fmt_ci(stat: dict[str, Any]) -> str:
    lo, hi = stat["ci95"]
    if lo is None or hi is None:
        return "n/a"
    return f"[{lo:.3f}, {hi:.3f}]"


def headline_table(summary: dict[str, Any]) -> Table:
    rows = []
    for part in ("diagonal", "off_diagonal", "overall"):
        h = summary["headline"][part]
        rows.append([
            part, h["override"]["n"], h["override"]["value"], _fmt_ci(h["override"]),
            h["both"]["value"], h["neither"]["value"], h["margin"]["value"],
            _fmt_ci(h["margin"]), h["effect"]["value"],
            (summary["seed"] or {}).get("headline", {}).get(part),
        ])  # fmt: skip
    return Table(
        ["cells", "rows", "override", "95 % CI", "both", "neither", "margin", "95 % CI",
         "effect", "seed override"], rows,
        "override = source word in the patched continuation ('both' counts, 'neither' does "
        "not); margin = log p(source) - log p(target); effect: 0 = clean target, 1 = clean source.",
    )  # fmt: skip


def baseline_table(summary: dict[str, Any]) -> Table:
    b = summary["baselines"]
    rows = [[f"clean {side} clip", b[f"clean_{side}"]["n"], b[f"clean_{side}"]["source_present"],
             b[f"clean_{side}"]["mean_margin"]] for side in ("source", "target")]  # fmt: skip
    return Table(["run", "directions", "source word heard", "mean margin"], rows,
                 "Unpatched runs of the same clips.")  # fmt: skip


def breakdown_table(summary: dict[str, Any], field: str) -> Table:
    rows = []
    for name, parts in summary[field].items():
        d, o = parts["diagonal"], parts["off_diagonal"]
        rows.append([name, d["override"]["n"], d["override"]["value"], o["override"]["value"],
                     d["margin"]["value"], o["margin"]["value"]])  # fmt: skip
    return Table(["group", "rows (diag)", "override diag", "override off-diag",
                  "margin diag", "margin off-diag"], rows, f"Breakdown {field}.")  # fmt: skip


def breakdown_figure(summary: dict[str, Any], field: str) -> Figure:
    """Override and normalised effect per group, diagonal and off-diagonal, with CIs."""
    groups = summary[field]
    columns = [("diagonal", "override"), ("off_diagonal", "override"), ("off_diagonal", "effect")]
    stats = [[groups[g][part][m] for part, m in columns] for g in groups]
    fig = heatmap(
        [[_nan(c["value"]) for c in row] for row in stats],
        ci_low=[[_nan(c["ci95"][0]) for c in row] for row in stats],
        ci_high=[[_nan(c["ci95"][1]) for c in row] for row in stats],
        row_labels=list(groups), col_labels=["override\ndiag", "override\noff-diag", "effect\noff-diag"],
        vmin=0.0, vmax=1.0, title=f"Breakdown {field.removeprefix('by_')}",
    )  # fmt: skip
    return Figure.from_matplotlib(f"Breakdown {field}", fig, "Cells: value [95 % CI].")


def report_section(summary: dict[str, Any]) -> Section:
    config = summary["config"]
    exp, mode = config["experiment"].upper(), config["mode"]
    intro = (
        f"Experiment {exp}, {mode} mode, model {config['model']}: {summary['n_pairs']} pairs "
        f"({summary['pairs_by_kind']}), {summary['n_rows']} rows, {config['stimuli']} stimuli.\n\n"
        + MODE_NOTES[mode]
    )
    blocks: list[Block] = [
        matrix_figure(summary, "override", f"Override ({mode} mode)", vmin=0.0, vmax=1.0),
        *([seed_comparison_figure(summary)] if summary["seed"] else []),
        *(
            [interpolation_figure(summary, m) for m in ("override", "effect")]
            if mode == "interpolate"
            else []
        ),
        matrix_figure(
            summary,
            "margin",
            "Margin log p(source) - log p(target)",
            cmap="RdBu_r",
            **_symmetric(summary["matrices"]["margin"]),
        ),  # fmt: skip
        matrix_figure(summary, "effect", "Normalised effect", cmap="RdBu_r", vmin=0.0, vmax=1.0),
        headline_table(summary),
        baseline_table(summary),
    ]
    has_off = mode in ("seed", "span")
    for field in ("by_kind", "by_feature", "by_position"):
        if summary[field]:
            if has_off:
                blocks.append(breakdown_figure(summary, field))
            blocks.append(breakdown_table(summary, field))
    return Section(f"patching-{config['experiment']}-{mode}", f"Activation patching {exp}",
                   intro, blocks)  # fmt: skip


# --- writing -----------------------------------------------------------------------------


def write_section(run: RunDir, section: Section, title: str, metadata: dict[str, Any]) -> None:
    """``section`` rendered on its own into the run's ``report.html``, its figures as PNG
    files under ``figures/``."""
    from whisperlens.report import Report, render_report, write_figures

    write_figures([section], run.file(FIGURES_DIR))
    render_report(Report(title, [section], metadata), run.path)


# --- comparison by relative depth (patch compare) ------------------------------------------

COMPARE_NOTE = (
    "Runs of models with different numbers of encoder blocks, compared by relative depth: "
    "block l (0-based) of an n-block encoder sits at (l + 1) / n, the share of the encoder's "
    "blocks that have run once its output exists. Diagonal: S = L; below: S > L (a later "
    "block's states written into an earlier block and rerun through the blocks after it); "
    "above: S < L (states that skip blocks). The binned matrices average each run's cells "
    "onto the grid of the run with the fewest blocks (bins of relative depth (j/k, (j+1)/k], "
    "weighted by rows; no CI)."
)


def _stat_text(stat: dict[str, Any]) -> str:
    value = stat["value"]
    return "n/a" if value is None else f"{value:.3f} {_fmt_ci(stat)}"


def triangles_table(comparison: dict[str, Any]) -> Table:
    rows = []
    for run in comparison["runs"]:
        for part in ("diagonal", "below", "above"):
            stats = run["triangles"][part]
            rows.append([run["label"], part, stats["override"]["n"],
                         *(_stat_text(stats[m]) for m in ("override", "margin", "effect"))])  # fmt: skip
    return Table(["run", "cells", "rows", "override [95 % CI]", "margin [95 % CI]",
                  "effect [95 % CI]"], rows,
                 "Diagonal S = L, below S > L, above S < L; CIs over pair directions.")  # fmt: skip


def curves_table(comparison: dict[str, Any]) -> Table:
    rows = []
    for run in comparison["runs"]:
        curves = run["curves"]
        for i, point in enumerate(curves["override"]):
            rows.append([run["label"], point["layer"], round(point["relative_depth"], 3),
                         *(_stat_text(curves[m][i]) for m in ("override", "margin", "effect"))])  # fmt: skip
    return Table(["run", "block", "relative depth", "override [95 % CI]", "margin [95 % CI]",
                  "effect [95 % CI]"], rows, "The diagonal cell (S = L) of each block.")  # fmt: skip


def curves_figure(comparison: dict[str, Any]) -> Figure:
    """Override, margin and effect of the diagonal cells against relative depth, one line
    (with its CI band) per run."""
    metrics = ("override", "margin", "effect")
    fig = new_figure(4.4 * len(metrics), 3.8)
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        for run in comparison["runs"]:
            points = run["curves"][metric]
            x = [p["relative_depth"] for p in points]
            (line,) = ax.plot(x, [_nan(p["value"]) for p in points], marker="o", markersize=3,
                              label=run["label"])  # fmt: skip
            ax.fill_between(x, [_nan(p["ci95"][0]) for p in points],
                            [_nan(p["ci95"][1]) for p in points], color=line.get_color(),
                            alpha=0.2, linewidth=0)  # fmt: skip
        ax.set(title=f"{metric}, S = L", xlabel="relative depth (l + 1) / n", ylabel=metric,
               xlim=(0.0, 1.05))  # fmt: skip
    fig.axes[0].legend(fontsize=7, loc="lower left")
    return Figure.from_matplotlib("Diagonal against relative depth", fig,
                                  "Bands: 95 % bootstrap CIs.")  # fmt: skip


def binned_figure(comparison: dict[str, Any], metric: str = "override") -> Figure:
    """Each run's ``metric`` matrix on the common grid of relative depth, side by side."""
    runs, k = comparison["runs"], comparison["n_bins"]
    edges = [f"{e:.2g}" for e in comparison["bin_edges"][1:]]
    fig = new_figure(4.4 * len(runs), 4.0)
    for i, run in enumerate(runs):
        ax = fig.add_subplot(1, len(runs), i + 1)
        arr = np.ma.masked_invalid(np.asarray(_grid({"v": run["binned"][metric]}, "v")))
        im = ax.imshow(arr, aspect="auto", interpolation="nearest", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(k), labels=edges)
        ax.set_yticks(range(k), labels=edges)
        ax.set(title=run["label"], xlabel="target depth (bin end)", ylabel="source depth")
        ax.title.set_fontsize(8)
        for r in range(k):
            for c in range(k):
                v = float(arr.data[r, c])
                ax.text(c, r, format_number(v), ha="center", va="center", fontsize=8,
                        color="white" if v < 0.55 else "black")  # fmt: skip
        fig.colorbar(im, ax=ax, fraction=0.046)
    return Figure.from_matplotlib(f"Binned {metric} by relative depth", fig,
                                  f"Cells averaged into {k} x {k} bins of relative depth.")  # fmt: skip


def compare_section(comparison: dict[str, Any]) -> Section:
    """The report section of ``whisperlens patch compare``."""
    labels = "; ".join(r["label"] for r in comparison["runs"])
    return Section("patching-compare", "Activation patching by relative depth",
                   f"{COMPARE_NOTE}\n\nRuns: {labels}.",
                   [triangles_table(comparison), curves_figure(comparison),
                    binned_figure(comparison), curves_table(comparison)])  # fmt: skip
