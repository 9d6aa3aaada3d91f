"""Static HTML dashboard of SAE latents, rendered from a features run directory alone.

:func:`render_dashboard` reads ``FEAT/latents.json`` (the features contract: one entry per
analysed latent, with its top examples' snippet WAVs and activation traces) and writes::

    index.html              sortable, filterable table of latents + headline statistics
    latents/L00012.html     one page per latent: statistics, purity by label type, and per
                            top example a spectrogram with the activation overlaid and a player
    audio/L00012_00.wav     the snippets (hard links to FEAT/snippets where possible, else copies)
    spectrograms/<hash>.png one figure per example, named by a hash of what it shows, so a
                            re-render draws only the figures whose inputs changed

No page references the network, so the directory works opened from disk (and can be moved as
a whole). Every file is written atomically; a re-render replaces pages in place, draws only
new figures (the slow part, ~0.1 s each: pass a ``ProcessExecutor`` to spread them over
cores) and removes the pages, clips and figures of latents no longer in ``latents.json``.
Text is escaped by the report package's Jinja2 environment; tables are its tables.

>>> render_dashboard("runs/features", summaries={"evaluate": evaluate_summary})  # doctest: +SKIP
PosixPath('runs/features/dashboard/index.html')
"""

from __future__ import annotations

import filecmp
import functools
import hashlib
import json
import math
import numbers
import os
import re
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from markupsafe import Markup
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from whisperlens._io import (
    atomic_write_bytes,
    atomic_write_text,
    atomic_write_with,
    check_output_dir,
    stable_hash,
)
from whisperlens.errors import WhisperlensError
from whisperlens.frames import ENCODER_FRAME_SECONDS, HOP_LENGTH, SAMPLE_RATE
from whisperlens.report.figures import figure_png
from whisperlens.report.html import Section, Table, _environment, format_cell, section_html

if TYPE_CHECKING:
    from whisperlens.executors import Executor

LATENTS_FILE = "latents.json"  # written by the features step
CONFIG_FILE, SUMMARY_FILE = "config.json", "summary.json"  # the features run's own files
DEFAULT_OUT = "dashboard"  # under the features directory
INDEX_FILE = "index.html"
PAGES_DIR, AUDIO_DIR, IMAGES_DIR = "latents", "audio", "spectrograms"
OWNED = ((PAGES_DIR, ".html"), (AUDIO_DIR, ".wav"), (IMAGES_DIR, ".png"))  # pruned on re-render

FIGURE_VERSION = 1  # bump when example_figure draws differently (old PNGs are then redrawn)
FIG_WIDTH_IN, FIG_HEIGHT_IN, FIG_DPI = 6.4, 2.6, 100
AXES_RECT = (0.08, 0.19, 0.82, 0.76)  # left, bottom, width, height (figure fractions)
N_FFT, N_MELS = 400, 80  # Whisper's log-mel: 25 ms Hann window, 10 ms hop, 80 Slaney mels
TRACE_COLOR = "#00e5ff"
UNLABELLED = "(none)"  # the label type of a latent without a label
MAX_CELL_CHARS = 120  # lists and other non-scalars in summaries are shown as truncated JSON

# Entry and example keys shown first, in this order; any other scalar keys follow.
STAT_KEYS = (
    "latent",
    "label",
    "label_type",
    "frequency",
    "mean_activation",
    "max_activation",
    "purity",
    "monosemanticity",
)
EXAMPLE_KEYS = ("item", "time_s", "activation", "word", "phoneme", "language", "label")
EXAMPLE_HIDDEN = ("trace", "audio", "snippet_start_s")
FACT_NAMES = {"time_s": "time (s)"}  # how an example key reads in its caption


class DashboardError(WhisperlensError, ValueError):
    """A features directory the dashboard cannot render."""


@dataclass(frozen=True)
class Column:
    """One sortable column of the index."""

    key: str  # field of a latent entry (n_examples: the number of top examples)
    title: str
    type: Literal["number", "text"]


