"""Summary and report of a steering run: curves with controls, effects with CIs, geometry.

Per mapping (``<reducer>-<layout>``) and strength, each score is averaged per clip (random
controls: over their seeds first) and then over clips with a percentile bootstrap CI.
Effects are clip-paired differences:

- ``vs_random``: steered minus the mean of its equal-norm random controls;
- ``vs_flip``: (score at +s minus score at -s) / 2, the part that flips with the sign.

A strength *moves the concept* when the CI of ``sign(s) * vs_random`` lies above zero (the
score moves in the intended direction, more than random vectors of equal norm move it), and
it is *coherent* when at most ``COHERENT_RATE`` of the steered outputs are broken
(incoherent: empty, looping, truncated; or over half of the unsteered words lost).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from whisperlens.interventions import load_payloads
from whisperlens.stats import bootstrap_ci
from whisperlens.studies.steering import mapping

SCORES = (
    "lexicon_delta", "projection_delta", "similarity", "incoherent", "broken", "changed", "wer",
)  # fmt: skip
EFFECT_SCORES = ("lexicon_delta", "projection_delta")
COHERENT_RATE = 0.2  # at most this share of incoherent outputs counts as "before incoherence"


def _mean_ci(values: Sequence[float]) -> dict[str, Any]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "ci95": [None, None], "n": 0}
    lo, hi = bootstrap_ci(vals)
    return {"mean": float(np.mean(vals)), "ci95": [lo, hi], "n": len(vals)}


def per_clip(rows: Sequence[dict], score: str) -> dict[tuple[str, str, float], dict[int, float]]:
    """(mapping, control kind, strength) -> clip -> score (random seeds averaged)."""
    acc: dict[tuple[str, str, float], dict[int, list[float]]] = {}
    for r in rows:
        kind = "vector" if r["control"] == "vector" else "random"
        key = (f"{r['reducer']}-{r['layout']}", kind, float(r["strength"]))
        value = r[score]
        if value is not None:
            acc.setdefault(key, {}).setdefault(int(r["clip"]), []).append(float(value))
    return {k: {c: float(np.mean(v)) for c, v in d.items()} for k, d in acc.items()}


def _paired(a: dict[int, float], b: dict[int, float], sign: float = 1.0) -> dict[str, Any]:
    common = sorted(set(a) & set(b))
    return _mean_ci([sign * (a[c] - b[c]) for c in common])


def mapping_effects(rows: Sequence[dict], name: str, strengths: Sequence[float]) -> dict:
    """Curves (vector and random) and paired effects for one mapping."""
    curves: dict[str, Any] = {"vector": {}, "random": {}}
    effects = []
    tables = {score: per_clip(rows, score) for score in SCORES}
    for kind in curves:
        for score in SCORES:
            curves[kind][score] = [
                _mean_ci(list(tables[score].get((name, kind, s), {}).values())) for s in strengths
            ]
    for s in strengths:
        entry: dict[str, Any] = {"strength": s}
        vec = {score: tables[score].get((name, "vector", s), {}) for score in SCORES}
        for score in EFFECT_SCORES:
            rand = tables[score].get((name, "random", s), {})
            entry[f"{score}_vs_random"] = _paired(vec[score], rand, math.copysign(1.0, s))
            flip = tables[score].get((name, "vector", -s), {})
            entry[f"{score}_vs_flip"] = _paired(vec[score], flip, 0.5) if s > 0 and flip else None
        entry["incoherent_rate"] = _mean_ci(list(vec["incoherent"].values()))["mean"]
        entry["broken_rate"] = _mean_ci(list(vec["broken"].values()))["mean"]
        entry["changed_rate"] = _mean_ci(list(vec["changed"].values()))["mean"]
        effects.append(entry)
    return {"curves": curves, "effects": effects, "answer": answer(effects)}


def answer(effects: Sequence[dict]) -> dict[str, Any]:
    """At which strengths each concept score moves beyond the random controls, coherently."""
    out: dict[str, Any] = {}
    incoherent_from = [e["strength"] for e in effects if (e["broken_rate"] or 0.0) > COHERENT_RATE]
    for score in EFFECT_SCORES:
        moved = [
            e["strength"]
            for e in effects
            if e["strength"] != 0
            and e[f"{score}_vs_random"]["ci95"][0] is not None
            and e[f"{score}_vs_random"]["ci95"][0] > 0
        ]
        coherent = [s for s in moved if s not in incoherent_from]
        out[score] = {"moves_beyond_random_at": moved, "and_coherent_at": coherent}
    out["broken_at"] = incoherent_from
    return out


def geometry(run_path: Path, config: Any) -> dict[str, Any]:
    """Cosines between the mapped vectors, per layout, with the random-vector null."""
    out: dict[str, Any] = {}
    for layout in config.layouts:
        vecs = {
            r: load_payloads(run_path / f"vectors/{r}-{layout}.safetensors")["vector"]
            for r in config.reducers
        }
        names = list(vecs)
        dim = int(next(iter(vecs.values())).flatten().count_nonzero())
        cos = [[mapping.cosine(vecs[a], vecs[b]) for b in names] for a in names]
        null = mapping.null_cosine_quantile(dim, n=200 if dim > 10_000 else 2000)
        out[layout] = {"labels": names, "cosine": cos, "null_abs_q95": null, "dim": dim}
    inside = run_path / "whisper/concept_directions.safetensors"
    if inside.is_file() and "direction" in config.layouts:
        from whisperlens.studies.steering.whisper_geometry import cosines_with

        directions = {
            r: load_payloads(run_path / f"vectors/{r}-direction.safetensors")["vector"]
            for r in config.reducers
        }
        out["whisper_concept"] = cosines_with(load_payloads(inside)["directions"], directions)
    return out


def summarize(config: Any, caa: dict[str, Any], rows: Sequence[dict], run_path: Path) -> dict:
    """``summary.json``: the text layer, curves, effects, answers and geometry."""
    strengths = list(config.strengths)
    names = [f"{r}-{lay}" for r in config.reducers for lay in config.layouts]
    unsteered = {r["clip"]: r for r in rows}
    return {
        "study": "steer",
        "config": config.settings(),
        "text": {k: caa[k] for k in ("layer", "chosen_by", "scan", "n_samples") if k in caa},
        "n_clips": len(unsteered),
        "unsteered": [
            {"clip": c, "text": r["text"], "transcript": r["unsteered"]}
            for c, r in sorted(unsteered.items())
        ],  # fmt: skip
        "mappings": {name: mapping_effects(rows, name, strengths) for name in names},
        "geometry": geometry(run_path, config),
    }


def write_report(run: Any, summary: dict[str, Any], rows: Sequence[dict]) -> None:
    from whisperlens.report import Report, render_report

    report = Report("whisperlens steer", [report_section(summary, rows)], summary["config"])
    render_report(report, run.path)


def _curve_series(summary: dict, score: str) -> list[Any]:
    from whisperlens.report import Series

    series = []
    for name, m in summary["mappings"].items():
        for kind in ("random", "vector"):
            pts = m["curves"][kind][score]
            y = [np.nan if p["mean"] is None else p["mean"] for p in pts]
            lo = [np.nan if p["ci95"][0] is None else p["ci95"][0] for p in pts]
            hi = [np.nan if p["ci95"][1] is None else p["ci95"][1] for p in pts]
            label = name if kind == "vector" else f"{name} random"
            series.append(
                Series(label, y, lo, hi, kind="effect" if kind == "vector" else "control")
            )
    return series


def report_section(summary: dict[str, Any], rows: Sequence[dict]) -> Any:
    """Strength curves with control bands, the effects table, the cosine heatmap, examples."""
    from whisperlens.report import Audio, Figure, Section, Table, heatmap, line_plot

    x = summary["config"]["strengths"]
    titles = {"lexicon_delta": "VADER valence change (towards the positive pole)",
              "projection_delta": "Projection change on the concept vector (text model)",
              "broken": "Share of broken outputs (incoherent or content lost)", "similarity": "Similarity to unsteered"}  # fmt: skip
    blocks: list[Any] = [
        Figure.from_matplotlib(title, line_plot(x, _curve_series(summary, score), title=title,
                               xlabel="strength", ylabel=score, hline=0.0))
        for score, title in titles.items()
    ]  # fmt: skip
    effect_rows = [
        [name, e["strength"], *(_fmt(e[f"{s}_vs_random"]) for s in ("lexicon_delta", "projection_delta")),
         e["incoherent_rate"], e["broken_rate"], e["changed_rate"]]
        for name, m in summary["mappings"].items() for e in m["effects"]
    ]  # fmt: skip
    blocks.append(Table(["mapping", "strength", "lexicon vs random [95% CI]",
                         "projection vs random [95% CI]", "incoherent", "broken", "changed"], effect_rows,
                        "sign(strength) x (steered - random), clip-paired"))  # fmt: skip
    inside = summary["geometry"].get("whisper_concept")
    if inside is not None:
        fig = heatmap(inside["cosine"], row_labels=[f"block {b}" for b in inside["blocks"]],
                      col_labels=inside["labels"], vmin=-1, vmax=1,
                      title=f"Mapped directions vs Whisper's own concept direction; null |cos| q95 = {inside['null_abs_q95']:.3f}")  # fmt: skip
        blocks.append(Figure.from_matplotlib("Cosines with Whisper's concept direction", fig))
    for layout in summary["config"]["layouts"]:
        g = summary["geometry"][layout]
        fig = heatmap(g["cosine"], row_labels=g["labels"], col_labels=g["labels"], vmin=-1, vmax=1,
                      title=f"Cosine of mapped vectors ({layout}); null |cos| q95 = {g['null_abs_q95']:.3f}")  # fmt: skip
        blocks.append(Figure.from_matplotlib(f"Cosines ({layout})", fig))
    top = max(abs(s) for s in x)
    examples = [[r["reducer"], r["layout"], r["control"], r["strength"], r["unsteered"],
                 r["transcript"]] for r in rows if abs(r["strength"]) in (top, sorted({abs(s) for s in x})[len({abs(s) for s in x}) // 2])
                and r["control"] in ("vector", "random0")][:40]  # fmt: skip
    blocks.append(Table(["reducer", "layout", "control", "strength", "unsteered", "steered"],
                        examples))  # fmt: skip
    first = {r["clip"]: r for r in reversed(rows)}
    blocks += [Audio(f"clip {c}: {r['text']}", Path(r["audio"]), f"unsteered: {r['unsteered']}")
               for c, r in sorted(first.items()) if Path(r.get("audio") or "").is_file()]  # fmt: skip
    text = summary["text"]
    intro = (
        f"Concept {summary['config']['concept']!r}: CAA vectors in {summary['config']['text_model']} "
        f"at layer {text['layer']} ({text['chosen_by']}), mapped into {summary['config']['model']}'s "
        f"encoder and added to blocks {summary['config']['blocks'] or 'all'} on "
        f"{summary['n_clips']} clips. Controls: random vectors of equal per-frame norm and the "
        "sign-flipped vector (negative strengths)."
    )
    return Section("steer", "Cross-modal steering", intro, blocks)


def _fmt(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "-"
    lo, hi = stat["ci95"]
    return f"{stat['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
