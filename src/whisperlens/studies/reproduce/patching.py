"""Seed 001 (activation patching) in ``reproduce``: parts, claims and report sections.

Parts: experiment A in the seed's mode (``patching-a``), A in span mode, the question the
seed meant to ask (``patching-a-span``), and experiment B on base (``patching-b``). Claims
are checked against the seed's published numbers (``patching.summary.SEED_HEADLINES`` and
``SEED_MATRICES``); the rules are in each claim function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from whisperlens.report import Audio, Block, Section, Table, Text
from whisperlens.runs import read_rows
from whisperlens.studies.patching import PatchConfig, run_patching
from whisperlens.studies.patching.report import report_section
from whisperlens.studies.patching.summary import (
    SEED_HEADLINES,
    SEED_MATRICES,
    cell_stats,
    fill_clean_targets,
)
from whisperlens.studies.reproduce.base import Part, Results, Scale, Study
from whisperlens.studies.reproduce.claims import Claim, Measure, above, contains, stat_measure

# part name -> (experiment, mode, pairs per scale; None = the seed's 869 / 162)
PARTS: dict[str, tuple[str, str, dict[str, int | None]]] = {
    "patching-a": ("a", "seed", {"tiny": 2, "quick": 20, "full": None}),
    "patching-a-span": ("a", "span", {"tiny": 1, "quick": 8, "full": None}),
    "patching-b": ("b", "seed", {"tiny": 1, "quick": 8, "full": None}),
}
N_BOOTSTRAP = 1000
N_AUDIO_EXAMPLES = 2  # pair directions of A with audio players in the overview

QUESTION = (
    "**Question (seed 001).** Does patching one word's encoder states into another word's "
    "run make Whisper hear the first word, and does that depend on the layers (A: English "
    "into English, tiny) or on the language (B: English states into Spanish audio)?"
)
METHOD = (
    "**Method.** Word pairs from the shipped minimal-pair, semantic and English-Spanish "
    'lists, spoken with Piper (English, "The word is _.", rate 0.85) or espeak-ng '
    "(Spanish, \"La palabra es _.\"). Seed mode is the seed's hook: block L's whole output "
    ":= the source word's block-S output, every (S, L). Span mode replaces only the target "
    "word's frames. Override: the source word in the greedy continuation after the forced "
    "carrier; margin: log p(source) - log p(target), teacher forced; every number has a "
    "bootstrap 95 % CI over pair directions. Models: tiny.en (A) and base (B; tiny.en is "
    "English-only, the seed's multilingual tiny is not available offline)."
)


def _part(name: str, scale: Scale) -> Part:
    experiment, mode, sizes = PARTS[name]
    config = PatchConfig(experiment, Path(name), mode=mode, n_pairs=sizes[scale])  # type: ignore[arg-type]

    def run(path: Path, executor: Any, progress: bool) -> dict[str, Any]:
        return run_patching(dataclasses.replace(config, out=path), executor=executor,
                            progress=progress)  # fmt: skip

    return Part(name, config.settings(), run)


def parts(scale: Scale) -> list[Part]:
    return [_part(name, scale) for name in PARTS]


# --- measurements from the rows ---------------------------------------------------------


def rows_of(result: Any) -> list[dict[str, Any]]:
    """A part's rows, with clean targets filled from the reverse directions."""
    return fill_clean_targets(read_rows(result.path / "rows.jsonl"))


def triangle(rows: Sequence[dict[str, Any]], below: bool) -> Measure:
    """Override over the cells below (S > L) or above (S < L) the diagonal, CI over directions."""
    cells = [r for r in rows if (r["source_layer"] > r["target_layer"]) == below
             and r["source_layer"] != r["target_layer"]]  # fmt: skip
    name = "S > L (later states into an earlier block)" if below else "S < L (skipping blocks)"
    return stat_measure(f"override {name}", cell_stats(cells, N_BOOTSTRAP)["override"])


def seed_triangle(experiment: str, below: bool) -> float:
    m = np.asarray(SEED_MATRICES[experiment])
    i, j = np.tril_indices(len(m), -1) if below else np.triu_indices(len(m), 1)
    return float(m[i, j].mean())


# --- claims -----------------------------------------------------------------------------