INDEX_COLUMNS = (
    Column("latent", "latent", "number"),
    Column("label", "label", "text"),
    Column("label_type", "label type", "text"),
    Column("frequency", "frequency", "number"),
    Column("mean_activation", "mean act.", "number"),
    Column("max_activation", "max act.", "number"),
    Column("purity", "purity", "number"),
    Column("monosemanticity", "monosemanticity", "number"),
    Column("n_examples", "examples", "number"),
)


# -- reading the features directory ---------------------------------------------------------
def load_latents(feat_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The entries of ``feat_dir/latents.json``, checked: unique integer ``latent`` ids, and
    ``top`` examples whose ``audio`` is a WAV file inside ``feat_dir``."""
    feat_dir = Path(feat_dir)
    path = feat_dir / LATENTS_FILE
    if not path.is_file():
        raise DashboardError(
            f"{path} not found", f"run `whisperlens sae features --out {feat_dir}` first"
        )
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DashboardError(f"{path} is not valid JSON ({exc})", "re-run sae features") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise DashboardError(f"{path} must hold a list of latent objects", "re-run sae features")
    seen: set[int] = set()
    for i, entry in enumerate(entries):
        latent = entry.get("latent")
        if not isinstance(latent, int) or isinstance(latent, bool) or latent < 0:
            raise DashboardError(
                f"entry {i} of {path} has latent={latent!r}, not a non-negative integer",
                "re-run sae features",
            )
        if latent in seen:
            raise DashboardError(f"latent {latent} appears twice in {path}", "re-run sae features")
        seen.add(latent)
        for k, example in enumerate(_examples(entry, path)):
            _check_snippet(feat_dir, example, f"latent {latent} example {k}")
    return entries


def _examples(entry: Mapping[str, Any], path: Path) -> list[dict[str, Any]]:
    top = entry.get("top") or []
    if not isinstance(top, list) or not all(isinstance(ex, dict) for ex in top):
        raise DashboardError(
            f"latent {entry['latent']} in {path}: 'top' must be a list of example objects",
            "re-run sae features",
        )
    return top


def _check_snippet(feat_dir: Path, example: Mapping[str, Any], where: str) -> Path:
    """The snippet file of ``example``: a relative path inside ``feat_dir`` to a WAV file."""
    rel = example.get("audio")
    fix = "re-run sae features (snippets are written under FEAT/snippets/)"
    if not isinstance(rel, str) or not rel:
        raise DashboardError(f"{where} has no 'audio' snippet path", fix)
    parts = PurePosixPath(rel)
    if parts.is_absolute() or ".." in parts.parts:
        raise DashboardError(f"{where}: snippet path {rel!r} leaves the features directory", fix)
    path = feat_dir / parts
    if not path.is_file():
        raise DashboardError(f"{where}: snippet {path} is missing", fix)
    with open(path, "rb") as f:
        head = f.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise DashboardError(f"{where}: snippet {path} is not a WAV file", fix)
    return path


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DashboardError(f"{path} is not valid JSON ({exc})", "re-run sae features") from None
    return obj if isinstance(obj, dict) else None


# -- spectrogram figures --------------------------------------------------------------------
@functools.cache
def _mel_filters() -> np.ndarray:
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2,
        num_mel_filters=N_MELS,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )


def log_mel_spectrogram(audio: np.ndarray) -> np.ndarray:
    """Whisper's log-mel features [80, len(audio) // 160] of 16 kHz mono ``audio`` (one mel
    frame per 10 ms), computed as ``WhisperFeatureExtractor`` does but without padding to 30 s."""
    from transformers.audio_utils import spectrogram, window_function

    x = np.asarray(audio, dtype=np.float64)
    n_frames = len(x) // HOP_LENGTH
    x = np.pad(x, (0, max(0, N_FFT - len(x))))  # reflect padding needs half a window
    spec = spectrogram(
        x,
        window_function(N_FFT, "hann"),
        frame_length=N_FFT,
        hop_length=HOP_LENGTH,
        power=2.0,
        mel_filters=_mel_filters(),
        log_mel="log10",
    )[:, :n_frames]
    if spec.size:
        spec = np.maximum(spec, spec.max() - 8.0)
    return (spec + 4.0) / 4.0


def example_figure(
    audio: np.ndarray, trace: Sequence[float], *, start_s: float = 0.0, peak_s: float | None = None
) -> Figure:
    """The log-mel spectrogram of a snippet (16 kHz, starting ``start_s`` into its item) with
    the latent's ``trace`` (one activation per 20 ms encoder frame) drawn over it as steps."""
    mel_MT = log_mel_spectrogram(audio)
    fig = Figure(figsize=(FIG_WIDTH_IN, FIG_HEIGHT_IN))  # fixed margins: a third faster than
    FigureCanvasAgg(fig)  # report.figures.new_figure's constrained layout, and all alike
    ax = fig.add_axes(AXES_RECT)
    end_s = start_s + mel_MT.shape[1] * HOP_LENGTH / SAMPLE_RATE
    if mel_MT.size:
        ax.imshow(
            mel_MT,
            origin="lower",
            aspect="auto",
            cmap="magma",
            interpolation="nearest",
            extent=(start_s, end_s, 0, N_MELS),
        )
    ax.set(xlabel="time in item (s)", ylabel="mel bin", ylim=(0, N_MELS))
    act_T = np.asarray(trace, dtype=float)
    twin = ax.twinx()
    edges = start_s + ENCODER_FRAME_SECONDS * np.arange(act_T.size + 1)
    finite = act_T[np.isfinite(act_T)]
    if finite.size:
        outline = [patheffects.withStroke(linewidth=3.2, foreground="black")]  # on any colour
        twin.stairs(act_T, edges, color=TRACE_COLOR, lw=1.6, baseline=None, path_effects=outline)
        low, high = min(0.0, float(finite.min())), max(float(finite.max()), 1e-6)
        twin.set_ylim(low, high + 0.08 * (high - low))
    if peak_s is not None:
        ax.axvline(peak_s, color="white", linestyle=":", linewidth=1.2)
    twin.set_ylabel("activation", color="#007c8c")
    ax.set_xlim(start_s, max(end_s, float(edges[-1]), start_s + 1e-3))
    return fig


