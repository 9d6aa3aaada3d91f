"""The loaded-model objects every other module works with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

MULTILINGUAL_VOCAB_SIZE = 51865  # .en vocabularies have 51864 entries


@dataclass
class LoadedWhisper:
    """A transformers Whisper model with its processor and provenance.

    ``model`` is a plain ``WhisperForConditionalGeneration`` in eval mode; wrap it in
    :class:`whisperlens.hooks.HookedWhisper` for hook points.
    """

    model: WhisperForConditionalGeneration
    processor: WhisperProcessor | Any  # anything with .feature_extractor and .tokenizer
    name: str  # what the user asked for ("tiny.en", "openai/whisper-base", a path)
    source: str  # how it was loaded: "package", "hub", "transformers-dir", "ctranslate2-dir", "openai-pt"
    info: dict[str, Any] = field(default_factory=dict)  # free-form provenance (package, hash, ...)

    @property
    def config(self):
        return self.model.config

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def feature_extractor(self):
        return self.processor.feature_extractor

    @property
    def n_layers(self) -> int:
        """Encoder layers."""
        return int(self.config.encoder_layers)

    @property
    def n_decoder_layers(self) -> int:
        return int(self.config.decoder_layers)

    @property
    def d_model(self) -> int:
        return int(self.config.d_model)

    @property
    def n_heads(self) -> int:
        return int(self.config.encoder_attention_heads)

    @property
    def n_mels(self) -> int:
        return int(self.config.num_mel_bins)

    @property
    def multilingual(self) -> bool:
        """Decided by vocabulary size (51865+), which is reliable across sources."""
        return int(self.config.vocab_size) >= MULTILINGUAL_VOCAB_SIZE

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def __repr__(self) -> str:
        return (
            f"LoadedWhisper(name={self.name!r}, source={self.source!r}, n_layers={self.n_layers}, "
            f"d_model={self.d_model}, n_heads={self.n_heads}, multilingual={self.multilingual})"
        )
