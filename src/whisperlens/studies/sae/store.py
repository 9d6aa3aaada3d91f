"""The activation store: frame-level encoder activations of a corpus, sharded on disk.

:func:`extract` runs the encoder over an :class:`~whisperlens.datasets.AudioDataset` up to one
site (the blocks after it are never computed) and writes, into a run directory (a
:class:`~whisperlens.runs.RunDir`, study ``sae-extract``)::

    config.json  rows.jsonl  summary.json
    manifest.jsonl   the corpus; an item's index in it is the ``item`` in the shards
    vocab.json       {"language": [...], "label": [...], "word": [...], "phoneme": [...],
                      "source": [...]}: the ids used in the shards
    shards/uNNNNN.safetensors   one per work unit: ``acts`` [n, d_model] (float16 by default)
                     and per-frame int arrays ``item``, ``frame`` (from the item's own start:
                     time = frame * 0.02 s), ``pos`` (0..1499 in the encoder window),
                     ``language``, ``label``, ``word``, ``phoneme``, ``split`` (0 train,
                     1 heldout, by a hash of the item id), ``source`` (-1: none)

Only frames holding real audio are kept by default (``speech_only``); with
``speech_only=False`` the padding after each clip is kept too, attributed to that clip with
``label = -1``. Clips longer than 30 s are cut into 30 s pieces (``frame`` keeps counting).

Packing: a short clip alone fills a fraction of the 30 s window. ``pack=True`` places
several clips in one window, each starting on a 20 ms frame boundary, ``gap_s`` of silence
apart. :func:`measure_packing` measures what that does to the activations. On tiny.en at
``encoder.blocks.2.hook_resid_post`` (48 clips of the quick corpus, gap 0.5 s) the packed
frames differ from the same clip alone in its window by a median relative error of 0.41
(mean cosine per clip: median 0.91). Both causes are large: the absolute position alone
(the clip alone, moved to its packed position) gives 0.38 / 0.93, the other clips in the
window (same position, with vs without them) 0.25 / 0.97; the gap length hardly matters
(0 s: 0.42 / 0.91). Block 0: 0.59 / 0.81 (position 0.59, context 0.11); block 3: 0.58 /
0.87 (position 0.44, context 0.45). That is as large as an SAE's own reconstruction error,
and the study evaluates and steers SAEs on single clips alone in their windows, so
extraction does not pack by default (``PACK_DEFAULT``): faithful activations cost about 6x more windows on
short clips (window fill 0.14 vs 0.81 on that sample; the quick corpus, 125k frames, took
330 s unpacked vs 100 s packed with 2 workers on a shared 2-core machine). ``pack=True`` is
there for fast exploratory runs.

Work units (a fixed run of windows each) go through the foundation's executors: each worker
loads the model once and writes its own shards, atomically; the driver appends one row per
finished unit, so a killed extraction re-run with the same command does only what is left.
:class:`ActivationStore` reads a finished extraction.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from whisperlens._io import stable_hash
from whisperlens.datasets import LABELS, AudioDataset, AudioItem
from whisperlens.errors import SiteError, WhisperlensError
from whisperlens.frames import N_ENCODER_FRAMES, SAMPLE_RATE, n_audio_frames
from whisperlens.runs import RunDir

if TYPE_CHECKING:
    from whisperlens.executors import Executor
    from whisperlens.hooks import HookedWhisper

STUDY, FORMAT_VERSION = "sae-extract", 1
MANIFEST_FILE, VOCAB_FILE, SHARD_DIR = "manifest.jsonl", "vocab.json", "shards"
DEFAULT_SITE = "encoder.blocks.2.hook_resid_post"
DEFAULT_MODEL = "tiny.en"
FRAME_SAMPLES = SAMPLE_RATE // 50  # 320 samples = one 20 ms encoder frame
HELDOUT_PER_MILLE = 100  # ~10 % of items are held out (by a hash of their id)
PACK_DEFAULT = False  # measured: packing changes a clip's frames by ~0.41 rel. error (docstring)
GAP_S_DEFAULT = 0.5  # silence between packed clips
Dtype = Literal["float16", "bfloat16", "float32"]
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
META_KEYS = ("item", "frame", "pos", "language", "label", "word", "phoneme", "split", "source")
_META_DTYPES = {
    "item": torch.int32,
    "frame": torch.int32,
    "pos": torch.int32,
    "language": torch.int16,
    "label": torch.int8,
    "word": torch.int32,
    "phoneme": torch.int32,
    "split": torch.int8,
    "source": torch.int16,
}
SPLITS = ("train", "heldout")


class StoreError(WhisperlensError, ValueError):
    """An extraction that cannot run as asked, or a store that cannot be read."""


# -- planning: items -> pieces -> windows -> units -----------------------------------------
@dataclass(frozen=True)
class Slot:
    """A piece of one item placed in an encoder window."""

    item: int  # manifest index
    start: int  # first frame of the piece within the item
    n_frames: int  # frames of the piece (planned from the item's duration)
    offset: int  # window position of the piece's first frame


Window = tuple[Slot, ...]


@dataclass(frozen=True)
class Unit:
    """A work unit: a run of windows written to one shard."""

    name: str
    windows: tuple[Window, ...]


def item_frames(item: AudioItem) -> int:
    """Encoder frames of real audio in ``item`` (from its duration, else by loading it)."""
    if item.duration_s is not None:
        n_samples = round(item.duration_s * SAMPLE_RATE)
    else:
        n_samples = len(item.load(whole=True))
    return max(1, -(-n_samples // FRAME_SAMPLES))


def plan_windows(frames: Sequence[int], *, pack: bool, gap_frames: int = 25) -> list[Window]:
    """Windows for items of ``frames`` frames each (manifest order, deterministic).

    Items longer than a window are cut into 1500-frame pieces. With ``pack``, pieces are
    placed one after another with ``gap_frames`` between them while they fit (first fit in
    order); otherwise each piece has its own window at position 0.
    """
    windows: list[Window] = []
    current: list[Slot] = []
    cursor = 0
    for item, n in enumerate(frames):
        for start in range(0, n, N_ENCODER_FRAMES):
            size = min(N_ENCODER_FRAMES, n - start)
            if current and (not pack or cursor + size > N_ENCODER_FRAMES):
                windows.append(tuple(current))
                current, cursor = [], 0
            current.append(Slot(item, start, size, cursor))
            cursor += size + gap_frames
    if current:
        windows.append(tuple(current))
    return windows


def plan_units(windows: Sequence[Window], windows_per_shard: int) -> list[Unit]:
    return [
        Unit(f"u{i // windows_per_shard:05d}", tuple(windows[i : i + windows_per_shard]))
        for i in range(0, len(windows), windows_per_shard)
    ]


# -- labels ------------------------------------------------------------------------------------
def normalize_word(label: str) -> str:
    """A word label as stored in the vocabulary: case-folded, outer punctuation removed."""
    text = unicodedata.normalize("NFC", label).strip().casefold()
    return text.strip(".,;:!?¡¿\"'()[]{}«»“”‘’-–—…")


def item_split(item_id: str) -> int:
    """0 (train) or 1 (heldout), from a hash of the item id (~10 % heldout)."""
    digest = hashlib.sha256(item_id.encode("utf-8")).hexdigest()
    return int(int(digest[:8], 16) % 1000 < HELDOUT_PER_MILLE)


def _segments(item: AudioItem, key: str) -> list[tuple[str, float, float]]:
    rows = item.meta.get(key) or []
    out = []
    for row in rows:
        label = normalize_word(str(row[0])) if key == "words" else str(row[0]).strip()
        if label:
            out.append((label, float(row[1]), float(row[2])))
    return out


def build_vocab(dataset: Sequence[AudioItem]) -> dict[str, list[str]]:
    """The id tables of a corpus: languages, labels, words, phonemes and sources (sorted)."""
    langs: set[str] = set()
    words: set[str] = set()
    phones: set[str] = set()
    sources: set[str] = set()
    for item in dataset:
        if item.language:
            langs.add(item.language)
        sources.add(item.source or "")
        words.update(w for w, _, _ in _segments(item, "words"))
        phones.update(p for p, _, _ in _segments(item, "phonemes"))
    return {
        "language": sorted(langs),
        "label": list(LABELS),
        "word": sorted(words),
        "phoneme": sorted(phones),
        "source": sorted(sources),
    }


def frame_labels(item: AudioItem, n_frames: int, ids: dict[str, int], key: str) -> np.ndarray:
    """Vocabulary id per frame (-1 none): the segment holding the frame's centre."""
    out = np.full(n_frames, -1, dtype=np.int32)
    centres = (np.arange(n_frames) + 0.5) * (FRAME_SAMPLES / SAMPLE_RATE)
    for label, start, end in _segments(item, key):
        out[(centres >= start) & (centres < end)] = ids[label]
    return out


