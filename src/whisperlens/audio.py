"""Audio in: load, validate, mix to mono, resample to 16 kHz; split and save.

Every array whisperlens feeds to Whisper comes through :func:`load_audio`: float32,
mono, 16 kHz, finite, non-empty and at most one 30 s window long (or explicitly split
into windows). Anything else raises :class:`~whisperlens.errors.AudioError` naming the
file (or array), the cause and the fix. Nothing is ever silently truncated.

Files are decoded by libsndfile (via ``soundfile``): WAV, FLAC, OGG/Vorbis, Opus, MP3
(libsndfile >= 1.1), AIFF, CAF and the other formats it reports. Resampling uses a
polyphase FIR filter (``scipy.signal.resample_poly``) with the gcd-reduced ratio.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import soundfile as sf

from whisperlens._io import atomic_path
from whisperlens.errors import AudioError, ShapeError
from whisperlens.frames import SAMPLE_RATE, WINDOW_SECONDS

LongPolicy = Literal["error", "split"]
WavSubtype = Literal["PCM_16", "FLOAT"]
AudioSource = str | os.PathLike[str] | np.ndarray | Any  # Any: a torch.Tensor

MAX_SECONDS = WINDOW_SECONDS  # longest audio one Whisper window holds
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
_SFC_SET_ADD_PEAK_CHUNK = 0x1050  # libsndfile command id (sndfile.h)
# Extensions whose container libsndfile decodes (it detects the format from the header).
KNOWN_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc"}
    | {".au", ".snd", ".caf", ".w64", ".rf64", ".voc", ".sf", ".nist", ".sph", ".htk"}
)
_SPLIT_HINT = (
    "pass long='split' to load_audio to get 30 s windows, or cut the array with "
    "whisperlens.audio.split_windows(audio)"
)


@overload
def load_audio(
    source: AudioSource, sample_rate: int | None = None, *, long: Literal["error"] = "error"
) -> np.ndarray: ...
@overload
def load_audio(
    source: AudioSource, sample_rate: int | None = None, *, long: Literal["split"]
) -> list[np.ndarray]: ...
def load_audio(
    source: AudioSource, sample_rate: int | None = None, *, long: LongPolicy = "error"
) -> np.ndarray | list[np.ndarray]:
    """Load ``source`` as float32 mono 16 kHz audio, validated.

    Args:
        source: a file path, or a numpy array / torch tensor of samples: 1-D mono, or
            2-D multichannel as ``[samples, channels]`` or ``[channels, samples]`` (the
            shorter axis is taken as channels). Integer PCM is scaled by its dtype range.
        sample_rate: rate of ``source``. Required for arrays; for files optional and, if
            given, checked against the file header.
        long: what to do with audio over 30 s. ``"error"`` (default) raises AudioError;
            ``"split"`` returns a list of consecutive 30 s windows (the last may be
            shorter), always a list, even for short audio.

    Returns:
        A 1-D float32 array at 16 kHz, or a list of them when ``long="split"``.
    """
    if long not in ("error", "split"):
        raise ValueError(f"long must be 'error' or 'split', got {long!r}")
    if isinstance(source, str | os.PathLike):
        samples, rate, name = _read_file(Path(source), sample_rate)
    else:
        samples, rate, name = _from_array(source, sample_rate)
    audio = _to_mono(samples, name)
    _check_content(audio, name)
    audio = resample(audio, rate, SAMPLE_RATE)
    if long == "split":
        return split_windows(audio)
    _check_length(audio, name)
    return audio


def as_clip(source: Any, name: str = "audio array") -> np.ndarray:
    """One 16 kHz mono waveform, checked as :func:`load_audio` checks arrays, as float32.

    For audio that is already 16 kHz mono (the model boundary,
    :func:`whisperlens.features.as_features`, calls this on every clip). ``source`` is a
    numpy array or torch tensor; integer PCM is scaled by its dtype range (int16 32767 ->
    ~1.0), as :func:`load_audio` does. Nothing is mixed or resampled, so it must be 1-D
    (ShapeError otherwise), non-empty, finite and at most 30 s long (AudioError otherwise).
    """
    samples = _normalise_dtype(_as_array(source), name)
    if samples.ndim != 1:
        raise ShapeError(
            f"{name} has shape {samples.shape}, expected a 1-D 16 kHz mono waveform",
            "load it with whisperlens.audio.load_audio, which mixes to mono and resamples",
        )
    _check_content(samples, name)
    _check_length(samples, name)
    return samples


def split_windows(
    audio: np.ndarray, window_s: float = WINDOW_SECONDS, sample_rate: int = SAMPLE_RATE
) -> list[np.ndarray]:
    """Cut 1-D ``audio`` into consecutive non-overlapping windows of ``window_s`` seconds.

    Every window but the last holds exactly ``round(window_s * sample_rate)`` samples; the
    last holds the remainder (it is not padded). The windows concatenate back to ``audio``.
    Empty audio gives an empty list.
    """
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"split_windows needs 1-D audio, got shape {audio.shape}")
    size = round(window_s * sample_rate)
    return [audio[i : i + size] for i in range(0, len(audio), size)]


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of 1-D ``audio`` from ``orig_sr`` to ``target_sr`` (float32).

    The output has ``ceil(len(audio) * target_sr / orig_sr)`` samples.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if orig_sr == target_sr:
        return np.ascontiguousarray(audio)
    from scipy.signal import resample_poly  # scipy.signal takes ~1 s to import

    g = math.gcd(int(orig_sr), int(target_sr))
    out = resample_poly(audio.astype(np.float64), target_sr // g, orig_sr // g)
    return np.ascontiguousarray(out, dtype=np.float32)


def save_wav(
    path: str | os.PathLike[str],
    audio: np.ndarray,
    sr: int = SAMPLE_RATE,
    *,
    subtype: WavSubtype = "PCM_16",
) -> Path:
    """Write ``audio`` (1-D, or ``[samples, channels]``) as a WAV file, atomically.

    ``PCM_16`` clips to [-1, 1] first (so loud samples saturate instead of wrapping);
    ``FLOAT`` stores float32 exactly. Same audio, same bytes (no timestamp chunk).
    Returns the path written.
    """
    path = Path(path)
    data = np.asarray(audio, dtype=np.float32)
    if data.ndim not in (1, 2) or data.size == 0:
        raise AudioError(
            f"cannot write {path}: audio has shape {data.shape}",
            "pass a non-empty 1-D array (or [samples, channels])",
        )
    if not np.isfinite(data).all():
        raise AudioError(
            f"cannot write {path}: audio has non-finite samples", "clean it with np.nan_to_num"
        )
    if subtype == "PCM_16":
        data = np.clip(data, -1.0, 1.0)
    channels = 1 if data.ndim == 1 else data.shape[1]
    with (
        atomic_path(path) as tmp,
        sf.SoundFile(tmp, "w", int(sr), channels, subtype=subtype, format="WAV") as f,
    ):
        _no_peak_chunk(f)
        f.write(data)
    return path


def _no_peak_chunk(f: sf.SoundFile) -> None:
    """Stop libsndfile adding a PEAK chunk to float WAVs: it holds a timestamp, which would
    make identical audio give different bytes. (soundfile has no public API for it.)"""
    lib, ffi = getattr(sf, "_snd", None), getattr(sf, "_ffi", None)
    if lib is not None and ffi is not None:
        lib.sf_command(f._file, _SFC_SET_ADD_PEAK_CHUNK, ffi.NULL, 0)


# --- files -----------------------------------------------------------------------------


def _read_file(path: Path, sample_rate: int | None) -> tuple[np.ndarray, int, str]:
    name = f"audio file '{path}'"
    if not path.exists():
        raise AudioError(f"{name} does not exist", "check the path (relative to the cwd?)")
    if path.is_dir():
        raise AudioError(f"{name} is a directory", "pass the path of one audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{name} is empty (0 bytes)", "re-record or re-export the file")
    _check_wav_truncation(path, name)
    try:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise _decode_error(path, name, exc) from exc
    if sample_rate is not None and int(sample_rate) != rate:
        raise AudioError(
            f"{name} is {rate} Hz but sample_rate={sample_rate} was passed",
            "leave sample_rate=None for files (the header gives it) or fix the value",
        )
    return samples, int(rate), name


def _decode_error(path: Path, name: str, exc: Exception) -> AudioError:
    ext = path.suffix.lower()
    if ext not in KNOWN_EXTENSIONS:
        known = ", ".join(sorted(e.lstrip(".") for e in KNOWN_EXTENSIONS))
        return AudioError(
            f"{name} has unsupported format '{ext or '(no extension)'}' ({exc})",
            f"convert it, e.g. `sox in{ext} out.wav` or `ffmpeg -i in{ext} out.wav`; "
            f"readable formats: {known}",
        )
    return AudioError(
        f"{name} is not readable audio: not an audio file, corrupt or truncated ({exc})",
        "re-export the file (e.g. `sox in.wav out.wav` if sox can read it) or regenerate it",
    )


def _check_wav_truncation(path: Path, name: str) -> None:
    """RIFF/WAVE only: raise if the data chunk claims more bytes than the file holds.

    libsndfile reads a truncated WAV without complaint, returning fewer frames than the
    header promises; that is a corrupt file, not short audio.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return
        fmt = "<I" if head[:4] == b"RIFF" else ">I"
        while chunk := f.read(8):
            if len(chunk) < 8:
                break
            chunk_id, chunk_size = chunk[:4], struct.unpack(fmt, chunk[4:])[0]
            if chunk_id == b"data":
                missing = f.tell() + chunk_size - size
                if chunk_size not in (0, 0xFFFFFFFF) and missing > 0:
                    raise AudioError(
                        f"{name} is truncated: its header declares {chunk_size} data bytes "
                        f"but the file ends {missing} bytes early",
                        "re-export or re-download the file",
                    )
                return
            f.seek(chunk_size + (chunk_size & 1), os.SEEK_CUR)


