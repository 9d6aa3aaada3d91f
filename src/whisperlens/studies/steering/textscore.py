"""Scores of one transcript: semantic similarity, concept scores and incoherence.

- similarity: cosine of the text model's mean-pooled residual (at the CAA layer) of the
  steered and the unsteered transcript (offline stand-in for a sentence embedding);
- projection: that embedding projected on the unit concept vector (positive: towards the
  concept's positive pole);
- lexicon: VADER's compound valence (vaderSentiment) times the concept's ``lexicon_sign``,
  so positive is always towards the positive pole (love, anger, happiness, good, fear);
- incoherence: zlib compression ratio (Whisper's own failure heuristic, > 2.4), the share
  of repeated word trigrams, truncation at the token limit, and an empty transcript.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import torch

COMPRESSION_LIMIT = 2.4  # Whisper's compression_ratio_threshold
REPEAT_LIMIT = 0.2  # share of repeated word trigrams that counts as looping


def compression_ratio(text: str) -> float:
    """len(utf-8 bytes) / len(zlib-compressed bytes); 0 for empty text (as openai-whisper)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def repeat_fraction(text: str) -> float:
    """Share of word trigrams that occurred earlier in the text (0 with fewer than 3 words)."""
    words = text.lower().split()
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def incoherent(text: str, truncated: bool) -> bool:
    """A degenerate transcript: empty, cut at the token limit, or looping."""
    return (
        not text.strip()
        or truncated
        or compression_ratio(text) > COMPRESSION_LIMIT
        or repeat_fraction(text) > REPEAT_LIMIT
    )


class TextScorer:
    """Embeds transcripts with the text model (cached per text) and scores them."""

    def __init__(self, text_model: Any, layer: int, concept_D: torch.Tensor, lexicon_sign: int):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.text_model = text_model
        self.layer = layer
        self.unit_D = concept_D.float() / concept_D.float().norm().clamp(min=1e-12)
        self.lexicon_sign = lexicon_sign
        self.vader = SentimentIntensityAnalyzer()
        self._cache: dict[str, torch.Tensor] = {}

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Mean-pooled residual at the CAA layer, [n, d_text] (empty text: a zero vector)."""
        todo = sorted({t for t in texts if t.strip() and t not in self._cache})
        if todo:
            acts = self.text_model.residual.get_residual(todo, self.layer, "mean").float()
            self._cache.update(zip(todo, acts, strict=True))
        zero = torch.zeros_like(self.unit_D)
        return torch.stack([self._cache.get(t, zero) if t.strip() else zero for t in texts])

    def similarity(self, a: str, b: str) -> float:
        if a == b:
            return 1.0
        ea, eb = self.embed([a, b])
        denom = float(ea.norm() * eb.norm())
        return float(ea @ eb) / denom if denom > 0 else 0.0

    def projection(self, text: str) -> float:
        return float(self.embed([text])[0] @ self.unit_D)

    def lexicon(self, text: str) -> float:
        return self.lexicon_sign * float(self.vader.polarity_scores(text)["compound"])


class NullScorer:
    """Scores nothing (similarity is exact equality, concept scores 0): for timing the
    steering itself (``bench/steering.py``) and for tests that concern transcripts only."""

    def similarity(self, a: str, b: str) -> float:
        return float(a == b)

    def projection(self, text: str) -> float:
        return 0.0

    def lexicon(self, text: str) -> float:
        return 0.0
