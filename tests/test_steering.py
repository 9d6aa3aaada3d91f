"""Steering study: concept data, CAA layer scan, mappings, layouts, scores, and on tiny.en
the two equalities (strength 0 = unsteered; a row's intervention = the seed's forward hook)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from whisperlens.frames import N_ENCODER_FRAMES
from whisperlens.studies.steering import mapping
from whisperlens.studies.steering.concepts import (
    contrastive_samples,
    fill,
    list_concepts,
    load_concept,
)
from whisperlens.studies.steering.summary import answer
from whisperlens.studies.steering.textscore import (
    NullScorer,
    compression_ratio,
    incoherent,
    repeat_fraction,
)
from whisperlens.studies.steering.vectors import heldout_separability


# --- concept data ----------------------------------------------------------------------
@pytest.mark.parametrize("name", list_concepts())
def test_concepts_have_400_samples_in_10_languages_and_5_eval_sentences(name: str) -> None:
    concept = load_concept(name)
    samples = contrastive_samples(concept)
    assert len(samples) >= 400
    assert len(concept.languages) >= 10
    assert len(concept.eval) >= 5
    assert all(s.positive != s.negative for s in samples)
    assert len({(s.positive, s.negative) for s in samples}) == len(samples)  # no duplicates


def test_at_least_five_concepts_including_the_seeds() -> None:
    assert {"love_hate", "anger_calm"} <= set(list_concepts())
    assert len(list_concepts()) >= 5


def test_fill_capitalises_only_the_capital_slot() -> None:
    assert fill("{W} is everywhere.", "l'amour") == "L'amour is everywhere."
    assert fill("I feel {w}.", "angry") == "I feel angry."


# --- layer choice -------------------------------------------------------------------------
def test_heldout_separability_finds_a_planted_direction_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    groups = [g for g in "abcdefghij" for _ in range(20)]
    offset = rng.normal(size=(10, 32)).repeat(20, axis=0) * 5  # per-language shift
    neg = rng.normal(size=(200, 32)) + offset
    planted = np.zeros(32)
    planted[3] = 2.0
    acc, dprime = heldout_separability(neg + planted + rng.normal(size=(200, 32)) * 0.1,
                                       neg, groups)  # fmt: skip
    assert acc == 1.0 and dprime > 3
    acc_noise, _ = heldout_separability(rng.normal(size=(200, 32)), neg, groups)
    assert 0.3 < acc_noise < 0.7


# --- mappings -----------------------------------------------------------------------------
def _samples(n: int = 60, d: int = 48, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen) @ torch.randn(d, d, generator=gen) + 3.0


def test_pca_scores_match_numpy_svd_up_to_sign() -> None:
    X = _samples()
    scores, direction = mapping.reduce("pca", X, X.mean(0), 16)
    Xc = (X - X.mean(0)).double().numpy()
    U, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    expect = U[:, :16] * S[:16]
    signs = np.sign((scores.double().numpy() * expect).sum(0))
    np.testing.assert_allclose(scores.double().numpy(), expect * signs, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(direction.double().numpy(), (Vt[:16] @ X.mean(0).double().numpy()) * signs, rtol=1e-3, atol=1e-3)  # fmt: skip
    assert scores.mean(0).abs().max() < 1e-3  # centred, like fit_transform


def test_pca_pads_components_beyond_the_rank_with_zeros() -> None:
    X = _samples(n=10, d=8)
    scores, direction = mapping.reduce("pca", X, X.mean(0), 20)
    assert scores.shape == (10, 20) and direction.shape == (20,)
    assert torch.all(scores[:, 8:] == 0) and torch.all(direction[8:] == 0)


@pytest.mark.parametrize("kind", ["gaussian", "sparse"])
def test_random_projections_preserve_squared_norms_on_average(kind: str) -> None:
    make = mapping.gaussian_matrix if kind == "gaussian" else mapping.sparse_matrix
    x = torch.randn(200, 576, generator=torch.Generator().manual_seed(1))
    ratios = [((x @ make(384, 576, s).T).pow(2).sum(1) / x.pow(2).sum(1)).mean() for s in range(5)]
    assert abs(float(torch.stack(ratios).mean()) - 1.0) < 0.02


def test_sparse_projection_density_and_values() -> None:
    R = mapping.sparse_matrix(384, 576, 0)
    density = float((R != 0).float().mean())
    assert abs(density - 1 / math.sqrt(576)) < 0.005
    values = torch.unique(R.abs()).tolist()
    assert len(values) == 2 and values[0] == 0.0
    assert values[1] == pytest.approx(1 / math.sqrt(384 / math.sqrt(576)), rel=1e-6)


def test_autoencoder_direction_is_zero_for_a_zero_mean() -> None:
    X = _samples(n=40, d=24)
    codes, direction = mapping.reduce("ae", X, torch.zeros(24), 8, seed=0)
    assert codes.shape == (40, 8)
    assert torch.all(direction == 0)
    assert codes.abs().max() <= 1.0  # tanh codes


def test_layouts_shapes_and_zero_padding() -> None:
    samples, mean = torch.randn(425, 384), torch.randn(384)
    frames = mapping.layout_vector("frames", samples, mean)
    assert frames.shape == (N_ENCODER_FRAMES, 384)
    assert torch.equal(frames[:425], samples) and torch.all(frames[425:] == 0)
    assert torch.equal(mapping.layout_vector("direction", samples, mean), mean)
    with pytest.raises(Exception, match="do not fit"):
        mapping.layout_vector("frames", torch.randn(1501, 4), torch.randn(4))


def test_unit_scale_and_random_controls_keep_per_frame_norms() -> None:
    samples = mapping.layout_vector("frames", torch.randn(30, 16) * 7, torch.randn(16))
    unit = mapping.scaled(samples, "unit")
    assert mapping.vector_norm(unit) == pytest.approx(1.0, rel=1e-5)
    rand = mapping.random_like(unit, seed=3)
    torch.testing.assert_close(rand.norm(dim=-1), unit.norm(dim=-1))
    assert torch.all(rand[30:] == 0)
    assert abs(mapping.cosine(rand, unit)) < 0.2


def test_unit_directions_of_different_reducers_share_their_random_controls() -> None:
    from whisperlens.studies.steering.study import Variant, distinct_work

    gen = torch.Generator().manual_seed(0)
    a, b = (mapping.scaled(torch.randn(384, generator=gen) * w, "unit") for w in (3.0, 40.0))
    ra, rb = mapping.random_like(a, seed=7), mapping.random_like(b, seed=7)
    assert torch.equal(ra, rb) and not torch.equal(a, b)
    todo = [Variant(r, "direction", c, s) for r in ("pca", "gaussian")
            for c in ("vector", "random0") for s in (0.0, 2.0) if c == "vector" or s]  # fmt: skip
    vectors = {"vectors/pca-direction.safetensors": a, "vectors/gaussian-direction.safetensors": b,
               "vectors/pca-direction-random0.safetensors": ra,
               "vectors/gaussian-direction-random0.safetensors": rb}  # fmt: skip
    work = distinct_work(todo, vectors)
    assert [work[v] is None for v in todo] == [v.strength == 0 for v in todo]
    keys = {work[v] for v in todo if v.strength}
    assert len(keys) == 3  # two vectors at +2, one shared random control at +2


def test_null_cosine_quantile_is_about_two_over_root_dim() -> None:
    assert mapping.null_cosine_quantile(384) == pytest.approx(1.96 / math.sqrt(384), rel=0.15)


# --- scores and summary -------------------------------------------------------------------
def test_incoherence_scores() -> None:
    loop = "I'm not a fan of a fan of a fan of a fan of a fan of a fan of"
    assert repeat_fraction("I saw the movie and felt bad.") == 0.0
    assert repeat_fraction(loop) > 0.5 and incoherent(loop, False)
    assert compression_ratio("") == 0.0 and compression_ratio("ab " * 50) > 2.4
    assert incoherent("", False) and incoherent("fine words here", True)
    assert not incoherent("I saw the movie and felt mad.", False)


def test_answer_requires_the_ci_above_zero_and_coherence() -> None:
    def e(s: float, lo: float, broken: float) -> dict:
        stat = {"mean": lo + 0.1, "ci95": [lo, lo + 0.2], "n": 5}
        return {"strength": s, "lexicon_delta_vs_random": stat, "projection_delta_vs_random": stat,
                "incoherent_rate": 0.0, "broken_rate": broken}  # fmt: skip

    out = answer([e(-2, 0.1, 0.0), e(0, 0.1, 0.0), e(2, 0.1, 0.0), e(4, 0.1, 0.6), e(8, -0.1, 0)])
    assert out["lexicon_delta"]["moves_beyond_random_at"] == [-2, 2, 4]
    assert out["lexicon_delta"]["and_coherent_at"] == [-2, 2]
    assert out["broken_at"] == [4]


def test_cli_parses_into_the_config(tmp_path: Path) -> None:
    from whisperlens.cli import build_parser
    from whisperlens.commands.steer import config_from_args

    args = build_parser().parse_args(
        ["steer", "--concept", "anger_calm", "--out", str(tmp_path), "--reducer", "pca",
         "--layout", "direction", "--blocks", "0,2", "--strengths=-4,0,4", "--layer", "10"]
    )  # fmt: skip
    config = config_from_args(args)
    assert config.reducers == ("pca",) and config.layouts == ("direction",)
    assert config.blocks == (0, 2) and config.strengths == (-4.0, 0.0, 4.0)
    assert config.layer == 10 and config.scale == "unit" and config.speech_only


# --- tiny.en: the two equalities ---------------------------------------------------------


def _seed_hook(vector: torch.Tensor, strength: float):
    def hook(_module, _args, output):  # the seed's hook: output + factor * vec
        if isinstance(output, tuple):
            return (output[0] + strength * vector, *output[1:])
        return output + strength * vector

    return hook


@pytest.mark.integration
def test_rows_equal_unsteered_at_zero_and_the_seeds_forward_hook(tmp_path: Path) -> None:
    from whisperlens.decoding import transcribe
    from whisperlens.hooks import HookedWhisper
    from whisperlens.interventions import Intervention, load_payloads
    from whisperlens.stimuli.tts import synthesize
    from whisperlens.studies.steering.study import (
        Clip,
        SteerConfig,
        build_vectors,
        decode_options,
        steer_clip,
    )

    model = HookedWhisper.from_pretrained("tiny.en")
    config = SteerConfig("anger_calm", tmp_path, reducers=("pca",), strengths=(0.0, 1.5),
                         n_random=1, blocks=(0, 2))  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    diffs = torch.randn(400, 64, generator=gen) + torch.randn(64, generator=gen)
    build_vectors(config, tmp_path, {"differences": diffs, "mean": diffs.mean(0)}, 384)
    clip = Clip(0, "I saw the movie and felt bad.")
    rows = steer_clip(model, NullScorer(), config, tmp_path, clip)  # type: ignore[arg-type]
    audio = synthesize(clip.text, engine="piper").audio
    options = decode_options(model, config)
    plain = transcribe(model, audio, options)[0].text
    assert {r["unsteered"] for r in rows} == {plain}
    encoder_layers = model.model.model.encoder.layers
    for row in rows:
        ivs = [Intervention.from_dict(d) for d in row["interventions"]]
        with model.apply(ivs, base_dir=tmp_path):
            assert transcribe(model, audio, options)[0].text == row["transcript"], row["key"]
        if row["strength"] == 0:
            assert row["transcript"] == plain
            continue
        vector = load_payloads(tmp_path / ivs[0].payload.split("#")[0])["vector"]
        if row["layout"] == "direction":  # added on the clip's speech frames only
            span = ivs[0].frames
            full = torch.zeros(N_ENCODER_FRAMES, 384)
            full[span.start : span.stop] = vector
            vector = full
        handles = [encoder_layers[b].register_forward_hook(_seed_hook(vector, row["strength"]))
                   for b in config.blocks]  # fmt: skip
        try:
            seed_text = transcribe(model, audio, options)[0].text
        finally:
            for handle in handles:
                handle.remove()
        assert seed_text == row["transcript"], row["key"]
    assert any(r["changed"] for r in rows)  # the test can fail: steering does something


def test_summary_and_report_on_synthetic_rows(tmp_path: Path) -> None:
    from whisperlens.report import Report, render_report
    from whisperlens.studies.steering.study import SteerConfig, build_vectors, variants
    from whisperlens.studies.steering.summary import report_section, summarize

    config = SteerConfig("love_hate", tmp_path, reducers=("pca", "gaussian"),
                         strengths=(-2.0, 0.0, 2.0), n_random=2)  # fmt: skip
    diffs = torch.randn(400, 32, generator=torch.Generator().manual_seed(0)) + 1.0
    build_vectors(config, tmp_path, {"differences": diffs, "mean": diffs.mean(0)}, 16)
    rows = []
    for clip in range(4):
        for v in variants(config):
            moved = v.strength * (0.5 if v.control == "vector" else 0.0)  # only the vector moves
            rows.append({"clip": clip, "text": "t", "unsteered": "u", "transcript": "x",
                         "reducer": v.reducer, "layout": v.layout, "control": v.control,
                         "strength": v.strength, "lexicon_delta": moved + 0.01 * clip,
                         "projection_delta": 0.0, "similarity": 1.0, "incoherent": False,
                         "broken": abs(v.strength) > 1 and v.reducer == "gaussian",
                         "changed": v.strength != 0, "wer": 0.0})  # fmt: skip
    caa = {"layer": 3, "chosen_by": "given", "scan": None, "n_samples": 400}
    summary = summarize(config, caa, rows, tmp_path)
    pca = summary["mappings"]["pca-frames"]
    assert pca["answer"]["lexicon_delta"]["and_coherent_at"] == [-2.0, 2.0]
    assert pca["answer"]["projection_delta"]["moves_beyond_random_at"] == []
    assert summary["mappings"]["gaussian-direction"]["answer"]["broken_at"] == [-2.0, 2.0]
    flip = next(e for e in pca["effects"] if e["strength"] == 2.0)["lexicon_delta_vs_flip"]
    assert flip["mean"] == pytest.approx(1.0)  # (0.5 * 2 - 0.5 * -2) / 2
    geometry = summary["geometry"]["direction"]
    assert geometry["cosine"][0][0] == pytest.approx(1.0) and geometry["dim"] == 16
    html = render_report(Report("steer", [report_section(summary, rows)]), tmp_path)
    assert html.is_file() and "Cross-modal steering" in html.read_text()


def test_whisper_concept_samples_and_cosine_table() -> None:
    from whisperlens.studies.steering.whisper_geometry import cosines_with, spoken_texts

    pos, neg = spoken_texts(load_concept("anger_calm"))
    assert len(pos) == len(neg) == 20 and "angry" in pos and "calm" in neg
    directions = torch.eye(3, 8)
    table = cosines_with(directions, {"a": torch.eye(8)[0], "b": -torch.eye(8)[1]})
    assert table["cosine"] == [[1.0, 0.0], [0.0, -1.0], [0.0, 0.0]]
    assert table["blocks"] == [0, 1, 2] and table["labels"] == ["a", "b"]


@pytest.mark.integration
def test_cli_end_to_end_writes_every_output(tmp_path: Path) -> None:
    """`whisperlens steer` on tiny.en + smollm2-135m: the issue's outputs, each checked."""
    import json

    from whisperlens.cli import main
    from whisperlens.interventions import load_payloads

    out = tmp_path / "run"
    argv = ["steer", "--concept", "anger_calm", "--reducer", "pca", "--layout", "direction",
            "--layout", "frames", "--strengths=-2,0,2", "--n-random", "1", "--n-language-clips",
            "3", "--workers", "1", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["study"] == "steer" and config["config"]["reducers"] == ["pca"]
    assert config["config"]["strengths"] == [-2.0, 0.0, 2.0] and config["config"]["blocks"] is None
    direction = load_payloads(out / "vectors/pca-direction.safetensors")["vector"]
    frames = load_payloads(out / "vectors/pca-frames.safetensors")["vector"]
    assert direction.shape == (384,) and frames.shape == (N_ENCODER_FRAMES, 384)
    assert float(direction.norm()) == pytest.approx(1.0, abs=1e-5)
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    n_clips = len(load_concept("anger_calm").eval)
    assert len(rows) == n_clips * 2 * (3 + 2)  # 2 layouts x (3 strengths + 1 random at +-2)
    need = {"clip", "audio", "reducer", "layout", "control", "strength", "blocks", "transcript",
            "similarity", "lexicon_delta", "nrc_delta", "projection_delta", "nonword_rate",
            "compression_ratio", "wer", "interventions"}  # fmt: skip
    assert all(need <= set(r) for r in rows)
    for r in rows:
        assert r["blocks"] == [0, 1, 2, 3] and Path(r["audio"]).is_file()
        if r["strength"] == 0:
            assert r["transcript"] == r["unsteered"] and r["edit_distance"] == 0
        ivs = r["interventions"]
        assert [iv["site"] for iv in ivs] == [f"encoder.blocks.{b}.hook_resid_post"
                                              for b in range(4)]  # fmt: skip
        assert all(iv["strength"] == r["strength"] for iv in ivs)
    summary = json.loads((out / "summary.json").read_text())
    effects = summary["mappings"]["pca-direction"]["effects"]
    assert {e["strength"] for e in effects} == {-2.0, 0.0, 2.0}
    tested = [e["lexicon_delta_vs_random"] for e in effects if e["strength"] != 0]
    assert all(0 <= t["p"] <= t["p_holm"] <= 1 and t["p"] <= t["p_bh"] for t in tested)
    assert "whisper_language" in summary["geometry"] and "whisper_concept" in summary["geometry"]
    html = (out / "report.html").read_text()
    assert "Cross-modal steering" in html and html.count("<img") >= 3
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"cosines-direction.png", "cosines-frames.png"} <= figures
    assert len(figures) == html.count("<img")
