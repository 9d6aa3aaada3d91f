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

Each (mapping, strength != 0, effect score) is also a test with an exact one-sided paired
sign-flip permutation p-value on the clip differences ``sign(s) * (steered - random)``
(:func:`whisperlens.stats.sign_flip_pvalue`), adjusted across every test of the run by
Holm-Bonferroni (family-wise error) and Benjamini-Hochberg (false discovery rate); the
headline answer is "moves after BH at q = ``Q_FDR``", with Holm beside it and the
uncorrected CI rule kept. With n clips no p is below 2^-n (1/32 for 5 clips), so small runs
cannot pass a correction over many tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from whisperlens.interventions import load_payloads
from whisperlens.stats import (
    benjamini_hochberg,
    bootstrap_ci,
    holm,
    sign_flip_pvalue,
    smallest_sign_flip_pvalue,
)
from whisperlens.studies.steering import mapping

SCORES = (
    "lexicon_delta", "nrc_delta", "projection_delta", "similarity", "incoherent", "broken",
    "nonword_rate", "changed", "wer",
)  # fmt: skip
EFFECT_SCORES = ("lexicon_delta", "nrc_delta", "projection_delta")
COHERENT_RATE = 0.2  # at most this share of incoherent outputs counts as "before incoherence"
Q_FDR = 0.05  # Benjamini-Hochberg false discovery rate of the headline answer
ALPHA_FWER = 0.05  # Holm-Bonferroni family-wise error rate


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
        value = r.get(score)  # None: not scored (rows written before the score existed)
        if value is not None:
            acc.setdefault(key, {}).setdefault(int(r["clip"]), []).append(float(value))
    return {k: {c: float(np.mean(v)) for c, v in d.items()} for k, d in acc.items()}


def _paired(
    a: dict[int, float], b: dict[int, float], sign: float = 1.0, test: bool = False
) -> dict[str, Any]:
    """Mean and CI of the clip-paired ``sign * (a - b)``; with ``test``, also the one-sided
    sign-flip p-value that it is above zero (None without pairs)."""
    diffs = [sign * (a[c] - b[c]) for c in sorted(set(a) & set(b))]
    stat = _mean_ci(diffs)
    if test:
        finite = [d for d in diffs if math.isfinite(d)]
        stat["p"] = sign_flip_pvalue(finite) if finite else None
    return stat


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
            entry[f"{score}_vs_random"] = _paired(
                vec[score], rand, math.copysign(1.0, s), test=s != 0
            )
            flip = tables[score].get((name, "vector", -s), {})
            entry[f"{score}_vs_flip"] = _paired(vec[score], flip, 0.5) if s > 0 and flip else None
        entry["incoherent_rate"] = _mean_ci(list(vec["incoherent"].values()))["mean"]
        entry["broken_rate"] = _mean_ci(list(vec["broken"].values()))["mean"]
        entry["changed_rate"] = _mean_ci(list(vec["changed"].values()))["mean"]
        entry["nonword_rate"] = _mean_ci(list(vec["nonword_rate"].values()))["mean"]
        effects.append(entry)
    return {"curves": curves, "effects": effects}


def correct_tests(mappings: dict[str, dict]) -> dict[str, Any]:
    """Adjust every test of the run (mapping, strength != 0, effect score vs random) by Holm
    and Benjamini-Hochberg: sets ``p_holm`` and ``p_bh`` beside each ``p`` (None where a
    test has no p-value, which leaves it out of the family)."""
    tests = [e[f"{score}_vs_random"] for m in mappings.values() for e in m["effects"]
             for score in EFFECT_SCORES if e["strength"] != 0]  # fmt: skip
    tested = [t for t in tests if t.get("p") is not None]
    for t in tests:
        t.update(p=t.get("p"), p_holm=None, p_bh=None)
    pvalues = [t["p"] for t in tested]
    for t, p_holm, p_bh in zip(tested, holm(pvalues), benjamini_hochberg(pvalues), strict=True):
        t["p_holm"], t["p_bh"] = float(p_holm), float(p_bh)
    return {
        "family": "every (mapping, strength != 0, effect score) steered vs random, one-sided",
        "scores": list(EFFECT_SCORES),
        "n_tests": len(tested),
        "smallest_possible_p": min(
            (smallest_sign_flip_pvalue(t["n"]) for t in tested), default=None
        ),
        "q_bh": Q_FDR, "n_below_q_bh": sum(t["p_bh"] <= Q_FDR for t in tested),
        "alpha_holm": ALPHA_FWER, "n_below_alpha_holm": sum(t["p_holm"] <= ALPHA_FWER
                                                            for t in tested),
    }  # fmt: skip


