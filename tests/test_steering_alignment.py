"""Steering study: the learned text -> Whisper alignment (``aligned`` reducer) and the
language directions inside Whisper. Oracles: planted maps, numpy closed forms, and encoder
outputs read with plain forward hooks on an uninstrumented copy of the model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from whisperlens.errors import ShapeError
from whisperlens.studies.steering import alignment, mapping


def _planted(n: int, d_in: int, d_out: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d_in)) + 2.0
    W = rng.normal(size=(d_out, d_in))
    Y = X @ W.T + 5.0 + noise * rng.normal(size=(n, d_out))
    return torch.from_numpy(X), torch.from_numpy(Y), W


def test_ridge_weights_match_the_numpy_closed_form() -> None:
    X, Y, _ = _planted(50, 12, 5, noise=1.0)
    alpha = 0.3
    m = alignment.ridge_weights(X, Y, [alpha])[0]
    Xc, Yc = (X - X.mean(0)).numpy(), (Y - Y.mean(0)).numpy()
    lam = alpha * (Xc**2).sum() / Xc.shape[1]
    expect = np.linalg.solve(Xc.T @ Xc + lam * np.eye(12), Xc.T @ Yc).T  # [d_out, d_in]
    np.testing.assert_allclose(m.weight.numpy(), expect, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(m.predict(X[:3]).numpy(), Xc[:3] @ expect.T + Y.mean(0).numpy())


def test_fit_recovers_a_planted_map_and_the_shuffled_null_does_not() -> None:
    X, Y, W = _planted(300, 40, 16, noise=0.05)
    fit = alignment.fit_alignment(X, Y, seed=0, n_null=5)
    report = fit.report
    assert report["n_test"] == 60 and report["n_train"] == 240
    assert report["heldout"]["r2"] > 0.999 and report["heldout"]["cosine"] > 0.999
    assert abs(report["null"]["r2"]["mean"]) < 0.1 and report["null"]["r2"]["max"] < 0.1
    assert abs(report["null"]["cosine"]["mean"]) < 0.15
    np.testing.assert_allclose(fit.map.weight.numpy(), W, atol=0.02)


def test_alpha_selection_picks_more_shrinkage_for_noisier_data() -> None:
    X, Y_clean, _ = _planted(60, 40, 8, noise=0.01)
    _, Y_noisy, _ = _planted(60, 40, 8, noise=30.0)
    clean, _ = alignment.select_alpha(X, Y_clean)
    noisy, errors = alignment.select_alpha(X, Y_noisy)
    assert clean <= 1e-3 < 1.0 <= noisy
    assert len(errors) == len(alignment.ALPHAS)


def test_too_few_or_mismatched_rows_are_refused() -> None:
    X, Y, _ = _planted(11, 4, 2, noise=0.1)  # 9 training words < 2 per fold
    with pytest.raises(alignment.AlignmentError, match="too few"):
        alignment.fit_alignment(X, Y)
    with pytest.raises(alignment.AlignmentError, match="rows"):
        alignment.fit_alignment(X, Y[:5])
    with pytest.raises(alignment.AlignmentError, match="alignment words"):
        alignment.alignment_words(10**6)


def test_alignment_words_are_distinct_seeded_and_from_the_lists() -> None:
    from whisperlens.stimuli.wordlists import load_pairs

    words = alignment.alignment_words(200, seed=3)
    assert len(set(words)) == 200 and words == sorted(words)
    assert words == alignment.alignment_words(200, seed=3) != alignment.alignment_words(200, 4)
    listed = {w.lower() for p in load_pairs("english") for w in (p.a, p.b)}
    assert set(words) <= listed


def test_aligned_reducer_is_the_map_applied_to_samples_and_mean() -> None:
    gen = torch.Generator().manual_seed(0)
    X, W = torch.randn(30, 12, generator=gen), torch.randn(8, 12, generator=gen)
    mean = X.mean(0)
    samples, direction = mapping.reduce("aligned", X, mean, 8, alignment=W)
    np.testing.assert_allclose(samples.numpy(), X.numpy() @ W.numpy().T, rtol=1e-5, atol=1e-5)
    expect = (W.double().numpy() * mean.double().numpy()).sum(1)  # row-wise dot products
    np.testing.assert_allclose(direction.numpy(), expect, rtol=1e-5, atol=1e-5)
    with pytest.raises(ShapeError, match="needs a fitted"):
        mapping.reduce("aligned", X, mean, 8)
    with pytest.raises(ShapeError, match="expected"):
        mapping.reduce("aligned", X, mean, 16, alignment=W)


def test_cli_accepts_the_aligned_reducer_and_keeps_the_default_reducers(tmp_path: Path) -> None:
    from whisperlens.cli import build_parser
    from whisperlens.commands.steer import config_from_args
    from whisperlens.studies.steering.study import SteerConfig, SteerError

    base = ["steer", "--concept", "love_hate", "--out", str(tmp_path)]
    args = build_parser().parse_args([*base, "--reducer", "aligned", "--n-align-words", "50"])
    config = config_from_args(args)
    assert config.reducers == ("aligned",) and config.n_align_words == 50
    default = config_from_args(build_parser().parse_args(base))
    assert default.reducers == ("pca", "ae", "gaussian", "sparse")
    with pytest.raises(SteerError, match="n_align_words"):
        SteerConfig("love_hate", tmp_path, n_align_words=3)


# --- language directions -------------------------------------------------------------------


def _oracle_means(reference, audios: list[np.ndarray], hooked) -> torch.Tensor:
    """[n_blocks, d]: per clip, each block's output (plain forward hooks on the untouched
    copy) averaged over the clip's frames, then averaged over clips."""
    from whisperlens.features import log_mel

    layers = reference.model.encoder.layers
    per_clip = []
    for audio in audios:
        captured: list[torch.Tensor] = []
        handles = [layer.register_forward_hook(
            lambda _m, _a, out, store=captured: store.append(out[0] if isinstance(out, tuple) else out))
            for layer in layers]  # fmt: skip
        try:
            with torch.no_grad():
                reference.model.encoder(log_mel(hooked, audio))
        finally:
            for handle in handles:
                handle.remove()
        n = math.ceil(len(audio) / 16_000 / 0.02)
        per_clip.append(torch.stack([c[0, :n].mean(0) for c in captured]))
    return torch.stack(per_clip).mean(0)


