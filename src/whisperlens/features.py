"""Audio -> Whisper log-mel input features, and telling the two apart."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from whisperlens.errors import ShapeError
from whisperlens.frames import N_MEL_FRAMES, SAMPLE_RATE
from whisperlens.models.base import LoadedWhisper

AudioLike = np.ndarray | torch.Tensor
AudioOrFeatures = AudioLike | Sequence[AudioLike]


def log_mel(loaded: LoadedWhisper, audio: AudioLike | Sequence[AudioLike]) -> torch.Tensor:
    """Log-mel features [batch, n_mels, 3000] for 16 kHz mono audio (one clip or a list).

    Uses the model's own ``WhisperFeatureExtractor``, which pads the *waveform* to 30 s
    (as transformers and openai-whisper do). Clips longer than 30 s are refused: split
    them first with ``whisperlens.audio.split_windows``.
    """
    clips = [audio] if _is_single_clip(audio) else list(audio)  # type: ignore[arg-type]
    arrays = []
    for i, clip in enumerate(clips):
        arr = clip.detach().cpu().numpy() if isinstance(clip, torch.Tensor) else np.asarray(clip)
        if arr.ndim != 1:
            raise ShapeError(
                f"audio clip {i} has shape {arr.shape}, expected a 1-D 16 kHz mono waveform",
                "load it with whisperlens.audio.load_audio, which mixes to mono and resamples",
            )
        if arr.shape[0] > N_MEL_FRAMES * 160:
            raise ShapeError(
                f"audio clip {i} is {arr.shape[0] / SAMPLE_RATE:.1f} s long; Whisper sees 30 s",
                "split it with whisperlens.audio.split_windows",
            )
        arrays.append(arr.astype(np.float32, copy=False))
    out = loaded.feature_extractor(arrays, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    return out.input_features.to(device=loaded.device, dtype=loaded.dtype)


def as_features(loaded: LoadedWhisper, audio_or_features: AudioOrFeatures) -> torch.Tensor:
    """Accept log-mel features ([n_mels, 3000] or [batch, n_mels, 3000]) or audio; return features."""
    x = audio_or_features
    if isinstance(x, torch.Tensor) and x.ndim in (2, 3) and x.shape[-2] == loaded.n_mels:
        if x.shape[-1] != N_MEL_FRAMES:
            raise ShapeError(
                f"features have {x.shape[-1]} mel frames; the encoder accepts exactly {N_MEL_FRAMES}",
                "pad or compute them with whisperlens.features.log_mel",
            )
        x = x if x.ndim == 3 else x.unsqueeze(0)
        return x.to(device=loaded.device, dtype=loaded.dtype)
    return log_mel(loaded, x)  # type: ignore[arg-type]


def _is_single_clip(audio: object) -> bool:
    if isinstance(audio, torch.Tensor | np.ndarray):
        return audio.ndim == 1
    return False
