"""espeak-ng engine: any espeak-ng language, with word and phoneme timings.

espeak-ng runs through its C library (``libespeak-ng.so.1``, Debian ``espeak-ng``), whose
synthesis events give exact timings: ``espeakEVENT_WORD`` (character position of the
word in the text) and ``espeakEVENT_PHONEME`` (IPA), each with its sample position in
the output. The ``espeak-ng`` command line cannot report timings (``--pho`` works only
with MBROLA voices), hence the library. Each synthesis runs in a fresh process
(``_espeak_worker.py``): inside one process libespeak-ng's output drifts from call to
call (its ``rand()`` jitter and internal state), in a fresh one it is byte-identical.
Cost: about 30-60 ms of process start per synthesis.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from whisperlens.errors import ModelNotAvailableError
from whisperlens.stimuli import _espeak_worker as worker
from whisperlens.stimuli.carriers import engine_rate_params
from whisperlens.stimuli.tts import EngineOutput, Segment, StimulusError, SynthesisRequest

EV_WORD, EV_SENTENCE, EV_END, EV_PHONEME = 1, 2, 5, 7  # espeak_EVENT_TYPE (speak_lib.h)
# parameter -> (default, min, max); wpm comes from the request's rate
_PARAM_LIMITS = {"pitch": (50, 0, 99), "range": (50, 0, 99), "wordgap": (0, 0, 100)}
_DEFAULT_VOICES = {"en": "en-us"}  # espeak-ng's plain "en" is British English
_INSTALL_HINT = "install espeak-ng (Debian/Ubuntu: apt-get install espeak-ng; macOS: brew)"
_WORKER = Path(worker.__file__)
_TIMEOUT_S = 60


@dataclass(frozen=True)
class _RawEvent:
    kind: int  # EV_*
    sample: int  # position in the output, native samples
    text_pos: int = 0  # 0-based character index (words)
    length: int = 0  # characters (words)
    phoneme: str = ""  # IPA (phonemes); "" for pauses


def _run_worker(request: dict[str, Any]) -> dict[str, Any]:
    """Run one request in a fresh process; map its exit codes onto whisperlens errors."""
    proc = subprocess.run(
        [sys.executable, "-I", str(_WORKER)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
        check=False,
    )
    if proc.returncode == worker.EXIT_NO_LIBRARY:
        raise ModelNotAvailableError(
            f"espeak-ng library not found ({proc.stderr.strip()})", _INSTALL_HINT
        )
    if proc.returncode == worker.EXIT_NO_VOICE:
        raise StimulusError(
            f"espeak-ng has no voice {request.get('voice')!r}",
            "list voices with `espeak-ng --voices` and pass voice=<name> or language=<code>",
        )
    if proc.returncode != 0:
        raise StimulusError(
            f"espeak-ng failed on {request.get('text')!r}: {proc.stderr.strip()[-500:]}",
            "check the text and voice; report a bug if it persists",
        )
    return json.loads(proc.stdout)


@cache
def _library_version() -> str:
    return str(_run_worker({})["version"])


class EspeakEngine:
    """espeak-ng: deterministic, fast, many languages, word and phoneme timings."""

    name: ClassVar[str] = "espeak"
    param_names: ClassVar[frozenset[str]] = frozenset(_PARAM_LIMITS)

    def version(self) -> str:
        return f"espeak-ng {_library_version()}"

    def resolve_voice(self, language: str, voice: str | None) -> str:
        return voice or _DEFAULT_VOICES.get(language.lower(), language.lower())

    def synthesize(self, request: SynthesisRequest, voice: str) -> EngineOutput:
        reply = _run_worker({"text": request.text, "voice": voice, "settings": _settings(request)})
        audio = np.frombuffer(base64.b64decode(reply["audio"]), dtype=np.int16)
        sr, n = int(reply["sample_rate"]), len(audio)
        events = [_RawEvent(k, s, max(p - 1, 0), ln, ph) for k, s, p, ln, ph in reply["events"]]
        phonemes = _phoneme_segments(events, n, sr)
        words, spans = _word_segments(events, request.text, n, sr)
        return EngineOutput(audio.astype(np.float32) / 32768.0, sr, words, phonemes, spans)


def _settings(request: SynthesisRequest) -> dict[str, int]:
    try:
        wpm = int(engine_rate_params("espeak", request.rate)["wpm"])
    except ValueError as exc:
        raise StimulusError(str(exc), "choose a rate between 0.46 and 2.57") from None
    settings = {"wpm": wpm, "volume": 100}
    for name, (default, lo, hi) in _PARAM_LIMITS.items():
        value = request.params.get(name, default)
        if not isinstance(value, int | float) or not lo <= value <= hi:
            raise StimulusError(
                f"espeak parameter {name}={value!r} is out of range", f"use {lo}-{hi}"
            )
        settings[name] = int(value)
    return settings


def _boundaries(events: list[_RawEvent], n_samples: int) -> list[tuple[int, _RawEvent]]:
    """(end sample, event) for every phoneme event: the next phoneme/pause/end marker."""
    marks = [e for e in events if e.kind in (EV_PHONEME, EV_END, EV_SENTENCE)]
    out = []
    for i, e in enumerate(marks):
        if e.kind == EV_PHONEME:
            nxt = next((m.sample for m in marks[i + 1 :] if m.sample >= e.sample), n_samples)
            out.append((min(nxt, n_samples), e))
    return out


def _phoneme_segments(events: list[_RawEvent], n: int, sr: int) -> list[Segment]:
    return [
        Segment(e.phoneme, e.sample / sr, end / sr)
        for end, e in _boundaries(events, n)
        if e.phoneme and end > e.sample
    ]


def _word_segments(
    events: list[_RawEvent], text: str, n: int, sr: int
) -> tuple[list[Segment], list[tuple[int, int]]]:
    """Words as espeak-ng spoke them, from its word events and the phonemes after each."""
    ends = {id(e): end for end, e in _boundaries(events, n)}
    words: list[list[int]] = []  # [char_start, char_end, sample_start, sample_end]
    for e in events:
        if e.kind == EV_WORD:
            words.append([*_char_span(text, e.text_pos, e.length), -1, -1])
        elif e.kind == EV_PHONEME and e.phoneme and words and ends[id(e)] > e.sample:
            w = words[-1]
            w[2] = e.sample if w[2] < 0 else w[2]
            w[3] = ends[id(e)]
    merged: list[list[int]] = []
    for w in (w for w in words if w[2] >= 0 and w[1] > w[0]):
        if merged and w[0] < merged[-1][1]:  # one written word spoken as several ("42")
            merged[-1][1], merged[-1][3] = max(merged[-1][1], w[1]), w[3]
        else:
            merged.append(w)
    segments = [Segment(text[a:b], s / sr, e / sr) for a, b, s, e in merged]
    return segments, [(a, b) for a, b, _, _ in merged]


def _char_span(text: str, start: int, length: int) -> tuple[int, int]:
    """The written word at ``start``: extended over word characters, trailing punctuation cut."""
    end = min(start + max(length, 1), len(text))
    while end < len(text) and (text[end].isalnum() or text[end] in "'’-"):
        end += 1
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return start, end
