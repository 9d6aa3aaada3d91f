"""Concept data: contrastive word pairs in 10 languages, templates and evaluation sentences.

A concept (``love_hate``) is shipped as ``data/concepts/<name>.json`` (see
``data/concepts/PROVENANCE.md``). :func:`contrastive_samples` expands its word pairs with
the templates of its word class into (positive, negative) sentence pairs, the multilingual
augmentation of the seed: per language and pair, the bare words and each template.

>>> concept = load_concept("anger_calm")
>>> len(contrastive_samples(concept))
400
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, get_args

from whisperlens.errors import WhisperlensError

WordClass = Literal["adjective", "noun"]
NrcEmotion = Literal[
    "anger",
    "anticipation",
    "disgust",
    "fear",
    "joy",
    "negative",
    "positive",
    "sadness",
    "surprise",
    "trust",
]  # the NRC Emotion Lexicon's categories
DATA_PACKAGE = "whisperlens.data"
CONCEPT_DIR = "concepts"
TEMPLATES_FILE = "templates.json"


class ConceptError(WhisperlensError, ValueError):
    """An unknown concept or a malformed concept file."""


@dataclass(frozen=True)
class Sample:
    """One contrastive sample: the same context with the positive and the negative word."""

    language: str
    pair: int  # index of the word pair within its language
    template: str  # "" for the bare words, else the template text
    positive: str
    negative: str


@dataclass(frozen=True)
class NrcSpec:
    """Which NRC emotion words count towards a concept's poles (``textscore.nrc_score``)."""

    plus: tuple[NrcEmotion, ...]  # words with any of these count towards the positive pole
    minus: tuple[NrcEmotion, ...] = ()  # words with any of these count towards the negative

    @classmethod
    def from_dict(cls, concept: str, data: dict[str, Any]) -> NrcSpec:
        plus, minus = tuple(data.get("plus", ())), tuple(data.get("minus", ()))
        bad = [e for e in plus + minus if e not in get_args(NrcEmotion)]
        if bad or not plus or set(plus) & set(minus) or set(data) - {"plus", "minus"}:
            raise ConceptError(
                f"concept {concept!r}: bad nrc spec {data} (unknown emotions {bad}, empty "
                "plus, an emotion on both sides, or keys other than plus/minus)",
                f"give {{'plus': [...], 'minus': [...]}} from {list(get_args(NrcEmotion))}",
            )
        return cls(plus, minus)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Concept:
    """A concept's poles, word pairs per language and evaluation sentences."""

    name: str
    positive: str  # the pole the vector points to ("love")
    negative: str  # the pole it points away from ("hate")
    word_class: WordClass
    lexicon_sign: int  # +1: the positive pole has the more positive VADER valence
    nrc: NrcSpec  # NRC emotions of the poles (the NRC lexicon score)
    pairs: dict[str, list[tuple[str, str]]]  # language -> (positive word, negative word)
    eval: tuple[str, ...]  # English evaluation sentences (synthesized for the study)
    description: str = ""

    @property
    def languages(self) -> list[str]:
        return sorted(self.pairs)


def _concept_root() -> Any:
    return resources.files(DATA_PACKAGE).joinpath(CONCEPT_DIR)


def list_concepts() -> list[str]:
    """Names of the shipped concepts."""
    root = _concept_root()
    names = [p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json")]
    return sorted(n for n in names if n != TEMPLATES_FILE[: -len(".json")])


def concept_file(name: str) -> Any:
    """The shipped file of concept ``name`` (a Traversable; a real path in an installed tree)."""
    if name not in list_concepts():
        raise ConceptError(f"unknown concept {name!r}", f"use one of {list_concepts()}")
    return _concept_root().joinpath(f"{name}.json")


def templates_file() -> Any:
    return _concept_root().joinpath(TEMPLATES_FILE)


@functools.cache
def load_templates() -> dict[str, dict[str, list[str]]]:
    """Templates per word class and language (``{w}`` lower-case slot, ``{W}`` capitalised)."""
    return json.loads(templates_file().read_text(encoding="utf-8"))


@functools.cache
def load_concept(name: str) -> Concept:
    """Concept ``name`` from the package data, checked for shape."""
    data = json.loads(concept_file(name).read_text(encoding="utf-8"))
    pairs = {lang: [(str(a), str(b)) for a, b in ps] for lang, ps in data["pairs"].items()}
    if data["word_class"] not in load_templates():
        raise ConceptError(f"concept {name!r}: unknown word class {data['word_class']!r}")
    missing = sorted(set(pairs) - set(load_templates()[data["word_class"]]))
    if missing:
        raise ConceptError(f"concept {name!r}: no templates for languages {missing}")
    if int(data["lexicon_sign"]) not in (-1, 1):
        raise ConceptError(f"concept {name!r}: lexicon_sign must be +1 or -1")
    return Concept(
        name=name,
        positive=data["positive"],
        negative=data["negative"],
        word_class=data["word_class"],
        lexicon_sign=int(data["lexicon_sign"]),
        nrc=NrcSpec.from_dict(name, data.get("nrc", {})),
        pairs=pairs,
        eval=tuple(data["eval"]),
        description=data.get("description", ""),
    )


def fill(template: str, word: str) -> str:
    """``template`` with ``{w}`` -> ``word`` and ``{W}`` -> ``word`` with a capital first letter."""
    return template.replace("{W}", word[:1].upper() + word[1:]).replace("{w}", word)


def contrastive_samples(concept: Concept) -> list[Sample]:
    """Every (language, pair, template) sample, bare words first, in a fixed order."""
    templates = load_templates()[concept.word_class]
    out = []
    for lang in concept.languages:
        for index, (pos, neg) in enumerate(concept.pairs[lang]):
            out.append(Sample(lang, index, "", pos, neg))
            for template in templates[lang]:
                out.append(Sample(lang, index, template, fill(template, pos), fill(template, neg)))
    return out
