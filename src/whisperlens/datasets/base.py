"""`AudioItem` and `AudioDataset`: a sequence of audio clips with transcripts and a manifest.

An item points at a file (``path``, optionally a ``start_s``/``end_s`` segment of it) or holds
the samples (``audio`` at ``sample_rate``). Audio is loaded lazily, by `AudioItem.load`, through
`whisperlens.audio.load_audio` (float32 mono 16 kHz).

Manifests are JSONL (one item per line) or Parquet (needs ``pyarrow``), chosen by suffix. Paths
inside the manifest's directory are written relative to it and resolved against it on reading;
in-memory audio is written to ``<manifest stem>.audio/<n>.wav`` next to the manifest.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, overload

import numpy as np

from whisperlens._io import atomic_path, atomic_write_with
from whisperlens.errors import WhisperlensError

Label = Literal["speech", "music", "noise", "silence"]
LABELS: tuple[str, ...] = get_args(Label)
TARGET_SAMPLE_RATE = 16_000
MANIFEST_SUFFIXES = (".jsonl", ".parquet")


class DatasetError(WhisperlensError):
    """A data set that cannot be built or read (missing package, bad manifest, bad folder)."""


@dataclass(frozen=True)
class AudioItem:
    """One clip: where its audio is, what is said in it, and where it came from."""

    id: str  # unique within its data set
    path: Path | None = None  # audio file (any format soundfile reads); or give `audio`
    audio: np.ndarray | None = field(default=None, repr=False, compare=False)  # samples
    sample_rate: int | None = None  # rate of `audio` (None: 16 kHz); unused with `path`
    text: str | None = None  # transcript of what is said; None if unknown or not speech
    language: str | None = None  # ISO 639-1 code ("en", "es"), None for non-speech
    speaker: str | None = None  # speaker / voice name
    source: str = ""  # corpus or generator name ("asterisk-core-sounds-en", "piper")
    duration_s: float | None = None  # length of the clip (the segment, if one is set)
    label: Label | None = "speech"  # coarse content class
    start_s: float = 0.0  # segment start within `path`
    end_s: float | None = None  # segment end within `path` (None: end of file)
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable extras

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("AudioItem.id must be a non-empty string")
        if (self.path is None) == (self.audio is None):
            raise ValueError(f"AudioItem {self.id!r}: give exactly one of `path` and `audio`")
        if self.path is not None and not isinstance(self.path, Path):
            object.__setattr__(self, "path", Path(self.path))
        if self.label is not None and self.label not in LABELS:
            raise ValueError(f"AudioItem {self.id!r}: label {self.label!r} not in {LABELS}")
        if self.start_s < 0 or (self.end_s is not None and self.end_s <= self.start_s):
            raise ValueError(f"AudioItem {self.id!r}: bad segment {self.start_s}..{self.end_s}")
        if self.duration_s is not None and not (self.duration_s >= 0):
            raise ValueError(f"AudioItem {self.id!r}: duration_s must be >= 0")

    def load(self, *, whole: bool = False) -> np.ndarray:
        """The clip as float32 mono samples at 16 kHz (raises `AudioError`).

        A clip over 30 s (one Whisper window) is refused unless ``whole``: then all of it is
        returned, for callers that cut it into windows themselves.
        """
        from whisperlens.audio import load_audio

        long: Literal["split"] = "split"
        if self.audio is not None:
            source: tuple[Any, ...] = (self.audio, self.sample_rate or TARGET_SAMPLE_RATE)
        else:
            assert self.path is not None
            if self.start_s == 0.0 and self.end_s is None:
                source = (self.path,)
            else:
                source = _read_segment(self.path, self.start_s, self.end_s)
        if not whole:
            return load_audio(*source)
        return np.concatenate(load_audio(*source, long=long))


def _read_segment(path: Path, start_s: float, end_s: float | None) -> tuple[np.ndarray, int]:
    """Samples of ``path`` between ``start_s`` and ``end_s`` (mono float32) and their rate."""
    import soundfile as sf

    from whisperlens.errors import AudioError

    try:
        sr = sf.info(str(path)).samplerate
        stop = None if end_s is None else round(end_s * sr)
        data, sr = sf.read(str(path), start=round(start_s * sr), stop=stop, dtype="float32")
    except (OSError, RuntimeError) as err:  # soundfile.LibsndfileError is a RuntimeError
        raise AudioError(
            f"cannot read {path}: {err}", "check the file exists and is audio"
        ) from err
    return (data.mean(axis=1) if data.ndim == 2 else data).astype(np.float32), sr


class AudioDataset(Sequence[AudioItem]):
    """An ordered collection of `AudioItem` with unique ids."""

    def __init__(self, items: Iterable[AudioItem], name: str = "", info: Mapping | None = None):
        self._items: tuple[AudioItem, ...] = tuple(items)
        self.name = name  # short name of the set ("asterisk-en")
        self.info: dict[str, Any] = dict(info or {})  # build notes: filter counts etc.
        dupes = [i for i, n in Counter(it.id for it in self._items).items() if n > 1]
        if dupes:
            raise DatasetError(f"duplicate item ids in {name or 'data set'}: {sorted(dupes)[:5]}")

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> AudioItem: ...
    @overload
    def __getitem__(self, index: slice) -> AudioDataset: ...
    def __getitem__(self, index: int | slice) -> AudioItem | AudioDataset:
        if isinstance(index, slice):
            return self._derive(self._items[index])
        return self._items[index]

    def __iter__(self) -> Iterator[AudioItem]:
        return iter(self._items)

    def __add__(self, other: AudioDataset) -> AudioDataset:
        name = "+".join(n for n in (self.name, other.name) if n)
        return AudioDataset(self._items + tuple(other), name=name)

    def __repr__(self) -> str:
        return f"AudioDataset({self.name!r}, n_items={len(self)}, hours={self.total_s / 3600:.3f})"

    @property
    def ids(self) -> list[str]:
        return [it.id for it in self._items]

    @property
    def total_s(self) -> float:
        """Sum of the known item durations, in seconds."""
        return float(sum(it.duration_s or 0.0 for it in self._items))

    def _derive(self, items: Iterable[AudioItem]) -> AudioDataset:
        return AudioDataset(items, name=self.name, info=self.info)

    def filter(
        self,
        predicate: Callable[[AudioItem], bool] | None = None,
        *,
        language: str | None = None,
        label: Label | None = None,
        min_duration_s: float | None = None,
        max_duration_s: float | None = None,
        has_text: bool | None = None,
    ) -> AudioDataset:
        """Items passing every given condition (a duration bound drops unknown durations)."""

        def keep(it: AudioItem) -> bool:
            dur = it.duration_s
            return (
                (language is None or it.language == language)
                and (label is None or it.label == label)
                and (min_duration_s is None or (dur is not None and dur >= min_duration_s))
                and (max_duration_s is None or (dur is not None and dur <= max_duration_s))
                and (has_text is None or bool(it.text) == has_text)
                and (predicate is None or predicate(it))
            )

        return self._derive(it for it in self._items if keep(it))

    def subset(self, n: int, seed: int = 0) -> AudioDataset:
        """``n`` items drawn without replacement (all if ``n >= len``), in the original order."""
        if n < 0:
            raise ValueError(f"subset size must be >= 0, got {n}")
        if n >= len(self):
            return self._derive(self._items)
        picked = np.random.default_rng(seed).choice(len(self), size=n, replace=False)
        return self._derive(self._items[i] for i in sorted(picked.tolist()))

    def save_manifest(self, path: str | os.PathLike[str]) -> Path:
        """Write the manifest (``.jsonl`` or ``.parquet``) atomically; returns its path."""
        path = Path(path)
        if path.suffix not in MANIFEST_SUFFIXES:
            raise DatasetError(f"unknown manifest type {path.name!r}", f"use {MANIFEST_SUFFIXES}")
        records = [_to_record(it, i, path) for i, it in enumerate(self._items)]
        if path.suffix == ".parquet":
            _write_parquet(path, records)
        else:
            with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
                for rec in records:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def from_manifest(cls, path: str | os.PathLike[str], name: str = "") -> AudioDataset:
        """Read a manifest written by `save_manifest` (or by hand: ``id`` + ``path`` per line)."""
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"manifest {path} does not exist")
        records = _read_parquet(path) if path.suffix == ".parquet" else _read_jsonl(path)
        return cls((_from_record(rec, path.parent) for rec in records), name=name or path.stem)


_FIELD_NAMES = tuple(f.name for f in fields(AudioItem))


def _to_record(item: AudioItem, index: int, manifest: Path) -> dict[str, Any]:
    rec = {f: getattr(item, f) for f in _FIELD_NAMES if f != "audio"}
    if item.audio is not None:  # written to a file: the record becomes a path item
        rec["path"], rec["sample_rate"] = _write_wav(item, index, manifest), None
    else:
        assert item.path is not None
        rec["path"] = _relative(item.path, manifest.parent)
    rec["meta"] = dict(item.meta)
    return rec


def _relative(path: Path, base: Path) -> str:
    path, base = path.absolute(), base.absolute()
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)


def _write_wav(item: AudioItem, index: int, manifest: Path) -> str:
    """Write in-memory audio (float32, lossless) beside the manifest; its relative path."""
    import soundfile as sf

    rel = Path(f"{manifest.stem}.audio") / f"{index:06d}.wav"
    assert item.audio is not None
    data, rate = np.asarray(item.audio, dtype=np.float32), item.sample_rate or TARGET_SAMPLE_RATE
    atomic_write_with(
        manifest.parent / rel, lambda tmp: sf.write(str(tmp), data, rate, "FLOAT", format="WAV")
    )
    return rel.as_posix()


def _from_record(rec: Mapping[str, Any], base: Path) -> AudioItem:
    unknown = set(rec) - set(_FIELD_NAMES)
    if unknown or "id" not in rec or not rec.get("path"):
        raise DatasetError(f"bad manifest record {dict(rec)!r}", "each needs `id` and `path`")
    kwargs = dict(rec)
    path = Path(kwargs.pop("path"))
    kwargs["path"] = path if path.is_absolute() else base / path
    kwargs["meta"] = dict(kwargs.get("meta") or {})
    return AudioItem(**kwargs)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    try:
        return [json.loads(line) for line in lines]
    except json.JSONDecodeError as err:
        raise DatasetError(f"manifest {path} is not JSONL: {err}") from err


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise DatasetError("Parquet manifests need pyarrow", "pip install pyarrow") from err
    return pa, pq


def _write_parquet(path: Path, records: list[dict[str, Any]]) -> None:
    pa, pq = _pyarrow()
    rows = [{**r, "meta": json.dumps(r["meta"], ensure_ascii=False)} for r in records]
    table = pa.Table.from_pylist(rows) if rows else pa.table({f: [] for f in _FIELD_NAMES})
    atomic_write_with(path, lambda tmp: pq.write_table(table, str(tmp)))


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    _, pq = _pyarrow()
    rows = pq.read_table(str(path)).to_pylist()
    return [{**r, "meta": json.loads(r.get("meta") or "{}")} for r in rows]