def claim_layer_specific(results: Results) -> Claim:
    """Diagonal above off-diagonal (CIs apart): the ordering reproduces. Explained otherwise
    when the diagonal equals clean recognition of the source word (seed mode's diagonal is
    the clean run by construction) and span mode overrides on its diagonal too."""
    s = results["patching-a"].summary
    h = s["headline"]
    diag, off = stat_measure("diagonal override", h["diagonal"]["override"]), stat_measure(
        "off-diagonal override", h["off_diagonal"]["override"])  # fmt: skip
    clean = s["baselines"]["clean_source"]["source_present"]
    span = results["patching-a-span"].summary["headline"]["diagonal"]["override"]
    measures = (diag, off, Measure("clean recognition of the source word", clean),
                stat_measure("span-mode diagonal override", span))  # fmt: skip
    is_clean_run = clean is not None and diag.value is not None and abs(diag.value - clean) < 1e-9
    if not above(diag, off):
        verdict, why = "not reproduced", "Our diagonal is not above the off-diagonal beyond its CI."
    elif is_clean_run:
        verdict = "reproduced, explained otherwise"
        why = (
            "The ordering reproduces, but the seed's hook replaces all 1500 frames of block L, "
            "so the transcript no longer depends on the target audio: the diagonal is exactly "
            "the clean run of the source word (ours equals clean recognition of our Piper "
            f"stimuli, {clean:.2f}; the seed's gTTS words were heard at about 0.95). It measures "
            "the stimuli, not layer-specific representations. Off the diagonal it measures how "
            "later blocks cope with another block's states. Span mode patches only the word's "
            f"frames (target carrier kept): its diagonal override is {_fmt(measures[3].value)}"
            + (", as high as the clean run: the word's identity is carried by its own frames "
               "at each block." if _near(measures[3].value, clean) else ".")
        )  # fmt: skip
    else:
        verdict, why = "reproduced", "The diagonal is above the off-diagonal beyond their CIs."
    return Claim("001-layer-specific", "001",
                 "Same-layer patching achieves ~95 % override accuracy vs ~54 % for cross-layer "
                 "patching: each encoder layer's representations are layer-specific.",
                 f"diagonal {SEED_HEADLINES['a']['diagonal']}, off-diagonal "
                 f"{SEED_HEADLINES['a']['off_diagonal']}",
                 measures, verdict, why, "patching-a")  # type: ignore[arg-type]  # fmt: skip


def claim_asymmetric(results: Results) -> Claim:
    """Below-diagonal (S > L) override above the above-diagonal (S < L), CIs apart."""
    rows = rows_of(results["patching-a"])
    below, upper = triangle(rows, below=True), triangle(rows, below=False)
    if above(below, upper):
        verdict = "reproduced"
        why = (
            "Later-block states written into an earlier block pass through the later blocks "
            "again and the word survives; earlier-block states that skip blocks decode no "
            f"word at all (ours {upper.value:.2f}). The seed's 0.50 in every S < L cell is "
            "what a two-way comparison crediting ties as one half gives, not a word-presence "
            "rate; ours counts the source word only, so the asymmetry is stronger."
        )
    else:
        verdict, why = "not reproduced", "S > L is not above S < L beyond the CIs."
    return Claim("001-asymmetric", "001",
                 "Asymmetric layer influence: later layers show stronger forward transfer to "
                 "adjacent layers.",
                 f"mean S > L {seed_triangle('a', True):.3f}, S < L "
                 f"{seed_triangle('a', False):.3f} (matrix)",
                 (below, upper), verdict, why, "patching-a")  # type: ignore[arg-type]  # fmt: skip


def claim_cross_lingual(results: Results) -> Claim:
    """Our overall B transfer against the seed's 0.666: inside the CI: reproduced (explained
    otherwise, since seed mode's output does not depend on the Spanish audio); else not."""
    s = results["patching-b"].summary
    overall = stat_measure("transfer (overall)", s["headline"]["overall"]["override"])
    diag = stat_measure("diagonal", s["headline"]["diagonal"]["override"])
    model = s["config"]["model"]
    mechanism = (
        "In seed mode the Spanish audio never reaches the decoder: every block output is "
        "replaced by the English word's, so 'transfer' is whether the model, told to "
        "transcribe Spanish after 'La palabra es', writes the English word it hears (our "
        f"diagonal, the clean English clip, is {_fmt(diag.value)}). It says nothing about "
        "language-agnostic representations."
    )
    if contains(overall, SEED_HEADLINES["b"]["overall"]):
        verdict, why = "reproduced, explained otherwise", mechanism
    else:
        verdict = "not reproduced"
        why = (f"Ours ({model}; the seed used multilingual tiny, not available offline) is "
               f"{_fmt(overall.value)}, outside 0.666. " + mechanism)  # fmt: skip
    return Claim("001-cross-lingual", "001",
                 "66.6 % cross-lingual transfer (English states into Spanish audio): encoder "
                 "representations are largely language-independent.",
                 f"overall {SEED_HEADLINES['b']['overall']}, same-layer "
                 f"{SEED_HEADLINES['b']['diagonal']}, cross-layer "
                 f"{SEED_HEADLINES['b']['off_diagonal']}",
                 (overall, diag), verdict, why, "patching-b")  # type: ignore[arg-type]  # fmt: skip