# -- running the encoder to a site ---------------------------------------------------------------
class _Stop(Exception):
    """Raised by the recording hook to end the forward pass at the site."""


def check_site(model: HookedWhisper, site: str) -> str:
    """``site`` if it is a readable encoder residual-width site of ``model``."""
    [parsed] = model.sites(site)
    if parsed.stack != "encoder" or not parsed.spec.residual:
        raise SiteError(
            f"site {site!r} is not a residual-width encoder site",
            "pass e.g. encoder.blocks.2.hook_resid_post (see `whisperlens sites`)",
        )
    return parsed.name


@torch.inference_mode()
def run_to_site(model: HookedWhisper, features: torch.Tensor, site: str) -> torch.Tensor:
    """Activations [batch, 1500, d] at ``site``; the encoder stops there (later blocks skipped)."""
    box: dict[str, torch.Tensor] = {}

    def hook(_module: Any, _args: Any, output: torch.Tensor) -> None:
        box["value"] = output
        raise _Stop

    handle = model.hook_points[site].register_forward_hook(hook)
    try:
        model.model.model.encoder(features)
    except _Stop:
        pass
    finally:
        handle.remove()
    return box["value"]


class WindowRunner:
    """Builds windows' waveforms from a data set and runs the encoder to a site on them."""

    def __init__(self, model: HookedWhisper, dataset: Sequence[AudioItem], site: str):
        self.model, self.dataset, self.site = model, dataset, check_site(model, site)
        self._audio: dict[int, np.ndarray] = {}

    def audio(self, index: int) -> np.ndarray:
        if index not in self._audio:
            if len(self._audio) > 64:
                self._audio.clear()
            self._audio[index] = self.dataset[index].load(whole=True)  # cut into windows
        return self._audio[index]

    def piece(self, slot: Slot) -> np.ndarray:
        a, b = slot.start * FRAME_SAMPLES, (slot.start + slot.n_frames) * FRAME_SAMPLES
        return self.audio(slot.item)[a:b]

    def waveform(self, window: Window) -> tuple[np.ndarray, list[int]]:
        """The window's samples and the real-audio frames of each slot."""
        pieces = [self.piece(slot) for slot in window]
        end = max(s.offset * FRAME_SAMPLES + len(p) for s, p in zip(window, pieces, strict=True))
        wave = np.zeros(max(end, FRAME_SAMPLES), dtype=np.float32)
        for slot, piece in zip(window, pieces, strict=True):
            wave[slot.offset * FRAME_SAMPLES : slot.offset * FRAME_SAMPLES + len(piece)] = piece
        return wave, [n_audio_frames(len(p)) for p in pieces]

    def features(self, windows: Sequence[Window]) -> tuple[torch.Tensor, list[list[int]]]:
        waves, real = zip(*(self.waveform(w) for w in windows), strict=True)
        return self.model.features(list(waves)), list(real)

    def run(self, features: torch.Tensor) -> torch.Tensor:
        return run_to_site(self.model, features, self.site)


