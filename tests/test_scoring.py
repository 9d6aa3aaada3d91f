"""Decoding and scoring: exact properties on a tiny random Whisper with the real tokenizers,
plus integration checks on the packaged tiny.en and base."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch

from whisperlens.decoding import (
    DecodeOptions,
    DecodingError,
    language_probs,
    special_tokens,
    split_segments,
    transcribe,
)
from whisperlens.metrics import cer, normalize, wer, word_present
from whisperlens.scoring import (
    candidate_logprobs,
    case_and_period,
    forced_choice,
    scoring_prefix,
    sequence_logprobs,
)

EN_SOT, EN_NOTS, EN_EOT = 50257, 50362, 50256  # .en: <|startoftranscript|> <|notimestamps|>
ML_SOT, ML_EN, ML_ES, ML_TRANSLATE, ML_TRANSCRIBE, ML_NOTS = (
    50258,
    50259,
    50262,
    50358,
    50359,
    50363,
)
ML_EOT = 50257


def _features(n: int, seed: int = 0) -> torch.Tensor:
    """Random log-mel features [n, 80, 3000] (the random models need no real audio)."""
    return torch.randn(n, 80, 3000, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- prompts and options


def test_prompt_ids_match_documented_tokens(en_model, ml_model):
    assert scoring_prefix(en_model, None) == [EN_SOT, EN_NOTS]
    assert scoring_prefix(ml_model, "en") == [ML_SOT, ML_EN, ML_TRANSCRIBE, ML_NOTS]
    assert scoring_prefix(ml_model, "Spanish", "translate") == [
        ML_SOT,
        ML_ES,
        ML_TRANSLATE,
        ML_NOTS,
    ]
    tok = en_model.processor.tokenizer
    carrier = scoring_prefix(en_model, None, prompt="Hi", carrier="The word is")
    assert carrier == [50360, 15902, EN_SOT, EN_NOTS, 383, 1573, 318]  # " Hi", " The word is"
    assert tok.convert_ids_to_tokens([EN_SOT, EN_NOTS, 50360]) == [
        "<|startoftranscript|>",
        "<|notimestamps|>",
        "<|startofprev|>",
    ]


def test_options_validation(en_model):
    assert DecodeOptions(language="Spanish").language == "es"
    for bad in (
        {"language": "xx"},
        {"task": "summarise"},
        {"max_new_tokens": 0},
        {"batch_size": 0},
    ):
        with pytest.raises(DecodingError):
            DecodeOptions(**bad)
    with pytest.raises(DecodingError, match="English-only"):
        transcribe(en_model, _features(1), DecodeOptions(language="es"))
    with pytest.raises(DecodingError, match="English-only"):
        transcribe(en_model, _features(1), DecodeOptions(task="translate"))
    with pytest.raises(DecodingError, match="multilingual"):
        language_probs(en_model, _features(1))
    with pytest.raises(DecodingError, match="positions"):
        transcribe(en_model, _features(1), DecodeOptions(max_new_tokens=500))


# ---------------------------------------------------------------- candidate scoring


def _oracle_logprob(model, features_MT, prefix, cand_ids):
    """Plain teacher-forced forward on the full sequence, one candidate, no cache."""
    full = torch.tensor([prefix + cand_ids])
    with torch.no_grad():
        logits = model.model(input_features=features_MT[None], decoder_input_ids=full).logits
    lp_TV = logits[0].float().log_softmax(-1)
    return sum(float(lp_TV[len(prefix) + i - 1, t]) for i, t in enumerate(cand_ids))


def test_candidate_logprobs_equal_teacher_forced_oracle(en_model):
    tok = en_model.processor.tokenizer
    feats = _features(2, seed=3)
    cands = ["bat", "Bat.", "a much longer candidate"]
    got = candidate_logprobs(en_model, feats, cands, prompt="Hello", carrier="The word is")
    prefix = [
        50360,
        *tok.encode(" Hello", add_special_tokens=False),
        EN_SOT,
        EN_NOTS,
        *tok.encode(" The word is", add_special_tokens=False),
    ]
    for b in range(2):
        for c, text in enumerate(cands):
            ids = tok.encode(" " + text, add_special_tokens=False) + [EN_EOT]
            assert got[b, c].item() == pytest.approx(
                _oracle_logprob(en_model, feats[b], prefix, ids), abs=1e-5
            )
    no_eot = candidate_logprobs(en_model, feats[:1], ["bat"], include_eot=False)
    oracle = _oracle_logprob(
        en_model, feats[0], [EN_SOT, EN_NOTS], tok.encode(" bat", add_special_tokens=False)
    )
    assert no_eot.item() == pytest.approx(oracle, abs=1e-5)


def test_carrier_scoring_differences_equal_full_sentence_differences(en_model):
    feats = _features(1, seed=10)
    full = candidate_logprobs(en_model, feats, ["The word is apple.", "The word is table."])[0]
    carried = candidate_logprobs(en_model, feats, ["apple.", "table."], carrier="The word is")[0]
    assert float(full[0] - full[1]) == pytest.approx(float(carried[0] - carried[1]), abs=1e-5)
    assert float(full[0]) < float(carried[0])  # the carrier's own log-prob is left out


def test_candidate_logprobs_batched_equals_unbatched(ml_model):
    feats = _features(3, seed=4)
    cands = [["uno", "dos"], ["tres", "cuatro cinco"], ["seis", "siete"]]
    batched = candidate_logprobs(ml_model, feats, cands, language="es")
    for b in range(3):
        single = candidate_logprobs(ml_model, feats[b], cands[b], language="es")
        torch.testing.assert_close(batched[b], single[0], atol=1e-5, rtol=0)
    st = special_tokens(ml_model)
    enc = ml_model.model.get_encoder()(feats[:1]).last_hidden_state
    seqs = [[st.eot], [100, 200, 300, st.eot], [5, st.eot]]
    prefix = [ML_SOT, ML_ES, ML_TRANSCRIBE, ML_NOTS]
    chunked = sequence_logprobs(ml_model, enc, prefix, seqs, chunk_size=1)
    torch.testing.assert_close(
        chunked, sequence_logprobs(ml_model, enc, prefix, seqs), atol=1e-5, rtol=0
    )


def test_variants_aggregate_by_logsumexp(en_model):
    feats = _features(1, seed=5)
    assert case_and_period("Bat.") == ["bat", "bat.", "Bat", "Bat."]
    pooled = candidate_logprobs(en_model, feats, ["bat", "cat"], variants=case_and_period)
    spelled = candidate_logprobs(en_model, feats, ["bat", "bat.", "Bat", "Bat."])
    assert pooled[0, 0].item() == pytest.approx(spelled[0].logsumexp(0).item(), abs=1e-5)


def test_forced_choice_is_graded(en_model):
    feats = _features(1, seed=6)[0]
    lp = candidate_logprobs(en_model, feats, ["bat", "cat", "hat"])[0]
    res = forced_choice(en_model, feats, ["bat", "cat", "hat"], target=1)
    torch.testing.assert_close(res.logprobs, lp)
    assert res.choice == int(lp.argmax())
    assert res.margin == pytest.approx(float(lp[1] - max(lp[0], lp[2])), abs=1e-6)
    assert res.p_target == pytest.approx(float(lp.exp()[1] / lp.exp().sum()), rel=1e-5)
    with pytest.raises(DecodingError):
        forced_choice(en_model, feats, ["only"])


# ---------------------------------------------------------------- greedy decoding


def _oracle_greedy(model, features_MT, prompt, n_steps, suppress, begin_suppress):
    """Step-by-step argmax over full decoder re-forwards (no cache), documented filters."""
    with torch.no_grad():
        enc = model.model.model.encoder(features_MT[None]).last_hidden_state
    ids = list(prompt)
    for step in range(n_steps):
        with torch.no_grad():
            logits = model.model(encoder_outputs=(enc,), decoder_input_ids=torch.tensor([ids]))
        logits = logits.logits[0, -1]
        logits[suppress] = -math.inf
        if step == 0:
            logits[begin_suppress] = -math.inf
        ids.append(int(logits.argmax()))
        if ids[-1] in (EN_EOT, ML_EOT):
            break
    return ids[len(prompt) :]


@pytest.mark.filterwarnings("ignore::whisperlens.decoding.TruncationWarning")  # short limits
def test_greedy_equals_uncached_oracle(en_model):
    gen = en_model.model.generation_config
    gen.suppress_tokens, gen.begin_suppress_tokens = [11, 13], [220, EN_EOT]
    try:
        feats = _features(3, seed=7)
        got = transcribe(en_model, feats, DecodeOptions(max_new_tokens=6, batch_size=2))
        controls = list(range(EN_EOT + 1, 51864))  # every special and timestamp token
        for b in range(3):
            want = _oracle_greedy(
                en_model, feats[b], [EN_SOT, EN_NOTS], 6, [11, 13, *controls], [220, EN_EOT]
            )
            assert list(got[b].tokens) == [t for t in want if t != EN_EOT]
            assert got[b].language == "en"
        single = transcribe(en_model, feats[1], DecodeOptions(max_new_tokens=6))
        assert single[0].tokens == got[1].tokens
        assert single[0].avg_logprob == pytest.approx(got[1].avg_logprob, abs=1e-5)
    finally:
        gen.suppress_tokens, gen.begin_suppress_tokens = [], []


@pytest.mark.filterwarnings("ignore::whisperlens.decoding.TruncationWarning")  # short limits
def test_language_detection_and_probs_match_manual(ml_model):
    feats = _features(2, seed=8)
    probs = language_probs(ml_model, feats)
    st = special_tokens(ml_model)
    with torch.no_grad():
        logits = ml_model.model(
            input_features=feats, decoder_input_ids=torch.full((2, 1), ML_SOT)
        ).logits
    detected = ml_model.model.detect_language(input_features=feats).tolist()
    for b in range(2):
        manual = logits[b, -1, list(st.languages.values())].softmax(-1)
        assert sum(probs[b].values()) == pytest.approx(1.0, abs=1e-5)
        assert [probs[b][c] for c in st.languages] == pytest.approx(manual.tolist(), abs=1e-6)
        assert st.languages[next(iter(probs[b]))] == detected[b]
    out = transcribe(ml_model, feats, DecodeOptions(max_new_tokens=2))
    assert [o.language for o in out] == [next(iter(p)) for p in probs]


@pytest.mark.filterwarnings("ignore::whisperlens.decoding.TruncationWarning")  # short limits
def test_timestamps_follow_rules(en_model):
    out = transcribe(
        en_model, _features(2, seed=9), DecodeOptions(max_new_tokens=12, timestamps=True)
    )
    ts0 = EN_NOTS + 1
    for tr in out:
        stamps = [t for t in tr.tokens if t >= ts0]
        assert tr.tokens[0] >= ts0 and tr.tokens[0] - ts0 <= 50  # first: a timestamp <= 1 s
        assert stamps == sorted(stamps)
    st = special_tokens(en_model)
    tok = en_model.processor.tokenizer
    segs = split_segments([ts0, 383, ts0 + 50, ts0 + 50, 1573, ts0 + 75], st, tok)
    assert [(s.start, s.end, s.text) for s in segs] == [(0.0, 1.0, "The"), (1.0, 1.5, "word")]


# ---------------------------------------------------------------- text


def test_normalize_examples():
    assert normalize("Hello, World!") == "hello world"
    assert normalize("The colour of Mr. Smith's car") == "the color of mister smith is car"
    assert normalize("twenty five dollars") == "$25"
    assert normalize("Uh, I won't go.") == "i will not go"
    assert normalize("¿Cómo estás? [música]", "es") == "cómo estás"
    assert word_present("apple", "The word is Apple.")
    assert word_present("the word", "The word is apple.")
    assert not word_present("app", "The word is apple.")


def test_wer_cer_hand_computed():
    one = wer("the cat sat", "the cat sat down")
    assert one.rate == pytest.approx(1 / 3)
    assert (one.counts.n_insertions, one.counts.n_ref) == (1, 3)
    corpus = wer(["the cat sat", "a dog ran home"], ["The cat sat down.", "a log ran"])
    assert corpus.rate == pytest.approx(3 / 7)  # 1 ins + (1 sub + 1 del) over 3 + 4 words
    assert [u.rate for u in corpus.per_utterance] == pytest.approx([1 / 3, 2 / 4])
    counts = corpus.counts
    assert (counts.n_substitutions, counts.n_deletions, counts.n_insertions) == (1, 1, 1)
    chars = cer("abc d", "abd d", language="es")
    assert chars.rate == pytest.approx(1 / 5)
    assert wer("", "").rate == 0.0 and wer("", "word").rate == math.inf


# ---------------------------------------------------------------- integration


@pytest.mark.integration
def test_tiny_en_transcribes_sentence(tiny_en, piper):
    ref = "Please call Stella and ask her to bring these things with her from the store."
    audio = piper(ref)
    out = transcribe(tiny_en, audio)[0]
    assert wer(ref, out.text).rate <= 0.1, out.text
    assert out.language == "en" and -1.0 < out.avg_logprob < 0.0
    # independent implementation: transformers' own greedy generate, same suppress lists
    feats = tiny_en.feature_extractor(audio, sampling_rate=16_000, return_tensors="pt")
    hf_ids = tiny_en.model.generate(input_features=feats.input_features, max_new_tokens=128)
    assert [t for t in hf_ids[0].tolist() if t < EN_EOT] == list(out.tokens)


@pytest.mark.integration
def test_tiny_en_forced_choice_prefers_spoken_word(tiny_en, piper):
    kwargs = {"carrier": "The word is", "variants": case_and_period}
    apple = forced_choice(tiny_en, piper("The word is apple."), ["apple", "table"], 0, **kwargs)
    table = forced_choice(tiny_en, piper("The word is table."), ["apple", "table"], 1, **kwargs)
    assert apple.correct and table.correct
    assert apple.margin > 2.0 and table.margin > 2.0, (apple, table)
    print(f"forced choice margins: apple {apple.margin:.2f}, table {table.margin:.2f}")


@pytest.mark.integration
def test_base_language_id(base, tmp_path, piper):
    wav = tmp_path / "es.wav"
    text = "hola, ¿cómo estás? me llamo Juan y vivo en Madrid"
    subprocess.run(["espeak-ng", "-v", "es", "-w", str(wav), text], check=True)
    from whisperlens.audio import load_audio

    en, es = language_probs(base, [piper("Please call Stella and ask her."), load_audio(wav)])
    assert next(iter(en)) == "en" and en["en"] > 0.5, list(en.items())[:3]
    assert next(iter(es)) == "es" and es["es"] > 0.5, list(es.items())[:3]
    assert json.dumps(es)  # plain floats, serialisable
    print(f"P(en | English clip) {en['en']:.3f}, P(es | Spanish clip) {es['es']:.3f}")


def test_cli_arguments_become_decode_options():
    from whisperlens.cli import build_parser
    from whisperlens.commands.transcribe import options_from_args

    args = build_parser().parse_args(
        ["transcribe", "a.wav", "--model", "base", "--language", "Spanish", "--timestamps"]
    )
    assert options_from_args(args) == DecodeOptions(language="es", timestamps=True)
    with pytest.raises(DecodingError):
        options_from_args(build_parser().parse_args(["transcribe", "a.wav", "--language", "xx"]))


@pytest.mark.integration
def test_cli_transcribe_json(tmp_path, piper, capsys):
    from whisperlens.audio import save_wav
    from whisperlens.cli import main

    ref = "Please call Stella and ask her to bring these things with her from the store."
    wav = save_wav(tmp_path / "stella.wav", piper(ref), subtype="FLOAT")
    assert main(["transcribe", str(wav), "--model", "tiny.en", "--json", "--timestamps"]) == 0
    record = json.loads(capsys.readouterr().out.strip())
    assert record["path"] == str(wav) and record["model"] == "tiny.en"
    assert record["language"] == "en" and wer(ref, record["text"]).rate <= 0.1
    assert record["segments"][0]["start"] == 0.0 and record["avg_logprob"] < 0
