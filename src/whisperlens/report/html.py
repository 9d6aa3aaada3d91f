"""Self-contained HTML reports: sections of figures, tables, audio and text.

A :class:`Report` is plain data, so a ``reproduce`` run can gather sections from several
studies into one report. :func:`render_report` writes ``out_dir/report.html`` atomically
with no network references: with ``embed=True`` images and audio are ``data:`` URIs, and
otherwise they are written to ``out_dir/assets/`` and referenced by relative path. All
text is escaped (Jinja2 autoescape); :func:`paragraphs` adds a little markup on top:
blank-line paragraphs, ``- `` bullet lists, ```code``` and ``**bold**``.

>>> section = Section("baseline", "Baseline", "How well Whisper hears the words.",
...                   [Table(["word", "accuracy"], [["cat", 0.95]])])
>>> render_report(Report("Study", [section]), Path("out"))  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import matplotlib.figure
import numpy as np
import soundfile as sf
from markupsafe import Markup, escape

from whisperlens._io import atomic_write_bytes, atomic_write_text
from whisperlens.errors import WhisperlensError
from whisperlens.report.figures import NAN_TEXT, figure_png

REPORT_FILE = "report.html"
ASSETS_DIR = "assets"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTION_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Figure:
    """A PNG image with a title and caption."""

    title: str
    image: bytes | str | Path  # PNG bytes, or a PNG file's path (embedded or copied into assets/)
    caption: str = ""

    @classmethod
    def from_matplotlib(
        cls, title: str, fig: matplotlib.figure.Figure, caption: str = ""
    ) -> Figure:
        """Rasterise ``fig`` (which is then cleared; see :func:`figure_png`)."""
        return cls(title, figure_png(fig), caption)


@dataclass(frozen=True)
class Table:
    """Rows of cells under column headers; numbers are right-aligned and formatted."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]  # each row has len(columns) cells
    caption: str = ""

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table row {i} has {len(row)} cells for {len(self.columns)} columns"
                )


@dataclass(frozen=True)
class Audio:
    """A WAV clip with a player."""

    label: str
    wav: (
        bytes | str | Path
    )  # WAV file bytes, or a WAV file's path (embedded or copied into assets/)
    caption: str = ""

    @classmethod
    def from_array(
        cls,
        label: str,
        samples: np.ndarray,
        sample_rate: int,
        caption: str = "",
        subtype: str = "PCM_16",
    ) -> Audio:
        """Encode ``samples`` (n_samples,) or (n_samples, n_channels) in [-1, 1] as WAV."""
        buf = io.BytesIO()
        sf.write(buf, samples, sample_rate, format="WAV", subtype=subtype)
        return cls(label, buf.getvalue(), caption)


@dataclass(frozen=True)
class Text:
    """Prose between other blocks (see :func:`paragraphs` for the markup)."""

    text: str


Block = Figure | Table | Audio | Text


@dataclass(frozen=True)
class Section:
    """One part of a report, linked from the table of contents by ``id``."""

    id: str  # HTML id: a letter, then letters, digits, '-' or '_'; unique in a report
    title: str
    intro: str = ""  # paragraphs shown under the title
    blocks: Sequence[Block] = ()

    def __post_init__(self) -> None:
        if not SECTION_ID.fullmatch(self.id):
            raise ValueError(f"section id {self.id!r} must match {SECTION_ID.pattern}")


@dataclass(frozen=True)
class Report:
    """A titled list of sections (from one study or many) and run metadata."""

    title: str
    sections: Sequence[Section]
    metadata: dict[str, Any] = field(default_factory=dict)  # shown as a key/value table

    def __post_init__(self) -> None:
        ids = [s.id for s in self.sections]
        if dupes := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"duplicate section ids {dupes}; give each section its own id")


def format_cell(value: Any) -> str:
    """A table cell as text: floats to 4 significant digits (1.23e-05 below 0.001, 12,345
    from 10,000 up), NaN as "n/a"."""
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_ | str):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        if not np.isfinite(v):
            return NAN_TEXT
        if abs(v) >= 1e4:
            return f"{v:,.0f}"
        return f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.4g}"
    return str(value)


def _inline(text: str) -> str:
    out = str(escape(text))
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def paragraphs(text: str) -> Markup:
    """Escaped ``text`` as HTML: blank lines split paragraphs, ``- `` lines make lists."""
    parts = []
    for chunk in re.split(r"\n\s*\n", text.strip()):
        lines = [line.strip() for line in chunk.splitlines() if line.strip()]
        if lines and all(line.startswith("- ") for line in lines):
            items = "".join(f"<li>{_inline(line[2:])}</li>" for line in lines)
            parts.append(f"<ul>{items}</ul>")
        elif lines:
            parts.append(f"<p>{_inline(' '.join(lines))}</p>")
    return Markup("\n".join(parts))