# -- the worker task -------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtractTask:
    """Extract the activations of one unit's windows into its shard (picklable)."""

    out: str  # the run directory (workers read manifest.jsonl and vocab.json from it)
    model: str
    site: str
    dtype: str = "float16"
    keep_padding: bool = False  # keep the padding frames after each clip (label -1)
    batch_windows: int = 4  # windows per forward pass

    def setup(self) -> _WorkerState:
        from whisperlens.hooks import HookedWhisper

        out = Path(self.out)
        dataset = AudioDataset.from_manifest(out / MANIFEST_FILE)
        vocab = json.loads((out / VOCAB_FILE).read_text(encoding="utf-8"))
        model = HookedWhisper.from_pretrained(self.model)
        return _WorkerState(WindowRunner(model, dataset, self.site), vocab)

    def run(self, state: _WorkerState, unit: Unit) -> dict[str, Any]:
        start = time.perf_counter()
        parts = state.extract(unit.windows, self.batch_windows, self.keep_padding)
        tensors = _concat(parts, _DTYPES[self.dtype], state.runner.model.d_model)
        path = Path(self.out) / SHARD_DIR / f"{unit.name}.safetensors"
        _save_shard(path, tensors)
        row = _unit_row(unit, tensors, state.vocab)
        row["seconds"] = round(time.perf_counter() - start, 3)
        return row


