"""Build an `AudioDataset` from a folder, a Hugging Face dataset, or synthesized stimuli."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from whisperlens.datasets.base import AudioDataset, AudioItem, DatasetError

if TYPE_CHECKING:
    from whisperlens.stimuli.wordlists import WordPair

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus")
TranscriptSource = Literal["sidecar", "tsv", "jsonl", "none"]
TSV_NAME, JSONL_NAME = "transcripts.tsv", "transcripts.jsonl"


def from_folder(
    directory: str | os.PathLike[str],
    transcripts: TranscriptSource = "sidecar",
    *,
    language: str | None = None,
    speaker: str | None = None,
    source: str | None = None,
) -> AudioDataset:
    """Audio files under ``directory`` (recursive, sorted), with transcripts from

    ``"sidecar"``: ``<stem>.txt`` beside each file; ``"tsv"``: ``transcripts.tsv`` with rows
    ``<file>\\t<text>``; ``"jsonl"``: ``transcripts.jsonl`` with ``{"path": ..., "text": ...}``
    (``<file>`` relative to ``directory``, with or without suffix); ``"none"``: no text.
    Item ids are the relative paths without suffix.
    """
    import soundfile as sf

    root = Path(directory)
    if not root.is_dir():
        raise DatasetError(f"audio folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise DatasetError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {root}")
    table = _transcript_table(root, transcripts)
    items = []
    for path in files:
        key = path.relative_to(root).with_suffix("").as_posix()
        if transcripts == "sidecar":
            side = path.with_suffix(".txt")
            text = side.read_text(encoding="utf-8").strip() if side.is_file() else None
        else:
            text = table.get(key, table.get(path.relative_to(root).as_posix()))
        try:
            duration = float(sf.info(str(path)).duration)
        except RuntimeError as err:
            raise DatasetError(f"cannot read audio file {path}: {err}") from err
        items.append(
            AudioItem(
                id=key,
                path=path,
                text=text or None,
                language=language,
                speaker=speaker,
                source=source or root.name,
                duration_s=duration,
            )
        )
    return AudioDataset(items, name=root.name)


def _transcript_table(root: Path, transcripts: TranscriptSource) -> dict[str, str]:
    """``relative file (with or without suffix) -> text`` from a tsv/jsonl table."""
    if transcripts in ("sidecar", "none"):
        return {}
    if transcripts not in ("tsv", "jsonl"):
        raise ValueError(f"transcripts must be one of sidecar/tsv/jsonl/none, got {transcripts!r}")
    table = root / (TSV_NAME if transcripts == "tsv" else JSONL_NAME)
    if not table.is_file():
        raise DatasetError(f"transcript table {table} does not exist", "or use 'sidecar'/'none'")
    with open(table, encoding="utf-8", newline="") as f:
        if transcripts == "tsv":
            rows = [(r[0], r[1]) for r in csv.reader(f, delimiter="\t") if len(r) >= 2]
        else:
            rows = [(d["path"], d["text"]) for d in map(json.loads, filter(str.strip, f))]
    return {Path(p).as_posix(): text.strip() for p, text in rows}


def from_hf(
    dataset_or_name: Any,
    split: str = "train",
    *,
    audio_column: str = "audio",
    text_column: str | None = "text",
    id_column: str | None = None,
    language: str | None = None,
    n_items: int | None = None,
    **load_kwargs: Any,
) -> AudioDataset:
    """Items of a Hugging Face ``datasets`` audio dataset (a name, a Dataset or a DatasetDict).

    Audio is read without ``torchcodec``: the column is cast to ``Audio(decode=False)`` and the
    bytes decoded with soundfile (held in memory); a local file path is kept as a path item.
    ``load_kwargs`` go to ``datasets.load_dataset`` when a name is given.
    """
    try:
        import datasets
    except ImportError as err:
        raise DatasetError("from_hf needs the `datasets` package", "pip install datasets") from err
    ds = dataset_or_name
    if isinstance(ds, str):
        ds = datasets.load_dataset(ds, split=split, **load_kwargs)
    elif isinstance(ds, datasets.DatasetDict | datasets.IterableDatasetDict):
        ds = ds[split]
    if isinstance((ds.features or {}).get(audio_column), datasets.Audio):
        ds = ds.cast_column(audio_column, datasets.Audio(decode=False))
    items = []
    for index, row in enumerate(ds):
        if n_items is not None and index >= n_items:
            break
        item_id = str(row[id_column]) if id_column else f"{index:06d}"
        text = row.get(text_column) if text_column else None
        items.append(_hf_item(item_id, row[audio_column], text, language))
    name = dataset_or_name if isinstance(dataset_or_name, str) else "hf"
    return AudioDataset(items, name=f"{name}:{split}")


def _hf_item(item_id: str, audio: Mapping[str, Any], text: Any, language: str | None) -> AudioItem:
    """One row's audio: ``{"bytes", "path"}`` (undecoded) or ``{"array", "sampling_rate"}``."""
    import soundfile as sf

    common: dict[str, Any] = {"text": str(text) if text else None, "language": language}
    local = audio.get("path")
    if audio.get("array") is not None:
        data, rate = np.asarray(audio["array"], dtype=np.float32), int(audio["sampling_rate"])
    elif audio.get("bytes"):
        data, rate = sf.read(io.BytesIO(audio["bytes"]), dtype="float32")
        data = data.mean(axis=1) if data.ndim == 2 else data
    elif local and Path(local).is_file():
        duration = float(sf.info(local).duration)
        return AudioItem(id=item_id, path=Path(local), duration_s=duration, source="hf", **common)
    else:
        raise DatasetError(f"row {item_id}: audio has neither samples, bytes nor a local file")
    meta = {"hf_path": local} if local else {}
    return AudioItem(
        id=item_id,
        audio=data,
        sample_rate=rate,
        duration_s=len(data) / rate,
        source="hf",
        meta=meta,
        **common,
    )


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (value,)