@dataclass(frozen=True, eq=False)
class FigureUnit:
    """One example figure to draw (a unit of :class:`DrawFigures`)."""

    name: str  # file name of the PNG under spectrograms/
    audio: np.ndarray  # the snippet, 16 kHz mono
    trace: tuple[float, ...]  # activation per 20 ms frame from start_s
    start_s: float  # where the snippet starts in its item
    peak_s: float | None  # the peak frame's time in the item


@dataclass(frozen=True)
class DrawFigures:
    """Executor task: draw each :class:`FigureUnit` as PNG bytes (the driver writes them)."""

    dpi: int = FIG_DPI

    def setup(self) -> None:
        return None

    def run(self, state: None, unit: FigureUnit) -> bytes:
        fig = example_figure(unit.audio, unit.trace, start_s=unit.start_s, peak_s=unit.peak_s)
        return figure_png(fig, dpi=self.dpi)


@dataclass(frozen=True)
class PlannedExample:
    """An example placed in the dashboard: its clip, its figure's path, its caption."""

    clip: Path  # the snippet's copy (or hard link) under audio/
    image: Path  # under spectrograms/, named by a hash of what it shows
    trace: tuple[float, ...]
    start_s: float
    peak_s: float | None
    facts: list[tuple[str, str]]  # (name, formatted value) for the caption

    def unit(self) -> FigureUnit:
        from whisperlens.audio import load_audio

        audio = load_audio(self.clip)
        return FigureUnit(self.image.name, audio, self.trace, self.start_s, self.peak_s)


