"""whisperlens.audio: every bad input raises a helpful AudioError; resampling is right."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from whisperlens.audio import load_audio, resample, save_wav, split_windows
from whisperlens.errors import AudioError

SR = 16_000


def _sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(audio: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / sr)[np.argmax(spectrum)])


def _error(source, *match: str, **kwargs) -> str:
    with pytest.raises(AudioError) as info:
        load_audio(source, **kwargs)
    message = str(info.value)
    for fragment in match:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert info.value.fix, "every AudioError must say how to fix it"
    return message


# --- bad files ------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    _error(tmp_path / "nope.wav", "nope.wav", "does not exist")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    _error(path, "empty.wav", "empty (0 bytes)")


def test_zero_length_wav(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, np.float32), SR)
    assert path.stat().st_size > 0  # a valid header, no frames
    _error(path, "zero.wav", "no samples")


def test_random_bytes_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    _error(path, "noise.wav", "not readable audio")


def test_truncated_header(tmp_path: Path) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, _sine(440, SR, 1.0), SR, subtype="PCM_16")
    cut = tmp_path / "cut_header.wav"
    cut.write_bytes(good.read_bytes()[:30])
    _error(cut, "cut_header.wav")


def test_truncated_data(tmp_path: Path) -> None:
    good = tmp_path / "good.wav"
    sf.write(good, _sine(440, SR, 1.0), SR, subtype="PCM_16")
    data = good.read_bytes()
    cut = tmp_path / "cut_data.wav"
    cut.write_bytes(data[: len(data) // 2])
    # libsndfile alone would return 0.5 s here without complaint
    assert sf.info(cut).frames < SR
    _error(cut, "cut_data.wav", "truncated")


def test_nan_float_wav(tmp_path: Path) -> None:
    audio = _sine(440, SR, 0.5)
    audio[100] = np.nan
    audio[200] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(path, audio, SR, subtype="FLOAT")
    _error(path, "nan.wav", "2 non-finite")


def test_too_long_is_an_error_not_a_truncation(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, np.full(31 * SR, 0.1, np.float32), SR, subtype="PCM_16")
    _error(path, "long.wav", "31.00 s", "long='split'", "split_windows")
    windows = load_audio(path, long="split")
    assert [len(w) for w in windows] == [30 * SR, SR]
    np.testing.assert_allclose(np.concatenate(windows), 0.1, atol=1 / 32768)


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "notes.xyz"
    path.write_text("this is not audio\n" * 20)
    _error(path, "notes.xyz", "unsupported format '.xyz'", "sox")


def test_file_rate_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, _sine(440, 8000, 0.2), 8000)
    _error(path, "a.wav", "8000 Hz", sample_rate=16000)


def test_directory(tmp_path: Path) -> None:
    _error(tmp_path, "directory")


# --- bad arrays -----------------------------------------------------------------------


def test_array_needs_sample_rate() -> None:
    _error(np.zeros(100, np.float32), "no sample rate", "sample_rate=")


@pytest.mark.parametrize("rate", [0, -16000, 44100.5, True, 10_000_000])
def test_array_bad_sample_rate(rate) -> None:
    _error(np.zeros(100, np.float32), "not a valid rate", sample_rate=rate)


def test_array_bad_content() -> None:
    _error(np.zeros(0, np.float32), "no samples", sample_rate=SR)
    _error(np.array([0.0, np.nan], np.float32), "1 non-finite", sample_rate=SR)
    _error(np.zeros((2, 3, 4), np.float32), "3 dimensions", sample_rate=SR)
    _error(np.zeros(10, np.complex64), "not audio", sample_rate=SR)
    _error([0.0, 0.1], "list", sample_rate=SR)
    _error(np.zeros(31 * SR, np.float32), "31.00 s", sample_rate=SR)


# --- conversions ----------------------------------------------------------------------


@pytest.mark.parametrize("orig_sr", [8000, 44100, 22050])
def test_resampled_sine_keeps_frequency_and_length(orig_sr: int) -> None:
    seconds = 1.25
    out = load_audio(_sine(1000, orig_sr, seconds), sample_rate=orig_sr)
    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) == math.ceil(round(orig_sr * seconds) * SR / orig_sr) == 20_000
    assert abs(_peak_hz(out, SR) - 1000.0) <= 1.0
    # amplitude is preserved away from the edges (polyphase FIR, unit gain)
    mid = out[2000:-2000]
    assert abs(np.sqrt(np.mean(mid**2)) - 0.5 / np.sqrt(2)) < 0.01


def test_resample_identity_and_ratio() -> None:
    x = _sine(300, SR, 0.1)
    np.testing.assert_array_equal(resample(x, SR, SR), x)
    assert len(resample(np.ones(441, np.float32), 44100, SR)) == 160


def test_stereo_is_channel_mean(tmp_path: Path) -> None:
    left, right = _sine(440, SR, 0.5, 0.3), _sine(660, SR, 0.5, 0.6)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), SR, subtype="FLOAT")
    expected = (left.astype(np.float64) + right) / 2
    np.testing.assert_allclose(load_audio(path), expected, atol=1e-7)
    # arrays: [samples, channels] and [channels, samples] give the same
    np.testing.assert_allclose(
        load_audio(np.stack([left, right], 1), SR), load_audio(np.stack([left, right]), SR)
    )


def test_integer_pcm_is_normalised_by_dtype() -> None:
    x16 = np.array([-32768, 0, 16384, 32767] * 10, np.int16)
    np.testing.assert_array_equal(load_audio(x16, SR)[:4], [-1.0, 0.0, 0.5, 32767 / 32768])
    x32 = np.array([-(2**31), 2**30] * 10, np.int32)
    np.testing.assert_array_equal(load_audio(x32, SR)[:2], [-1.0, 0.5])
    xu8 = np.array([0, 128, 192] * 10, np.uint8)
    np.testing.assert_array_equal(load_audio(xu8, SR)[:3], [-1.0, 0.0, 0.5])


def test_torch_tensor_input() -> None:
    x = _sine(500, SR, 0.2)
    np.testing.assert_array_equal(load_audio(torch.from_numpy(x), sample_rate=SR), x)


@pytest.mark.parametrize(
    ("ext", "subtype", "tol"),
    [("flac", "PCM_16", 1 / 32768), ("ogg", "VORBIS", None), ("mp3", "MPEG_LAYER_III", None)],
)
def test_compressed_round_trip(tmp_path: Path, ext: str, subtype: str, tol: float | None) -> None:
    x = _sine(1000, 44100, 1.0)
    path = tmp_path / f"tone.{ext}"
    sf.write(path, x, 44100, subtype=subtype)
    out = load_audio(path)
    expected = resample(x, 44100, SR)
    assert len(out) == len(expected) == SR
    if tol is not None:  # lossless
        np.testing.assert_allclose(out, expected, atol=2 * tol)
    else:  # lossy: same tone, same level
        assert abs(_peak_hz(out, SR) - 1000.0) <= 1.0
        assert np.corrcoef(out[1000:-1000], expected[1000:-1000])[0, 1] > 0.99


def test_split_windows_documented_shape() -> None:
    x = np.arange(int(65.5 * SR), dtype=np.float32)
    windows = split_windows(x)
    assert [len(w) for w in windows] == [30 * SR, 30 * SR, int(5.5 * SR)]
    np.testing.assert_array_equal(np.concatenate(windows), x)
    assert split_windows(np.zeros(0, np.float32)) == []
    assert [len(w) for w in split_windows(x[: 2 * SR], window_s=0.5)] == [SR // 2] * 4


def test_save_wav_atomic_pcm_and_float(tmp_path: Path) -> None:
    x = _sine(440, SR, 0.3)
    x[0] = 1.5  # clipped, not wrapped, in PCM16
    pcm = save_wav(tmp_path / "sub" / "pcm.wav", x)
    info = sf.info(pcm)
    assert (info.samplerate, info.subtype) == (SR, "PCM_16")
    read = sf.read(pcm, dtype="float32")[0]
    assert read[0] == pytest.approx(32767 / 32768)
    np.testing.assert_allclose(read[1:], x[1:], atol=1 / 32768)
    flt = save_wav(tmp_path / "float.wav", x, subtype="FLOAT")
    np.testing.assert_array_equal(sf.read(flt, dtype="float32")[0], x)
    assert b"PEAK" not in flt.read_bytes()  # its timestamp would break byte-identity
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["float.wav", "pcm.wav", "sub"]
    with pytest.raises(AudioError, match="non-finite"):
        save_wav(tmp_path / "bad.wav", np.array([np.nan], np.float32))
    assert not (tmp_path / "bad.wav").exists()
