"""Assemble a transformers Whisper from CTranslate2 (or openai-whisper) weights and tokenizer.

``convert_ct2`` turns the files of a CTranslate2 / faster-whisper model (``model.bin``,
``config.json``, ``tokenizer.json``) into a verified ``WhisperForConditionalGeneration`` and
``WhisperProcessor``: the tokenizer gets Whisper's timestamp tokens, the special-token ids
are checked against the vocabulary size, the model and generation configs are derived from
the weights' shapes, and ``assemble_model`` fails unless every parameter is filled
(``CorruptWeightsError``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from whisperlens.errors import CorruptWeightsError
from whisperlens.models.ctranslate2 import ct2_dims, ct2_state_dict, read_model_bin
from whisperlens.models.registry import CT2_TOKENIZER, SourceFiles, WhisperDims
from whisperlens.tokens import SpecialTokens, TokenizerError, read_special_tokens

__all__ = [
    "assemble_model",
    "assemble_whisper",
    "build_processor",
    "build_tokenizer",
    "convert_ct2",
    "generation_config",
    "special_tokens",
    "whisper_config",
]

# ---------------------------------------------------------------- tokenizer and configs


def build_tokenizer(tokenizer_json: Path, n_vocab: int) -> WhisperTokenizer:
    """A WhisperTokenizer from a CTranslate2 ``tokenizer.json``, timestamp tokens added."""
    raw = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    specials = [t["content"] for t in raw["added_tokens"] if t.get("special")]
    settings = {
        "tokenizer_class": "WhisperTokenizer",
        **dict.fromkeys(("unk_token", "bos_token", "eos_token", "pad_token"), "<|endoftext|>"),
        "additional_special_tokens": specials,  # order matters: last is <|notimestamps|>
        "model_max_length": 1024,
    }
    with tempfile.TemporaryDirectory(prefix="whisperlens-tok-") as tmp:
        shutil.copyfile(tokenizer_json, Path(tmp) / CT2_TOKENIZER)
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
        tokenizer = WhisperTokenizer.from_pretrained(tmp)
    n_missing = n_vocab - len(tokenizer)
    if n_missing > 0:  # the timestamps <|0.00|> ... <|30.00|>, named as ctranslate2 does
        tokenizer.add_tokens(["<|%.2f|>" % (i * 0.02) for i in range(n_missing)])
    if len(tokenizer) != n_vocab:
        raise CorruptWeightsError(
            f"{tokenizer_json} has {len(tokenizer)} tokens but the model's vocabulary has {n_vocab}",
            "the tokenizer does not belong to these weights; use the files shipped together",
        )
    return tokenizer


def special_tokens(tokenizer: WhisperTokenizer, n_vocab: int) -> SpecialTokens:
    """Special ids read from the tokenizer, checked against the vocabulary-size rule."""
    try:
        sp = read_special_tokens(tokenizer, n_vocab)
    except TokenizerError as exc:
        raise CorruptWeightsError(f"{exc.cause}; it is not Whisper's") from None
    tasks = [sp.translate, sp.transcribe, sp.sot_lm, sp.sot_prev, sp.nocaptions, sp.notimestamps]
    contiguous = [t - sp.translate for t in tasks] == list(range(6))
    if sp.sot != (50258 if sp.multilingual else 50257) or not contiguous or sp.eot != sp.sot - 1:
        raise CorruptWeightsError(
            f"<|startoftranscript|> has id {sp.sot} and the task tokens {tasks}, which do not "
            f"fit a vocabulary of {n_vocab}",
            "the tokenizer does not belong to these weights",
        )
    return sp


def whisper_config(dims: WhisperDims, sp: SpecialTokens) -> WhisperConfig:
    return WhisperConfig(
        vocab_size=dims.n_vocab,
        num_mel_bins=dims.n_mels,
        d_model=dims.n_audio_state,
        encoder_layers=dims.n_audio_layer,
        encoder_attention_heads=dims.n_audio_head,
        decoder_layers=dims.n_text_layer,
        decoder_attention_heads=dims.n_text_head,
        encoder_ffn_dim=dims.n_audio_ffn or 4 * dims.n_audio_state,
        decoder_ffn_dim=dims.n_text_ffn or 4 * dims.n_text_state,
        max_source_positions=dims.n_audio_ctx,
        max_target_positions=dims.n_text_ctx,
        pad_token_id=sp.eot,
        bos_token_id=sp.eot,
        eos_token_id=sp.eot,
        decoder_start_token_id=sp.sot,
        suppress_tokens=None,  # generation settings live in the generation config only
        begin_suppress_tokens=None,
        tie_word_embeddings=True,
    )


def generation_config(dims: WhisperDims, sp: SpecialTokens, ct2_config: dict) -> GenerationConfig:
    """The Whisper-specific generation settings transformers' ``generate`` needs."""
    heads = ct2_config.get("alignment_heads") or [
        [layer, head]
        for layer in range(dims.n_text_layer // 2, dims.n_text_layer)
        for head in range(dims.n_text_head)
    ]
    extra: dict[str, Any] = {}
    if sp.multilingual:
        # transformers keys languages by token, canonical code ("<|he|>" even for <|iw|>)
        extra["lang_to_id"] = {f"<|{code}|>": i for code, i in sp.languages.items()}
        extra["task_to_id"] = {"transcribe": sp.transcribe, "translate": sp.translate}
    return GenerationConfig(
        bos_token_id=sp.eot,
        eos_token_id=sp.eot,
        pad_token_id=sp.eot,
        decoder_start_token_id=sp.sot,
        max_length=dims.n_text_ctx,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, sp.eot])),
        alignment_heads=[list(h) for h in heads],
        no_timestamps_token_id=sp.notimestamps,
        prev_sot_token_id=sp.sot_prev,
        is_multilingual=sp.multilingual,
        max_initial_timestamp_index=50,
        return_timestamps=False,
        **extra,
    )


