"""The SAE dashboard: a page per latent, every clip and figure present, sortable in Chromium.

A small synthetic features directory (the features contract: ``latents.json`` plus snippet
WAVs) is built in ``tmp_path``; the checks compare the rendered HTML with the input entries
and the WAV files, and Whisper's own feature extractor is the oracle for the spectrogram.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pickle
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from whisperlens.report.html import Table
from whisperlens.studies.sae import dashboard
from whisperlens.studies.sae.dashboard import (
    DashboardError,
    log_mel_spectrogram,
    render_dashboard,
    summary_tables,
)

SR = 16_000
NASTY = "<b>AE</b> & \"x\" 'y'"  # a label that must come out escaped
SORT_KEYS = (
    "latent",
    "label",
    "label_type",
    "frequency",
    "mean_activation",
    "max_activation",
    "purity",
    "monosemanticity",
    "n_examples",
)


def tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def example(rel: str, seconds: float, peak: float, **extra: Any) -> dict[str, Any]:
    n = round(seconds / 0.02)
    trace = np.maximum(0.0, peak - 0.4 * np.abs(np.arange(n) - n // 2)).round(3).tolist()
    return {
        "item": "asterisk-en/vm-goodbye",
        "language": "en",
        "label": "speech",
        "time_s": 1.0 + 0.02 * (n // 2),
        "activation": peak,
        "audio": rel,
        "snippet_start_s": 1.0,
        "trace": trace,
        **extra,
    }


# (latent, label type, label, frequency, purity, monosemanticity, [(seconds, Hz, peak)])
SPECS = [
    (12, "phoneme", "phoneme:AE", 0.013, 0.81, 0.74, [(0.6, 440.0, 7.9), (0.9, 660.0, 5.0)]),
    (3, "word", "word:goodbye", 0.002, 0.55, None, [(0.7, 880.0, 3.1)]),
    (40, "language", "language:es", 0.2, 0.93, 0.9, [(0.5, 300.0, 2.5), (0.8, 500.0, 2.0)]),
    (7, "phoneme", NASTY, 0.05, 0.3, 0.2, []),
    (25, None, None, 0.0, 0.0, 0.0, []),  # unlabelled
]


@pytest.fixture
def feat_dir(tmp_path: Path) -> Path:
    """A features run directory: five latents, five snippets, a summary and a config."""
    feat = tmp_path / "feat"
    (feat / "snippets").mkdir(parents=True)
    entries = []
    for latent, kind, label, freq, purity, mono, clips in SPECS:
        top = []
        for k, (seconds, hz, peak) in enumerate(clips):
            rel = f"snippets/L{latent:05d}_{k:02d}.wav"
            sf.write(feat / rel, tone(seconds, hz), SR, subtype="PCM_16")
            top.append(example(rel, seconds, peak, word="goodbye", phoneme="AE"))
        entries.append(
            {
                "latent": latent,
                "frequency": freq,
                "mean_activation": 2.0 + latent / 100,
                "max_activation": max((c[2] for c in clips), default=0.0),
                "label": label,
                "label_type": kind,
                "purity": purity,
                "monosemanticity": mono,
                "purity_by_type": {
                    "phoneme": {"label": "AE", "purity": 0.81},
                    "word": {"label": "goodbye", "purity": 0.4},
                    "speech": {"label": "speech", "purity": 1.0},
                },
                "top": top,
            }
        )
    (feat / "latents.json").write_text(json.dumps(entries), encoding="utf-8")
    summary = {
        "n_latents": 5,
        "counts": {"sae": {"phoneme": 2, "word": 1}, "pca": {"phoneme": 0, "word": 1}},
    }
    (feat / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    config = {"study": "sae-features", "config": {"model": "tiny.en", "site": "encoder.blocks.2"}}
    (feat / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return feat


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text of the page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.data: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.data.append(data)

    def find(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag]


def parse(path: Path) -> Tags:
    return Tags(path.read_text(encoding="utf-8"))


def entries_of(feat: Path) -> list[dict[str, Any]]:
    return json.loads((feat / "latents.json").read_text(encoding="utf-8"))


# -- structure ------------------------------------------------------------------------------
def test_every_latent_has_a_page_with_its_clips_and_figures(feat_dir: Path) -> None:
    index = render_dashboard(feat_dir, progress=False)
    assert index == feat_dir / "dashboard" / "index.html"
    links = [a["href"] for a in parse(index).find("a") if a.get("href", "").startswith("latents/")]
    assert sorted(links) == sorted(f"latents/L{s[0]:05d}.html" for s in SPECS)
    for entry in entries_of(feat_dir):
        page = index.parent / "latents" / f"L{entry['latent']:05d}.html"
        tags = parse(page)
        audio = [a["src"] for a in tags.find("audio")]
        images = [i["src"] for i in tags.find("img")]
        assert len(audio) == len(images) == len(entry["top"])
        for src, ex in zip(audio, entry["top"], strict=True):
            clip = (page.parent / src).resolve()
            assert clip.is_file() and clip.is_relative_to(index.parent.resolve())
            assert clip.read_bytes() == (feat_dir / ex["audio"]).read_bytes()
        for src in images:
            assert (page.parent / src).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        for _tag, attrs in tags.tags:  # nothing outside the dashboard, nothing on the network
            for ref in (attrs.get("src"), attrs.get("href")):
                assert ref is None or not ref.startswith(("http:", "https:", "//", "/"))


def test_index_rows_carry_the_entries_sort_keys(feat_dir: Path) -> None:
    index = render_dashboard(feat_dir, progress=False)
    tags = parse(index)
    assert [th["data-key"] for th in tags.find("th") if "data-key" in th] == list(SORT_KEYS)
    rows = [a for a in tags.find("tr") if "data-latent" in a]
    sorts = [a["data-sort"] for a in tags.find("td") if "data-sort" in a]
    assert len(sorts) == len(rows) * len(SORT_KEYS)
    by_latent = {e["latent"]: e for e in entries_of(feat_dir)}
    assert [int(r["data-latent"]) for r in rows] == sorted(by_latent)
    for i, row in enumerate(rows):
        entry = by_latent[int(row["data-latent"])]
        cells = dict(
            zip(SORT_KEYS, sorts[i * len(SORT_KEYS) : (i + 1) * len(SORT_KEYS)], strict=True)
        )
        assert row["data-label-type"] == (entry["label_type"] or "(none)")
        assert cells["label"] == (entry["label"] or "")  # unescaped by the parser: exact text
        assert int(cells["latent"].split(".")[0]) == entry["latent"]
        assert int(float(cells["n_examples"])) == len(entry["top"])
        for key in ("frequency", "purity", "monosemanticity", "max_activation"):
            if entry[key] is None:
                assert cells[key] == ""  # sorts last
            else:
                assert float(cells[key]) == entry[key]
    options = [o["value"] for o in tags.find("option")]
    assert options == ["", "(none)", "language", "phoneme", "word"]


def test_text_is_escaped(feat_dir: Path) -> None:
    index = render_dashboard(feat_dir, progress=False)
    page = index.parent / "latents" / "L00007.html"
    for path in (index, page):
        text = path.read_text(encoding="utf-8")
        assert "<b>AE</b>" not in text
        assert "&lt;b&gt;AE&lt;/b&gt; &amp;" in text
        assert NASTY in "".join(parse(path).data)  # and reads back as the label


def test_latent_page_shows_statistics_and_purity(feat_dir: Path) -> None:
    index = render_dashboard(feat_dir, progress=False)
    text = "".join(parse(index.parent / "latents" / "L00012.html").data)
    for fact in (
        "phoneme:AE",
        "0.013",
        "0.81",
        "0.74",
        "goodbye",
        "speech",
        "asterisk-en/vm-goodbye",
    ):
        assert fact in text
    assert "Purity by label type" in text
    tags = parse(index.parent / "latents" / "L00003.html")
    rels = {a["rel"]: a["href"] for a in tags.find("a") if "rel" in a}
    assert rels == {"next": "L00007.html"}  # latent 3 is the first in id order


def test_headline_summaries(feat_dir: Path) -> None:
    evaluate = {
        "fvu": 0.12,
        "l0": 32.0,
        "dead_fraction": 0.01,
        "dense_fraction": 0.0,
        "pca": {"fvu": 0.4, "l0": 32.0, "dead_fraction": 0.0},
        "random": {"fvu": 0.9, "l0": 32.0},
        "shards": ["a.safetensors", "b.safetensors"],
        "model": "tiny.en",
    }
    tables = summary_tables(evaluate)
    assert [list(t.columns) for t in tables] == [
        ["metric", "(top level)", "pca", "random"],
        ["key", "value"],
    ]
    assert [list(r) for r in tables[0].rows] == [
        ["fvu", 0.12, 0.4, 0.9],
        ["l0", 32.0, 32.0, 32.0],
        ["dead_fraction", 0.01, 0.0, None],
    ]
    assert [list(r) for r in tables[1].rows] == [
        ["dense_fraction", 0.0],
        ["shards", '["a.safetensors", "b.safetensors"]'],
        ["model", "tiny.en"],
    ]
    index = render_dashboard(feat_dir, summaries={"evaluate": evaluate}, progress=False)
    tags = parse(index)
    sections = [s["id"] for s in tags.find("section")]
    assert sections[:3] == ["summary-0-features", "summary-1-evaluate", "label-types"]
    text = "".join(tags.data)
    assert "Summary: evaluate" in text and "0.12" in text and "tiny.en" in text
    assert "encoder.blocks.2" in text  # the features run's config


def test_summary_tables_side_by_side_without_repeating_the_top_level() -> None:
    metrics = {"fvu": 0.1, "l0": 30.0, "fvu_ci95": [0.09, 0.11], "k": None}
    evaluate = {
        "model": "tiny.en",
        "definitions": {"fvu": "unexplained variance", "l0": "active codes"},
        **metrics,  # evaluate repeats the SAE's metrics at the top
        "sae": metrics,
        "pca": {"fvu": 0.5, "l0": 64.0, "k": None, "n_components": 64},
        "ablations": {"zero": {"ce": 9.0, "wer": 1.0}, "mean": {"ce": 4.0, "wer": 0.6}},
    }
    main, ablations, rest = summary_tables(evaluate)
    assert list(main.columns) == ["metric", "sae", "pca", "definitions"]
    assert [list(r) for r in main.rows] == [  # k: None everywhere, left out
        ["fvu", 0.1, 0.5, "unexplained variance"],
        ["l0", 30.0, 64.0, "active codes"],
        ["fvu_ci95", "[0.09, 0.11]", None, None],
    ]
    assert (list(ablations.columns), ablations.caption) == (
        ["metric", "zero", "mean"],
        "ablations.*",
    )
    assert [list(r) for r in rest.rows] == [["model", "tiny.en"], ["pca.n_components", 64]]
    features = {
        "dictionaries": {
            d: {"counts": {"phoneme": n, "word": 1}} for d, n in [("sae", 5), ("pca", 0)]
        }
    }
    (table,) = summary_tables(features)
    assert (list(table.columns), table.caption) == (
        ["metric", "sae", "pca"],
        "dictionaries.*.counts",
    )
    assert [list(r) for r in table.rows] == [["phoneme", 5, 0], ["word", 1, 1]]


def test_summary_tables_of_flat_and_empty_summaries() -> None:
    assert summary_tables({}) == []
    (table,) = summary_tables({"a": 1, "b": {"c": "x"}})
    assert isinstance(table, Table) and [list(r) for r in table.rows] == [["a", 1], ["b.c", "x"]]


# -- re-rendering ---------------------------------------------------------------------------
def test_rerender_redraws_only_what_changed_and_prunes_the_rest(feat_dir: Path) -> None:
    out = feat_dir.parent / "dash"
    render_dashboard(feat_dir, out, progress=False)
    figures = {p.name: p.stat().st_mtime_ns for p in (out / "spectrograms").iterdir()}
    assert len(figures) == sum(len(s[6]) for s in SPECS)
    entries = entries_of(feat_dir)
    dropped = next(e for e in entries if e["latent"] == 40)
    entries.remove(dropped)
    changed = next(e for e in entries if e["latent"] == 12)
    changed["top"][0]["trace"] = [1.0, 2.0, 3.0]
    (feat_dir / "latents.json").write_text(json.dumps(entries), encoding="utf-8")
    (out / "spectrograms" / ".x.png.123.tmp").write_bytes(b"torn")  # left by a killed render
    render_dashboard(feat_dir, out, progress=False)
    assert not (out / "latents" / "L00040.html").exists()
    assert sorted(p.name for p in (out / "audio").iterdir()) == [
        "L00003_00.wav",
        "L00012_00.wav",
        "L00012_01.wav",
    ]
    after = {p.name: p.stat().st_mtime_ns for p in (out / "spectrograms").iterdir()}
    assert len(after) == 3
    kept = set(after) & set(figures)
    assert len(kept) == 2 and all(after[n] == figures[n] for n in kept)  # not redrawn
    html = (out / "latents" / "L00012.html").read_text(encoding="utf-8")
    assert all(f"../spectrograms/{n}" in html for n in set(after) - kept)
    assert "latents/L00040.html" not in (out / "index.html").read_text(encoding="utf-8")


def test_clip_changed_in_features_is_replaced(feat_dir: Path) -> None:
    out = feat_dir.parent / "dash"
    render_dashboard(feat_dir, out, progress=False)
    new = tone(0.4, 1000.0)
    sf.write(feat_dir / "snippets/L00003_00.wav", new, SR, subtype="PCM_16")  # a new file
    render_dashboard(feat_dir, out, progress=False)
    got, rate = sf.read(out / "audio" / "L00003_00.wav", dtype="float32")
    assert rate == SR and np.allclose(got, new, atol=1 / 32768)


# -- errors ---------------------------------------------------------------------------------
def test_missing_latents_names_the_features_step(tmp_path: Path) -> None:
    with pytest.raises(DashboardError, match="sae features"):
        render_dashboard(tmp_path / "nothing", progress=False)


@pytest.mark.parametrize(
    ("audio", "message"),
    [("../outside.wav", "leaves the features directory"), ("snippets/gone.wav", "is missing")],
)
def test_bad_snippets_are_refused_before_writing(feat_dir: Path, audio: str, message: str) -> None:
    shutil.copy(feat_dir / "snippets/L00003_00.wav", feat_dir.parent / "outside.wav")
    entries = entries_of(feat_dir)
    entries[2]["top"][-1]["audio"] = audio  # latent 40, rendered after others
    (feat_dir / "latents.json").write_text(json.dumps(entries), encoding="utf-8")
    with pytest.raises(DashboardError, match=message):
        render_dashboard(feat_dir, progress=False)
    assert not (feat_dir / "dashboard").exists()


def test_duplicate_latents_and_own_directory_are_refused(feat_dir: Path) -> None:
    with pytest.raises(DashboardError, match="features directory"):
        render_dashboard(feat_dir, feat_dir, progress=False)
    entries = entries_of(feat_dir)
    (feat_dir / "latents.json").write_text(json.dumps(entries + entries[:1]), encoding="utf-8")
    with pytest.raises(DashboardError, match="appears twice"):
        render_dashboard(feat_dir, progress=False)


# -- the spectrogram ------------------------------------------------------------------------
def test_log_mel_matches_whisper_feature_extractor() -> None:
    """Oracle: transformers' WhisperFeatureExtractor on a full 30 s window (no padding)."""
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(30 * SR)).astype(np.float32)
    audio[: 10 * SR] += tone(10.0, 440.0)
    expected = WhisperFeatureExtractor()(audio, sampling_rate=SR, return_tensors="np")
    got = log_mel_spectrogram(audio)
    assert got.shape == (80, 3000)
    np.testing.assert_allclose(got, expected.input_features[0], atol=2e-4)