def claim_early_layers(results: Results) -> Claim:
    """B's later-into-earlier cells above its skipping cells (CIs apart): the pattern
    reproduces, explained by the same mechanism as A rather than universal early layers."""
    rows = rows_of(results["patching-b"])
    below, upper = triangle(rows, below=True), triangle(rows, below=False)
    if above(below, upper):
        verdict = "reproduced, explained otherwise"
        why = (
            "The seed's best cells (1->0, 2->0, 3->0) and worst (1->3) are the S > L and S < L "
            "triangles: as in A, states rerun through later blocks keep the word, and states "
            "that skip blocks lose it. The pattern is about skipping blocks, not about early "
            "layers being language-universal. Base has 6 blocks, so cells are not compared "
            "one by one."
        )
    else:
        verdict, why = "not reproduced", "S > L is not above S < L beyond the CIs in B."
    return Claim("001-early-layers", "001",
                 "Early layers are the most transferable across languages (best 1->0 = 1.00, "
                 "worst 1->3 = 0.019).",
                 f"mean S > L {seed_triangle('b', True):.3f}, S < L "
                 f"{seed_triangle('b', False):.3f} (matrix)",
                 (below, upper), verdict, why, "patching-b")  # type: ignore[arg-type]  # fmt: skip


def claims(results: Results) -> list[Claim]:
    return [claim_layer_specific(results), claim_asymmetric(results),
            claim_cross_lingual(results), claim_early_layers(results)]  # fmt: skip


def _near(x: float | None, ref: float | None, share: float = 0.8) -> bool:
    """``x`` at least ``share`` of ``ref`` (both known)."""
    return x is not None and ref is not None and x >= share * ref


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


# --- report -----------------------------------------------------------------------------


def seed_table(results: Results) -> Table:
    """The seed's headline numbers beside ours."""
    rows = []
    for name, exp in (("patching-a", "a"), ("patching-b", "b")):
        s = results[name].summary
        for part in ("diagonal", "off_diagonal", "overall"):
            published = SEED_HEADLINES[exp].get(part)
            ours = stat_measure(part, s["headline"][part]["override"])
            diff = None if published is None or ours.value is None else ours.value - published
            rows.append([f"{exp.upper()} ({s['config']['model']}, {s['n_pairs']} pairs)",
                         part.replace("_", "-"), published, ours.text().removeprefix(part + " "),
                         diff])  # fmt: skip
    return Table(["experiment", "cells", "seed 001", "ours [95 % CI] (n rows)", "ours - seed"],
                 rows, "Override (A) and transfer (B), seed mode.")  # fmt: skip


def examples(results: Results) -> list[Block]:
    """A few pair directions of A: their clips, clean and patched transcripts."""
    rows = rows_of(results["patching-a"])
    n_layers = int(results["patching-a"].summary["n_layers"])
    last = n_layers - 1
    by_dir: dict[tuple[str, str], dict[tuple[int, int], dict[str, Any]]] = {}
    for r in rows:
        by_dir.setdefault((r["source_word"], r["target_word"]), {})[
            (r["source_layer"], r["target_layer"])] = r  # fmt: skip
    table_rows: list[list[Any]] = []
    blocks: list[Block] = []
    for (src, tgt), cells in sorted(by_dir.items())[: 2 * N_AUDIO_EXAMPLES]:
        d = cells[(0, 0)]
        table_rows.append([src, tgt, d["clean_source_transcript"], d["clean_target_transcript"],
                           cells[(0, last)]["transcript"], cells[(last, 0)]["transcript"]])  # fmt: skip
    for (src, tgt), cells in sorted(by_dir.items())[:N_AUDIO_EXAMPLES]:
        d = cells[(0, 0)]
        for label, path, heard in ((f"source '{src}'", d["source_audio"], d["clean_source_transcript"]),
                                   (f"target '{tgt}'", d["target_audio"], d["clean_target_transcript"])):  # fmt: skip
            if Path(path).is_file():
                blocks.append(Audio(label, Path(path), f"clean continuation: {heard!r}"))
            else:
                blocks.append(Text(f"{label}: stimulus {path} is not on this machine."))
    table = Table(["source", "target", "clean source", "clean target",
                   f"patched S=0, L={last}", f"patched S={last}, L=0"], table_rows,
                  "Greedy continuations after the carrier 'The word is'.")  # fmt: skip
    return [table, *blocks]


def overview(results: Results) -> Section:
    walls = ", ".join(f"{n} {results[n].wall_s:.0f} s" for n in PARTS)
    intro = f"{QUESTION}\n\n{METHOD}\n\nWall time in this run: {walls}."
    return Section("patching", "Activation patching (seed 001)", intro,
                   [seed_table(results), *examples(results)])  # fmt: skip


def sections(results: Results) -> list[Section]:
    out = [overview(results)]
    for name in PARTS:
        summary = results[name].summary
        c = summary["config"]
        title = (f"Activation patching {c['experiment'].upper()}, {c['mode']} mode "
                 f"({c['model']}, {summary['n_pairs']} pairs)")  # fmt: skip
        out.append(dataclasses.replace(report_section(summary), id=name, title=title))
    return out


PATCHING = Study("patching", "001", "Activation patching", parts, claims, sections)