def test_language_direction_is_the_difference_of_frame_means(pair) -> None:
    from whisperlens.studies.steering.whisper_geometry import language_direction

    hooked, reference = pair
    rng = np.random.default_rng(0)
    t = np.arange(16_000) / 16_000
    set_a = [np.sin(2 * np.pi * 220 * t[:8000]).astype(np.float32) * 0.3,
             (rng.normal(size=12_800) * 0.1).astype(np.float32)]  # fmt: skip
    set_b = [np.sin(2 * np.pi * 880 * t[:11_200]).astype(np.float32) * 0.5,
             (rng.normal(size=4_800) * 0.2).astype(np.float32)]  # fmt: skip
    got = language_direction(hooked, set_a, set_b)
    expect = _oracle_means(reference, set_a, hooked) - _oracle_means(reference, set_b, hooked)
    assert got.shape == (hooked.n_layers, hooked.d_model)
    torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-4)
    assert float(expect.norm()) > 1e-2  # the two sets differ: the check is not vacuous


def test_geometry_reports_cosines_with_language_directions(tmp_path: Path) -> None:
    from whisperlens.interventions import load_payloads, save_payloads
    from whisperlens.report import Report, render_report
    from whisperlens.studies.steering.study import SteerConfig, build_vectors, variants
    from whisperlens.studies.steering.summary import SCORES, geometry, report_section, summarize

    config = SteerConfig("love_hate", tmp_path, reducers=("pca", "gaussian"),
                         layouts=("direction",), strengths=(-1.0, 0.0, 1.0), n_random=1)  # fmt: skip
    diffs = torch.randn(400, 32, generator=torch.Generator().manual_seed(0)) + 1.0
    build_vectors(config, tmp_path, {"differences": diffs, "mean": diffs.mean(0)}, 16)
    pca = load_payloads(tmp_path / "vectors/pca-direction.safetensors")["vector"]
    other = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    langs = {"en-fr": torch.stack([pca, -2 * pca, other[0]]), "en-es": other}
    save_payloads(tmp_path / "whisper/language_directions.safetensors", langs)
    X, Y, _ = _planted(40, 6, 3, noise=0.1)
    fit = alignment.fit_alignment(X, Y, n_null=2).report
    (tmp_path / "text").mkdir()
    (tmp_path / "text/alignment.json").write_text(json.dumps(fit | {"target_blocks": [0]}))
    g = geometry(tmp_path, config)["whisper_language"]
    assert set(g) == {"en-fr", "en-es"} and g["en-fr"]["labels"] == ["pca", "gaussian"]
    assert g["en-fr"]["cosine"][0][0] == pytest.approx(1.0)
    assert g["en-fr"]["cosine"][1][0] == pytest.approx(-1.0)
    gauss = load_payloads(tmp_path / "vectors/gaussian-direction.safetensors")["vector"].double()
    o = other[2].double()
    expect = float(o @ gauss / (o.norm() * gauss.norm()))
    assert g["en-es"]["cosine"][2][1] == pytest.approx(expect, abs=1e-9)
    assert g["en-es"]["null_abs_q95"] == pytest.approx(mapping.null_cosine_quantile(16))
    rows = [{"clip": c, "text": "t", "unsteered": "u", "transcript": "x", "reducer": v.reducer,
             "layout": v.layout, "control": v.control, "strength": v.strength,
             **dict.fromkeys(SCORES, 0.0)} for c in range(3) for v in variants(config)]  # fmt: skip
    caa = {"layer": 3, "chosen_by": "given", "scan": None, "n_samples": 400}
    summary = summarize(config, caa, rows, tmp_path)
    html = render_report(Report("steer", [report_section(summary, rows)]), tmp_path)
    assert "en-fr language direction" in html.read_text()
    assert summary["geometry"]["alignment"]["heldout"] == fit["heldout"]
    assert "shuffled null" in html.read_text()


