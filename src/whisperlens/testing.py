"""Tiny random Whisper models for unit tests of exact properties (no weights needed)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from whisperlens.models.base import LoadedWhisper


def tiny_random_whisper(
    seed: int = 0,
    *,
    n_layers: int = 2,
    d_model: int = 16,
    n_heads: int = 2,
    vocab_size: int = 51864,
    tokenizer=None,
) -> LoadedWhisper:
    """A randomly initialised Whisper with real Whisper geometry (80 mels, 1500 frames).

    The default vocabulary size matches the English-only tokenizer, so a real
    tokenizer can be passed for decoding tests.
    """
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=80,
        d_model=d_model,
        encoder_layers=n_layers,
        decoder_layers=n_layers,
        encoder_attention_heads=n_heads,
        decoder_attention_heads=n_heads,
        encoder_ffn_dim=4 * d_model,
        decoder_ffn_dim=4 * d_model,
        max_source_positions=1500,
        max_target_positions=64,
        decoder_start_token_id=50257,
        pad_token_id=50256,
        eos_token_id=50256,
        bos_token_id=50256,
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    model = WhisperForConditionalGeneration(config).eval()
    # random weights are tiny; scale them up so activations are not all ~0
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.2)
    processor = SimpleNamespace(
        feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer
    )
    return LoadedWhisper(
        model=model, processor=processor, name=f"tiny-random-{seed}", source="random"
    )