class _WorkerState:
    """A worker's model runner, vocabulary ids and per-item label arrays."""

    def __init__(self, runner: WindowRunner, vocab: dict[str, list[str]]):
        self.runner, self.vocab = runner, vocab
        self.ids = {k: {v: i for i, v in enumerate(vals)} for k, vals in vocab.items()}
        self._meta: dict[int, dict[str, np.ndarray | int]] = {}

    def item_meta(self, index: int, n_frames: int) -> dict[str, np.ndarray | int]:
        """Per-frame word/phoneme ids of an item and its constant fields."""
        cached = self._meta.get(index)
        if cached is None or len(cached["word"]) < n_frames:  # type: ignore[arg-type]
            item = self.runner.dataset[index]
            cached = {
                "word": frame_labels(item, n_frames, self.ids["word"], "words"),
                "phoneme": frame_labels(item, n_frames, self.ids["phoneme"], "phonemes"),
                "language": self.ids["language"].get(item.language or "", -1),
                "label": self.ids["label"].get(item.label or "", -1),
                "source": self.ids["source"].get(item.source or "", -1),
                "split": item_split(item.id),
            }
            if len(self._meta) > 256:
                self._meta.clear()
            self._meta[index] = cached
        return cached

    def extract(
        self, windows: Sequence[Window], batch: int, keep_padding: bool
    ) -> list[dict[str, torch.Tensor]]:
        """Rows of every slot of ``windows``; the next batch's audio loads in the background."""
        batches = [windows[i : i + batch] for i in range(0, len(windows), batch)]
        parts: list[dict[str, torch.Tensor]] = []
        with ThreadPoolExecutor(max_workers=1) as prefetch:
            future = prefetch.submit(self.runner.features, batches[0])
            for i, group in enumerate(batches):
                feats, real = future.result()
                if i + 1 < len(batches):
                    future = prefetch.submit(self.runner.features, batches[i + 1])
                acts = self.runner.run(feats)
                for b, window in enumerate(group):
                    parts += self._slot_rows(acts[b], window, real[b], keep_padding)
        return parts

    def _slot_rows(
        self, acts_FD: torch.Tensor, window: Window, real: list[int], keep_padding: bool
    ) -> list[dict[str, torch.Tensor]]:
        out = []
        for k, slot in enumerate(window):
            n_real = real[k]
            if keep_padding:
                nxt = window[k + 1].offset if k + 1 < len(window) else N_ENCODER_FRAMES
                n_rows = nxt - slot.offset
            else:
                n_rows = n_real
            meta = self.item_meta(slot.item, slot.start + n_rows)
            local = np.arange(n_rows)
            frame = slot.start + local
            is_real = local < n_real
            cols = {
                "item": np.full(n_rows, slot.item),
                "frame": frame,
                "pos": slot.offset + local,
                "language": np.full(n_rows, meta["language"]),
                "label": np.where(is_real, meta["label"], -1),
                "word": np.where(is_real, np.asarray(meta["word"])[frame], -1),
                "phoneme": np.where(is_real, np.asarray(meta["phoneme"])[frame], -1),
                "split": np.full(n_rows, meta["split"]),
                "source": np.full(n_rows, meta["source"]),
            }
            row = {k2: torch.from_numpy(np.ascontiguousarray(v)) for k2, v in cols.items()}
            row["acts"] = acts_FD[slot.offset : slot.offset + n_rows].clone()  # frees the batch
            out.append(row)
        return out


def _concat(
    parts: list[dict[str, torch.Tensor]], dtype: torch.dtype, d_model: int
) -> dict[str, torch.Tensor]:
    if not parts:
        empty = {k: torch.zeros(0, dtype=_META_DTYPES[k]) for k in META_KEYS}
        return {"acts": torch.zeros(0, d_model, dtype=dtype), **empty}
    out = {"acts": torch.cat([p["acts"] for p in parts]).to(dtype).contiguous()}
    for key in META_KEYS:
        out[key] = torch.cat([p[key] for p in parts]).to(_META_DTYPES[key]).contiguous()
    return out