# --- tiny.en + smollm2-135m: the aligned reducer end to end ---------------------------------


@pytest.mark.integration
def test_aligned_vectors_and_report_on_real_models(tmp_path: Path) -> None:
    from whisperlens.frames import frames_for_span
    from whisperlens.interventions import load_payloads
    from whisperlens.stimuli.carriers import CARRIERS
    from whisperlens.stimuli.tts import synthesize
    from whisperlens.studies.steering.study import SteerConfig, build_vectors, load_whisper

    config = SteerConfig("anger_calm", tmp_path, reducers=("aligned",), n_random=0,
                         blocks=(1, 2), n_align_words=24)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    diffs = torch.randn(40, 576, generator=gen) + torch.randn(576, generator=gen)
    caa = {"differences": diffs, "mean": diffs.mean(0), "layer": 10}
    build_vectors(config, tmp_path, caa, 384)
    report = json.loads((tmp_path / "text/alignment.json").read_text())
    assert report["target_blocks"] == [1, 2] and report["text_layer"] == 10
    assert report["n_train"] + report["n_test"] == len(report["words"]) >= 20
    assert math.isfinite(report["heldout"]["r2"]) and report["null"]["n"] == 20
    W = load_payloads(tmp_path / "text/alignment.safetensors")["weight"].double()
    assert W.shape == (384, 576)
    direction = load_payloads(tmp_path / "vectors/aligned-direction.safetensors")["vector"]
    expect = W @ diffs.mean(0).double()
    torch.testing.assert_close(direction.double(), expect / expect.norm(), rtol=1e-4, atol=1e-5)
    frames = load_payloads(tmp_path / "vectors/aligned-frames.safetensors")["vector"]
    row = W @ diffs[7].double()
    torch.testing.assert_close(
        frames[7].double(), row / _mean_row_norm(diffs, W), rtol=1e-4, atol=1e-5
    )
    assert frames.shape == (1500, 384) and not frames[40:].any()

    # the Whisper side of one word (from the cache the fit used), read with forward hooks
    whisper = load_whisper("tiny.en")
    kept, states = alignment.heard_words(whisper, alignment.alignment_words(24, 0))
    assert kept == report["words"]
    word = kept[5]
    phrase = CARRIERS["the_word_is"].render(word)
    stim = synthesize(phrase.text, engine="piper")
    times = stim.time_span(phrase.word_span)
    assert times is not None
    span = frames_for_span(*times)
    layers = whisper.model.model.encoder.layers
    captured: list[torch.Tensor] = []
    handles = [layer.register_forward_hook(lambda _m, _a, out: captured.append(out[0] if isinstance(out, tuple) else out))
               for layer in layers]  # fmt: skip
    try:
        with torch.no_grad():
            whisper.model.model.encoder(whisper.features(stim.audio))
    finally:
        for handle in handles:
            handle.remove()
    oracle = torch.stack([c[0, span].mean(0) for c in captured])
    torch.testing.assert_close(states[:, kept.index(word)], oracle, rtol=1e-4, atol=1e-4)


def _mean_row_norm(diffs: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return (diffs.double() @ W.T).norm(dim=1).mean()