def answer(effects: Sequence[dict]) -> dict[str, Any]:
    """At which strengths each concept score moves beyond the random controls, coherently:
    by its CI (uncorrected), after Benjamini-Hochberg (the headline) and after Holm.
    Covers the effect scores the effects carry."""
    broken_at = [e["strength"] for e in effects if (e["broken_rate"] or 0.0) > COHERENT_RATE]
    rules = {
        "moves_beyond_random_at": lambda t: t["ci95"][0] is not None and t["ci95"][0] > 0,
        "moves_after_bh_at": lambda t: t.get("p_bh") is not None and t["p_bh"] <= Q_FDR,
        "moves_after_holm_at": lambda t: t.get("p_holm") is not None and t["p_holm"] <= ALPHA_FWER,
    }
    coherent = {"moves_beyond_random_at": "and_coherent_at",
                "moves_after_bh_at": "and_coherent_after_bh_at",
                "moves_after_holm_at": "and_coherent_after_holm_at"}  # fmt: skip
    tests = [e for e in effects if e["strength"] != 0]
    out: dict[str, Any] = {}
    for score in EFFECT_SCORES:
        if not all(f"{score}_vs_random" in e for e in tests):
            continue
        out[score] = {}
        for key, rule in rules.items():
            moved = [e["strength"] for e in tests if rule(e[f"{score}_vs_random"])]
            out[score][key] = moved
            out[score][coherent[key]] = [s for s in moved if s not in broken_at]
    out["broken_at"] = broken_at
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
    languages = run_path / "whisper/language_directions.safetensors"
    if languages.is_file() and "direction" in config.layouts:
        from whisperlens.studies.steering.whisper_geometry import cosines_with

        mapped = {
            r: load_payloads(run_path / f"vectors/{r}-direction.safetensors")["vector"]
            for r in config.reducers
        }
        out["whisper_language"] = {
            pair: cosines_with(d, mapped) for pair, d in load_payloads(languages).items()
        }
    fit = run_path / "text/alignment.json"
    if fit.is_file():  # the aligned reducer's held-out fit quality and its shuffled null
        import json

        report = json.loads(fit.read_text(encoding="utf-8"))
        keys = ("heldout", "null", "alpha", "n_train", "n_test", "target_blocks")
        out["alignment"] = {k: report[k] for k in keys}
    return out


def summarize(config: Any, caa: dict[str, Any], rows: Sequence[dict], run_path: Path) -> dict:
    """``summary.json``: the text layer, curves, effects, answers and geometry."""
    strengths = list(config.strengths)
    names = [f"{r}-{lay}" for r in config.reducers for lay in config.layouts]
    unsteered = {r["clip"]: r for r in rows}
    mappings = {name: mapping_effects(rows, name, strengths) for name in names}
    tests = correct_tests(mappings)
    for m in mappings.values():
        m["answer"] = answer(m["effects"])
    return {
        "study": "steer",
        "config": config.settings(),
        "text": {k: caa[k] for k in ("layer", "chosen_by", "scan", "n_samples") if k in caa},
        "n_clips": len(unsteered),
        "unsteered": [
            {"clip": c, "text": r["text"], "transcript": r["unsteered"]}
            for c, r in sorted(unsteered.items())
        ],  # fmt: skip
        "mappings": mappings,
        "tests": tests,
        "geometry": geometry(run_path, config),
    }


