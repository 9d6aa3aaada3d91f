"""Reports open in headless Chromium with every image and audio clip loading, and no errors.

Needs Debian ``chromium`` and the ``playwright`` package (``scripts/setup.sh`` installs
both); without them these tests fail rather than skip.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisperlens.errors import WhisperlensError
from whisperlens.report import (
    Audio,
    Figure,
    Report,
    Section,
    Series,
    browser,
    heatmap,
    line_plot,
    render_report,
)
from whisperlens.report.browser import CHROMIUM, check_report_in_browser

pytestmark = pytest.mark.integration

DURATIONS = (0.75, 1.25)  # seconds of the two sine clips
SR = 16000


@pytest.fixture(autouse=True)
def browser_installed() -> None:
    if importlib.util.find_spec("playwright") is None:
        pytest.fail("the playwright package is not installed; run scripts/setup.sh")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing; run scripts/setup.sh as root (Debian chromium)")


def sine_wav(seconds: float, freq: float) -> bytes:
    t = np.arange(round(seconds * SR)) / SR
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * freq * t), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def small_report() -> Report:
    vals = np.array([[0.95, np.nan], [0.4, 0.1]])
    heat = heatmap(
        vals,
        ci_low=vals - 0.05,
        ci_high=vals + 0.05,
        row_labels=["enc", "dec"],
        col_labels=["L0", "L1"],
        title="patching effect",
    )
    x = np.arange(4.0)
    line = line_plot(
        x,
        [
            Series("effect", x / 4, x / 4 - 0.1, x / 4 + 0.1),
            Series("shuffled", np.zeros(4), -0.05 * np.ones(4), 0.05 * np.ones(4), kind="control"),
        ],
        xlabel="layer",
    )
    blocks = [
        Figure.from_matplotlib("Heatmap", heat),
        Figure.from_matplotlib("Layer sweep", line, "effect against a shuffled control"),
        Audio("A4", sine_wav(DURATIONS[0], 440.0)),
        Audio("E5", sine_wav(DURATIONS[1], 660.0)),
    ]
    return Report("Browser check", [Section("main", "Main", "Two figures, two clips.", blocks)])


@pytest.mark.parametrize("embed", [True, False])
def test_report_loads_in_chromium(tmp_path: Path, embed: bool) -> None:
    html = render_report(small_report(), tmp_path / "out", embed=embed)
    text = html.read_text(encoding="utf-8")
    assert ('src="data:audio/wav;base64,' in text) == embed
    assert ('src="assets/' in text) == (not embed)
    shot = tmp_path / "screenshot.png"
    check = check_report_in_browser(html, screenshot=shot)
    assert (check.n_images, check.n_audio) == (2, 2)
    assert check.broken_images == [] and check.broken_audio == []
    assert check.errors == [] and check.external_requests == []
    assert check.audio_durations == pytest.approx(DURATIONS, abs=0.02)
    assert check.ok
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_broken_report_is_reported(tmp_path: Path) -> None:
    (tmp_path / "ok.wav").write_bytes(sine_wav(0.5, 440.0))
    html = tmp_path / "broken.html"
    html.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>broken</title>"
        "<link rel='stylesheet' href='http://127.0.0.1:9/style.css'></head><body>"
        "<img src='missing.png' alt='gone'>"
        "<audio controls preload='metadata' src='ok.wav'></audio>"
        "<audio controls preload='metadata' src='missing.wav'></audio>"
        "<script>throw new Error('boom');</script>"
        "</body></html>",
        encoding="utf-8",
    )
    check = check_report_in_browser(html, timeout_s=10.0)
    assert (check.n_images, check.n_audio) == (1, 2)
    assert check.broken_images == ["missing.png"]
    assert check.broken_audio == ["missing.wav"]
    assert check.audio_durations[0] == pytest.approx(0.5, abs=0.02)
    assert any("boom" in e for e in check.errors)
    assert check.external_requests == ["http://127.0.0.1:9/style.css"]
    assert not check.ok


def test_missing_chromium_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    html = render_report(Report("R", []), tmp_path)
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "no-chromium")
    with pytest.raises(WhisperlensError, match="scripts/setup.sh"):
        check_report_in_browser(html)
