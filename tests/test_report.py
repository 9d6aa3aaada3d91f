"""Report figures and HTML rendering, checked against independent decoders and formatters."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba
from PIL import Image

from whisperlens.errors import ShapeError, WhisperlensError
from whisperlens.report import (
    Audio,
    Figure,
    Report,
    Section,
    Series,
    Table,
    Text,
    figure_png,
    format_cell,
    heatmap,
    histogram,
    line_plot,
    render_report,
    write_figures,
)
from whisperlens.report.figures import NAN_COLOR

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Tags(HTMLParser):
    """Every start tag of a page, with its attributes, and the page's text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def attr(self, tag: str, name: str) -> list[str]:
        return [str(a[name]) for t, a in self.tags if t == tag and name in a]


def data_uri_bytes(src: str, mime: str) -> bytes:
    prefix = f"data:{mime};base64,"
    assert src.startswith(prefix), src[:40]
    return base64.b64decode(src[len(prefix) :], validate=True)


def sine_wav(seconds: float, sr: int = 16000) -> tuple[np.ndarray, bytes]:
    t = np.arange(int(seconds * sr)) / sr
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, samples, sr, format="WAV", subtype="PCM_16")
    return samples, buf.getvalue()


def small_png(color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (7, 5), color).save(buf, format="PNG")
    return buf.getvalue()


# --- figures ---------------------------------------------------------------------------


def test_heatmap_annotates_every_cell_with_value_and_ci() -> None:
    rng = np.random.default_rng(0)
    vals = rng.uniform(0, 1, (3, 4))
    lo, hi = vals - rng.uniform(0, 0.1, (3, 4)), vals + rng.uniform(0, 0.1, (3, 4))
    fig = heatmap(vals, ci_low=lo, ci_high=hi, row_labels=list("abc"), col_labels=list("wxyz"))
    got = {tuple(t.get_position()): t.get_text() for t in fig.axes[0].texts}
    want = {
        (c, r): f"{vals[r, c]:.2f}\n[{lo[r, c]:.2f}, {hi[r, c]:.2f}]"
        for r in range(3)
        for c in range(4)
    }
    assert got == want
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list("wxyz")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == list("abc")


def test_heatmap_without_ci_and_nan_cells() -> None:
    vals = np.array([[0.5, np.nan], [np.inf, 0.25]])
    fig = heatmap(vals, row_labels=["r0", "r1"], col_labels=["c0", "c1"], fmt=".1f")
    got = {tuple(t.get_position()): t.get_text() for t in fig.axes[0].texts}
    assert got == {(0, 0): "0.5", (1, 0): "n/a", (0, 1): "n/a", (1, 1): "0.2"}
    im = fig.axes[0].images[0]
    assert im.get_array().mask.tolist() == [[False, True], [True, False]]
    assert tuple(im.cmap.get_bad()) == to_rgba(NAN_COLOR)
    # a CI bound that is NaN reads n/a; an all-NaN grid still draws
    fig = heatmap([[0.9]], ci_low=[[np.nan]], ci_high=[[0.95]], row_labels=["r"], col_labels=["c"])
    assert fig.axes[0].texts[0].get_text() == "0.90\n[n/a, 0.95]"
    png = figure_png(heatmap([[np.nan] * 2], row_labels=["r"], col_labels=["a", "b"]))
    assert png.startswith(PNG_SIGNATURE)


def test_heatmap_rejects_mismatched_shapes() -> None:
    with pytest.raises(ShapeError, match="label"):
        heatmap(np.zeros((2, 3)), row_labels=["a"], col_labels=["x", "y", "z"])
    with pytest.raises(ShapeError, match="ci_low"):
        heatmap(
            np.zeros((2, 2)),
            ci_low=np.zeros((2, 3)),
            ci_high=np.zeros((2, 2)),
            row_labels=["a", "b"],
            col_labels=["x", "y"],
        )
    with pytest.raises(ValueError, match="both"):
        heatmap(np.zeros((1, 1)), ci_low=np.zeros((1, 1)), row_labels=["a"], col_labels=["x"])


def test_line_plot_draws_one_band_per_series_with_ci() -> None:
    x = np.arange(6.0)
    lo_a, hi_a = x - 1.0, x + 2.0
    series = [
        Series("a", x, lo_a, hi_a),
        Series("b", 2 * x),  # no band
        Series("c", -x, -x - 0.5, -x + 0.5),
        Series("shuffled", np.zeros(6), -np.ones(6), np.ones(6), kind="control"),
    ]
    fig = line_plot(x, series, hline=0.0)
    ax = fig.axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3
    labels = [line.get_label() for line in ax.lines if not line.get_label().startswith("_")]
    assert labels == ["shuffled", "a", "b", "c"]  # controls are drawn first
    y_ranges = sorted(
        (v[:, 1].min(), v[:, 1].max()) for v in (b.get_paths()[0].vertices for b in bands)
    )
    assert y_ranges == sorted(
        [(-1.0, 7.0), (-5.5, 0.5), (-1.0, 1.0)]
    )  # (min lo, max hi) of a, c, control
    line_rgb = {to_rgba(line.get_color())[:3] for line in ax.lines[:4]}
    assert {
        tuple(b.get_facecolor()[0][:3]) for b in bands
    } <= line_rgb  # a band shares its line's color
    control = ax.lines[0]
    assert control.get_linestyle() == "--"


