"""Patching study: encode_from, the engine's invariants, pairs, config errors, an end-to-end run.

Exact properties run on tiny random Whispers; oracles are independent computations (a full
forward with a ``patch`` hook, ``decode`` + ``score_encoded``). Integration tests run
tiny.en on a hand-made three-word list.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from whisperlens.cli import main
from whisperlens.decoding import DecodeOptions, decode
from whisperlens.hooks import HookedWhisper
from whisperlens.scoring import case_and_period, score_encoded
from whisperlens.studies.patching import PatchConfig, PatchingError, engine, run_patching
from whisperlens.studies.patching.study import (
    allocate,
    build_directions,
    build_pairs,
    build_units,
    select_pairs,
)
from whisperlens.studies.patching.summary import fill_clean_targets, headline, matrices
from whisperlens.testing import tiny_random_whisper


@pytest.fixture(scope="module")
def model3() -> HookedWhisper:
    return HookedWhisper(tiny_random_whisper(seed=3, n_layers=3))


@pytest.fixture(scope="module")
def hooked_en(en_model) -> HookedWhisper:
    return HookedWhisper(en_model)


def _audio(seed: int, seconds: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(int(16_000 * seconds), generator=g)


# --- encode_from ------------------------------------------------------------------------


def test_encode_from_equals_full_forward_with_block_output_patched(model3):
    feats = model3.features(_audio(0).numpy())
    g = torch.Generator().manual_seed(1)
    for layer in range(model3.n_layers):
        states = torch.randn(1, 1500, model3.d_model, generator=g)
        with model3.patch(f"encoder.blocks.{layer}.hook_resid_post", states):
            expected = model3.encode(feats)
        got = model3.encode_from(layer + 1, states)
        assert torch.allclose(got, expected, atol=1e-5), layer
        assert not torch.allclose(got, model3.encode(feats), atol=1e-3)  # the patch mattered


def test_encode_from_block_zero_is_the_encoder_and_keeps_hooks(model3):
    feats = model3.features(_audio(1).numpy())
    cache = model3.run_with_cache(feats, names="encoder.hook_embed")
    assert torch.allclose(model3.encode_from(0, cache["encoder.hook_embed"]), model3.encode(feats),
                          atol=1e-5)  # fmt: skip
    zero = torch.zeros(model3.d_model)
    h = torch.randn(1, 1500, model3.d_model)
    with model3.patch("encoder.blocks.2.hook_resid_post", zero):
        hooked = model3.encode_from(1, h)
    assert torch.allclose(hooked, model3.encode_from(3, torch.zeros_like(h)), atol=1e-6)


def test_encode_from_refuses_bad_layer_and_shape(model3):
    with pytest.raises(ValueError, match="outside 0..3"):
        model3.encode_from(4, torch.zeros(1, 1500, model3.d_model))
    with pytest.raises(ValueError, match="states"):
        model3.encode_from(1, torch.zeros(1500, model3.d_model))


# --- engine invariants -----------------------------------------------------------------------


def test_seed_encodings_diagonal_is_clean_and_cells_match_patched_forward(model3):
    source = engine.clean_run(model3, _audio(2).numpy())
    encs = engine.seed_encodings(model3, source)
    n = model3.n_layers
    assert sorted(encs) == [(s, t) for s in range(n) for t in range(n)]
    for layer in range(n):
        assert torch.equal(encs[(layer, layer)], source.enc_1FD)
    for target_seed in (3, 4):  # the seed's patch ignores the target audio entirely
        target_feats = model3.features(_audio(target_seed).numpy())
        for (s, t), enc in encs.items():
            with model3.patch(f"encoder.blocks.{t}.hook_resid_post", source.states[s]):
                expected = model3.encode(target_feats)
            assert torch.allclose(enc, expected, atol=1e-5), (s, t)


def test_span_with_the_targets_own_states_is_the_clean_target(model3):
    target = engine.clean_run(model3, _audio(5).numpy())
    window = engine.align_windows((40, 60), (40, 60), 2, 1500)
    cells = [(s, t) for s in range(3) for t in range(3)]
    encs = engine.span_encodings(model3, target, target.states, window, cells)
    for cell in cells:
        if cell[0] == cell[1]:
            assert torch.allclose(encs[cell], target.enc_1FD, atol=1e-5)
        else:  # another layer's states in the same frames do change it
            assert not torch.allclose(encs[cell], target.enc_1FD, atol=1e-4)


def test_span_encodings_match_a_framed_patch_of_the_target(model3):
    target_audio = _audio(6).numpy()
    target = engine.clean_run(model3, target_audio)
    source = engine.clean_run(model3, _audio(7).numpy())
    window = engine.align_windows((30, 45), (50, 62), 2, 1500)
    assert (window.target, window.source, window.n) == (48, 28, 19)
    encs = engine.span_encodings(model3, target, source.states, window, [(2, 0), (0, 1)])
    for s, t in encs:
        rows = source.states[s][0, window.source_slice]
        with model3.patch(f"encoder.blocks.{t}.hook_resid_post", rows, window.target_slice):
            expected = model3.encode(target_audio)
        assert torch.allclose(encs[(s, t)], expected, atol=1e-5)


def test_interpolate_ends_are_the_clean_target_and_the_span_patch(model3):
    target = engine.clean_run(model3, _audio(11).numpy())
    source = engine.clean_run(model3, _audio(12).numpy())
    window = engine.align_windows((20, 35), (25, 33), 2, 1500)
    blends = engine.interpolate_encodings(model3, target, source.states, window)
    cells = [(t, t) for t in range(3)]
    spans = engine.span_encodings(model3, target, source.states, window, cells)
    for t in range(3):
        assert torch.allclose(blends[(t, 0.0)], target.enc_1FD, atol=1e-5)
        assert torch.allclose(blends[(t, 1.0)], spans[(t, t)], atol=1e-5)
        assert not torch.allclose(blends[(t, 0.5)], spans[(t, t)], atol=1e-4)


def test_component_encodings_match_a_framed_patch_and_are_clean_for_own_values(model3):
    points = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_mid")
    target_audio = _audio(13).numpy()
    target = engine.clean_run(model3, target_audio, points)
    source = engine.clean_run(model3, _audio(14).numpy(), points)
    window = engine.align_windows((60, 70), (40, 52), 1, 1500)
    comps = engine.component_encodings(model3, target, source, window)
    assert sorted(comps) == sorted((t, c) for t in range(3) for c in engine.COMPONENTS)
    for (t, c), enc in comps.items():
        rows = source.points[f"hook_{c}"][t][0, window.source_slice]
        with model3.patch(f"encoder.blocks.{t}.hook_{c}", rows, window.target_slice):
            expected = model3.encode(target_audio)
        assert torch.allclose(enc, expected, atol=1e-5), (t, c)
    same = engine.align_windows((40, 52), (40, 52), 1, 1500)
    own = engine.component_encodings(model3, target, target, same)
    assert all(torch.allclose(e, target.enc_1FD, atol=1e-5) for e in own.values())


def test_align_windows_trims_at_both_edges():
    w = engine.align_windows((1, 10), (5, 8), 3, 1500)
    assert (w.target, w.source, w.n) == (4, 0, 13)  # source starts at 0: both cut by 2
    w = engine.align_windows((1480, 1499), (1490, 1495), 2, 1500)
    assert w.target + w.n <= 1500 and w.source + w.n <= 1500 and w.n == 12


@pytest.mark.filterwarnings("ignore::whisperlens.decoding.TruncationWarning")
@pytest.mark.parametrize("cell_batch", [8, 2])  # one batch; batches of 2 and 1
def test_score_cells_equals_decode_and_score_encoded(hooked_en, monkeypatch, cell_batch):
    monkeypatch.setattr(engine, "CELL_BATCH", cell_batch)
    encs = [hooked_en.encode(_audio(s).numpy()) for s in (8, 9, 10)]
    cands = ["bat.", "pat.", "cat."]
    got = engine.score_cells(hooked_en, encs, cands, language="en", prefix="The word is",
                             max_new_tokens=4)  # fmt: skip
    enc = torch.cat(encs)
    ref = decode(hooked_en, enc, DecodeOptions(language="en", max_new_tokens=4),
                 prefix="The word is")  # fmt: skip
    lp = score_encoded(hooked_en, enc, cands, language="en", carrier="The word is",
                       variants=case_and_period)  # fmt: skip
    assert [g.transcript for g in got] == [r.text for r in ref]
    assert [g.truncated for g in got] == [r.truncated for r in ref]
    assert torch.allclose(torch.tensor([g.logprobs for g in got]), lp, atol=1e-4)


@torch.no_grad()
def test_decoder_scores_match_a_teacher_forced_oracle(hooked_en):
    from whisperlens.scoring import scoring_prefix
    from whisperlens.tokens import text_ids

    target, source = (hooked_en.encode(_audio(s).numpy()) for s in (15, 16))
    cands = ["bat.", "pat."]
    got = engine.decoder_scores(hooked_en, target, source, cands, language="en",
                                prefix="The word is", max_new_tokens=3)  # fmt: skip
    own = engine.decoder_scores(hooked_en, target, target, cands, language="en",
                                prefix="The word is", max_new_tokens=3)  # fmt: skip
    clean = engine.score_cells(hooked_en, [target], cands, language="en", prefix="The word is",
                               max_new_tokens=3)[0]  # fmt: skip
    prompt = scoring_prefix(hooked_en, "en", carrier="The word is")
    eot = hooked_en.processor.tokenizer.eos_token_id
    pair = torch.cat([target, source])
    for block, scores in got.items():
        assert own[block].transcript == clean.transcript
        assert own[block].logprobs == pytest.approx(clean.logprobs, abs=1e-4)
        site = f"decoder.blocks.{block}.hook_cross_attn_out"
        expected = []
        for cand in cands:  # full teacher-forced forwards, no cache, per spelling
            lps = []
            for text in case_and_period(cand):
                ids = [*prompt, *text_ids(hooked_en.processor.tokenizer, text), eot]
                with hooked_en.edit(site, lambda rows, _s: rows[[1, 1]]):
                    logits = hooked_en.model(
                        encoder_outputs=(pair,), decoder_input_ids=torch.tensor([ids] * 2)
                    ).logits
                lp = logits[0, :-1].float().log_softmax(-1)
                n = len(ids) - len(prompt)
                lps.append(lp[-n:].gather(-1, torch.tensor(ids[-n:])[:, None]).sum())
            expected.append(float(torch.stack(lps).logsumexp(0)))
        assert scores.logprobs == pytest.approx(expected, abs=1e-4), block


# --- pairs, config, summary ---------------------------------------------------------------


def test_allocate_and_draw_of_the_seeds_869_pairs():
    assert allocate({"consonant": 400, "vowel": 300, "semantic": 211}, 869) == {
        "consonant": 382, "vowel": 286, "semantic": 201}  # fmt: skip
    pairs = build_pairs(PatchConfig("a", Path("x")))
    assert len(pairs) == 869 and len({p.id for p in pairs}) == 869
    assert pairs == build_pairs(PatchConfig("a", Path("y")))  # seeded
    assert select_pairs(pairs, 10, 1) != select_pairs(pairs, 10, 2)
    b = build_pairs(PatchConfig("b", Path("x")))
    assert len(b) == 162 and {p.kind for p in b} == {"cognate", "non-cognate"}


def test_directions_and_units():
    config = PatchConfig("a", Path("x"), n_pairs=3)
    dirs = build_directions(config, build_pairs(config))
    assert len(dirs) == 6 and all(d.source.language == "en" for d in dirs)
    units = build_units(config, dirs)
    assert not any(u.clean_targets for u in units)  # reverse directions give the clean targets
    config_b = PatchConfig("b", Path("x"), n_pairs=3)
    dirs_b = build_directions(config_b, build_pairs(config_b))
    assert [(d.source.language, d.target.language) for d in dirs_b] == [("en", "es")] * 3
    assert all(u.clean_targets for u in build_units(config_b, dirs_b))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"experiment": "b", "model": "tiny.en"}, "English-only.*--model base"),
        ({"experiment": "a", "mode": "patchscope"}, "unknown mode 'patchscope'"),
        ({"experiment": "c"}, "unknown experiment"),
        ({"experiment": "a", "n_pairs": 0}, "n_pairs must be >= 1"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(PatchingError, match=message):
        PatchConfig(out=Path("x"), **kwargs)


def test_list_errors_before_any_work(tmp_path):
    with pytest.raises(PatchingError, match="more than the 911 pairs"):
        build_pairs(PatchConfig("a", tmp_path, n_pairs=5000))
    words = tmp_path / "en.csv"
    words.write_text("a,b\nbat,pat\n")
    with pytest.raises(PatchingError, match="no English-Spanish pairs"):
        run_patching(PatchConfig("b", tmp_path / "run", words=str(words)))
    assert not (tmp_path / "run").exists()


def _row(s, t, src, tgt, override, margin, cs, ct=None):
    return {"pair_id": "p", "source_word": src, "target_word": tgt, "source_layer": s,
            "target_layer": t, "override": override, "target_present": not override,
            "margin": margin, "clean_source_margin": cs, "clean_source_transcript": src,
            "clean_target_margin": ct, "clean_target_transcript": None}  # fmt: skip


def test_clean_targets_come_from_the_reverse_direction_and_effect_is_normalised():
    rows = [_row(0, 0, "bat", "pat", True, 4.0, 4.0), _row(1, 0, "bat", "pat", False, 1.0, 4.0),
            _row(0, 0, "pat", "bat", True, 2.0, 2.0), _row(1, 0, "pat", "bat", True, 2.0, 2.0)]  # fmt: skip
    filled = fill_clean_targets(rows)
    assert [r["clean_target_margin"] for r in filled] == [-2.0, -2.0, -4.0, -4.0]
    assert filled[0]["clean_target_transcript"] == "pat"
    m = matrices(filled, 2, 200)
    assert m["effect"]["values"][0][0] == pytest.approx(1.0)  # the diagonal is the clean source
    # cell (1, 0): mean margin 1.5, clean source 3, clean target -3 -> (1.5 + 3) / 6
    assert m["effect"]["values"][1][0] == pytest.approx(0.75)
    assert m["override"]["values"][1][0] == 0.5 and m["override"]["n"][1][0] == 2
    assert m["override"]["values"][0][1] is None and m["override"]["n"][0][1] == 0
    # headlines resample directions (bat>pat: override 1/2, pat>bat: 2/2), not rows
    overall = headline(filled, 200)["overall"]["override"]
    assert overall["value"] == 0.75 and overall["n"] == 4
    assert overall["ci95"] == [0.5, 1.0]


# --- end to end on tiny.en ----------------------------------------------------------------


@pytest.mark.integration
def test_seed_mode_run_on_tiny_en(tmp_path):
    words = tmp_path / "words.csv"
    words.write_text("a,b\nbat,pat\nbat,cat\n")
    out = tmp_path / "run"
    argv = ["patch", "a", "--words", str(words), "--out", str(out), "--workers", "1",
            "--n-bootstrap", "100", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * 16
    for r in rows:
        if r["source_layer"] == r["target_layer"]:  # the diagonal is the clean source run
            assert r["transcript"] == r["clean_source_transcript"]
            assert r["margin"] == pytest.approx(r["clean_source_margin"], abs=1e-5)
    by_cell: dict[tuple, set[str]] = {}
    for r in rows:
        by_cell.setdefault((r["source_word"], r["source_layer"], r["target_layer"]), set()).add(
            r["transcript"])  # fmt: skip
    assert all(len(t) == 1 for t in by_cell.values())  # same (source, S, L): same transcript
    assert sum(r["source_word"] == "bat" for r in rows) == 32  # "bat" has two targets
    summary = json.loads((out / "summary.json").read_text())
    assert summary["matrices"]["override"]["n"] == [[4] * 4] * 4
    assert summary["seed"]["override"][0][0] == 0.95
    assert summary["baselines"]["clean_target"]["n"] == 4  # from the reverse directions
    assert (out / "report.html").stat().st_size > 10_000
    mtime = (out / "rows.jsonl").stat().st_mtime
    assert main(argv) == 0  # resumes: nothing left to do
    assert (out / "rows.jsonl").stat().st_mtime == mtime
    assert (out / "figures" / "override-beside-the-seed.png").is_file()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("mode", "n_cells"), [("interpolate", 20), ("component", 12), ("decoder", 4)]
)
def test_word_frame_modes_on_tiny_en(tmp_path, mode, n_cells):
    words = tmp_path / "words.csv"
    words.write_text("a,b\nbat,pat\n")
    config = PatchConfig("a", tmp_path / "run", mode=mode, words=str(words), n_bootstrap=50)
    summary = run_patching(config, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * n_cells and all(r["source_layer"] == r["target_layer"] for r in rows)
    matrix = summary["matrices"]["effect"]
    assert len(matrix["rows"]) == n_cells // 4 and matrix["columns"] == [0, 1, 2, 3]
    if mode == "interpolate":  # alpha 0 is the clean target run: effect 0, no override
        assert matrix["values"][0] == pytest.approx([0.0] * 4, abs=1e-4)
        assert summary["matrices"]["override"]["values"][0] == [0.0] * 4
        assert rows[0]["intervention"]["kind"] == "steer"
    else:
        assert {r["component"] for r in rows} == set(matrix["rows"])
        assert rows[0]["intervention"]["site"].startswith(
            "decoder." if mode == "decoder" else "encoder."
        )