# --- arrays ----------------------------------------------------------------------------


def _as_array(source: Any) -> np.ndarray:
    """A numpy array from a numpy array or torch tensor (on any device)."""
    if hasattr(source, "detach") and hasattr(source, "cpu"):  # torch.Tensor
        source = source.detach().cpu()
        source = (source.float() if source.is_floating_point() else source).numpy()
    if not isinstance(source, np.ndarray):
        raise AudioError(
            f"cannot load audio from a {type(source).__name__}",
            "pass a file path, a numpy array or a torch tensor",
        )
    return source


def _from_array(source: Any, sample_rate: int | None) -> tuple[np.ndarray, int, str]:
    name = "audio array"
    source = _as_array(source)
    if sample_rate is None:
        raise AudioError(
            f"{name} of shape {source.shape} has no sample rate",
            "pass sample_rate=<Hz of the array>, e.g. load_audio(x, sample_rate=16000)",
        )
    _check_rate(sample_rate, name)
    samples = _normalise_dtype(source, name)
    if samples.ndim == 1:
        samples = samples[:, None]
    elif samples.ndim == 2:
        if samples.shape[0] < samples.shape[1]:  # [channels, samples]
            samples = samples.T
    else:
        raise AudioError(
            f"{name} has {samples.ndim} dimensions {samples.shape}",
            "pass 1-D mono or 2-D [samples, channels] audio",
        )
    return samples, int(sample_rate), name