def _plan_example(
    example: Mapping[str, Any], src: Path, clip: Path, images: Path
) -> PlannedExample:
    """Place the example's snippet at ``clip`` and name its figure (not drawn yet)."""
    _place_snippet(src, clip)
    trace = tuple(float(v) for v in example.get("trace") or [])
    start_s = float(example.get("snippet_start_s") or 0.0)
    peak = example.get("time_s")
    peak_s = float(peak) if isinstance(peak, numbers.Real) else None
    key = {
        "version": FIGURE_VERSION,
        "wav": hashlib.sha256(clip.read_bytes()).hexdigest(),
        "trace": trace,
        "start_s": start_s,
        "peak_s": peak_s,
    }
    facts = _scalar_items(example, EXAMPLE_KEYS, EXAMPLE_HIDDEN)
    return PlannedExample(
        clip=clip,
        image=images / f"{stable_hash(key)}.png",
        trace=trace,
        start_s=start_s,
        peak_s=peak_s,
        facts=[(FACT_NAMES.get(k, k), format_cell(v)) for k, v in facts if v is not None],
    )


def draw_figures(
    examples: Sequence[PlannedExample], executor: Executor | None = None, progress: bool = True
) -> int:
    """Draw the figures of ``examples`` not on disk yet (each once); return how many."""
    from tqdm import tqdm

    from whisperlens.executors import InlineExecutor

    todo = {ex.image: ex for ex in examples if not ex.image.is_file()}
    units = (ex.unit() for ex in todo.values())  # audio read lazily, as workers take units
    folder = {ex.image.name: ex.image for ex in todo.values()}
    with tqdm(total=len(todo), desc="dashboard figures", unit="fig", disable=not progress) as bar:
        for unit, png in (executor or InlineExecutor(threads=None)).map(DrawFigures(), units):
            atomic_write_bytes(folder[unit.name], png)
            bar.update()
    return len(todo)


def _place_snippet(src: Path, dest: Path) -> None:
    """Put ``src`` at ``dest`` atomically (a hard link where the filesystem allows)."""
    if dest.is_file() and (os.path.samefile(src, dest) or filecmp.cmp(src, dest, shallow=False)):
        return

    def link_or_copy(tmp: Path) -> None:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:  # another filesystem, or links not supported
            shutil.copyfile(src, tmp)

    atomic_write_with(dest, link_or_copy)


# -- tables ---------------------------------------------------------------------------------
def _cell_value(value: Any) -> Any:
    """A summary value as a table cell: scalars as they are, a short list of numbers (a CI)
    as ``[lo, hi]``, anything else as JSON cut to ``MAX_CELL_CHARS``."""
    if value is None or isinstance(value, str | bool | numbers.Number):
        return value
    short = isinstance(value, list | tuple) and 0 < len(value) <= 4
    if short and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        return "[" + ", ".join(format_cell(v) for v in value) + "]"
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 3] + "..."


def _flatten(obj: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for key, value in obj.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, path))
        else:
            out[path] = _cell_value(value)
    return out


