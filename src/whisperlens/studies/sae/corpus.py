"""The offline SAE training corpus: natural speech, music, synthetic speech and generated noise.

:func:`build_corpus` assembles an :class:`~whisperlens.datasets.AudioDataset` from what is
installed on the machine, nothing downloaded:

- natural speech: the Asterisk prompts of every language whose Debian packages are installed
  (``en``, ``es``; ``fr``, ``it``, ``ru`` when present; missing ones are noted in
  ``dataset.info["mix"]["skipped"]``, never an error);
- real music: the Asterisk music-on-hold tracks (cut into segments);
- synthetic speech with word and phoneme timings (``item.meta["words"]`` and
  ``item.meta["phonemes"]``, lists of ``[label, start_s, end_s]``): espeak-ng in ten languages
  (sentences built from the steering concept words and templates, plus the Asterisk
  transcripts re-spoken), and Piper English (Asterisk English transcripts, a few per
  utterance), at several speaking rates and pitches;
- generated non-speech: white, pink and brown noise, tones and sweeps, click trains and
  digital silence, written deterministically as 16 kHz WAV files under the user cache dir.

Scales (seconds of audio; the encoder sees 50 frames per second of audio). espeak-ng fills
the default and quick scales up to a fixed total, so the total holds whichever Asterisk
languages are installed. Measured with Asterisk en, es, fr, it, ru installed:

========  =========================================  ==========================
scale     audio                                      real-audio encoder frames
========  =========================================  ==========================
default   20,760 s in 3,816 clips: 6,620 s natural   1,038,025
          speech, 1,107 s music, 10,542 s TTS in 10
          languages, 2,491 s generated non-speech
quick     2,504 s in 543 clips                       125,180
tiny      103 s in 43 clips (tests)                  5,135
========  =========================================  ==========================

Building the default corpus the first time (all TTS synthesized) took 4.5 min wall, 160 s
of CPU, on a shared 2-core machine; with the TTS cache warm it takes 15-40 s (hashing and
checking the cached WAVs).

TTS output is cached (``whisperlens.stimuli.tts``), so only the first build synthesizes;
synthesis runs in a thread pool (espeak-ng runs each request in its own process).
:func:`corpus_mix` summarises any data set the same way (seconds and frames per source,
label and language), so folders and Hugging Face data sets (``datasets.from_folder``,
``datasets.from_hf``) go through extraction exactly like the built corpus.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from whisperlens import datasets
from whisperlens._io import cache_dir, stable_hash
from whisperlens.datasets import AudioDataset, AudioItem, DatasetError
from whisperlens.frames import SAMPLE_RATE

Scale = Literal["default", "quick", "tiny"]
SCALES: tuple[str, ...] = get_args(Scale)
FRAMES_PER_SECOND = 50  # encoder frames per second of audio (20 ms each)
ESPEAK_LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "nl", "sv", "pl", "id")
GENERATED_KINDS = ("white", "pink", "brown", "tone", "sweep", "clicks", "silence")
GENERATOR_VERSION = 1  # bump when the generated audio changes (new cache folder)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScaleSpec:
    """How much of each source a scale takes (seconds are targets, met within one clip)."""

    natural_s: float | None  # seconds of Asterisk speech per language (None: all)
    music_s: float | None  # seconds of music (None: all)
    espeak_s: float  # seconds of espeak-ng speech (at least), split over its languages
    piper_s: float  # seconds of Piper English speech
    generated_s: float  # seconds of generated non-speech, split evenly over the kinds
    utterance_s: tuple[float, float]  # target length range of one synthetic utterance
    clip_s: tuple[float, float]  # length range of one generated clip
    total_s: float | None = None  # espeak-ng fills up to this total (fewer natural languages)


SCALE_SPECS: dict[str, ScaleSpec] = {
    "default": ScaleSpec(None, None, 6_000.0, 700.0, 2_450.0, (8.0, 16.0), (4.0, 16.0), 22_000.0),
    "quick": ScaleSpec(200.0, 250.0, 600.0, 150.0, 300.0, (6.0, 14.0), (3.0, 12.0), 2_600.0),
    "tiny": ScaleSpec(8.0, 5.0, 12.0, 3.0, 14.0, (2.0, 4.0), (2.0, 2.0)),
}
_RATES = (0.8, 0.9, 1.0, 1.1, 1.25)
_PITCHES = (30, 40, 50, 60, 70)


def build_corpus(
    scale: Scale = "default",
    *,
    seed: int = 0,
    languages: Sequence[str] | None = None,
    workers: int = 4,
    progress: bool = True,
) -> AudioDataset:
    """The offline training corpus at ``scale``; ``dataset.info["mix"]`` records its mix.

    ``languages`` restricts the speech sources (natural and synthetic) to those languages;
    non-speech is always included. ``workers`` synthesis threads (each espeak-ng request is
    its own process; Piper runs in this process). Deterministic for a given ``seed``.
    """
    if scale not in SCALE_SPECS:
        raise DatasetError(f"unknown corpus scale {scale!r}", f"use one of {SCALES}")
    spec = SCALE_SPECS[scale]
    wanted = None if languages is None else {str(lang) for lang in languages}
    skipped: dict[str, str] = {}
    parts = [_natural(spec, seed, wanted, skipped)]
    parts.append(_music(spec, seed, skipped))
    parts.append(generated_noise(spec.generated_s, seed=seed, clip_s=spec.clip_s))
    so_far = sum(item.duration_s or 0.0 for part in parts for item in part)
    fill = 0.0 if spec.total_s is None else spec.total_s - so_far - spec.piper_s
    espeak_s = max(spec.espeak_s, fill)
    parts.insert(2, _synthetic(spec, espeak_s, seed, wanted, workers, progress, skipped))
    items = [item for part in parts for item in part]
    dataset = AudioDataset(items, name=f"sae-corpus-{scale}")
    dataset.info["mix"] = corpus_mix(dataset) | {"skipped": skipped}
    dataset.info |= {"scale": scale, "seed": seed, "languages": sorted(wanted or [])}
    return dataset


# -- natural audio -------------------------------------------------------------------------
def _natural(
    spec: ScaleSpec, seed: int, wanted: set[str] | None, skipped: dict[str, str]
) -> list[AudioItem]:
    items: list[AudioItem] = []
    for lang in datasets.ASTERISK_LANGUAGES:
        if wanted is not None and lang not in wanted:
            continue
        try:
            part = datasets.asterisk(lang)  # type: ignore[arg-type]
        except DatasetError as exc:
            skipped[f"asterisk-{lang}"] = exc.cause
            continue
        items += _take_seconds(list(part), spec.natural_s, seed)
    return items


def _music(spec: ScaleSpec, seed: int, skipped: dict[str, str]) -> list[AudioItem]:
    try:
        part = list(datasets.music())
    except DatasetError as exc:
        skipped["music"] = exc.cause
        return []
    if spec.music_s is not None and spec.music_s < 10.0:  # tiny: one short excerpt
        item = part[0]
        end = item.start_s + spec.music_s
        return [_replace(item, id=item.id + f"/0-{spec.music_s:g}s", end_s=end, dur=spec.music_s)]
    return _take_seconds(part, spec.music_s, seed)


def _replace(item: AudioItem, *, id: str, end_s: float, dur: float) -> AudioItem:
    return AudioItem(
        id=id,
        path=item.path,
        text=item.text,
        language=item.language,
        speaker=item.speaker,
        source=item.source,
        duration_s=dur,
        label=item.label,
        start_s=item.start_s,
        end_s=end_s,
        meta=dict(item.meta),
    )


def _take_seconds(items: list[AudioItem], seconds: float | None, seed: int) -> list[AudioItem]:
    """A seeded selection of ``items`` totalling about ``seconds`` (all if None), in order."""
    if seconds is None:
        return items
    order = np.random.default_rng(seed).permutation(len(items))
    keep, total = [], 0.0
    for i in order:
        if total >= seconds:
            break
        keep.append(int(i))
        total += items[i].duration_s or 0.0
    return [items[i] for i in sorted(keep)]


# -- synthetic speech ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Request:
    id: str
    text: str
    engine: str
    language: str
    rate: float
    pitch: int | None


def _synthetic(
    spec: ScaleSpec,
    espeak_s: float,
    seed: int,
    wanted: set[str] | None,
    workers: int,
    progress: bool,
    skipped: dict[str, str],
) -> list[AudioItem]:
    langs = [lang for lang in ESPEAK_LANGUAGES if wanted is None or lang in wanted]
    requests: list[_Request] = []
    for lang in langs:
        sentences = _sentences(lang)
        secs = espeak_s / max(len(langs), 1)
        requests += _utterances(sentences, "espeak", lang, secs, spec.utterance_s, seed)
    if wanted is None or "en" in wanted:
        en = _asterisk_transcripts("en")
        requests += _utterances(en, "piper", "en", spec.piper_s, spec.utterance_s, seed)
    return _synthesize_all(requests, workers, progress, skipped)


def _sentences(lang: str) -> list[str]:
    """Sentences in ``lang``: concept words in templates, plus Asterisk transcripts."""
    from whisperlens.studies.steering.concepts import (
        fill,
        list_concepts,
        load_concept,
        load_templates,
    )

    templates = load_templates()
    out: list[str] = []
    for name in list_concepts():
        concept = load_concept(name)
        for pos, neg in concept.pairs.get(lang, []):
            for template in templates[concept.word_class].get(lang, []):
                out += [fill(template, pos), fill(template, neg)]
        if lang == "en":
            out += list(concept.eval)
    return sorted(set(out)) + _asterisk_transcripts(lang)


def _asterisk_transcripts(lang: str) -> list[str]:
    if lang not in datasets.ASTERISK_LANGUAGES:
        return []
    try:
        part = datasets.asterisk(lang)  # type: ignore[arg-type]
    except DatasetError:
        return []
    texts = {(it.text or "").strip() for it in part}
    return sorted(t if t[-1:] in ".?!" else t + "." for t in texts if len(t) > 3)


def _utterances(
    sentences: list[str],
    engine: str,
    lang: str,
    seconds: float,
    length_s: tuple[float, float],
    seed: int,
) -> list[_Request]:
    """Requests of several sentences each, about ``seconds`` of speech in all.

    Length is estimated at 14 characters per second (espeak-ng and Piper at rate 1), so
    the real total lands within a few percent; rates and pitches are drawn per utterance.
    """
    if not sentences or seconds <= 0:
        return []
    rng = np.random.default_rng([seed, int(stable_hash([engine, lang], 8), 16)])
    chars_per_s = 14.0
    requests, total = [], 0.0
    for n in itertools.count():
        if total >= seconds:
            break
        rate = float(rng.choice(_RATES))
        target = float(rng.uniform(*length_s)) * rate * chars_per_s
        parts: list[str] = []
        while sum(len(p) + 1 for p in parts) < target:
            parts.append(sentences[int(rng.integers(len(sentences)))])
        text = " ".join(parts)[:900]
        total += len(text) / (chars_per_s * rate)
        pitch = int(rng.choice(_PITCHES)) if engine == "espeak" else None
        requests.append(_Request(f"tts-{engine}-{lang}/{n:05d}", text, engine, lang, rate, pitch))
    return requests


def _synthesize_all(
    requests: list[_Request], workers: int, progress: bool, skipped: dict[str, str]
) -> list[AudioItem]:
    from tqdm import tqdm

    from whisperlens.stimuli.tts import StimulusError

    def one(req: _Request) -> AudioItem | None:
        try:
            return _synthesize(req)
        except (StimulusError, DatasetError, OSError) as exc:  # a missing voice: skip it
            skipped.setdefault(f"tts-{req.engine}-{req.language}", str(exc).splitlines()[0])
            return None

    piper = [r for r in requests if r.engine == "piper"]
    others = [r for r in requests if r.engine != "piper"]
    bar = tqdm(total=len(requests), desc="corpus tts", unit="utt", disable=not progress)
    results: dict[str, AudioItem | None] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(one, r): r for r in others}
        for req in piper:  # Piper in this thread (one ONNX session), espeak in the pool
            results[req.id] = one(req)
            bar.update()
        for future, req in futures.items():
            results[req.id] = future.result()
            bar.update()
    bar.close()
    return [item for r in requests if (item := results[r.id]) is not None]


def _synthesize(req: _Request) -> AudioItem:
    from whisperlens.stimuli.tts import synthesize

    params: dict[str, Any] = {} if req.pitch is None else {"pitch": req.pitch}
    stim = synthesize(req.text, engine=req.engine, language=req.language, rate=req.rate, **params)
    meta: dict[str, Any] = {"engine": req.engine, "rate": req.rate, "key": stim.key}
    if req.pitch is not None:
        meta["pitch"] = req.pitch
    meta["words"] = [[w.label, round(w.start_s, 4), round(w.end_s, 4)] for w in stim.words or []]
    meta["phonemes"] = [
        [p.label, round(p.start_s, 4), round(p.end_s, 4)] for p in stim.phonemes or []
    ]
    return AudioItem(
        id=req.id,
        path=Path(stim.path),
        text=stim.text,
        language=req.language,
        speaker=stim.voice,
        source=f"tts-{req.engine}",
        duration_s=stim.duration_s,
        label="speech",
        meta=meta,
    )


# -- generated non-speech --------------------------------------------------------------------
def generated_noise(
    seconds: float,
    *,
    seed: int = 0,
    clip_s: tuple[float, float] = (4.0, 16.0),
    kinds: Sequence[str] = GENERATED_KINDS,
) -> list[AudioItem]:
    """About ``seconds`` of generated non-speech, split evenly over ``kinds``.

    Each clip is a pure function of (kind, index, seed), written once as a 16-bit WAV under
    ``cache_dir("sae", "generated", "v<GENERATOR_VERSION>")``. Labels: ``silence`` for
    silence, ``noise`` for everything else (tones and clicks are non-speech, non-music);
    ``meta["kind"]`` names the generator.
    """
    unknown = sorted(set(kinds) - set(GENERATED_KINDS))
    if unknown:
        raise DatasetError(f"unknown generated kinds {unknown}", f"use {GENERATED_KINDS}")
    folder = cache_dir("sae", "generated", f"v{GENERATOR_VERSION}")
    items = []
    per_kind = seconds / max(len(kinds), 1)
    for kind in kinds:
        total = 0.0
        for index in itertools.count():
            if total >= per_kind or seconds <= 0:
                break
            rng = np.random.default_rng([seed, GENERATED_KINDS.index(kind), index])
            dur = round(float(rng.uniform(*clip_s)), 2)
            audio, params = _GENERATORS[kind](rng, round(dur * SAMPLE_RATE))
            items.append(_generated_item(folder, kind, index, seed, audio, params))
            total += dur
    return items


def _generated_item(
    folder: Path, kind: str, index: int, seed: int, audio: np.ndarray, params: dict[str, Any]
) -> AudioItem:
    from whisperlens.audio import save_wav

    path = folder / f"{kind}-s{seed}-{index:05d}.wav"
    if not path.is_file() or path.stat().st_size != 44 + 2 * len(audio):
        save_wav(path, audio, SAMPLE_RATE, subtype="PCM_16")
    return AudioItem(
        id=f"generated-{kind}/s{seed}-{index:05d}",
        path=path,
        source=f"generated-{kind}",
        duration_s=len(audio) / SAMPLE_RATE,
        label="silence" if kind == "silence" else "noise",
        language=None,
        meta={"kind": kind, **params},
    )


def _coloured(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]
    spectrum *= freqs ** (-exponent / 2)
    out = np.fft.irfft(spectrum, n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _level(rng: np.random.Generator) -> float:
    return float(10 ** (rng.uniform(-40, -12) / 20))  # RMS between -40 and -12 dBFS


def _noise(exponent: float) -> Callable[[np.random.Generator, int], tuple[np.ndarray, dict]]:
    def make(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict]:
        level = _level(rng)
        return _coloured(rng, n, exponent) * level, {"rms": round(level, 5)}

    return make


def _tone(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict]:
    t = np.arange(n) / SAMPLE_RATE
    f0 = float(np.exp(rng.uniform(np.log(80), np.log(4000))))
    n_harm = int(rng.integers(1, 5))
    audio = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, n_harm + 1))
    level = _level(rng) * math.sqrt(2)
    return np.asarray(audio) * level, {"f0": round(f0, 1), "harmonics": n_harm}


def _sweep(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict]:
    t = np.arange(n) / SAMPLE_RATE
    f0, f1 = (float(np.exp(rng.uniform(np.log(60), np.log(6000)))) for _ in range(2))
    dur = n / SAMPLE_RATE
    k = (f1 / f0) ** (1 / dur)
    phase = 2 * np.pi * f0 * (k**t - 1) / np.log(k) if abs(k - 1) > 1e-6 else 2 * np.pi * f0 * t
    level = _level(rng) * math.sqrt(2)
    return np.sin(phase) * level, {"f0": round(f0, 1), "f1": round(f1, 1)}


def _clicks(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict]:
    rate = float(rng.uniform(0.5, 40))  # clicks per second
    period = max(int(SAMPLE_RATE / rate), 1)
    audio = np.zeros(n)
    jitter = rng.integers(0, max(period // 4, 1), size=n // period + 1)
    starts = np.arange(0, n, period) + jitter[: len(range(0, n, period))]
    width = int(rng.integers(1, 40))  # samples
    amp = float(10 ** (rng.uniform(-20, -3) / 20))
    for s in starts[starts < n - width]:
        audio[s : s + width] = amp * np.hanning(width + 2)[1:-1] * rng.choice([-1, 1])
    return audio, {"rate_hz": round(rate, 2), "width": width}


def _silence(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict]:
    return np.zeros(n), {}


_GENERATORS: dict[str, Callable[[np.random.Generator, int], tuple[np.ndarray, dict]]] = {
    "white": _noise(0.0),
    "pink": _noise(1.0),
    "brown": _noise(2.0),
    "tone": _tone,
    "sweep": _sweep,
    "clicks": _clicks,
    "silence": _silence,
}


# -- the mix ----------------------------------------------------------------------------------
def corpus_mix(dataset: Iterable[AudioItem]) -> dict[str, Any]:
    """Seconds, frames and items per source, label and language (from item durations)."""
    seconds: dict[str, defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))
    items: dict[str, Counter[str]] = defaultdict(Counter)
    for item in dataset:
        dur = float(item.duration_s or 0.0)
        keys = {"source": item.source or "?", "label": item.label or "none"}
        keys["language"] = item.language or "none"
        for field, value in keys.items():
            seconds[field][value] += dur
            items[field][value] += 1
    out: dict[str, Any] = {}
    for field in ("source", "label", "language"):
        out[field] = {
            key: {
                "seconds": round(secs, 1),
                "frames": round(secs * FRAMES_PER_SECOND),
                "items": items[field][key],
            }
            for key, secs in sorted(seconds[field].items())
        }
    total = sum(seconds["label"].values())
    out["total"] = {
        "seconds": round(total, 1),
        "frames": round(total * FRAMES_PER_SECOND),
        "items": sum(items["label"].values()),
    }
    return out


def resolve_corpus(
    source: str,
    *,
    seed: int = 0,
    languages: Sequence[str] | None = None,
    split: str = "train",
    n_items: int | None = None,
    progress: bool = True,
) -> AudioDataset:
    """The data set a CLI ``--corpus`` value names, one of:

    ``default``, ``quick``, ``tiny`` (:func:`build_corpus`); a manifest file (``.jsonl`` or
    ``.parquet``); a folder of audio files (``<stem>.txt`` transcripts beside them, if any);
    ``hf:NAME`` (a Hugging Face data set, streamed: pass ``n_items`` to take the first ones;
    ``split`` names its split). ``n_items`` also caps the other kinds (first items).
    """
    if source in SCALE_SPECS:
        dataset = build_corpus(source, seed=seed, languages=languages, progress=progress)  # type: ignore[arg-type]
    elif source.startswith("hf:"):
        dataset = datasets.from_hf(
            source[3:], split, n_items=n_items, streaming=n_items is not None
        )
    elif Path(source).is_file():
        dataset = AudioDataset.from_manifest(source)
    elif Path(source).is_dir():
        dataset = datasets.from_folder(source)
    else:
        raise DatasetError(
            f"corpus {source!r} is neither a scale, a manifest, a folder nor hf:NAME",
            f"pass one of {SCALES}, a .jsonl manifest, an audio folder, or hf:NAME",
        )
    if n_items is not None and len(dataset) > n_items:
        dataset = dataset[:n_items]
    return dataset