def _save_shard(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    from whisperlens._io import atomic_write_with

    meta = {"format": f"whisperlens.sae_shard/{FORMAT_VERSION}"}
    atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _unit_row(
    unit: Unit, tensors: dict[str, torch.Tensor], vocab: dict[str, list[str]]
) -> dict[str, Any]:
    """The run row of a finished unit: counts by field, and activation sums per split."""
    acts = tensors["acts"].double()
    counts: dict[str, dict[str, int]] = {}
    for field in ("label", "language", "source", "split"):
        names = list(SPLITS) if field == "split" else vocab[field]
        ids, n = torch.unique(tensors[field].long(), return_counts=True)
        counts[field] = {
            (names[i] if i >= 0 else "none"): int(c)
            for i, c in zip(ids.tolist(), n.tolist(), strict=True)
        }
    sums = {name: acts[tensors["split"] == s].sum(0).tolist() for s, name in enumerate(SPLITS)}
    return {
        "unit": unit.name,
        "shard": f"{SHARD_DIR}/{unit.name}.safetensors",
        "n_frames": int(acts.shape[0]),
        "n_windows": len(unit.windows),
        "d_model": int(acts.shape[1]),
        "counts": counts,
        "sums": sums,
    }


# -- the driver ----------------------------------------------------------------------------------
def corpus_key(dataset: Sequence[AudioItem]) -> str:
    """A hash of everything in the corpus that extraction reads (paths, segments, labels)."""
    records = []
    for item in dataset:
        where: Any = (
            str(Path(item.path).absolute())
            if item.path is not None
            else hashlib.sha256(np.ascontiguousarray(item.audio).tobytes()).hexdigest()
        )
        records.append(
            [item.id, where, item.start_s, item.end_s, item.duration_s, item.label]
            + [item.language, item.source, item.meta.get("words"), item.meta.get("phonemes")]
        )
    return stable_hash(records, n=32)


def _check_options(site: str, dtype: str, gap_s: float, windows_per_shard: int) -> None:
    from whisperlens.sites import POINTS

    if dtype not in _DTYPES:
        raise StoreError(f"unknown dtype {dtype!r}", f"use one of {list(_DTYPES)}")
    point = site.split(".")[-1]
    if not site.startswith("encoder.") or point not in POINTS or not POINTS[point].residual:
        raise StoreError(
            f"site {site!r} is not a residual-width encoder site",
            "pass e.g. encoder.blocks.2.hook_resid_post (see `whisperlens sites`)",
        )
    if not 0 <= gap_s <= 5:
        raise StoreError(f"gap_s must be in [0, 5] seconds, got {gap_s}", "pass e.g. 0.5")
    if windows_per_shard < 1:
        raise StoreError("windows_per_shard must be >= 1", "pass e.g. 32")


def extract(
    dataset: AudioDataset,
    out: str | os.PathLike[str],
    *,
    model: str = DEFAULT_MODEL,
    site: str = DEFAULT_SITE,
    speech_only: bool = True,
    pack: bool = PACK_DEFAULT,
    gap_s: float = GAP_S_DEFAULT,
    dtype: Dtype = "float16",
    windows_per_shard: int = 32,
    batch_windows: int = 4,
    executor: Executor | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ActivationStore:
    """Extract ``site`` activations of every frame of ``dataset`` into the run ``out``.

    ``speech_only`` keeps only frames holding real audio (any clip, not only speech: the
    name follows the issue); ``pack`` places several clips per window, ``gap_s`` apart;
    ``executor`` runs the units (default: in this process with torch's threads). Re-running
    the same call resumes a killed extraction; a different corpus or option is refused
    unless ``overwrite``. Returns the finished store.
    """
    from whisperlens.executors import InlineExecutor

    if len(dataset) == 0:
        raise StoreError("the data set is empty", "pass a data set with at least one clip")
    _check_options(site, dtype, gap_s, windows_per_shard)
    gap_frames = round(gap_s * 50)
    windows = plan_windows([item_frames(it) for it in dataset], pack=pack, gap_frames=gap_frames)
    units = plan_units(windows, windows_per_shard)
    config = {
        "model": model,
        "site": site,
        "speech_only": speech_only,
        "pack": pack,
        "gap_s": gap_s,
        "dtype": dtype,
        "windows_per_shard": windows_per_shard,
        "corpus": {"name": dataset.name, "n_items": len(dataset), "key": corpus_key(dataset)},
    }
    artifacts = (MANIFEST_FILE, Path(MANIFEST_FILE).stem + ".audio", VOCAB_FILE, SHARD_DIR)
    started = time.perf_counter()
    with RunDir.open(
        out,
        study=STUDY,
        config=config,
        format_version=FORMAT_VERSION,
        key="unit",
        artifacts=artifacts,
        overwrite=overwrite,
    ) as run:
        _prepare(run, dataset)
        task = ExtractTask(str(run.path), model, site, dtype, not speech_only, batch_windows)
        todo = run.pending(units, lambda u: u.name)
        bar = run.progress(len(units), f"extract {site}", enabled=progress)
        try:
            for _unit, row in (executor or InlineExecutor(threads=None)).map(task, todo):
                run.append(row)
                bar.update()
                bar.set_postfix(frames=sum(r["n_frames"] for r in run.done.values()))
        finally:
            bar.close()
        rows = run.rows([u.name for u in units])
        run.write_summary(_summary(rows, config, dataset, windows, started))
    return ActivationStore.open(out)


def _prepare(run: RunDir, dataset: AudioDataset) -> None:
    """Write the manifest and vocabulary (once), and drop shards a kill left half-written."""
    if not run.file(MANIFEST_FILE).exists():
        run.start()
        dataset.save_manifest(run.file(MANIFEST_FILE))
    if not run.file(VOCAB_FILE).exists():
        run.write_json(VOCAB_FILE, build_vocab(dataset))
    shards = run.file(SHARD_DIR)
    shards.mkdir(exist_ok=True)
    for stale in shards.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def _summary(
    rows: list[dict[str, Any]],
    config: dict[str, Any],
    dataset: AudioDataset,
    windows: list[Window],
    started: float,
) -> dict[str, Any]:
    from whisperlens.studies.sae.corpus import corpus_mix

    counts: dict[str, Counter[str]] = {}
    for field in ("label", "language", "source", "split"):
        counts[field] = Counter()
        for row in rows:
            counts[field].update(row["counts"].get(field, {}))
    d_model = next((r["d_model"] for r in rows), 0)
    n_frames = sum(r["n_frames"] for r in rows)
    mean = {}
    for split in (*SPLITS, "all"):
        names = SPLITS if split == "all" else (split,)
        total = np.zeros(d_model)
        for row in rows:
            for name in names:
                total += np.asarray(row["sums"][name])
        n = sum(counts["split"].get(name, 0) for name in names)
        mean[split] = (total / max(n, 1)).tolist()
    compute_s = sum(r.get("seconds", 0.0) for r in rows)
    real = sum(min(s.n_frames, N_ENCODER_FRAMES) for w in windows for s in w)
    return {
        "model": config["model"],
        "site": config["site"],
        "dtype": config["dtype"],
        "d_model": d_model,
        "n_frames": n_frames,
        "n_items": len(dataset),
        "n_windows": len(windows),
        "n_units": len(rows),
        "window_fill": round(real / max(len(windows) * N_ENCODER_FRAMES, 1), 4),
        "frames": {field: dict(sorted(c.items())) for field, c in counts.items()},
        "mix": corpus_mix(dataset) | {"notes": dataset.info.get("mix", {}).get("skipped", {})},
        "worker_seconds": round(compute_s, 2),
        "wall_seconds_last_invocation": round(time.perf_counter() - started, 2),
        "frames_per_worker_second": round(n_frames / max(compute_s, 1e-9), 1),
        "mean": mean,
    }


# -- reading ---------------------------------------------------------------------------------------
class ActivationStore:
    """A finished extraction: shards, metadata, vocabulary and streaming readers."""

    def __init__(self, path: Path, config: dict[str, Any], summary: dict[str, Any]):
        self.path = path
        self.config = config
        self.summary = summary
        self.site: str = config["site"]
        self.model: str = config["model"]
        self.dtype: str = config["dtype"]
        self.d_model: int = int(summary["d_model"])
        self.n_frames: int = int(summary["n_frames"])
        self.vocab: dict[str, list[str]] = json.loads(
            (path / VOCAB_FILE).read_text(encoding="utf-8")
        )
        from whisperlens.runs import read_rows

        self._rows = sorted(read_rows(path / "rows.jsonl", "unit"), key=lambda r: r["unit"])

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ActivationStore:
        """Open an extraction run; refuses a missing, foreign or unfinished one."""
        path = Path(path)
        config_file, summary_file = path / "config.json", path / "summary.json"
        if not config_file.is_file():
            raise StoreError(
                f"{path} holds no activation store (no config.json)",
                "pass the --out directory of `whisperlens sae extract`",
            )
        identity = json.loads(config_file.read_text(encoding="utf-8"))
        if identity.get("study") != STUDY:
            raise StoreError(
                f"{path} is a {identity.get('study')!r} run, not {STUDY!r}",
                "pass the --out directory of `whisperlens sae extract`",
            )
        if not summary_file.is_file():
            raise StoreError(
                f"the extraction in {path} is unfinished (no summary.json)",
                "re-run the same extract command: it resumes where it stopped",
            )
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
        return cls(path, identity["config"], summary)

    def __repr__(self) -> str:
        return (
            f"ActivationStore({str(self.path)!r}, site={self.site!r}, "
            f"n_frames={self.n_frames}, d_model={self.d_model})"
        )

    def dataset(self) -> AudioDataset:
        return AudioDataset.from_manifest(self.path / MANIFEST_FILE)

    def shards(self) -> list[Path]:
        return [self.path / row["shard"] for row in self._rows]

    def n_split(self, split: str | None) -> int:
        """Frames in ``split`` ("train", "heldout"; None: all)."""
        if split is None:
            return self.n_frames
        return int(self.summary["frames"]["split"].get(_check_split(split), 0))

    def _read(
        self, shard: Path, split: str | None, keys: Sequence[str] = ("acts",)
    ) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        tensors = load_file(str(shard))
        out = {k: tensors[k] for k in keys}
        if split is not None:
            keep = tensors["split"] == SPLITS.index(_check_split(split))
            out = {k: v[keep] for k, v in out.items()}
        if "acts" in out:
            out["acts"] = out["acts"].float()
        return out

    def iter_batches(
        self,
        batch_size: int,
        *,
        split: str | None = "train",
        shuffle: bool = True,
        seed: int = 0,
        buffer_frames: int = 262_144,
        epochs: int = 1,
        drop_last: bool = False,
    ) -> Iterator[torch.Tensor]:
        """float32 batches [batch_size, d] of ``split``'s frames, every frame once per epoch.

        Shards are read in a seeded random order into a shuffle buffer of about
        ``buffer_frames`` frames; each time it fills, it is shuffled and all but half of it
        is emitted, so memory stays at the buffer plus one shard whatever the corpus size.
        The last batch of an epoch may be smaller (unless ``drop_last``).
        """
        if batch_size < 1 or buffer_frames < 1:
            raise StoreError("batch_size and buffer_frames must be >= 1")
        for epoch in range(epochs):
            gen = torch.Generator().manual_seed(int(stable_hash([seed, epoch], 8), 16))
            order = (
                torch.randperm(len(self._rows), generator=gen).tolist()
                if shuffle
                else list(range(len(self._rows)))
            )
            buffer = torch.zeros(0, self.d_model)
            for index in order:
                acts = self._read(self.path / self._rows[index]["shard"], split)["acts"]
                buffer = torch.cat([buffer, acts])
                if len(buffer) >= buffer_frames:
                    if shuffle:
                        buffer = buffer[torch.randperm(len(buffer), generator=gen)]
                    keep = buffer_frames // 2 if shuffle else 0
                    n_out = (len(buffer) - keep) // batch_size * batch_size
                    yield from buffer[:n_out].split(batch_size)
                    buffer = buffer[n_out:]
            if shuffle and len(buffer):
                buffer = buffer[torch.randperm(len(buffer), generator=gen)]
            for batch in buffer.split(batch_size):
                if len(batch) == batch_size or not drop_last:
                    yield batch

    def load(
        self,
        *,
        split: str | None = None,
        max_frames: int | None = None,
        seed: int = 0,
        labels: bool = True,
    ) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """float32 acts [n, d] and per-frame metadata (keys as in the shards; {} without
        ``labels``); a seeded uniform subsample of ``max_frames`` frames when given."""
        total = self.n_split(split)
        picked: np.ndarray | None = None
        if max_frames is not None and max_frames < total:
            rng = np.random.default_rng(seed)
            picked = np.sort(rng.choice(total, size=max_frames, replace=False))
        keys = ("acts", *META_KEYS) if labels else ("acts",)
        chunks: list[dict[str, torch.Tensor]] = []
        offset = 0
        for shard in self.shards():
            part = self._read(shard, split, keys)
            n = len(part["acts"])
            if picked is not None:
                lo, hi = np.searchsorted(picked, [offset, offset + n])
                local = torch.from_numpy(picked[lo:hi] - offset)
                part = {k: v[local] for k, v in part.items()}
            offset += n
            chunks.append(part)
        if not chunks:
            return torch.zeros(0, self.d_model), {}
        acts = torch.cat([c["acts"] for c in chunks])
        meta = {k: torch.cat([c[k] for c in chunks]).numpy() for k in keys if k != "acts"}
        return acts, meta

    def mean(self, split: str | None = "train") -> torch.Tensor:
        """Mean activation [d] of ``split`` (None: all frames), from the summary."""
        key = "all" if split is None else _check_split(split)
        return torch.tensor(self.summary["mean"][key], dtype=torch.float32)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise StoreError(f"unknown split {split!r}", f"use one of {SPLITS} or None (all)")
    return split


# -- what packing does ---------------------------------------------------------------------------
def measure_packing(
    dataset: Sequence[AudioItem],
    *,
    model: str | HookedWhisper = DEFAULT_MODEL,
    site: str = DEFAULT_SITE,
    n_clips: int = 48,
    gap_s: float = GAP_S_DEFAULT,
    seed: int = 0,
) -> dict[str, Any]:
    """Each sampled clip's frames packed (as :func:`extract` packs them) vs alone in a window.

    Per clip: relative error ``||packed - alone|| / ||alone||`` over its frames and the mean
    cosine of its frames. Two decompositions: ``position_only`` compares the clip alone at
    position 0 with the clip alone at its packed window position (what the absolute position
    alone changes); ``context_only`` compares the clip alone at its packed position with the
    packed window (what the other clips in the window change).
    Clips are a seeded sample of those of at most 30 s; the clips sharing a window are
    sampled clips, in manifest order.
    """
    from whisperlens.hooks import HookedWhisper

    hooked = HookedWhisper.from_pretrained(model) if isinstance(model, str) else model
    short = [i for i, it in enumerate(dataset) if item_frames(it) <= N_ENCODER_FRAMES]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(short, size=min(n_clips, len(short)), replace=False).tolist())
    sample = [dataset[i] for i in chosen]
    runner = WindowRunner(hooked, sample, site)
    packed = plan_windows(
        [item_frames(it) for it in sample], pack=True, gap_frames=round(gap_s * 50)
    )
    keys = ("err", "cos", "pos_err", "pos_cos", "ctx_err", "ctx_cos", "first")
    stats: dict[str, list[float]] = {k: [] for k in keys}
    for window in packed:
        rows_packed = _slot_acts(runner, window)
        for slot, rows_p in zip(window, rows_packed, strict=True):
            [rows_a] = _slot_acts(runner, (Slot(slot.item, 0, slot.n_frames, 0),))
            [rows_o] = _slot_acts(runner, (slot,))
            for prefix, ref, other in (("", rows_a, rows_p), ("pos_", rows_a, rows_o),
                                       ("ctx_", rows_o, rows_p)):  # fmt: skip
                err, cos = _compare(ref, other)
                stats[prefix + "err"].append(err)
                stats[prefix + "cos"].append(cos)
            stats["first"].append(float(slot.offset == 0))
    return _packing_summary(stats, runner, sample, packed, gap_s, seed)


def _slot_acts(runner: WindowRunner, window: Window) -> list[torch.Tensor]:
    feats, [real] = runner.features([window])
    acts = runner.run(feats)[0].float()
    return [acts[s.offset : s.offset + n] for s, n in zip(window, real, strict=True)]


def _compare(reference: torch.Tensor, other: torch.Tensor) -> tuple[float, float]:
    err = float((other - reference).norm() / reference.norm().clamp_min(1e-12))
    cos = float(torch.nn.functional.cosine_similarity(other, reference, dim=-1).mean())
    return err, cos


def _packing_summary(
    stats: dict[str, list[float]],
    runner: WindowRunner,
    sample: Sequence[AudioItem],
    packed: list[Window],
    gap_s: float,
    seed: int,
) -> dict[str, Any]:
    def describe(values: list[float]) -> dict[str, float]:
        v = np.asarray(values)
        q = np.quantile(v, [0.1, 0.5, 0.9])
        return {
            "mean": round(float(v.mean()), 4),
            "p10": round(float(q[0]), 4),
            "median": round(float(q[1]), 4),
            "p90": round(float(q[2]), 4),
        }

    later = [i for i, f in enumerate(stats["first"]) if not f]
    n_frames = sum(item_frames(it) for it in sample)
    return {
        "model": runner.model.loaded.name,
        "site": runner.site,
        "gap_s": gap_s,
        "seed": seed,
        "n_clips": len(sample),
        "n_windows_packed": len(packed),
        "n_windows_alone": len(sample),
        "fill_packed": round(n_frames / (len(packed) * N_ENCODER_FRAMES), 4),
        "fill_alone": round(n_frames / (len(sample) * N_ENCODER_FRAMES), 4),
        "rel_error": describe(stats["err"]),
        "cosine": describe(stats["cos"]),
        "rel_error_not_first": describe([stats["err"][i] for i in later]) if later else None,
        "position_only": {
            "rel_error": describe(stats["pos_err"]),
            "cosine": describe(stats["pos_cos"]),
        },
        "context_only": {
            "rel_error": describe(stats["ctx_err"]),
            "cosine": describe(stats["ctx_cos"]),
        },
    }
