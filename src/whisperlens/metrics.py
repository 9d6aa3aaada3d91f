"""Comparing transcripts: Whisper's text normalisation, word presence, WER and CER.

:func:`normalize` is what Whisper's evaluations compare: transformers'
``EnglishTextNormalizer`` with Whisper's British->American spelling map for English,
``BasicTextNormalizer`` otherwise. :func:`wer` and :func:`cer` align normalised text with
jiwer and report corpus rates (summed counts) with the per-utterance counts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from typing import Any

import jiwer
from transformers.models.whisper.english_normalizer import (
    BasicTextNormalizer,
    EnglishTextNormalizer,
)

from whisperlens.decoding import language_code

__all__ = ["ErrorCounts", "ErrorRates", "cer", "normalize", "wer", "word_present"]

SPELLING_FILE = "whisper_english_spelling.json"  # in whisperlens/data, from openai-whisper (MIT)


@cache
def _english_normalizer() -> EnglishTextNormalizer:
    spelling = resources.files("whisperlens").joinpath("data", SPELLING_FILE).read_text("utf-8")
    return EnglishTextNormalizer(json.loads(spelling))


@cache
def _basic_normalizer() -> BasicTextNormalizer:
    return BasicTextNormalizer()


def normalize(text: str, language: str | None = "en") -> str:
    """Text as Whisper's evaluations compare it.

    English (``language="en"``): transformers' ``EnglishTextNormalizer`` with Whisper's
    British->American spelling map (lowercase, no punctuation or fillers, numbers as digits,
    contractions expanded). Any other language (or None): ``BasicTextNormalizer`` (lowercase,
    symbols and bracketed text removed, diacritics kept). Whitespace is collapsed and stripped.
    """
    code = None if language is None else language_code(language)
    normalizer = _english_normalizer() if code == "en" else _basic_normalizer()
    return " ".join(normalizer(text).split())


def word_present(word: str, text: str, language: str | None = "en") -> bool:
    """Whether ``word`` (or a phrase) occurs as whole normalised word(s) in ``text``."""
    needle, words = normalize(word, language).split(), normalize(text, language).split()
    if not needle:
        return False
    n = len(needle)
    return any(words[i : i + n] == needle for i in range(len(words) - n + 1))


@dataclass(frozen=True)
class ErrorCounts:
    """Edit-distance counts of one hypothesis (or a corpus) against its reference."""

    n_substitutions: int
    n_deletions: int
    n_insertions: int
    n_ref: int  # reference words (WER) or characters (CER), after normalisation

    @property
    def n_errors(self) -> int:
        return self.n_substitutions + self.n_deletions + self.n_insertions

    @property
    def rate(self) -> float:
        """Errors / reference units; an empty reference gives 0 (no errors) or inf."""
        if self.n_ref == 0:
            return 0.0 if self.n_errors == 0 else math.inf
        return self.n_errors / self.n_ref


@dataclass(frozen=True)
class ErrorRates:
    """Corpus-level error rate (summed counts) and the per-utterance counts."""

    rate: float  # sum of errors / sum of reference units
    counts: ErrorCounts  # summed over utterances
    per_utterance: tuple[ErrorCounts, ...]


def wer(
    refs: str | Sequence[str], hyps: str | Sequence[str], language: str | None = "en"
) -> ErrorRates:
    """Word error rate on :func:`normalize`-d text (jiwer word alignment)."""
    return _error_rates(refs, hyps, language, jiwer.process_words)


def cer(
    refs: str | Sequence[str], hyps: str | Sequence[str], language: str | None = "en"
) -> ErrorRates:
    """Character error rate on :func:`normalize`-d text (spaces count as characters)."""
    return _error_rates(refs, hyps, language, jiwer.process_characters)


def _error_rates(
    refs: str | Sequence[str],
    hyps: str | Sequence[str],
    language: str | None,
    align: Callable[[str, str], Any],
) -> ErrorRates:
    refs_l = [refs] if isinstance(refs, str) else list(refs)
    hyps_l = [hyps] if isinstance(hyps, str) else list(hyps)
    if len(refs_l) != len(hyps_l):
        raise ValueError(f"{len(refs_l)} references but {len(hyps_l)} hypotheses")
    per = []
    for ref, hyp in zip(refs_l, hyps_l, strict=True):
        out = align(normalize(ref, language), normalize(hyp, language))
        n_ref = out.hits + out.substitutions + out.deletions
        per.append(ErrorCounts(out.substitutions, out.deletions, out.insertions, n_ref))
    total = ErrorCounts(*(sum(getattr(c, f.name) for c in per) for f in fields(ErrorCounts)))
    return ErrorRates(rate=total.rate, counts=total, per_utterance=tuple(per))