def _clusters(groups: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """Groups linked (transitively) by sharing at least two metric names, in summary order."""
    names = list(groups)
    parent = {n: n for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if len(groups[a].keys() & groups[b].keys()) >= 2:
                parent[root(b)] = root(a)
    clusters: dict[str, list[str]] = {}
    for n in names:
        clusters.setdefault(root(n), []).append(n)
    return [c for c in clusters.values() if len(c) >= 2]


def _headers(names: list[str]) -> tuple[list[str], str]:
    """Column names without the dotted parts all ``names`` share, and those parts as a
    caption (``dictionaries.*.counts``); the top level reads "(top level)"."""
    if "" in names:
        return [n or "(top level)" for n in names], ""
    parts = [n.split(".") for n in names]
    shortest = min(len(p) for p in parts)
    head = 0
    while head < shortest - 1 and len({p[head] for p in parts}) == 1:
        head += 1
    tail = 0
    while tail < shortest - head - 1 and len({p[-1 - tail] for p in parts}) == 1:
        tail += 1
    headers = [".".join(p[head : len(p) - tail]) for p in parts]
    shared = ".".join([*parts[0][:head], "*", *parts[0][len(parts[0]) - tail :]])
    return headers, "" if shared == "*" else shared


def _comparison(
    cluster: list[str], groups: Mapping[str, Mapping[str, Any]]
) -> tuple[Table, set[tuple[str, str]]]:
    """One cluster's table and the (group, metric) pairs it covers: a row per metric found in
    two or more of its groups (unless empty in all), a column per group (text-only groups such
    as definitions last; the top level left out where it repeats a group, as evaluate copies
    the SAE's metrics to the top)."""
    counts = Counter(m for g in cluster for m in groups[g])
    metrics = [m for m in counts if counts[m] >= 2]

    def column(g: str) -> list[Any]:
        return [groups[g].get(m) for m in metrics]

    named = [g for g in cluster if g]
    top_repeats = any(column("") == column(g) for g in named) if "" in cluster else False
    kept = named if top_repeats else cluster
    text_only = {g for g in kept if all(isinstance(v, str | None) for v in column(g))}
    kept = [g for g in kept if g not in text_only] + [g for g in kept if g in text_only]
    headers, caption = _headers(kept)
    rows = [[m, *(groups[g].get(m) for g in kept)] for m in metrics]
    rows = [row for row in rows if any(v is not None for v in row[1:])]
    shown = {(g, m) for g in cluster for m in metrics if m in groups[g]}
    return Table(["metric", *headers], rows, caption), shown


def summary_tables(summary: Mapping[str, Any]) -> list[Table]:
    """``summary`` as tidy tables. Groups of values that share metric names (a model and its
    baselines: ``fvu`` and ``l0`` at the top and under ``pca``) go side by side, a row per
    shared metric and a column per group; every other value goes in a key/value table
    (nested keys dotted)."""
    groups: dict[str, dict[str, Any]] = {}
    for path, value in _flatten(summary).items():
        groups.setdefault(".".join(path[:-1]), {})[path[-1]] = value
    tables, shown = [], set()
    for cluster in _clusters(groups):
        table, covered = _comparison(cluster, groups)
        tables.append(table)
        shown |= covered
    rest = [
        [f"{g}.{k}" if g else k, v]
        for g in groups
        for k, v in groups[g].items()
        if (g, k) not in shown
    ]
    if rest:
        tables.append(Table(["key", "value"], rest))
    return tables


def _summary_sections(
    feat_dir: Path, summaries: Mapping[str, Mapping[str, Any]] | None
) -> list[Markup]:
    named: dict[str, Mapping[str, Any]] = {}
    own = _read_json(feat_dir / SUMMARY_FILE)
    if own is not None and "features" not in (summaries or {}):
        named["features"] = own
    for name, summary in (summaries or {}).items():
        if not isinstance(summary, Mapping):
            raise DashboardError(
                f"summary {name!r} is a {type(summary).__name__}, not a mapping",
                "pass summaries as {name: dict}, e.g. the parsed summary.json of sae evaluate",
            )
        named[str(name)] = summary
    sections = []
    for i, (name, summary) in enumerate(named.items()):
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")
        section = Section(f"summary-{i}-{slug}", f"Summary: {name}", "", summary_tables(summary))
        sections.append(section_html(section))
    return sections


def _label_type_section(latents: Sequence[Mapping[str, Any]]) -> Markup:
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for entry in latents:
        by_type.setdefault(_label_type(entry), []).append(entry)

    def mean(entries: list[Mapping[str, Any]], key: str) -> float:
        values = [_number(e.get(key)) for e in entries]
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else math.nan

    rows = [
        [t, len(es), mean(es, "purity"), mean(es, "monosemanticity"), mean(es, "frequency")]
        for t, es in sorted(by_type.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]
    columns = ["label type", "latents", "mean purity", "mean monosemanticity", "mean frequency"]
    table = Table(columns, rows, caption="Latents per automatic label type (means over latents).")
    return section_html(Section("label-types", "Latents by label type", "", [table]))


def _label_type(entry: Mapping[str, Any]) -> str:
    return str(entry.get("label_type") or UNLABELLED)


def _number(value: Any) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return math.nan


# -- pages ----------------------------------------------------------------------------------
def page_name(latent: int) -> str:
    """File name of a latent's page under ``latents/``."""
    return f"L{latent:05d}.html"


def _scalar_items(obj: Mapping[str, Any], first: Sequence[str], hidden: Sequence[str]) -> list:
    keys = [k for k in first if k in obj] + [k for k in obj if k not in first and k not in hidden]
    return [(k, obj[k]) for k in keys if obj[k] is None or not isinstance(obj[k], dict | list)]


def _purity_table(purity: Any) -> Table | None:
    if not isinstance(purity, Mapping) or not purity:
        return None
    views = {t: (v if isinstance(v, Mapping) else {"purity": v}) for t, v in purity.items()}
    extra = list(
        dict.fromkeys(k for v in views.values() for k in v if k not in ("label", "purity"))
    )
    rows = [
        [t, v.get("label"), v.get("purity"), *(_cell_value(v.get(k)) for k in extra)]
        for t, v in views.items()
    ]
    return Table(["label type", "best label", "purity", *extra], rows)


def _plan_latent(entry: Mapping[str, Any], feat_dir: Path, out_dir: Path) -> list[PlannedExample]:
    """Place one latent's snippets in the dashboard and name their figures."""
    latent = int(entry["latent"])
    stem = page_name(latent).removesuffix(".html")
    planned = []
    for k, example in enumerate(entry.get("top") or []):
        src = _check_snippet(feat_dir, example, f"latent {latent} example {k}")
        clip = out_dir / AUDIO_DIR / f"{stem}_{k:02d}.wav"
        planned.append(_plan_example(example, src, clip, out_dir / IMAGES_DIR))
    return planned


def _write_page(
    entry: Mapping[str, Any],
    examples: Sequence[PlannedExample],
    out_dir: Path,
    *,
    title: str,
    neighbours: tuple[str | None, str | None],
) -> Path:
    """Write one latent's page (statistics, purity, examples); return its path."""
    latent = int(entry["latent"])
    stats = _scalar_items(entry, STAT_KEYS, ("top", "purity_by_type"))
    stats.append(("n_examples", len(examples)))
    blocks: list[Table] = [Table(["statistic", "value"], [list(kv) for kv in stats])]
    sections = [section_html(Section("statistics", "Statistics", "", blocks))]
    if (purity := _purity_table(entry.get("purity_by_type"))) is not None:
        intro = "The label of each type that best covers this latent's active frames."
        sections.append(section_html(Section("purity", "Purity by label type", intro, [purity])))
    views = [
        {
            "image": f"../{IMAGES_DIR}/{ex.image.name}",
            "audio": f"../{AUDIO_DIR}/{ex.clip.name}",
            "width": round(FIG_WIDTH_IN * FIG_DPI),
            "height": round(FIG_HEIGHT_IN * FIG_DPI),
            "facts": ex.facts,
        }
        for ex in examples
    ]
    label = entry.get("label")
    heading = f"Latent {latent}" + (f": {label}" if label else "")
    html = (
        _environment()
        .get_template("sae_latent.html.j2")
        .render(
            page_title=f"{heading} · {title}",
            heading=heading,
            dashboard_title=title,
            sections=sections,
            examples=views,
            prev_href=neighbours[0],
            next_href=neighbours[1],
        )
    )
    page = out_dir / PAGES_DIR / page_name(latent)
    atomic_write_text(page, html)
    return page


def _index_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    values = {**entry, "n_examples": len(entry.get("top") or [])}
    cells = []
    for col in INDEX_COLUMNS:
        value = values.get(col.key)
        if col.type == "number":
            number = _number(value)
            sort = repr(number) if math.isfinite(number) else ""
            cells.append({"text": format_cell(value), "sort": sort, "num": True})
        else:
            text = "" if value is None else str(value)
            cells.append({"text": text, "sort": text, "num": False})
    return {
        "latent": entry["latent"],
        "label_type": _label_type(entry),
        "href": f"{PAGES_DIR}/{page_name(int(entry['latent']))}",
        "cells": cells,
    }


def _metadata(feat_dir: Path) -> list[tuple[str, str]]:
    identity = _read_json(feat_dir / CONFIG_FILE) or {}
    config = identity.get("config") if isinstance(identity.get("config"), Mapping) else {}
    items = [("study", identity.get("study"))] + [
        (".".join(path), value) for path, value in _flatten(config or {}).items()
    ]
    return [(k, format_cell(v)) for k, v in items if v is not None]


def _remove_stale(out_dir: Path, keep: set[Path]) -> None:
    """Remove the dashboard's own files (and torn temporaries) that this render did not write."""
    for sub, suffix in OWNED:
        folder = out_dir / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            own = path.suffix == suffix or path.name.endswith(".tmp")
            if own and path.is_file() and path not in keep:
                path.unlink()


def render_dashboard(
    feat_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
    summaries: Mapping[str, Mapping[str, Any]] | None = None,
    executor: Executor | None = None,
    only_examples: bool = False,
    progress: bool = True,
) -> Path:
    """Render the dashboard of the features run ``feat_dir``; return its ``index.html``.

    ``only_examples`` lists only the latents with top examples or a label (a page without
    audio says little, and thousands of them take a minute).

    ``out_dir`` defaults to ``feat_dir/dashboard``. ``summaries`` maps a name to a summary
    dict (e.g. ``{"evaluate": ..., "steer": ...}``, parsed ``summary.json`` files) shown as
    headline tables; ``feat_dir/summary.json`` is shown as "features" unless given there.
    Figures not drawn by an earlier render are drawn by ``executor`` (in this process by
    default; a ``ProcessExecutor`` spreads them over cores). The input is checked before
    anything is written; ``index.html`` is written last.
    """
    from tqdm import tqdm

    feat_dir = Path(feat_dir)
    out_dir = feat_dir / DEFAULT_OUT if out_dir is None else Path(out_dir)
    if out_dir.resolve() == feat_dir.resolve():
        raise DashboardError(
            f"the dashboard cannot be written into the features directory {feat_dir} itself",
            f"leave out_dir unset (it defaults to {feat_dir / DEFAULT_OUT}) or pick another",
        )
    every = sorted(load_latents(feat_dir), key=lambda e: int(e["latent"]))
    shown = [e for e in every if e.get("top") or e.get("monosemantic")]
    latents = shown if only_examples and shown else every
    check_output_dir(out_dir)
    title = title or f"SAE features: {feat_dir.resolve().name}"
    sections = [*_summary_sections(feat_dir, summaries), _label_type_section(latents)]
    with tqdm(latents, desc="dashboard clips", unit="latent", disable=not progress) as bar:
        plans = [_plan_latent(entry, feat_dir, out_dir) for entry in bar]
    draw_figures([ex for plan in plans for ex in plan], executor, progress)
    pages = [page_name(int(e["latent"])) for e in latents]
    written = {p for plan in plans for ex in plan for p in (ex.clip, ex.image)}
    with tqdm(total=len(latents), desc="dashboard pages", unit="page", disable=not progress) as bar:
        for i, (entry, plan) in enumerate(zip(latents, plans, strict=True)):
            prev = pages[i - 1] if i > 0 else None
            after = pages[i + 1] if i + 1 < len(pages) else None
            page = _write_page(entry, plan, out_dir, title=title, neighbours=(prev, after))
            written.add(page)
            bar.update()
    rows = [_index_row(e) for e in latents]
    label_types = sorted({r["label_type"] for r in rows})
    html = (
        _environment()
        .get_template("sae_index.html.j2")
        .render(
            page_title=title,
            title=title,
            metadata=[
                *_metadata(feat_dir),
                (
                    "latents shown",
                    f"{len(latents)} of {len(every)} (those with examples or a label)",
                ),
            ],
            sections=sections,
            columns=INDEX_COLUMNS,
            rows=rows,
            label_types=label_types,
        )
    )
    index = out_dir / INDEX_FILE
    atomic_write_text(index, html)
    _remove_stale(out_dir, written)
    return index