def _check_rate(sample_rate: Any, name: str) -> None:
    ok = isinstance(sample_rate, int | np.integer) and not isinstance(sample_rate, bool)
    if not ok or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{name}: sample_rate={sample_rate!r} is not a valid rate",
            f"pass the array's rate in Hz as an int in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}]",
        )


def _normalise_dtype(x: np.ndarray, name: str) -> np.ndarray:
    """Float arrays as float32; integer PCM scaled to [-1, 1) by its dtype range."""
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    if np.issubdtype(x.dtype, np.signedinteger):
        scale = float(-np.iinfo(x.dtype).min)
        return (x.astype(np.float64) / scale).astype(np.float32)
    if np.issubdtype(x.dtype, np.unsignedinteger):  # offset binary, e.g. 8-bit WAV
        mid = float(np.iinfo(x.dtype).max // 2 + 1)
        return ((x.astype(np.float64) - mid) / mid).astype(np.float32)
    raise AudioError(
        f"{name} has dtype {x.dtype}, which is not audio",
        "pass float samples in [-1, 1] or integer PCM (int16, int32, uint8)",
    )


# --- shared checks ---------------------------------------------------------------------


def _to_mono(samples: np.ndarray, name: str) -> np.ndarray:
    """[samples, channels] -> [samples] by averaging the channels."""
    if samples.shape[1] == 0:
        raise AudioError(f"{name} has no channels", "pass audio with at least one channel")
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float64)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _check_length(audio: np.ndarray, name: str) -> None:
    seconds = len(audio) / SAMPLE_RATE
    if seconds > MAX_SECONDS + 1e-9:
        raise AudioError(
            f"{name} is {seconds:.2f} s long, but Whisper sees one {MAX_SECONDS:.0f} s window "
            "and whisperlens never truncates silently",
            _SPLIT_HINT,
        )


def _check_content(audio: np.ndarray, name: str) -> None:
    if audio.size == 0:
        raise AudioError(
            f"{name} contains no samples (zero-length audio)",
            "check the recording/export; Whisper needs at least a few milliseconds",
        )
    n_bad = int(np.size(audio) - np.isfinite(audio).sum())
    if n_bad:
        raise AudioError(
            f"{name} contains {n_bad} non-finite samples (NaN or inf)",
            "clean it (e.g. np.nan_to_num) or re-export the file",
        )