def test_line_plot_validates_series() -> None:
    with pytest.raises(ShapeError, match="'a'"):
        line_plot(np.arange(3), [Series("a", np.arange(4))])
    with pytest.raises(ValueError, match="both lo and hi"):
        Series("a", [1.0], lo=[0.0])
    with pytest.raises(ValueError, match="kind"):
        Series("a", [1.0], kind="baseline")  # type: ignore[arg-type]


def test_histogram_counts_finite_values() -> None:
    rng = np.random.default_rng(1)
    vals = np.concatenate([rng.normal(size=200), [np.nan, np.inf]])
    fig = histogram(vals, bins=10, xlabel="effect")
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    want, _ = np.histogram(vals[np.isfinite(vals)], bins=10)
    assert heights == want.tolist()
    assert [t.get_text() for t in ax.texts] == ["2 non-finite omitted"]
    assert [t.get_text() for t in histogram([np.nan], bins=3).axes[0].texts] == ["no finite values"]


def test_figure_png_size_and_no_pyplot() -> None:
    fig = line_plot([0, 1], [Series("a", [0, 1])])
    width, height = fig.get_size_inches()
    png = figure_png(fig, dpi=50)
    assert png.startswith(PNG_SIGNATURE)
    assert Image.open(io.BytesIO(png)).size == (round(width * 50), round(height * 50))
    assert fig.axes == []  # cleared
    code = (
        "import sys; from whisperlens.report import heatmap, figure_png, render_report\n"
        "figure_png(heatmap([[1.0]], row_labels=['r'], col_labels=['c']))\n"
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- html ------------------------------------------------------------------------------


def test_format_cell() -> None:
    cases = [
        (0.95, "0.95"),
        (12.3456, "12.35"),
        (123456.7, "123,457"),
        (1.234e-5, "1.23e-05"),
        (0.0, "0"),
        (float("nan"), "n/a"),
        (np.float32(0.5), "0.5"),
        (np.int64(3), "3"),
        (True, "True"),
        (None, ""),
        ("cat", "cat"),
    ]
    assert [format_cell(v) for v, _ in cases] == [want for _, want in cases]


def test_render_embeds_figures_and_audio(tmp_path: Path) -> None:
    pngs = [figure_png(heatmap([[0.5]], row_labels=["r"], col_labels=["c"])), small_png()]
    samples, wav = sine_wav(0.25)
    section = Section(
        "s",
        "S",
        "intro",
        [Figure("heat", pngs[0]), Figure("dot", pngs[1]), Audio("sine", wav, "440 Hz")],
    )
    path = render_report(Report("R", [section]), tmp_path)
    assert path == tmp_path / "report.html"
    tags = Tags(path.read_text(encoding="utf-8"))
    decoded = [data_uri_bytes(src, "image/png") for src in tags.attr("img", "src")]
    assert decoded == pngs
    assert Image.open(io.BytesIO(decoded[1])).size == (7, 5)
    (audio_src,) = tags.attr("audio", "src")
    got, sr = sf.read(io.BytesIO(data_uri_bytes(audio_src, "audio/wav")), dtype="int16")
    assert sr == 16000
    np.testing.assert_array_equal(got, samples)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_write_figures_names_by_title_and_keeps_bytes(tmp_path: Path) -> None:
    pngs = [figure_png(heatmap([[float(i)]], row_labels=["r"], col_labels=["c"])) for i in range(3)]
    (tmp_path / "given.png").write_bytes(small_png())
    sections = [
        Section("a", "A", blocks=[Figure("Override (seed mode)", pngs[0]), Table(["x"], [[1]])]),
        Section(
            "b",
            "B",
            blocks=[
                Figure("override: seed-mode", pngs[1]),
                Figure("From a file", tmp_path / "given.png"),
            ],
        ),  # fmt: skip
    ]
    paths = write_figures(sections, tmp_path / "figures")
    assert [p.name for p in paths] == [
        "override-seed-mode.png", "override-seed-mode-2.png", "from-a-file.png"
    ]  # fmt: skip
    assert [p.read_bytes() for p in paths] == [pngs[0], pngs[1], small_png()]
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(p.name for p in paths)
    with pytest.raises(WhisperlensError, match="not a PNG"):
        write_figures([Section("c", "C", blocks=[Figure("bad", b"GIF89a")])], tmp_path / "bad")


def test_audio_from_array_float_roundtrip(tmp_path: Path) -> None:
    samples = np.random.default_rng(2).uniform(-1, 1, 800).astype(np.float32)
    audio = Audio.from_array("noise", samples, 8000, subtype="FLOAT")
    path = render_report(Report("R", [Section("s", "S", blocks=[audio])]), tmp_path)
    (src,) = Tags(path.read_text(encoding="utf-8")).attr("audio", "src")
    got, sr = sf.read(io.BytesIO(data_uri_bytes(src, "audio/wav")), dtype="float32")
    assert sr == 8000
    np.testing.assert_array_equal(got, samples)


def test_render_without_embedding_writes_assets(tmp_path: Path) -> None:
    png_file = tmp_path / "given.png"
    png_file.write_bytes(small_png("blue"))
    _, wav = sine_wav(0.1)
    blocks = [
        Figure("from bytes", small_png()),
        Figure("from file", png_file),
        Figure("from a str path", str(png_file)),  # same bytes: one asset file
        Audio("a", wav),
    ]
    out = tmp_path / "out"
    html = render_report(Report("R", [Section("s", "S", blocks=blocks)]), out, embed=False)
    text = html.read_text(encoding="utf-8")
    assert "data:" not in text
    tags = Tags(text)
    srcs = tags.attr("img", "src") + tags.attr("audio", "src")
    assert all(src.startswith("assets/") for src in srcs)
    want = [small_png(), png_file.read_bytes(), png_file.read_bytes(), wav]
    assert [(out / s).read_bytes() for s in srcs] == want
    assert sorted(p.name for p in (out / "assets").iterdir()) == sorted(
        {Path(s).name for s in srcs}
    )


def test_text_is_escaped(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    section = Section(
        "s",
        evil,
        f"intro {evil} `x<y` **bold**",
        [Table([evil], [[evil]], caption=evil), Text(evil), Figure(evil, small_png(), evil)],
    )
    path = render_report(Report(evil, [section], {evil: evil}), tmp_path)
    text = path.read_text(encoding="utf-8")
    tags = Tags(text)
    assert [t for t, _ in tags.tags if t in ("script", "link", "iframe")] == []
    assert "".join(tags.text).count(evil) >= 9  # shown as text, not run
    assert "<code>x&lt;y</code>" in text and "<strong>bold</strong>" in text
    assert "http://" not in text and "https://" not in text  # no network references


def test_table_of_contents_and_sections_from_several_reports(tmp_path: Path) -> None:
    study_a = Report("A", [Section("a-1", "First", blocks=[Table(["n"], [[1], [2.5]])])])
    study_b = Report("B", [Section("b_1", "Second", "- one\n- two")])
    combined = Report("All", [*study_a.sections, *study_b.sections], {"seed": 0})
    tags = Tags(render_report(combined, tmp_path).read_text(encoding="utf-8"))
    assert tags.attr("a", "href") == ["#a-1", "#b_1"]
    assert tags.attr("section", "id") == ["a-1", "b_1"]
    assert tags.attr("td", "class") == ["num", "num"]
    assert [t for t, _ in tags.tags].count("li") == 2 + 2  # toc entries + bullet list
    with pytest.raises(ValueError, match="duplicate section ids"):
        Report("Twice", [*study_a.sections, *study_a.sections])
    with pytest.raises(ValueError, match="section id"):
        Section("has space", "x")


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("cannot format this cell")


def test_write_is_atomic(tmp_path: Path) -> None:
    good = Section("ok", "fine", blocks=[Figure("f", small_png())])
    bad = Section("bad", "broken", blocks=[Table(["x"], [[Unprintable()]])])
    with pytest.raises(RuntimeError, match="cannot format"):
        render_report(Report("R", [good, bad]), tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "report.html").write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="cannot format"):
        render_report(Report("R", [good, bad]), tmp_path)
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_write_is_atomic_when_the_file_system_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "report.html").write_text("old", encoding="utf-8")

    def fail(*args: object) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", fail)  # the last step of a write through a temporary file
        with pytest.raises(OSError, match="disk full"):
            render_report(Report("R", [Section("s", "S", blocks=[Text("new")])]), tmp_path)
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_rejects_media_of_the_wrong_format(tmp_path: Path) -> None:
    with pytest.raises(WhisperlensError, match="not a PNG"):
        render_report(Report("R", [Section("s", "S", blocks=[Figure("f", b"GIF89a")])]), tmp_path)
    _, wav = sine_wav(0.1)
    with pytest.raises(WhisperlensError, match="not a WAV"):
        render_report(Report("R", [Section("s", "S", blocks=[Audio("a", small_png())])]), tmp_path)
    assert not (tmp_path / "report.html").exists()
