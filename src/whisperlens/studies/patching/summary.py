"""Patching summaries: layer x layer matrices with bootstrap CIs, baselines, the seed's numbers.

``summary.json`` holds ``matrices.<metric> = {"values", "ci95_low", "ci95_high", "n"}``
(rows = source layer S, columns = target layer L) for

- ``override``: share of rows whose patched continuation contains the source word (the
  seed's override accuracy in A, its transfer rate in B); ``target_present``, ``both`` and
  ``neither`` beside it ("both" counts as an override, "neither" does not);
- ``margin``: mean log p(source word) - log p(target word) under the patched run;
- ``effect``: the normalised effect (mean margin - mean clean target margin) / (mean clean
  source margin - mean clean target margin) over the cell's rows (a ratio of means, stable
  where single rows have nearly equal clean margins): 0 = the target's clean run, 1 = the
  source's.

In seed and span mode ``triangles`` holds override, margin and effect on the diagonal
(S = L), below it (S > L) and above it (S < L), for comparing models of different depth
(:mod:`whisperlens.studies.patching.compare`).

Every CI is a seeded percentile bootstrap over the cell's rows. The seed's published
matrices, and our values minus them where the shapes agree, sit beside ours.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from whisperlens.stats import bootstrap_ci
from whisperlens.studies.patching.engine import ALPHAS, COMPONENTS

# Seed 001's published matrices (rows = source layer, columns = target layer, tiny, gTTS).
SEED_MATRICES: dict[str, list[list[float]]] = {
    "a": [[0.95, 0.50, 0.50, 0.50], [0.50, 0.95, 0.50, 0.51],
          [0.50, 0.64, 0.95, 0.52], [0.50, 0.52, 0.74, 0.95]],
    "b": [[0.72, 0.93, 0.55, 0.12], [1.00, 0.71, 0.87, 0.02],
          [1.00, 0.33, 0.70, 0.16], [0.99, 0.99, 0.87, 0.70]],
}  # fmt: skip
SEED_HEADLINES: dict[str, dict[str, float]] = {
    "a": {"diagonal": 0.951, "off_diagonal": 0.536},
    "b": {"overall": 0.666, "diagonal": 0.708, "off_diagonal": 0.652},
}
BOOL_METRICS = ("override", "target_present", "both", "neither")
TRIANGLE_METRICS = ("override", "margin", "effect")  # in summary.json "triangles"
LAYER_MODES = ("seed", "span")  # modes whose matrices are source layer x target layer


def fill_clean_targets(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with ``clean_target_*`` filled from the reverse direction's clean source run.

    In seed mode a unit runs one source word cleanly; the clean run of a target word is the
    diagonal of the reverse direction (source and target swapped) when the run has it:
    its transcript, and the negated margin (the same two words scored on the same audio).
    """
    clean: dict[tuple[str, str, str], tuple[str, float | None]] = {}
    for r in rows:
        clean[(r["pair_id"], r["source_word"], r["target_word"])] = (
            r["clean_source_transcript"], r["clean_source_margin"])  # fmt: skip
    out = []
    for r in rows:
        if r["clean_target_transcript"] is None:
            reverse = clean.get((r["pair_id"], r["target_word"], r["source_word"]))
            if reverse is not None:
                transcript, margin = reverse
                r = {**r, "clean_target_transcript": transcript,
                     "clean_target_margin": None if margin is None else -margin}  # fmt: skip
        out.append(r)
    return out