def write_report(run: Any, summary: dict[str, Any], rows: Sequence[dict]) -> None:
    from whisperlens.report import Report, render_report, write_figures
    from whisperlens.runs import FIGURES_DIR

    report = Report("whisperlens steer", [report_section(summary, rows)], summary["config"])
    write_figures(report.sections, run.file(FIGURES_DIR))
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
              "nrc_delta": "NRC emotion-word change (towards the positive pole)",
              "projection_delta": "Projection change on the concept vector (text model)",
              "broken": "Share of broken outputs (incoherent or content lost)",
              "nonword_rate": "Share of non-words (not in the CMU dictionary)", "similarity": "Similarity to unsteered"}  # fmt: skip
    curves = next(iter(summary["mappings"].values()))["curves"]["vector"]
    blocks: list[Any] = [
        Figure.from_matplotlib(title, line_plot(x, _curve_series(summary, score), title=title,
                               xlabel="strength", ylabel=score, hline=0.0))
        for score, title in titles.items() if score in curves  # older runs lack some scores
    ]  # fmt: skip
    blocks.append(_effects_table(summary))
    inside = summary["geometry"].get("whisper_concept")
    if inside is not None:
        fig = heatmap(inside["cosine"], row_labels=[f"block {b}" for b in inside["blocks"]],
                      col_labels=inside["labels"], vmin=-1, vmax=1,
                      title=f"Mapped directions vs Whisper's own concept direction; null |cos| q95 = {inside['null_abs_q95']:.3f}")  # fmt: skip
        blocks.append(Figure.from_matplotlib("Cosines with Whisper's concept direction", fig))
    for pair, lang in summary["geometry"].get("whisper_language", {}).items():
        fig = heatmap(lang["cosine"], row_labels=[f"block {b}" for b in lang["blocks"]],
                      col_labels=lang["labels"], vmin=-1, vmax=1,
                      title=f"Mapped directions vs Whisper's {pair} language direction; null |cos| q95 = {lang['null_abs_q95']:.3f}")  # fmt: skip
        blocks.append(Figure.from_matplotlib(f"Cosines with the {pair} language direction", fig))
    fit = summary["geometry"].get("alignment")
    if fit is not None:
        null = fit["null"]
        blocks.append(Table(["aligned map", "R^2", "mean cosine"], [
            ["held-out words", fit["heldout"]["r2"], fit["heldout"]["cosine"]],
            [f"shuffled null, mean (max) of {null['n']}", f"{null['r2']['mean']:.3f} ({null['r2']['max']:.3f})",
             f"{null['cosine']['mean']:.3f} ({null['cosine']['max']:.3f})"]],
            f"text -> Whisper ridge map, {fit['n_train']} training / {fit['n_test']} held-out words, "
            f"target: mean output of blocks {fit['target_blocks']}"))  # fmt: skip
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
    tests = summary.get("tests")
    if tests:
        intro += (
            f" Each of the {tests['n_tests']} effects vs random is tested (exact one-sided "
            f"sign-flip permutation over clips; smallest possible p "
            f"{tests['smallest_possible_p'] or float('nan'):.3g}); after Benjamini-Hochberg at "
            f"q = {tests['q_bh']:g}, {tests['n_below_q_bh']} remain, after Holm at "
            f"{tests['alpha_holm']:g}, {tests['n_below_alpha_holm']}."
        )
    return Section("steer", "Cross-modal steering", intro, blocks)


EFFECT_LABELS = {"lexicon_delta": "VADER", "nrc_delta": "NRC", "projection_delta": "projection"}


def _effects_table(summary: dict[str, Any]) -> Any:
    """Per mapping and strength: each effect vs random with its CI and p-values, and the
    incoherence rates of the steered outputs."""
    from whisperlens.report import Table

    scores = [s for s in EFFECT_SCORES
              if all(f"{s}_vs_random" in e for m in summary["mappings"].values()
                     for e in m["effects"])]  # fmt: skip
    header = ["mapping", "strength"]
    for score in scores:
        header += [
            f"{EFFECT_LABELS[score]} vs random [95% CI]",
            f"{EFFECT_LABELS[score]} p (BH, Holm)",
        ]
    header += ["incoherent", "broken", "non-words", "changed"]
    rows = [
        [name, e["strength"], *(c for s in scores for c in (_fmt(e[f"{s}_vs_random"]), _fmt_p(e[f"{s}_vs_random"]))),
         e["incoherent_rate"], e["broken_rate"], e.get("nonword_rate"), e["changed_rate"]]
        for name, m in summary["mappings"].items() for e in m["effects"]
    ]  # fmt: skip
    caption = ("sign(strength) x (steered - random), clip-paired; p: one-sided sign-flip "
               f"permutation, adjusted across the run (* BH <= {Q_FDR:g})")  # fmt: skip
    return Table(header, rows, caption)


def _fmt_p(stat: dict[str, Any]) -> str:
    if stat.get("p") is None:
        return "-"
    if stat.get("p_bh") is None:
        return f"{stat['p']:.3f}"
    star = " *" if stat["p_bh"] <= Q_FDR else ""
    return f"{stat['p']:.3f} ({stat['p_bh']:.3f}, {stat['p_holm']:.3f}){star}"


def _fmt(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "-"
    lo, hi = stat["ci95"]
    return f"{stat['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