# ---------------------------------------------------------------- model assembly


def assemble_model(config: WhisperConfig, state: dict[str, torch.Tensor]) -> Any:
    """Build the model on the meta device and fill it from ``state``, verifying coverage.

    Raises CorruptWeightsError when a parameter or buffer would stay unfilled, when the
    source has a tensor the model does not, or when a shape differs.
    """
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise CorruptWeightsError(
            f"conversion does not fill the model: {len(missing)} unfilled {missing[:5]}, "
            f"{len(unexpected)} unexpected {unexpected[:5]}, {len(wrong)} wrong shape {wrong[:5]}",
            "the source is incomplete or not a standard Whisper; reinstall or re-convert it",
        )
    model.load_state_dict(state, strict=True, assign=True)
    model.proj_out.weight = model.model.decoder.embed_tokens.weight  # tied, as in Whisper
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CorruptWeightsError(f"parameters left unfilled after loading: {left[:5]}")
    return model.eval()


def build_processor(tokenizer: WhisperTokenizer, n_mels: int) -> WhisperProcessor:
    return WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=n_mels), tokenizer=tokenizer
    )


def assemble_whisper(
    dims: WhisperDims, state: dict[str, torch.Tensor], tokenizer_json: Path, ct2_config: dict
) -> tuple[Any, WhisperProcessor]:
    """A verified model + processor from a state dict, a ``tokenizer.json`` and CT2 settings.

    ``ct2_config`` is a CTranslate2 ``config.json`` (suppress lists, alignment heads).
    """
    tokenizer = build_tokenizer(tokenizer_json, dims.n_vocab)
    sp = special_tokens(tokenizer, dims.n_vocab)
    model = assemble_model(whisper_config(dims, sp), state)
    model.generation_config = generation_config(dims, sp, ct2_config)
    return model, build_processor(tokenizer, dims.n_mels)


def convert_ct2(files: SourceFiles) -> tuple[Any, WhisperProcessor]:
    """A verified transformers model + processor from CTranslate2 files (float32, eval)."""
    ct2 = read_model_bin(files.bin_parts)
    dims = ct2_dims(ct2)
    state = ct2_state_dict(ct2, dims)
    ct2_config = json.loads(files.config.read_text(encoding="utf-8"))
    return assemble_whisper(dims, state, files.tokenizer, ct2_config)
