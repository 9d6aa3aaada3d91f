"""Audio -> Whisper log-mel input features, and telling the two apart.

This is the one boundary between audio and the model: :func:`as_features` (and through it
:func:`whisperlens.decoding.encode`, ``HookedWhisper.features`` and ``.encode``) validates
every waveform as :func:`whisperlens.audio.load_audio` validates arrays
(:func:`whisperlens.audio.as_clip`): integer PCM (int16, int32, uint8) is scaled by its
dtype range, as ``load_audio`` does; empty, non-finite, multi-channel (not 1-D) and over-30 s
waveforms are refused with an ``AudioError`` or ``ShapeError`` naming the clip and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from whisperlens.audio import as_clip
from whisperlens.errors import ShapeError
from whisperlens.frames import N_MEL_FRAMES, SAMPLE_RATE

AudioLike = np.ndarray | torch.Tensor
AudioOrFeatures = AudioLike | Sequence[AudioLike]


class WhisperLike(Protocol):
    """A LoadedWhisper or HookedWhisper: all the decoding and scoring code needs."""

    model: Any  # transformers WhisperForConditionalGeneration
    processor: Any  # WhisperProcessor: .tokenizer and .feature_extractor


def log_mel(model: WhisperLike, audio: AudioLike | Sequence[AudioLike]) -> torch.Tensor:
    """Log-mel features [batch, n_mels, 3000] for 16 kHz mono audio (one clip or a list).

    Uses the model's own ``WhisperFeatureExtractor``, which pads the *waveform* to 30 s
    (as transformers and openai-whisper do). Each clip is checked by
    :func:`whisperlens.audio.as_clip` (see the module docstring); clips longer than 30 s
    are refused: split them first with ``whisperlens.audio.split_windows``.
    """
    single = _is_single_clip(audio)
    clips = [audio] if single else list(audio)  # type: ignore[arg-type]
    if not clips:
        raise ShapeError("no audio clips given", "pass one 1-D waveform or a non-empty list")
    arrays = [
        as_clip(clip, "audio array" if single else f"audio clip {i}")
        for i, clip in enumerate(clips)
    ]
    out = model.processor.feature_extractor(arrays, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    param = next(model.model.parameters())
    return out.input_features.to(device=param.device, dtype=param.dtype)


def as_features(model: WhisperLike, audio_or_features: AudioOrFeatures) -> torch.Tensor:
    """Log-mel features [batch, n_mels, 3000] from features ([n_mels, 3000] or [batch,
    n_mels, 3000], a torch tensor) or audio (one 1-D waveform or a list of them).

    ``model`` is anything with ``.model`` (a transformers ``WhisperForConditionalGeneration``)
    and ``.processor``; the mel count, device and dtype are read off ``model.model``.
    """
    x = audio_or_features
    n_mels = int(model.model.config.num_mel_bins)
    if isinstance(x, torch.Tensor) and x.ndim in (2, 3) and x.shape[-2] == n_mels:
        if x.shape[-1] != N_MEL_FRAMES:
            raise ShapeError(
                f"features have {x.shape[-1]} mel frames; the encoder accepts exactly {N_MEL_FRAMES}",
                "pad or compute them with whisperlens.features.log_mel",
            )
        x = x if x.ndim == 3 else x.unsqueeze(0)
        param = next(model.model.parameters())
        return x.to(device=param.device, dtype=param.dtype)
    if isinstance(x, torch.Tensor) and x.ndim in (2, 3) and x.shape[-1] == N_MEL_FRAMES:
        raise ShapeError(
            f"features have {x.shape[-2]} mel bins; this model takes {n_mels}",
            "compute them with whisperlens.features.log_mel(model, audio)",
        )
    return log_mel(model, x)  # type: ignore[arg-type]


def _is_single_clip(audio: object) -> bool:
    """An array or tensor is one clip (checked to be 1-D later); a list holds clips."""
    return isinstance(audio, torch.Tensor | np.ndarray)