def _bools(rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    src = np.array([bool(r["override"]) for r in rows], dtype=float)
    tgt = np.array([bool(r["target_present"]) for r in rows], dtype=float)
    return {"override": src, "target_present": tgt, "both": src * tgt,
            "neither": (1 - src) * (1 - tgt)}  # fmt: skip


def _effect_stat(x: np.ndarray) -> np.ndarray:
    """(mean margin - mean clean target) / (mean clean source - mean clean target), per resample."""
    m = x.mean(axis=-2)  # [..., 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (m[..., 0] - m[..., 2]) / (m[..., 1] - m[..., 2])


def cell_stats(rows: Sequence[dict[str, Any]], n_bootstrap: int, seed: int = 0) -> dict[str, Any]:
    """Each metric's value, 95 % bootstrap CI and n (rows) over a group of rows.

    The bootstrap resamples pair directions, not rows: a direction's rows (its cells in a
    headline or breakdown; in seed mode its diagonal cells are one clean run) are averaged
    first, so repeated cells do not narrow the interval. In one matrix cell every direction
    has one row, and this is the plain row bootstrap.
    """
    out: dict[str, Any] = {}
    for name, values in _bools(rows).items():
        out[name] = _with_ci(_per_direction(rows, values), None, n_bootstrap, seed, len(rows))
    graded = [r for r in rows if r["margin"] is not None]
    margins = np.array([r["margin"] for r in graded], dtype=float)
    out["margin"] = _with_ci(_per_direction(graded, margins), None, n_bootstrap, seed,
                             len(graded))  # fmt: skip
    full = [r for r in graded if r["clean_target_margin"] is not None]
    trio = np.array(
        [[r["margin"], r["clean_source_margin"], r["clean_target_margin"]] for r in full],
        dtype=float,
    ).reshape(-1, 3)
    out["effect"] = _with_ci(_per_direction(full, trio), _effect_stat, n_bootstrap, seed,
                             len(full))  # fmt: skip
    return out


def _per_direction(rows: Sequence[dict[str, Any]], values: np.ndarray) -> np.ndarray:
    """``values`` (one per row, [n] or [n, k]) averaged over each pair direction's rows."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["pair_id"], r["source_word"], r["target_word"]), []).append(i)
    if len(groups) == len(rows):
        return values
    return np.stack([values[idx].mean(axis=0) for idx in groups.values()])


def _with_ci(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray] | None,
    n_bootstrap: int,
    seed: int,
    n_rows: int,
) -> dict[str, Any]:
    if len(values) == 0:
        return {"value": None, "ci95": [None, None], "n": 0}
    value = float(statistic(values[None])[0]) if statistic else float(values.mean())
    lo, hi = bootstrap_ci(values, statistic, n_resamples=n_bootstrap, seed=seed)
    return {"value": _finite(value), "ci95": [_finite(lo), _finite(hi)], "n": n_rows}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def matrix_rows(mode: str, n_layers: int) -> tuple[str, list[str]]:
    """What a matrix row is in ``mode`` (its name and labels); columns are target layers."""
    if mode == "component":
        return "component", list(COMPONENTS)
    if mode == "interpolate":
        return "alpha", [f"{a:g}" for a in ALPHAS]
    if mode == "decoder":
        return "decoder site", ["cross_attn_out"]
    return "source layer", [str(i) for i in range(n_layers)]


def row_label(mode: str, row: dict[str, Any]) -> str:
    if mode in ("component", "decoder"):
        return str(row["component"])
    if mode == "interpolate":
        return f"{row['alpha']:g}"
    return str(row["source_layer"])


def matrices(
    rows: Sequence[dict[str, Any]], n_layers: int, n_bootstrap: int, mode: str = "seed"
) -> dict[str, dict[str, Any]]:
    """``{metric: {"values", "ci95_low", "ci95_high", "n", "rows", "columns"}}``: rows =
    source layer S (component: the component; interpolate: alpha), columns = target layer L."""
    row_name, labels = matrix_rows(mode, n_layers)
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((row_label(mode, r), r["target_layer"]), []).append(r)
    stats = {c: cell_stats(v, n_bootstrap) for c, v in cells.items()}
    empty = {"value": None, "ci95": [None, None], "n": 0}
    out: dict[str, dict[str, Any]] = {}
    for metric in (*BOOL_METRICS, "margin", "effect"):
        cell = [[stats.get((s, t), {}).get(metric, empty) for t in range(n_layers)] for s in labels]
        out[metric] = {
            "values": [[c["value"] for c in row] for row in cell],
            "ci95_low": [[c["ci95"][0] for c in row] for row in cell],
            "ci95_high": [[c["ci95"][1] for c in row] for row in cell],
            "n": [[c["n"] for c in row] for row in cell],
            "row_name": row_name,
            "rows": labels,
            "columns": list(range(n_layers)),
        }
    return out


def headline(rows: Sequence[dict[str, Any]], n_bootstrap: int) -> dict[str, Any]:
    """Diagonal (S = L), off-diagonal and overall statistics."""
    diag = [r for r in rows if r["source_layer"] == r["target_layer"]]
    off = [r for r in rows if r["source_layer"] != r["target_layer"]]
    return {name: cell_stats(group, n_bootstrap) for name, group in
            (("diagonal", diag), ("off_diagonal", off), ("overall", list(rows)))}  # fmt: skip


def triangles(rows: Sequence[dict[str, Any]], n_bootstrap: int) -> dict[str, Any]:
    """Override, margin and effect on the diagonal (S = L), below it (S > L: a later block's
    states into an earlier block, rerun through the blocks after it) and above it (S < L:
    states that skip blocks), each with its bootstrap CI over pair directions."""
    parts: dict[str, list[dict[str, Any]]] = {"diagonal": [], "below": [], "above": []}
    for r in rows:
        s, t = r["source_layer"], r["target_layer"]
        parts["diagonal" if s == t else "below" if s > t else "above"].append(r)
    out = {}
    for name, group in parts.items():
        stats = cell_stats(group, n_bootstrap)
        out[name] = {m: stats[m] for m in TRIANGLE_METRICS}
    return out


def baselines(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The unpatched runs, one entry per pair direction: is the source word heard in the clean
    source clip (and the clean target clip), and the mean clean margins."""
    per_direction: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        per_direction.setdefault((r["pair_id"], r["source_word"], r["target_word"]), r)
    out: dict[str, Any] = {"n_directions": len(per_direction)}
    for side in ("source", "target"):
        group = [r for r in per_direction.values() if r[f"clean_{side}_transcript"] is not None]
        lang = [r["target_language"] for r in group]
        present = [
            _present(r["source_word"], r[f"clean_{side}_transcript"], lg)
            for r, lg in zip(group, lang, strict=True)
        ]
        margins = [
            r[f"clean_{side}_margin"] for r in group if r[f"clean_{side}_margin"] is not None
        ]
        out[f"clean_{side}"] = {
            "n": len(group),
            "source_present": float(np.mean(present)) if present else None,
            "mean_margin": float(np.mean(margins)) if margins else None,
        }
    return out


def _present(word: str, transcript: str, language: str) -> bool:
    from whisperlens.metrics import word_present

    return word_present(word, transcript, language)


def breakdown(
    rows: Sequence[dict[str, Any]], field: str, n_bootstrap: int
) -> dict[str, dict[str, Any]]:
    """Diagonal and off-diagonal override and margin per value of ``field`` (kind, feature)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get(field) is not None:
            groups.setdefault(str(r[field]), []).append(r)
    out = {}
    for name, group in sorted(groups.items()):
        h = headline(group, n_bootstrap)
        out[name] = {
            part: {m: h[part][m] for m in ("override", "margin", "effect")}
            for part in ("diagonal", "off_diagonal")
        }
    return out


def seed_comparison(experiment: str, override: dict[str, Any]) -> dict[str, Any]:
    """The seed's matrix and ours minus it, cell by cell (None where shapes differ)."""
    published = SEED_MATRICES[experiment]
    ours = override["values"]
    same_shape = len(ours) == len(published)
    diff = None
    if same_shape:
        diff = [[None if v is None else round(v - p, 4) for v, p in zip(row, prow, strict=True)]
                for row, prow in zip(ours, published, strict=True)]  # fmt: skip
    return {"override": published, "headline": SEED_HEADLINES[experiment],
            "override_difference": diff}  # fmt: skip


def summarize(
    settings: dict[str, Any], rows: Sequence[dict[str, Any]], n_layers: int
) -> dict[str, Any]:
    """``summary.json`` (see the module docstring)."""
    n_boot = int(settings["n_bootstrap"])
    mode = settings["mode"]
    mats = matrices(rows, n_layers, n_boot, mode)
    by_feature = breakdown(rows, "feature", n_boot)
    return {
        "study": "patching",
        "config": settings,
        "n_rows": len(rows),
        "n_pairs": len({r["pair_id"] for r in rows}),
        "n_layers": n_layers,
        "pairs_by_kind": _count_pairs(rows, "kind"),
        "headline": headline(rows, n_boot),
        "matrices": mats,
        "baselines": baselines(rows),
        "triangles": triangles(rows, n_boot) if mode in LAYER_MODES else None,
        "seed": seed_comparison(settings["experiment"], mats["override"])
        if mode in LAYER_MODES
        else None,
        "by_kind": breakdown(rows, "kind", n_boot),
        "by_feature": by_feature,
        "by_position": breakdown(rows, "position", n_boot),
    }


def _count_pairs(rows: Sequence[dict[str, Any]], field: str) -> dict[str, int]:
    seen: dict[str, set[str]] = {}
    for r in rows:
        seen.setdefault(str(r[field]), set()).add(r["pair_id"])
    return {k: len(v) for k, v in sorted(seen.items())}
