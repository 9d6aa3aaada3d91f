"""What each latent responds to: frequency, top frames with audio, label purity, a label.

`analyse_features` streams a sample of an activation store through a dictionary and writes a
features run directory (study ``sae-features``)::

    FEAT/latents.json          one dict per analysed latent of the SAE (the dashboard's input)
    FEAT/baselines/<name>.json the same statistics for PCA and random directions (no snippets)
    FEAT/snippets/*.wav        ~1.5 s of the item's audio around each top frame (16 kHz mono)
    FEAT/summary.json          counts of labelled latents per type, SAE vs PCA vs random

**Purity and monosemanticity.** Activations are made non-negative first (SAE and random
codes are; a PCA component is split into its positive and negative half, ``pc3+`` and
``pc3-``, so PCA is not penalised for having two ends); a latent *fires* on a frame when its
activation is > 0. For a label type ``t`` (phoneme, word, language, speech = the store's
coarse ``label``, position = the frame's window position in ``N_POSITION_BINS`` bins) the
*domain* ``D_t`` is the frames of items annotated for ``t`` (items with at least one frame
of that type labelled; every frame for language, speech and position), so natural speech
without phoneme timings does not count against a phoneme latent, while unlabelled frames of
annotated items (pauses) do. Over ``D_t`` (``n`` frames), for latent ``j`` and value ``v``:

- ``purity = A_j(v) / M_j``: the share of the latent's activation mass on frames labelled
  ``v`` (``purity_lift = (purity - b) / (1 - b)`` with ``b`` the base rate of ``v``);
- the monosemanticity score is **Cohen's kappa** between "j fires" and "the frame is ``v``":
  ``kappa = 2 (a - q b) / (q (1 - b) + b (1 - q))`` with ``a`` = share of frames where both
  hold, ``q`` = firing rate, ``b`` = base rate. It is chance-corrected: 0 for a latent that
  fires independently of ``v`` (a latent firing on every frame, or on a random subset of
  speech, scores ~0 for "speech" even though all its mass is on speech, which mass purity
  alone would call pure), 1 for a latent that fires exactly on the frames of ``v``; firing
  on only part of ``v`` or also elsewhere lowers it. The type's label is
  ``argmax_v kappa``; ``kappa_lo = kappa - 1.96 SE`` (large-sample SE
  ``sqrt(po (1 - po) / n) / (1 - pe)``).

A latent's **monosemanticity** is the kappa of the type with the highest ``kappa_lo`` (its
``label`` is that type:value), ``monosemanticity_lo`` that ``kappa_lo``. It *counts as
monosemantic* when ``monosemanticity_lo >= threshold`` (default 0.5) and it fired on at
least ``min_support`` frames labelled with its value (default 20) in at least ``min_items``
distinct items (default 5): a latent seen on 3 frames, or only on the frames of one clip
(frames of a clip are not independent), is never called monosemantic, however pure.
The summary compares the fraction of alive latents counted, and the mean monosemanticity,
between the SAE, PCA (all components) and random directions (the SAE's size and mean L0),
with percentile-bootstrap CIs over latents (and of the differences).
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from whisperlens.frames import ENCODER_FRAME_SECONDS, N_ENCODER_FRAMES, SAMPLE_RATE
from whisperlens.runs import RunDir
from whisperlens.stats import Z95
from whisperlens.studies.sae.dictionaries import Dictionary, PCADictionary, RandomDictionary

STUDY = "sae-features"
FORMAT_VERSION = 1
LATENTS_FILE, BASELINES_DIR, SNIPPETS_DIR = "latents.json", "baselines", "snippets"
LABEL_TYPES = ("phoneme", "word", "language", "speech", "position")
_META_KEY = {"phoneme": "phoneme", "word": "word", "language": "language", "speech": "label"}
N_POSITION_BINS = 10
SNIPPET_FRAMES = 75  # 1.5 s of 20 ms frames
SNIPPET_BEFORE = 37  # frames before the peak
SAMPLES_PER_FRAME = int(SAMPLE_RATE * ENCODER_FRAME_SECONDS)  # 320


@dataclass(frozen=True)
class FeatureOptions:
    """How latents are analysed (the run's config)."""

    max_frames: int | None = 100_000  # frames sampled from the store (None: all)
    split: str | None = None  # store split analysed (None: train and heldout)
    n_top: int = 5  # top-activating frames per latent (one per item)
    threshold: float = 0.5  # monosemanticity_lo needed to count a latent as labelled
    min_support: int = 20  # firing frames with its label needed to count a latent
    min_items: int = 5  # distinct items among those frames needed to count it
    chunk_frames: int = 4096  # frames encoded at once
    seed: int = 0  # store subsample and random dictionary
    n_bootstrap: int = 1000
    example_latents: int | None = 256  # latents given top examples with audio (None: all)

    def __post_init__(self) -> None:
        for name in ("n_top", "chunk_frames", "n_bootstrap"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_frames is not None and self.max_frames < 2:
            raise ValueError(f"max_frames must be >= 2 or None, got {self.max_frames}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")


# -- labels of frames ------------------------------------------------------------------------
def position_bins() -> list[str]:
    width = N_ENCODER_FRAMES * ENCODER_FRAME_SECONDS / N_POSITION_BINS
    return [f"{i * width:g}-{(i + 1) * width:g}s" for i in range(N_POSITION_BINS)]


@dataclass
class FrameLabels:
    """One label type over the analysed frames: value index per frame (-1 none) and domain."""

    values: list[str]  # names of the value indices (compacted to values present)
    index: np.ndarray  # [n] int64, -1 where the frame has no value of this type
    domain: np.ndarray  # [n] bool, frames of items annotated for this type

    def base_rates(self) -> np.ndarray:
        n = max(int(self.domain.sum()), 1)
        counts = np.bincount(
            self.index[self.domain & (self.index >= 0)], minlength=len(self.values)
        )
        return counts / n


def frame_labels(
    meta: dict[str, np.ndarray], vocab: dict[str, list[str]]
) -> dict[str, FrameLabels]:
    """The five label types of the frames described by ``meta`` (store metadata arrays)."""
    out: dict[str, FrameLabels] = {}
    item = np.asarray(meta["item"], dtype=np.int64)
    for t, key in _META_KEY.items():
        raw = np.asarray(meta[key], dtype=np.int64)
        present = np.unique(raw[raw >= 0])
        compact = np.full(raw.shape, -1, dtype=np.int64)
        compact[raw >= 0] = np.searchsorted(present, raw[raw >= 0])
        names = vocab.get(key, [])
        values = [names[i] if i < len(names) else str(i) for i in present.tolist()]
        if t in ("phoneme", "word"):  # only items with timings of this type
            domain = np.isin(item, np.unique(item[raw >= 0]))
        else:
            domain = np.ones(raw.shape, dtype=bool)
        out[t] = FrameLabels(values, compact, domain)
    pos = np.asarray(meta["pos"], dtype=np.int64)
    bins = np.clip(pos * N_POSITION_BINS // N_ENCODER_FRAMES, 0, N_POSITION_BINS - 1)
    out["position"] = FrameLabels(position_bins(), bins, np.ones(pos.shape, dtype=bool))
    return out


# -- streaming statistics -------------------------------------------------------------------
def nonneg_codes(dictionary: Dictionary, x: torch.Tensor) -> torch.Tensor:
    """Codes made non-negative: PCA components split into + and - halves (2k latents)."""
    z = dictionary.encode(x).to(torch.float32)
    if dictionary.name == "pca":
        return torch.cat([z.clamp_min(0), (-z).clamp_min(0)], dim=1)
    return z.clamp_min(0)


def latent_names(dictionary: Dictionary) -> list[str]:
    m = dictionary.n_latents
    if dictionary.name == "pca":
        return [f"pc{i}+" for i in range(m)] + [f"pc{i}-" for i in range(m)]
    return [str(i) for i in range(m)]


class LatentStats:
    """Per-latent sums over frames, accumulated chunk by chunk (memory: m x label values)."""

    def __init__(
        self, m: int, labels: dict[str, FrameLabels], items: np.ndarray, n_top: int
    ) -> None:
        self.m, self.labels, self.k = m, labels, n_top
        self.items = torch.from_numpy(np.asarray(items, dtype=np.int64))
        self.n_frames = 0
        self.n_fire = torch.zeros(m, dtype=torch.float64)
        self.total = torch.zeros(m, dtype=torch.float64)
        self.max = torch.zeros(m)
        # per latent, the peaks of its best items so far (one entry per item)
        self.top_val = torch.full((m, n_top), -1.0)  # -1: an empty slot
        self.top_idx = torch.zeros((m, n_top), dtype=torch.long)  # analysed-frame index
        self.top_item = torch.full((m, n_top), -1, dtype=torch.long)
        self.hits = {
            t: torch.zeros(m, len(fl.values), dtype=torch.float64) for t, fl in labels.items()
        }  # firing frames per label value
        self.mass = {
            t: torch.zeros(m, len(fl.values), dtype=torch.float64) for t, fl in labels.items()
        }
        self.dom_mass = {t: torch.zeros(m, dtype=torch.float64) for t in labels}
        self.dom_sq = {t: torch.zeros(m, dtype=torch.float64) for t in labels}
        self.dom_fire = {t: torch.zeros(m, dtype=torch.float64) for t in labels}
        self.n_items: dict[str, np.ndarray] = {}  # filled by count_items

    def add(self, z: torch.Tensor, start: int) -> None:
        """Add codes ``z`` [c, m] of analysed frames ``start..start+c``."""
        c = z.shape[0]
        rows = slice(start, start + c)
        z64 = z.to(torch.float64)
        self.n_frames += c
        self.n_fire += (z > 0).sum(0)
        self.total += z64.sum(0)
        self.max = torch.maximum(self.max, z.max(0).values)
        for t, fl in self.labels.items():
            dom = torch.from_numpy(fl.domain[rows])
            zd = z64[dom]
            self.dom_mass[t] += zd.sum(0)
            self.dom_sq[t] += (zd * zd).sum(0)
            self.dom_fire[t] += (zd > 0).sum(0)
            idx = torch.from_numpy(fl.index[rows])
            lab = (idx >= 0) & dom
            self.mass[t].index_add_(1, idx[lab], z64[lab].T)
            self.hits[t].index_add_(1, idx[lab], (z64[lab] > 0).to(torch.float64).T)
        self._merge_top(z, start)

    def _merge_top(self, z: torch.Tensor, start: int) -> None:
        """Keep, per latent, the ``k`` items with the highest peak (exact, one per item)."""
        c = z.shape[0]
        uniq, inv = torch.unique(self.items[start : start + c], return_inverse=True)
        u = len(uniq)
        peak_UM = torch.full((u, self.m), -1.0).scatter_reduce(
            0, inv[:, None].expand(c, self.m), z, "amax"
        )
        rows_CM = torch.where(z == peak_UM[inv], torch.arange(c)[:, None], c)
        arg_UM = torch.full((u, self.m), c).scatter_reduce(
            0, inv[:, None].expand(c, self.m), rows_CM, "amin"
        )
        new_val, new_idx = peak_UM.T, arg_UM.T + start  # [m, u]
        new_item = uniq.expand(self.m, u)
        # an item already kept from an earlier chunk: keep its better peak, drop the other
        same_MKU = self.top_item[:, :, None] == new_item[:, None, :]
        old_best = torch.where(same_MKU, self.top_val[:, :, None], -1.0).amax(1)  # [m, u]
        old_idx = torch.where(same_MKU, self.top_idx[:, :, None], 0).amax(1)
        better = old_best > new_val
        new_val = torch.where(better, old_best, new_val)
        new_idx = torch.where(better, old_idx, new_idx)
        keep_val = torch.where(same_MKU.any(2), -1.0, self.top_val)
        vals = torch.cat([keep_val, new_val], dim=1)
        idxs = torch.cat([self.top_idx, new_idx], dim=1)
        items = torch.cat([self.top_item, new_item], dim=1)
        top = vals.topk(min(self.k, vals.shape[1]), dim=1)
        self.top_val = top.values
        self.top_idx, self.top_item = idxs.gather(1, top.indices), items.gather(1, top.indices)


def accumulate(
    dictionary: Dictionary,
    acts: torch.Tensor,
    labels: dict[str, FrameLabels],
    items: np.ndarray,
    n_top: int,
    chunk_frames: int,
    latents: Sequence[int] | None = None,
) -> LatentStats:
    """Statistics of ``dictionary``'s non-negative codes over ``acts`` [n, d]."""
    cols = None if latents is None else torch.as_tensor(list(latents), dtype=torch.long)
    m = len(latent_names(dictionary)) if cols is None else len(cols)
    stats = LatentStats(m, labels, items, n_top)
    for start in range(0, acts.shape[0], chunk_frames):
        z = nonneg_codes(dictionary, acts[start : start + chunk_frames])
        stats.add(z if cols is None else z[:, cols], start)
    count_items(stats, dictionary, acts, chunk_frames, cols)
    return stats


def count_items(
    stats: LatentStats,
    dictionary: Dictionary,
    acts: torch.Tensor,
    chunk_frames: int,
    cols: torch.Tensor | None,
) -> None:
    """Second pass: per type, the distinct items on whose frames labelled with the latent's
    best value it fires (frames of one clip are not independent evidence). Memory: one
    boolean [m, items in the sample] per type."""
    uniq, item_ix = np.unique(stats.items.numpy(), return_inverse=True)
    best = {t: torch.from_numpy(type_scores(stats, t)["value"]) for t in stats.labels}
    seen = {t: torch.zeros(stats.m, len(uniq), dtype=torch.bool) for t in stats.labels}
    for start in range(0, acts.shape[0], chunk_frames):
        z = nonneg_codes(dictionary, acts[start : start + chunk_frames])
        fires = (z if cols is None else z[:, cols]) > 0
        rows = slice(start, start + fires.shape[0])
        ix = torch.from_numpy(item_ix[rows])
        for t, fl in stats.labels.items():
            value = torch.from_numpy(np.where(fl.domain[rows], fl.index[rows], -2))
            hit = fires & (value[:, None] == best[t][None, :])
            f, j = hit.nonzero(as_tuple=True)
            seen[t][j, ix[f]] = True
    stats.n_items = {t: v.sum(1).numpy() for t, v in seen.items()}


# -- scores --------------------------------------------------------------------------------
def chance_corrected(p: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(p - b) / (1 - b)``, 0 where the base rate is 1 (no information)."""
    room = 1.0 - b
    return np.where(room > 1e-9, (p - b) / np.where(room > 1e-9, room, 1.0), 0.0)


def kappa(hits: np.ndarray, fire: np.ndarray, count: np.ndarray, n: float) -> np.ndarray:
    """Cohen's kappa between "the latent fires" and "the frame has label v" over ``n``
    frames: ``hits`` frames with both, ``fire`` firing frames, ``count`` frames labelled v
    (broadcasting). ``2 (a - q b) / (q (1 - b) + b (1 - q))`` with ``a = hits / n``,
    ``q = fire / n``, ``b = count / n``; 0 where undefined (q or b is 0 or 1)."""
    a, q, b = hits / n, fire / n, count / n
    denom = q * (1 - b) + b * (1 - q)
    return np.where(denom > 1e-12, 2 * (a - q * b) / np.where(denom > 1e-12, denom, 1.0), 0.0)


def kappa_se(hits: np.ndarray, fire: np.ndarray, count: np.ndarray, n: float) -> np.ndarray:
    """Large-sample standard error of :func:`kappa`: ``sqrt(po (1 - po) / n) / (1 - pe)``."""
    a, q, b = hits / n, fire / n, count / n
    po = 1 - q - b + 2 * a
    pe = q * b + (1 - q) * (1 - b)
    room = np.maximum(1 - pe, 1e-12)
    return np.sqrt(np.clip(po * (1 - po), 0, None) / max(n, 1.0)) / room


def type_scores(stats: LatentStats, t: str) -> dict[str, np.ndarray]:
    """Best value of type ``t`` per latent (by kappa): index, kappa, its lower bound, mass
    purity, chance-corrected purity, support (firing frames with that value)."""
    fl = stats.labels[t]
    n = float(fl.domain.sum())
    hits, mass = stats.hits[t].numpy(), stats.mass[t].numpy()
    dom, fire = stats.dom_mass[t].numpy(), stats.dom_fire[t].numpy()
    rows = np.arange(stats.m)
    if mass.shape[1] == 0 or n == 0:
        zeros = np.zeros(stats.m)
        return {"value": np.full(stats.m, -1), "kappa": zeros, "kappa_lo": zeros,
                "purity": zeros, "lift": zeros, "support": zeros}  # fmt: skip
    counts = (fl.base_rates() * n)[None, :]
    k = kappa(hits, fire[:, None], counts, n)
    best = k.argmax(1)
    h, c = hits[rows, best], counts[0, best]
    k_best = k[rows, best]
    k_lo = k_best - Z95 * kappa_se(h, fire, c, n)
    purity = mass[rows, best] / np.maximum(dom, 1e-30)
    alive = fire > 0
    return {
        "value": np.where(alive, best, -1),
        "kappa": np.where(alive, k_best, 0.0),
        "kappa_lo": np.where(alive, k_lo, 0.0),
        "purity": np.where(alive, purity, 0.0),
        "lift": np.where(alive, chance_corrected(purity, c / n), 0.0),
        "support": h,
    }


def latent_records(
    stats: LatentStats, names: list[str], options: FeatureOptions
) -> list[dict[str, Any]]:
    """One record per latent (no top frames yet): frequency, activations, purity, label."""
    scores = {t: type_scores(stats, t) for t in stats.labels}
    n = max(stats.n_frames, 1)
    n_fire = stats.n_fire.numpy()
    records = []
    for j, name in enumerate(names):
        by_type: dict[str, dict[str, Any]] = {}
        for t, sc in scores.items():
            v = int(sc["value"][j])
            by_type[t] = {
                "label": stats.labels[t].values[v] if v >= 0 else None,
                "purity": float(sc["purity"][j]),
                "purity_lift": float(sc["lift"][j]),
                "kappa": float(sc["kappa"][j]),
                "kappa_lo": float(sc["kappa_lo"][j]),
                "support": int(sc["support"][j]),
                "items": int(stats.n_items[t][j]) if t in stats.n_items else None,
            }
        ranked = [t for t in by_type if by_type[t]["label"] is not None]
        best = max(ranked, key=lambda t: by_type[t]["kappa_lo"], default=None)
        rec: dict[str, Any] = {
            "latent": int(name) if name.isdigit() else name,
            "frequency": float(n_fire[j] / n),
            "mean_activation": float(stats.total[j] / max(n_fire[j], 1)),
            "max_activation": float(stats.max[j]),
            "label": None if best is None else f"{best}:{by_type[best]['label']}",
            "label_type": best,
            "purity": 0.0 if best is None else by_type[best]["purity"],
            "monosemanticity": 0.0 if best is None else by_type[best]["kappa"],
            "monosemanticity_lo": 0.0 if best is None else by_type[best]["kappa_lo"],
            "purity_by_type": by_type,
        }
        rec["monosemantic"] = bool(
            best is not None
            and rec["monosemanticity_lo"] >= options.threshold
            and _supported(by_type[best], options)
        )
        records.append(rec)
    return records


def _supported(entry: dict[str, Any], options: FeatureOptions) -> bool:
    items = entry.get("items")
    return entry["support"] >= options.min_support and (items is None or items >= options.min_items)


def top_frames(stats: LatentStats) -> list[list[int]]:
    """Per latent, up to ``n_top`` analysed-frame indices of its highest activations, one per
    item (the item's peak), by decreasing activation; frames with zero activation excluded."""
    return [
        [i for v, i in zip(vals, idxs, strict=True) if v > 0]
        for vals, idxs in zip(stats.top_val.tolist(), stats.top_idx.tolist(), strict=True)
    ]


# -- traces and snippets --------------------------------------------------------------------
def snippet_window(peak: int, n_item_frames: int) -> tuple[int, int]:
    """First frame and length of the ~1.5 s snippet around ``peak`` within the item."""
    start = max(0, min(peak - SNIPPET_BEFORE, n_item_frames - SNIPPET_FRAMES))
    return start, max(1, min(SNIPPET_FRAMES, n_item_frames - start))


def _item_shards(shards: Iterable[Path], wanted: set[int]) -> dict[Path, list[int]]:
    """Which shards hold frames of the wanted items (reads only the ``item`` tensors)."""
    from safetensors import safe_open

    out: dict[Path, list[int]] = {}
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            items = set(np.unique(f.get_tensor("item").numpy()).tolist()) & wanted
        if items:
            out[shard] = sorted(items)
    return out


def item_codes(
    store: Any, dictionary: Dictionary, items: set[int], cols: torch.Tensor | None
) -> dict[int, np.ndarray]:
    """Non-negative codes [n_item_frames, m] of every frame of each item, straight from the
    store's shards (frame ``f`` of the item is row ``f``; frames not stored are 0)."""
    from safetensors.torch import load_file

    parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for shard, wanted in _item_shards(store.shards(), items).items():
        data = load_file(str(shard))
        item = data["item"].numpy()
        for i in wanted:
            rows = np.flatnonzero(item == i)
            z = nonneg_codes(dictionary, data["acts"][torch.from_numpy(rows)].float())
            z = z if cols is None else z[:, cols]
            parts[i].append((data["frame"].numpy()[rows], z.numpy()))
    out = {}
    for i, chunks in parts.items():
        n = int(max(int(f.max()) for f, _ in chunks)) + 1
        codes = np.zeros((n, chunks[0][1].shape[1]), dtype=np.float32)
        for frames, z_np in chunks:
            codes[frames] = z_np
        out[i] = codes
    return out


def _label_at(meta: dict[str, np.ndarray], key: str, row: int, vocab: dict[str, list[str]]) -> Any:
    value = int(meta[key][row])
    names = vocab.get(key, [])
    return None if value < 0 else (names[value] if value < len(names) else str(value))


def attach_top(
    records: list[dict[str, Any]],
    tops: list[list[int]],
    meta: dict[str, np.ndarray],
    store: Any,
    dictionary: Dictionary,
    run: RunDir,
    cols: torch.Tensor | None,
) -> None:
    """Fill each record's ``top`` list, cutting the audio snippets and activation traces."""
    dataset, vocab = store.dataset(), store.vocab
    needed = {int(meta["item"][r]) for rows in tops for r in rows}
    codes = item_codes(store, dictionary, needed, cols)
    audio_cache: dict[int, np.ndarray] = {}
    written: set[str] = set()
    for j, (rec, rows) in enumerate(zip(records, tops, strict=True)):
        rec["top"] = []
        for r in rows:
            i, peak = int(meta["item"][r]), int(meta["frame"][r])
            if i not in audio_cache:
                audio_cache[i] = dataset[i].load(whole=True)
            audio = audio_cache[i]
            n_item = max(math.ceil(len(audio) / SAMPLES_PER_FRAME), peak + 1)
            start, length = snippet_window(peak, n_item)
            name = f"{SNIPPETS_DIR}/i{i:06d}_f{start:05d}.wav"
            if name not in written:
                clip = audio[start * SAMPLES_PER_FRAME : (start + length) * SAMPLES_PER_FRAME]
                _save_snippet(run.file(name), clip)
                written.add(name)
            trace = np.zeros(length, dtype=np.float32)
            item_z = codes[i][:, j]
            have = item_z[start : start + length]
            trace[: len(have)] = have
            rec["top"].append(
                {
                    "item": dataset[i].id,
                    "language": _label_at(meta, "language", r, vocab),
                    "label": _label_at(meta, "label", r, vocab),
                    "time_s": round(peak * ENCODER_FRAME_SECONDS, 4),
                    "activation": float(item_z[peak]) if peak < len(item_z) else 0.0,
                    "word": _label_at(meta, "word", r, vocab),
                    "phoneme": _label_at(meta, "phoneme", r, vocab),
                    "audio": name,
                    "snippet_start_s": round(start * ENCODER_FRAME_SECONDS, 4),
                    "trace": [round(float(v), 4) for v in trace],
                }
            )


def _save_snippet(path: Path, clip: np.ndarray) -> None:
    from whisperlens.audio import save_wav

    if clip.size == 0:
        clip = np.zeros(SAMPLES_PER_FRAME, dtype=np.float32)
    save_wav(path, clip, SAMPLE_RATE)


# -- summary ---------------------------------------------------------------------------------
def dictionary_summary(records: list[dict[str, Any]], options: FeatureOptions) -> dict[str, Any]:
    """Counts per label type and fractions with bootstrap CIs over alive latents."""
    alive = [r for r in records if r["frequency"] > 0]
    mono = np.array([float(r["monosemantic"]) for r in alive])
    score = np.array([r["monosemanticity"] for r in alive])
    counts = {
        t: sum(1 for r in alive if r["monosemantic"] and r["label_type"] == t) for t in LABEL_TYPES
    }
    return {
        "n_latents": len(records),
        "n_alive": len(alive),
        "n_monosemantic": int(mono.sum()),
        "counts_by_type": counts,
        "fraction_monosemantic": float(mono.mean()) if len(mono) else None,
        "fraction_monosemantic_ci": _ci(mono, options),
        "mean_monosemanticity": float(score.mean()) if len(score) else None,
        "mean_monosemanticity_ci": _ci(score, options),
    }


def _ci(values: np.ndarray, options: FeatureOptions) -> list[float] | None:
    from whisperlens.stats import bootstrap_ci

    if len(values) == 0:
        return None
    return list(bootstrap_ci(values, n_resamples=options.n_bootstrap, seed=options.seed))


def difference_ci(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, list[float]] | None:
    """mean(a) - mean(b) and its percentile-bootstrap 95 % CI (a and b resampled apart)."""
    if len(a) == 0 or len(b) == 0:
        return None
    rng = np.random.default_rng(seed)
    boot_a = a[rng.integers(0, len(a), (n_resamples, len(a)))].mean(1)
    boot_b = b[rng.integers(0, len(b), (n_resamples, len(b)))].mean(1)
    diff = boot_a - boot_b
    return float(a.mean() - b.mean()), [
        float(np.quantile(diff, 0.025)),
        float(np.quantile(diff, 0.975)),
    ]


def compare(by_dict: dict[str, list[dict[str, Any]]], options: FeatureOptions) -> dict[str, Any]:
    """SAE minus each baseline: fraction monosemantic and mean monosemanticity (alive)."""
    out: dict[str, Any] = {}
    if "sae" not in by_dict:
        return out

    def arrays(recs: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        alive = [r for r in recs if r["frequency"] > 0]
        return (np.array([float(r["monosemantic"]) for r in alive]),
                np.array([r["monosemanticity"] for r in alive]))  # fmt: skip

    sae_mono, sae_score = arrays(by_dict["sae"])
    for name, recs in by_dict.items():
        if name == "sae":
            continue
        mono, score = arrays(recs)
        d_frac = difference_ci(sae_mono, mono, options.n_bootstrap, options.seed)
        d_score = difference_ci(sae_score, score, options.n_bootstrap, options.seed)
        out[f"sae_minus_{name}"] = {
            "fraction_monosemantic": None if d_frac is None else d_frac[0],
            "fraction_monosemantic_ci": None if d_frac is None else d_frac[1],
            "mean_monosemanticity": None if d_score is None else d_score[0],
            "mean_monosemanticity_ci": None if d_score is None else d_score[1],
        }
    return out


# -- driver ----------------------------------------------------------------------------------
def dictionary_fingerprint(dictionary: Dictionary) -> str:
    """A short hash of the dictionary's decoder directions (part of the run's identity)."""
    import hashlib

    data = dictionary.directions.detach().to(torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def analyse_features(
    store: Any,
    dictionary: Dictionary,
    out: str | os.PathLike[str],
    *,
    max_frames: int | None = 100_000,
    n_top: int = 5,
    latents: Sequence[int] | None = None,
    baselines: bool = True,
    progress: bool = True,
    split: str | None = None,
    threshold: float = 0.5,
    min_support: int = 20,
    min_items: int = 5,
    example_latents: int | None = 256,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Label every latent of ``dictionary`` (or those in ``latents``) on a sample of ``store``
    and write the features run directory ``out`` (see the module docstring); returns the
    summary. With ``baselines``, PCA (all components) and random directions (the SAE's size
    and mean L0) get the same analysis, without snippets."""
    options = FeatureOptions(max_frames, split, n_top, threshold, min_support, min_items, seed=seed,
                             example_latents=example_latents)  # fmt: skip
    config = {
        "store": str(Path(store.path).resolve()),
        "site": store.site,
        "model": store.model,
        "dictionary": {
            "name": dictionary.name,
            "n_latents": dictionary.n_latents,
            "fingerprint": dictionary_fingerprint(dictionary),
        },  # fmt: skip
        "latents": None if latents is None else [int(j) for j in latents],
        "baselines": baselines,
        "options": options.__dict__,
    }
    artifacts = (LATENTS_FILE, BASELINES_DIR, SNIPPETS_DIR)
    with RunDir.open(out, study=STUDY, config=config, format_version=FORMAT_VERSION,
                     key="id", artifacts=artifacts, overwrite=overwrite) as run:  # fmt: skip
        t0 = time.perf_counter()
        acts, meta = store.load(split=split, max_frames=max_frames, seed=seed)
        labels = frame_labels(meta, store.vocab)
        units = ["sae", "pca", "random"] if baselines else ["sae"]
        bar = run.progress(len(units), "sae features", progress)
        for name in run.pending(units, str):
            row = _analyse_one(name, store, dictionary, acts, meta, labels, run, options, latents)
            run.append(row)
            bar.update(1)
        bar.close()
        by_dict = {row["id"]: _read_json(run.file(row["file"])) for row in run.rows()}
        summary = {
            "study": STUDY,
            "n_frames": int(acts.shape[0]),
            "site": store.site,
            "model": store.model,
            "threshold": threshold,
            "min_support": min_support,
            "min_items": min_items,
            "dictionaries": {k: dictionary_summary(v, options) for k, v in by_dict.items()},
            "comparison": compare(by_dict, options),
            "dictionary_settings": {row["id"]: row["settings"] for row in run.rows()},
            "wall_s": round(time.perf_counter() - t0, 2),
        }
        run.write_summary(summary)
    return summary


def _analyse_one(
    name: str,
    store: Any,
    sae: Dictionary,
    acts: torch.Tensor,
    meta: dict[str, np.ndarray],
    labels: dict[str, FrameLabels],
    run: RunDir,
    options: FeatureOptions,
    latents: Sequence[int] | None,
) -> dict[str, Any]:
    dictionary: Any = sae  # the Dictionary protocol's plain attributes vs PCA's properties
    settings: dict[str, Any] = {"n_latents": sae.n_latents}
    if name == "pca":
        dictionary = PCADictionary.fit(acts, sae.d_model)
        settings = {"n_components": sae.d_model, "n_latents": 2 * sae.d_model}
    elif name == "random":
        k = _mean_l0(run, sae, acts, options)
        dictionary = RandomDictionary.fit(acts, sae.n_latents, k, seed=options.seed)
        settings = {"n_latents": sae.n_latents, "k": k}
    chosen = latents if name == "sae" else None
    n_top = options.n_top if name == "sae" else 1
    stats = accumulate(dictionary, acts, labels, meta["item"], n_top, options.chunk_frames, chosen)
    names = latent_names(dictionary)
    names = names if chosen is None else [names[j] for j in chosen]
    records = latent_records(stats, names, options)
    if name == "sae":
        cols = None if chosen is None else torch.as_tensor(list(chosen), dtype=torch.long)
        keep = example_latents(records, options.example_latents)
        tops = [rows if i in keep else [] for i, rows in enumerate(top_frames(stats))]
        attach_top(records, tops, meta, store, sae, run, cols)
        if chosen is None:  # (with a subset, the random baseline's k is measured apart)
            settings["mean_l0"] = float(stats.n_fire.sum() / max(stats.n_frames, 1))
    file = LATENTS_FILE if name == "sae" else f"{BASELINES_DIR}/{name}.json"
    run.write_json(file, records)
    return {"id": name, "file": file, "settings": settings}


def example_latents(records: list[dict[str, Any]], limit: int | None) -> set[int]:
    """Positions in ``records`` of the latents that get top examples with audio: every
    monosemantic latent first (most confident first), then the most frequent alive ones, up
    to ``limit`` (None: all). Audio and figures for thousands of latents cost minutes."""
    order = sorted(range(len(records)), key=lambda i: (
        not records[i].get("monosemantic"), -(records[i].get("monosemanticity_lo") or 0.0)
        if records[i].get("monosemantic") else -records[i]["frequency"]))  # fmt: skip
    alive = [i for i in order if records[i]["frequency"] > 0]
    return set(alive if limit is None else alive[:limit])


def _mean_l0(run: RunDir, sae: Dictionary, acts: torch.Tensor, options: FeatureOptions) -> int:
    """The SAE's mean number of active latents per frame (the random baseline's k)."""
    done = run.done.get("sae")
    if done and "mean_l0" in done["settings"] and done["settings"]["n_latents"] == sae.n_latents:
        l0 = float(done["settings"]["mean_l0"])
    else:
        step = options.chunk_frames
        per_chunk = [
            float((sae.encode(acts[s : s + step]) > 0).sum(1).float().mean())
            for s in range(0, acts.shape[0], step)
        ]
        l0 = float(np.mean(per_chunk))
    return max(1, min(sae.n_latents, round(l0)))


def _read_json(path: Path) -> Any:
    import json

    return json.loads(path.read_text(encoding="utf-8"))
