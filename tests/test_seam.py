"""The encoded-clip seam (encode -> decode / detect_language / score_encoded), truncation
reporting and waveform validation at the model boundary. Oracles are plain full forwards of
the transformers model, independent of the code under test."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from whisperlens.audio import load_audio
from whisperlens.cache import ActivationCache
from whisperlens.decoding import (
    DecodeOptions,
    DecodingError,
    TruncationWarning,
    decode,
    detect_language,
    encode,
    language_probs,
    special_tokens,
    transcribe,
)
from whisperlens.errors import AudioError, CorruptWeightsError, ShapeError
from whisperlens.features import as_features
from whisperlens.scoring import candidate_logprobs, case_and_period, score_encoded
from whisperlens.tokens import read_special_tokens

EN_SOT, EN_NOTS, EN_EOT = 50257, 50362, 50256
ML_SOT, ML_ES, ML_TRANSCRIBE, ML_NOTS = 50258, 50262, 50359, 50363
SR = 16_000


def _features(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 80, 3000, generator=torch.Generator().manual_seed(seed))


def _ids(model, text: str) -> list[int]:
    return model.processor.tokenizer.encode(" " + text, add_special_tokens=False)


def _oracle_score(model, features_MT, prefix: list[int], texts: list[str]) -> float:
    """logsumexp over ``texts`` of sum log P(text + <|endoftext|> | prefix): one plain
    teacher-forced forward of the whole model per text, from the log-mel features."""
    eot = special_tokens(model).eot
    totals = []
    for text in texts:
        cand = _ids(model, text) + [eot]
        ids = torch.tensor([prefix + cand])
        with torch.no_grad():
            logits = model.model(input_features=features_MT[None], decoder_input_ids=ids).logits
        lp_TV = logits[0].double().log_softmax(-1)
        totals.append(sum(float(lp_TV[len(prefix) + i - 1, t]) for i, t in enumerate(cand)))
    return float(torch.tensor(totals).logsumexp(0))


def _oracle_greedy(model, features_MT, prompt: list[int], n_max: int) -> list[int]:
    """Argmax step by step over full uncached forwards; filters of decoding's docstring with
    the model's suppress lists (begin-suppress on the first generated token)."""
    st = special_tokens(model)
    gen = model.model.generation_config
    suppress = [*(gen.suppress_tokens or []), *range(st.eot + 1, st.vocab_size)]
    ids = list(prompt)
    for step in range(n_max):
        with torch.no_grad():
            logits = model.model(
                input_features=features_MT[None], decoder_input_ids=torch.tensor([ids])
            )
        logits_V = logits.logits[0, -1].float()
        logits_V[suppress] = -math.inf
        if step == 0:
            logits_V[list(gen.begin_suppress_tokens)] = -math.inf
        ids.append(int(logits_V.argmax()))
        if ids[-1] == st.eot:
            break
    return [t for t in ids[len(prompt) :] if t != st.eot]


# ---------------------------------------------------------------- seam on a random model


def test_decode_of_encode_equals_transcribe(en_model):
    feats = _features(3, seed=1)
    options = DecodeOptions(max_new_tokens=5, batch_size=2)
    with pytest.warns(TruncationWarning):
        want = transcribe(en_model, feats, options)
    enc = torch.cat([encode(en_model, feats[:2]), encode(en_model, feats[2])])  # as batched
    assert enc.shape == (3, 1500, 16)
    with pytest.warns(TruncationWarning):
        assert decode(en_model, enc, options) == want
    with pytest.warns(TruncationWarning):
        [one] = decode(en_model, enc[1], options)  # [1500, d] is one clip
    assert one.tokens == want[1].tokens
    assert one.avg_logprob == pytest.approx(want[1].avg_logprob, abs=1e-5)


def test_decode_accepts_activation_cache_and_refuses_partial_ones(en_model):
    enc = encode(en_model, _features(1, seed=2))
    options = DecodeOptions(max_new_tokens=4)
    with pytest.warns(TruncationWarning):
        want = decode(en_model, enc, options)
    with pytest.warns(TruncationWarning):
        assert decode(en_model, ActivationCache({"encoder.hook_ln_post": enc}), options) == want
    got = score_encoded(en_model, ActivationCache({"encoder.hook_ln_post": enc}), ["a", "b"])
    torch.testing.assert_close(got, score_encoded(en_model, enc, ["a", "b"]), rtol=0, atol=0)
    whole = ActivationCache({"encoder.hook_ln_post": enc}, frame_index=torch.arange(1500))
    with pytest.warns(TruncationWarning):
        assert decode(en_model, whole, options) == want
    partial = ActivationCache({"encoder.hook_ln_post": enc[:, :10]}, frame_index=torch.arange(10))
    for bad in (ActivationCache({"encoder.blocks.0.hook_resid_post": enc}), partial):
        with pytest.raises(ShapeError, match="hook_ln_post"):
            decode(en_model, bad, options)
    with pytest.raises(ShapeError, match=r"\[batch, 1500, 16\]"):
        score_encoded(en_model, enc[:, :100], ["a"])


