"""Open a rendered report in headless Chromium and check that everything in it loads.

Drives the Debian ``chromium`` (``/usr/bin/chromium``) through Playwright's Python API;
both are installed by ``scripts/setup.sh``. Used by the report tests and by any study
or ``reproduce`` test that wants to know its report actually works in a browser:

>>> check = check_report_in_browser(Path("out/report.html"))  # doctest: +SKIP
>>> assert check.ok, check
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisperlens.errors import WhisperlensError

CHROMIUM = Path("/usr/bin/chromium")
# We run as root in containers (no sandbox) without a GPU; nothing may reach the network.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
SETUP_FIX = "run scripts/setup.sh as root (installs Debian chromium and the playwright package)"
SRC_CHARS = 80  # how much of a (data:) URL a report of a broken element quotes

IMAGES_JS = """() => Array.from(document.images).map(i => ({
    src: i.getAttribute('src') || '', ok: i.complete && i.naturalWidth > 0}))"""
AUDIO_SETTLED_JS = """() => Array.from(document.querySelectorAll('audio')).every(
    a => a.readyState >= 1 || a.error !== null)"""
AUDIO_JS = """() => Array.from(document.querySelectorAll('audio')).map(a => ({
    src: a.getAttribute('src') || '', ready: a.readyState, error: a.error ? a.error.code : null,
    duration: Number.isFinite(a.duration) ? a.duration : null}))"""


@dataclass(frozen=True)
class BrowserCheck:
    """What Chromium made of a report page."""

    n_images: int  # <img> elements
    n_audio: int  # <audio> elements
    errors: list[str]  # console messages of type "error" and uncaught page errors
    broken_images: list[str]  # src (shortened) of each <img> that did not decode
    broken_audio: list[str]  # src of each <audio> without metadata, or with a media error
    audio_durations: list[float]  # seconds, per <audio> in page order; NaN when unknown
    external_requests: list[str]  # URLs requested other than file: and data:

    @property
    def ok(self) -> bool:
        return not (
            self.errors or self.broken_images or self.broken_audio or self.external_requests
        )


def _short(src: str) -> str:
    return src if len(src) <= SRC_CHARS else src[:SRC_CHARS] + "..."


def _sync_playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise WhisperlensError("the playwright package is not installed", SETUP_FIX) from None
    if not CHROMIUM.exists():
        raise WhisperlensError(f"{CHROMIUM} not found (Debian package chromium)", SETUP_FIX)
    return sync_playwright


def _collect(page: Any, timeout_s: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Wait until every <audio> has metadata or an error (up to ``timeout_s``), then read."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with contextlib.suppress(PlaywrightTimeout):  # unsettled elements are reported as broken
        page.wait_for_function(AUDIO_SETTLED_JS, timeout=timeout_s * 1000)
    return page.evaluate(IMAGES_JS), page.evaluate(AUDIO_JS)


def check_report_in_browser(
    html_path: str | Path, screenshot: str | Path | None = None, *, timeout_s: float = 15.0
) -> BrowserCheck:
    """Load ``html_path`` from ``file://`` in headless Chromium and check its images and audio.

    ``screenshot`` saves a full-page PNG. Raises :class:`WhisperlensError` when Chromium or
    Playwright is missing; a page that fails to load shows up in the returned check.
    """
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise WhisperlensError(f"{html_path} does not exist", "render the report first")
    errors: list[str] = []
    external: list[str] = []
    with _sync_playwright()() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page()
            page.on(
                "console",
                lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on(
                "request",
                lambda r: None if r.url.startswith(("file:", "data:")) else external.append(r.url),
            )
            page.goto(html_path.as_uri(), wait_until="load", timeout=timeout_s * 1000)
            images, audio = _collect(page, timeout_s)
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    broken_audio = [
        a for a in audio if a["ready"] < 1 or a["error"] is not None or a["duration"] is None
    ]
    return BrowserCheck(
        n_images=len(images),
        n_audio=len(audio),
        errors=errors,
        broken_images=[_short(i["src"]) for i in images if not i["ok"]],
        broken_audio=[_short(a["src"]) for a in broken_audio],
        audio_durations=[
            math.nan if a["duration"] is None else float(a["duration"]) for a in audio
        ],
        external_requests=external,
    )
