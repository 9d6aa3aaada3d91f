"""Concept directions measured inside Whisper, and their cosines with the mapped vectors.

The concept's English samples (bare word pairs and the first templates) are spoken with
Piper; each clip's encoder block outputs are averaged over its speech frames, and the
Whisper-internal concept direction at block ``b`` is the mean over positive clips minus the
mean over negative clips. Each mapped ``direction`` vector is compared with it by cosine,
next to the null: the 95 % quantile of |cos| between random vectors of the same width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from whisperlens.studies.steering import mapping
from whisperlens.studies.steering.concepts import Concept, contrastive_samples

N_TEMPLATES = 3  # English templates per pair besides the bare words (20 pairs, 40 clips)
FRAME_SECONDS = 0.02


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
def speech_means(model: Any, texts: Sequence[str], engine: str) -> torch.Tensor:
    """Block outputs averaged over each clip's speech frames: [n_blocks, n_texts, d]."""
    from whisperlens.stimuli.tts import synthesize

    names = [f"encoder.blocks.{b}.hook_resid_post" for b in range(model.n_layers)]
    out = []
    for text in texts:
        stim = synthesize(text, engine=engine)
        n = max(1, min(1500, math.ceil(stim.duration_s / FRAME_SECONDS)))
        cache = model.run_with_cache(stim.audio, names=names)
        out.append(torch.stack([cache[name][0, :n].mean(0) for name in names]))
    return torch.stack(out, dim=1)


def concept_directions(model: Any, concept: Concept, engine: str = "piper") -> torch.Tensor:
    """Whisper-internal concept direction per encoder block: [n_blocks, d]."""
    pos, neg = spoken_texts(concept)
    return speech_means(model, pos, engine).mean(1) - speech_means(model, neg, engine).mean(1)


def cosines_with(directions_BD: torch.Tensor, vectors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Cosine of each mapped direction with each block's concept direction, and the null."""
    return {
        "blocks": list(range(directions_BD.shape[0])),
        "labels": list(vectors),
        "cosine": [[mapping.cosine(d, v) for v in vectors.values()] for d in directions_BD],
        "null_abs_q95": mapping.null_cosine_quantile(directions_BD.shape[1]),
    }