def _media_src(
    data: bytes | str | Path, mime: str, ext: str, section_id: str, assets: Path | None
) -> str:
    """A ``data:`` URI (``assets`` None), or the relative path of the copy written in assets."""
    raw = _media_bytes(data, mime)
    if assets is None:
        return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"
    name = f"{section_id}-{hashlib.sha256(raw).hexdigest()[:16]}.{ext}"  # content-addressed
    if not (assets / name).exists():
        atomic_write_bytes(assets / name, raw)
    return f"{ASSETS_DIR}/{name}"


def _media_bytes(data: bytes | str | Path, mime: str) -> bytes:
    """The bytes of ``data`` (or of the file it names), checked to be a PNG or WAV file."""
    raw = data if isinstance(data, bytes) else Path(data).read_bytes()
    png = mime == "image/png"
    if not (raw.startswith(PNG_SIGNATURE) if png else raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"):
        where = f"{len(raw)} bytes" if isinstance(data, bytes) else str(data)
        raise WhisperlensError(
            f"{where} is not a {'PNG' if png else 'WAV'} file",
            "pass the file's bytes (figure_png(fig), or soundfile.write(..., format='WAV'))",
        )
    return raw


def _block_view(block: Block, section_id: str, assets: Path | None) -> dict[str, Any]:
    """What the section template needs of one block."""
    if isinstance(block, Figure):
        src = _media_src(block.image, "image/png", "png", section_id, assets)
        return {"kind": "figure", "title": block.title, "src": src, "caption": block.caption}
    if isinstance(block, Audio):
        src = _media_src(block.wav, "audio/wav", "wav", section_id, assets)
        return {"kind": "audio", "label": block.label, "src": src, "caption": block.caption}
    if isinstance(block, Table):
        rows = [
            [(format_cell(v), isinstance(v, numbers.Real) and not isinstance(v, bool)) for v in row]
            for row in block.rows
        ]  # (text, is_number) per cell
        return {
            "kind": "table",
            "columns": list(block.columns),
            "rows": rows,
            "caption": block.caption,
        }
    if isinstance(block, Text):
        return {"kind": "text", "text": block.text}
    raise TypeError(
        f"unknown report block {type(block).__name__}; use Figure, Table, Audio or Text"
    )


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["paragraphs"] = paragraphs
    return env


def section_html(section: Section, assets: Path | None = None) -> Markup:
    """One section as an HTML fragment; media embedded, or written under ``assets``.

    ``assets`` is the ``assets/`` directory beside the page the fragment goes into.
    """
    blocks = [_block_view(b, section.id, assets) for b in section.blocks]
    html = _environment().get_template("section.html.j2").render(section=section, blocks=blocks)
    return Markup(html)


def _metadata_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def render_report(report: Report, out_dir: str | Path, *, embed: bool = True) -> Path:
    """Write ``out_dir/report.html`` atomically and return its path.

    ``embed=False`` writes images and audio to ``out_dir/assets/`` instead of inlining them.
    If rendering raises, any earlier ``report.html`` is left as it was.
    """
    out_dir = Path(out_dir)
    assets = None if embed else out_dir / ASSETS_DIR
    sections = [(s, section_html(s, assets)) for s in report.sections]
    metadata = [(str(k), _metadata_text(v)) for k, v in report.metadata.items()]
    html = (
        _environment()
        .get_template("report.html.j2")
        .render(title=report.title, sections=sections, metadata=metadata)
    )
    path = out_dir / REPORT_FILE
    atomic_write_text(path, html)
    return path


def figure_file(title: str) -> str:
    """``<slug>.png`` for a figure title ("Override (seed mode)" -> "override-seed-mode.png")."""
    slug = "".join(c if c.isalnum() else " " for c in title.lower())
    return "-".join(slug.split()) + ".png"


def write_figures(sections: Sequence[Section], directory: str | Path) -> list[Path]:
    """Every figure of ``sections`` as ``directory/<slug of its title>.png`` (written
    atomically), for use outside the report; figures given as file paths are copied.
    Titles that slug alike are told apart by a numeric suffix, in order."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for section in sections:
        for block in section.blocks:
            if not isinstance(block, Figure):
                continue
            name = figure_file(block.title)
            path, n = directory / name, 1
            while path in written:
                n += 1
                path = directory / f"{name[: -len('.png')]}-{n}.png"
            atomic_write_bytes(path, _media_bytes(block.image, "image/png"))
            written.append(path)
    return written
