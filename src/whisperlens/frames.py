"""Time <-> encoder-frame bookkeeping.

Whisper's log-mel has 100 frames per second (hop 160 at 16 kHz); the encoder's
second convolution has stride 2, so one encoder position covers 20 ms. The encoder
always sees a 30 s window: 3000 mel frames -> 1500 encoder frames, the tail being
padding when the audio is shorter.
"""

from __future__ import annotations

import math

SAMPLE_RATE = 16_000
HOP_LENGTH = 160
MEL_FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100
ENCODER_FRAME_SECONDS = 0.02  # 2 mel frames per encoder frame
WINDOW_SECONDS = 30.0
N_MEL_FRAMES = 3000
N_ENCODER_FRAMES = 1500


def seconds_to_frame(t: float) -> int:
    """Index of the encoder frame that contains time ``t`` (seconds)."""
    if t < 0:
        raise ValueError(f"time must be >= 0, got {t}")
    return min(int(math.floor(t / ENCODER_FRAME_SECONDS + 1e-9)), N_ENCODER_FRAMES - 1)


def frames_for_span(start_s: float, end_s: float) -> slice:
    """Encoder frames overlapping the time span [start_s, end_s)."""
    if end_s < start_s:
        raise ValueError(f"span end {end_s} is before its start {start_s}")
    first = seconds_to_frame(start_s)
    last = min(math.ceil(end_s / ENCODER_FRAME_SECONDS - 1e-9), N_ENCODER_FRAMES)
    return slice(first, max(last, first + 1))


def n_audio_frames(n_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Number of encoder frames that cover any real audio (the rest is padding)."""
    seconds = n_samples / sample_rate
    return min(math.ceil(seconds / ENCODER_FRAME_SECONDS - 1e-9), N_ENCODER_FRAMES)
