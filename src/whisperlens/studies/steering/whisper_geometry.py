"""Directions measured inside Whisper, and their cosines with the mapped vectors.

- Concept: the concept's English samples (bare word pairs and the first templates) are
  spoken with Piper; each clip's encoder block outputs are averaged over its speech frames,
  and the Whisper-internal concept direction at block ``b`` is the mean over positive clips
  minus the mean over negative clips.
- Language (the seed's English vs French, and English vs Spanish): natural speech of the
  Debian Asterisk prompt packages (one voice actor per language, :func:`whisperlens.datasets
  .asterisk`), ``n_clips`` clips of at least ``MIN_CLIP_S`` per language drawn with a seed;
  each clip's block outputs are averaged over its audio frames (the clip's length; the rest
  of the 30 s window is padding), and the direction is the mean over English clips minus
  the mean over the other language's clips. Cached per Whisper model in the user cache dir.

Each mapped ``direction`` vector is compared with each by cosine, next to the null: the
95 % quantile of |cos| between random vectors of the same width. (The ``frames`` layout's
mean over its non-zero frames is not compared: for the linear reducers it is the direction
up to scale, and for PCA it is zero by construction.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from whisperlens._io import atomic_write_json, cache_dir, stable_hash
from whisperlens.frames import n_audio_frames
from whisperlens.interventions import load_payloads, save_payloads
from whisperlens.studies.steering import mapping
from whisperlens.studies.steering.concepts import Concept, contrastive_samples

N_TEMPLATES = 3  # English templates per pair besides the bare words (20 pairs, 40 clips)
LANGUAGE_PAIRS = (("en", "fr"), ("en", "es"))  # the seed's pair first
N_LANGUAGE_CLIPS = 30  # Asterisk clips per language
MIN_CLIP_S = 1.0  # shorter prompts are single words or digits
BATCH = 8  # clips per encoder batch


def spoken_texts(concept: Concept) -> tuple[list[str], list[str]]:
    """The English (positive, negative) texts that are spoken."""
    templates: dict[int, int] = {}
    pos, neg = [], []
    for s in contrastive_samples(concept):
        if s.language != "en":
            continue
        templates[s.pair] = templates.get(s.pair, -1) + 1
        if templates[s.pair] <= N_TEMPLATES:
            pos.append(s.positive)
            neg.append(s.negative)
    return pos, neg


@torch.no_grad()
def clip_means(model: Any, audios: Sequence[np.ndarray]) -> torch.Tensor:
    """Block outputs averaged over each clip's audio frames: [n_blocks, n_clips, d]."""
    names = [f"encoder.blocks.{b}.hook_resid_post" for b in range(model.n_layers)]
    out = []
    for start in range(0, len(audios), BATCH):
        chunk = list(audios[start : start + BATCH])
        cache = model.run_with_cache(chunk, names=names)
        for i, audio in enumerate(chunk):
            n = max(1, n_audio_frames(len(audio)))
            out.append(torch.stack([cache[name][i, :n].mean(0) for name in names]))
    return torch.stack(out, dim=1).float()


def speech_means(model: Any, texts: Sequence[str], engine: str) -> torch.Tensor:
    """Block outputs averaged over each spoken text's frames: [n_blocks, n_texts, d]."""
    from whisperlens.stimuli.tts import synthesize

    return clip_means(model, [synthesize(text, engine=engine).audio for text in texts])


def concept_directions(model: Any, concept: Concept, engine: str = "piper") -> torch.Tensor:
    """Whisper-internal concept direction per encoder block: [n_blocks, d]."""
    pos, neg = spoken_texts(concept)
    return speech_means(model, pos, engine).mean(1) - speech_means(model, neg, engine).mean(1)


def language_direction(
    model: Any, audios_a: Sequence[np.ndarray], audios_b: Sequence[np.ndarray]
) -> torch.Tensor:
    """Mean block output over clips of ``a`` minus over clips of ``b``: [n_blocks, d]."""
    return clip_means(model, audios_a).mean(1) - clip_means(model, audios_b).mean(1)


def language_clips(language: str, n_clips: int, seed: int) -> list[Any]:
    """``n_clips`` Asterisk prompts of ``language`` lasting at least ``MIN_CLIP_S`` (seeded)."""
    from whisperlens.datasets import asterisk
    from whisperlens.datasets.base import DatasetError

    items = [it for it in asterisk(language) if (it.duration_s or 0.0) >= MIN_CLIP_S]  # type: ignore[arg-type]
    if len(items) < n_clips:
        raise DatasetError(f"only {len(items)} Asterisk {language} clips last >= {MIN_CLIP_S} s",
                           f"use n_language_clips <= {len(items)}")  # fmt: skip
    order = np.random.default_rng(seed).permutation(len(items))[:n_clips]
    return [items[i] for i in sorted(order)]


def language_directions(
    model: Any, n_clips: int = N_LANGUAGE_CLIPS, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``{"en-fr": [n_blocks, d], "en-es": ...}`` and the clips used; cached per model."""
    from whisperlens.studies.steering.alignment import whisper_key

    chosen = {lang: language_clips(lang, n_clips, seed) for pair in LANGUAGE_PAIRS
              for lang in pair}  # fmt: skip
    used = {lang: [it.id for it in items] for lang, items in chosen.items()}
    key = stable_hash({"whisper": whisper_key(model), "clips": used, "min_s": MIN_CLIP_S,
                       "format": 1})  # fmt: skip
    folder = cache_dir("steering") / f"languages-{key}"
    if not (folder / "directions.safetensors").is_file():
        means = {lang: clip_means(model, [it.load() for it in items]).mean(1)
                 for lang, items in chosen.items()}  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / "clips.json", used)
        save_payloads(folder / "directions.safetensors",
                      {f"{a}-{b}": means[a] - means[b] for a, b in LANGUAGE_PAIRS})  # fmt: skip
    info = {"clips": used, "min_clip_s": MIN_CLIP_S, "seed": seed,
            "frames": "each clip's audio frames"}  # fmt: skip
    return load_payloads(folder / "directions.safetensors"), info


def cosines_with(directions_BD: torch.Tensor, vectors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Cosine of each mapped direction with each block's concept direction, and the null."""
    return {
        "blocks": list(range(directions_BD.shape[0])),
        "labels": list(vectors),
        "cosine": [[mapping.cosine(d, v) for v in vectors.values()] for d in directions_BD],
        "null_abs_q95": mapping.null_cosine_quantile(directions_BD.shape[1]),
    }
