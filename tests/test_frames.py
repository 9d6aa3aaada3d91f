"""Time <-> encoder-frame arithmetic against hand counts (20 ms per encoder frame)."""

from __future__ import annotations

import pytest

from whisperlens.frames import frames_for_span, n_audio_frames, seconds_to_frame


@pytest.mark.parametrize(
    ("n_samples", "expected"),
    [(0, 0), (1, 1), (320, 1), (321, 2), (16_000, 50), (16_001, 51), (40 * 16_000, 1500)],
)
def test_n_audio_frames(n_samples: int, expected: int) -> None:
    assert n_audio_frames(n_samples) == expected
    assert n_audio_frames(n_samples * 3, sample_rate=48_000) == expected


def test_spans_and_frames() -> None:
    assert seconds_to_frame(0.0) == 0 and seconds_to_frame(0.0399) == 1
    assert seconds_to_frame(99.0) == 1499
    assert frames_for_span(0.5, 0.8) == slice(25, 40)
    assert frames_for_span(0.5, 0.5) == slice(25, 26)  # never empty
    with pytest.raises(ValueError, match="before its start"):
        frames_for_span(0.8, 0.5)
    with pytest.raises(ValueError, match=">= 0"):
        seconds_to_frame(-0.1)