def test_prefix_decoding_equals_forced_greedy_continuation(en_model):
    feats = _features(2, seed=3)
    enc = encode(en_model, feats)
    forced = _ids(en_model, "The word is")
    with pytest.warns(TruncationWarning):
        got = decode(en_model, enc, DecodeOptions(max_new_tokens=6), prefix="The word is")
    tok = en_model.processor.tokenizer
    for b in range(2):
        want = _oracle_greedy(en_model, feats[b], [EN_SOT, EN_NOTS, *forced], 6)
        assert list(got[b].tokens) == want
        assert got[b].text == tok.decode(want).strip()
    with pytest.raises(DecodingError, match="timestamps"):
        decode(en_model, enc, DecodeOptions(timestamps=True), prefix="The word is")


def test_score_encoded_equals_full_forward_oracle(en_model, ml_model):
    feats = _features(2, seed=4)
    words = ["bat", "a much longer candidate"]
    got = score_encoded(
        en_model, encode(en_model, feats), words, carrier="The word is", variants=case_and_period
    )
    prefix = [EN_SOT, EN_NOTS, *_ids(en_model, "The word is")]
    for b in range(2):
        for c, word in enumerate(words):
            want = _oracle_score(en_model, feats[b], prefix, case_and_period(word))
            assert got[b, c].item() == pytest.approx(want, abs=1e-4)
    es = score_encoded(ml_model, encode(ml_model, feats[:1]), ["uno", "dos"], language="es")[0]
    for c, word in enumerate(["uno", "dos"]):
        want = _oracle_score(ml_model, feats[0], [ML_SOT, ML_ES, ML_TRANSCRIBE, ML_NOTS], [word])
        assert es[c].item() == pytest.approx(want, abs=1e-4)


def test_detect_language_equals_language_probs(ml_model, en_model):
    feats = _features(2, seed=5)
    assert detect_language(ml_model, encode(ml_model, feats)) == language_probs(ml_model, feats)
    with pytest.raises(DecodingError, match="multilingual"):
        detect_language(en_model, encode(en_model, feats))


# ---------------------------------------------------------------- truncation


def test_default_decodes_to_end_of_text_and_flags_truncation(en_model):
    assert DecodeOptions().max_new_tokens is None
    gen = en_model.model.generation_config
    feats = _features(2, seed=6)
    gen.suppress_tokens = list(range(EN_EOT))  # only <|endoftext|> is left: ends at once
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", TruncationWarning)
            done = transcribe(en_model, feats)
    finally:
        gen.suppress_tokens = []
    assert [(t.tokens, t.truncated) for t in done] == [((), False), ((), False)]
    # the random model never says <|endoftext|>: it runs to the 64-position context
    n_room = en_model.model.config.max_target_positions - 2
    with pytest.warns(TruncationWarning, match=r"2 of 2 .*64-token context"):
        cut = transcribe(en_model, feats)
    assert all(t.truncated and len(t.tokens) == n_room for t in cut)
    with pytest.warns(TruncationWarning, match=r"1 of 1 .*max_new_tokens=3.*raise"):
        short = transcribe(en_model, feats[0], DecodeOptions(max_new_tokens=3))
    assert short[0].truncated and len(short[0].tokens) == 3


# ---------------------------------------------------------------- waveform validation


def test_waveforms_are_validated_like_load_audio(en_model):
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(SR) * 3000).astype(np.int16)
    # integer PCM is scaled by its dtype range, as load_audio(x, sample_rate) does
    torch.testing.assert_close(
        as_features(en_model, pcm), as_features(en_model, load_audio(pcm, SR)), rtol=0, atol=0
    )
    assert not torch.equal(
        as_features(en_model, pcm), as_features(en_model, pcm.astype(np.float32))
    )
    nan = np.zeros(SR, dtype=np.float32)
    nan[5] = np.nan
    cases = [
        (nan, AudioError, "non-finite"),
        (np.zeros(0, dtype=np.float32), AudioError, "no samples"),
        (np.zeros((SR, 2), dtype=np.float32), ShapeError, "1-D"),
        (torch.zeros(2, SR), ShapeError, "1-D"),
        (np.zeros(31 * SR, dtype=np.float32), AudioError, "31.00 s long"),
        ([np.zeros(SR, dtype=np.float32), nan], AudioError, "audio clip 1 .*non-finite"),
    ]
    for audio, error, match in cases:
        with pytest.raises(error, match=match):
            encode(en_model, audio)
    with pytest.raises(ShapeError, match="mel bins"):
        as_features(en_model, torch.zeros(1, 128, 3000))