def from_stimuli(
    words: Sequence[str | WordPair],
    engine: str | Sequence[str] = "piper",
    voice: str | None | Sequence[str | None] = None,
    carrier: str | Sequence[str] = "{word}",
    rate: float | Sequence[float] = 1.0,
    language: str = "en",
) -> AudioDataset:
    """Synthesize every word x engine x voice x carrier x rate (TTS caches on disk).

    ``words`` are strings or `WordPair` (both sides, ``meta`` gets ``pair_id``/``side``/``kind``).
    A carrier is a template with ``{word}`` or a name from `whisperlens.stimuli.carriers`.
    """
    entries = [entry for w in words for entry in _word_entries(w, language)]
    combos = product(
        entries, _as_tuple(engine), _as_tuple(voice), _as_tuple(carrier), _as_tuple(rate)
    )
    items = [
        _stimulus_item(w, lang, m, eng, vox, car, r) for (w, lang, m), eng, vox, car, r in combos
    ]
    return AudioDataset(items, name="stimuli")


def _stimulus_item(
    word: str,
    language: str,
    word_meta: dict[str, Any],
    engine: str,
    voice: str | None,
    carrier: str,
    rate: float,
) -> AudioItem:
    from whisperlens.stimuli.carriers import resolve
    from whisperlens.stimuli.tts import synthesize

    spec = resolve(carrier)
    phrase = spec.render(word)
    text, span, template = phrase.text, phrase.word_span, spec.template
    stim = synthesize(text, engine=engine, language=language, voice=voice, rate=rate)
    meta = {**word_meta, "word": word, "carrier": carrier, "template": template}
    meta |= {"word_span": list(span), "engine": engine, "voice": stim.voice, "rate": rate}
    return AudioItem(
        id=f"{word_meta.get('word_id', word)}|{engine}|{stim.voice}|{carrier}|{rate:g}",
        path=Path(stim.path),
        text=text,
        language=language,
        speaker=stim.voice,
        source=f"tts:{engine}",
        duration_s=len(stim.audio) / stim.sample_rate,
        meta=meta | {"key": stim.key},
    )


def _word_entries(word: Any, language: str) -> list[tuple[str, str, dict[str, Any]]]:
    if isinstance(word, str):
        return [(word, language, {})]
    base = {"pair_id": word.id, "kind": word.kind}
    return [
        (word.a, word.language_a, {**base, "side": "a", "word_id": f"{word.id}.a"}),
        (word.b, word.language_b, {**base, "side": "b", "word_id": f"{word.id}.b"}),
    ]