def test_log_mel_of_a_tone_peaks_at_its_mel_band() -> None:
    """A 1 kHz tone from 0.25 s: silent frames before, the band centred nearest 1 kHz after."""
    audio = np.concatenate([np.zeros(SR // 4, np.float32), tone(0.5, 1000.0)])
    mel = log_mel_spectrogram(audio)
    assert mel.shape == (80, len(audio) // 160)

    def slaney_mel(hz: np.ndarray) -> np.ndarray:  # Slaney's mel scale, written out
        hz = np.asarray(hz, dtype=float)
        log_part = 15.0 + 27.0 * np.log(np.maximum(hz, 1000.0) / 1000.0) / np.log(6.4)
        return np.where(hz < 1000.0, 3.0 * hz / 200.0, log_part)

    edges = np.linspace(0.0, slaney_mel(np.array(8000.0)), 82)
    centre = int(np.argmin(np.abs(edges[1:-1] - slaney_mel(np.array(1000.0)))))
    assert np.bincount(mel[:, 30:70].argmax(axis=0)).argmax() == centre
    assert mel[:, :20].max() == pytest.approx(mel.max() - 2.0)  # floored at max - 8 (log10)


def test_example_figure_draws_a_trace_longer_than_its_clip() -> None:
    fig = dashboard.example_figure(tone(0.3, 440.0), [0.0, 1.0, 4.0] * 6, start_s=2.0, peak_s=2.1)
    ax, twin = fig.axes
    assert ax.get_xlim()[0] == 2.0 and ax.get_xlim()[1] == pytest.approx(2.36)
    assert twin.get_ylim()[1] > 4.0
    assert dashboard.figure_png(fig).startswith(b"\x89PNG")


# -- in a browser ---------------------------------------------------------------------------
@pytest.fixture
def chromium() -> None:
    from whisperlens.report.browser import CHROMIUM

    if importlib.util.find_spec("playwright") is None:
        pytest.skip("the playwright package is not installed (scripts/setup.sh installs it)")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian package chromium; scripts/setup.sh)")


def visible_latents(page: Any) -> list[int]:
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('#latents tbody tr'))
            .filter(r => !r.hidden).map(r => Number(r.dataset.latent))"""
    )


def sort_and_filter(index: Path, screenshot: Path) -> tuple[list[list[int]], list[str]]:
    """Click the frequency header twice, then filter to phoneme latents; the visible order
    after each step, and the console errors seen."""
    from playwright.sync_api import sync_playwright

    from whisperlens.report.browser import CHROMIUM, CHROMIUM_ARGS

    errors: list[str] = []
    orders = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(index.as_uri(), wait_until="load")
            orders.append(visible_latents(page))
            header = page.locator('th[data-key="frequency"] button')
            for _ in range(2):
                header.click()
                orders.append(visible_latents(page))
            page.select_option("#label-type-filter", "phoneme")
            orders.append(visible_latents(page))
            orders.append([int(page.inner_text("#latent-count").split()[0])])
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return orders, errors


@pytest.mark.integration
def test_dashboard_in_chromium(feat_dir: Path, chromium: None, tmp_path: Path) -> None:
    from whisperlens.report.browser import check_report_in_browser

    index = render_dashboard(feat_dir, progress=False)
    check = check_report_in_browser(index, screenshot=tmp_path / "index.png")
    assert check.ok, check
    page = index.parent / "latents" / "L00012.html"
    check = check_report_in_browser(page, screenshot=tmp_path / "latent-12.png")
    assert check.ok, check
    assert (check.n_images, check.n_audio) == (2, 2)
    assert check.audio_durations == pytest.approx([0.6, 0.9], abs=0.02)  # the WAVs' lengths
    orders, errors = sort_and_filter(index, tmp_path / "index-sorted.png")
    assert errors == []
    freq = {s[0]: s[3] for s in SPECS}
    by_freq = sorted(freq, key=freq.__getitem__)
    assert orders[0] == sorted(freq)
    assert orders[1] == by_freq and orders[2] == by_freq[::-1]
    assert orders[3] == [f for f in by_freq[::-1] if f in (12, 7)]  # the phoneme latents
    assert orders[4] == [2]  # "2 of 5 latents"
    for shot in ("index.png", "latent-12.png", "index-sorted.png"):
        assert (tmp_path / shot).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_nan_and_missing_numbers_sort_last(feat_dir: Path) -> None:
    entries = entries_of(feat_dir)
    entries[0]["purity"] = math.nan
    (feat_dir / "latents.json").write_text(json.dumps(entries), encoding="utf-8")
    index = render_dashboard(feat_dir, progress=False)
    tags = parse(index)
    purity = [a["data-sort"] for a in tags.find("td") if "data-sort" in a][6 :: len(SORT_KEYS)]
    assert purity.count("") == 1


def test_figure_task_is_picklable_and_draws_what_the_render_wrote(feat_dir: Path) -> None:
    """What a process or Ray worker receives (a pickled task and units) draws the same bytes
    as the inline render wrote (ProcessExecutor itself is the executors' tests' concern)."""
    index = render_dashboard(feat_dir, progress=False)
    entry = next(e for e in entries_of(feat_dir) if e["latent"] == 12)
    examples = dashboard._plan_latent(entry, feat_dir, index.parent)
    task = pickle.loads(pickle.dumps(dashboard.DrawFigures()))
    for ex in examples:
        unit = pickle.loads(pickle.dumps(ex.unit()))
        assert task.run(task.setup(), unit) == ex.image.read_bytes()