def test_one_special_tokens_type(en_model):
    from whisperlens.models.convert import special_tokens as converted

    tok = en_model.processor.tokenizer
    assert converted(tok, 51864) == read_special_tokens(tok, 51864) == special_tokens(en_model)
    with pytest.raises(CorruptWeightsError, match="do not fit"):
        converted(tok, 51865)  # an .en tokenizer in a multilingual-sized vocabulary


# ---------------------------------------------------------------- tiny.en integration


@pytest.mark.integration
def test_tiny_en_seam_matches_baseline_calls(tiny_en, piper):
    """The calls studies make: encode, decode(...)[0].text, score_encoded(...)[0]."""
    audio = piper("The word is apple.")
    enc_1FD = encode(tiny_en, audio)
    options = DecodeOptions(language="en", max_new_tokens=32)
    text = decode(tiny_en, enc_1FD, options)[0].text
    assert text == transcribe(tiny_en, audio, options)[0].text
    assert "apple" in text.lower(), text
    words = ["apple.", "table."]
    got = score_encoded(
        tiny_en, enc_1FD, words, language="en", carrier="The word is", variants=case_and_period
    )[0]
    feats = as_features(tiny_en, audio)[0]
    prefix = [EN_SOT, EN_NOTS, *_ids(tiny_en, "The word is")]
    for c, word in enumerate(words):
        want = _oracle_score(tiny_en, feats, prefix, case_and_period(word))
        assert got[c].item() == pytest.approx(want, abs=1e-4)
    assert got[0] > got[1]
    torch.testing.assert_close(
        candidate_logprobs(tiny_en, audio, words, carrier="The word is", variants=case_and_period)[
            0
        ],
        got,
        rtol=0,
        atol=1e-5,
    )


@pytest.mark.integration
def test_tiny_en_prefix_cache_and_truncation(tiny_en, piper):
    from whisperlens.hooks import HookedWhisper

    audio = piper("The word is apple. Please call Stella and ask her to bring these things.")
    hooked = HookedWhisper(tiny_en)
    cache = hooked.run_with_cache(audio, names="encoder.hook_ln_post")
    enc = encode(tiny_en, audio)
    torch.testing.assert_close(cache["encoder.hook_ln_post"], enc, rtol=0, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        full = decode(tiny_en, cache)[0]  # default options: to <|endoftext|>
    assert not full.truncated and "stella" in full.text.lower(), full.text
    assert decode(tiny_en, enc)[0].tokens == full.tokens

    continued = decode(tiny_en, enc, prefix="The word is")[0]
    forced = _ids(tiny_en, "The word is")
    want = _oracle_greedy(tiny_en, as_features(tiny_en, audio)[0], [EN_SOT, EN_NOTS, *forced], 40)
    assert list(continued.tokens) == want and continued.text.lower().startswith("apple")

    with pytest.warns(TruncationWarning, match="1 of 1 .*max_new_tokens=3"):
        cut = transcribe(tiny_en, audio, DecodeOptions(max_new_tokens=3))[0]
    assert cut.truncated and len(cut.tokens) == 3


@pytest.mark.integration
def test_cli_reports_truncation(tmp_path, piper, capsys):
    from whisperlens.audio import save_wav
    from whisperlens.cli import build_parser, main

    with pytest.raises(SystemExit):
        build_parser().parse_args(["transcribe", "--help"])
    assert "until end of text" in " ".join(capsys.readouterr().out.split())
    wav = save_wav(
        tmp_path / "stella.wav", piper("Please call Stella and ask her."), subtype="FLOAT"
    )
    assert main(["transcribe", str(wav), "--json", "--max-new-tokens", "3"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out.strip())["truncated"] is True
    assert "warning: 1 of 1 transcripts reached max_new_tokens=3" in err  # the CLI prints it
    assert main(["transcribe", str(wav), "--json"]) == 0
    assert "truncated" not in json.loads(capsys.readouterr().out.strip())
