"""Sweep the stimulus-usability baseline over engines x carriers x rates x models.

    python bench/baseline_sweep.py --stages tiny base full spanish --threads 1

Stages (each run is a resumable ``run_baseline`` directory under ``--out-root``, so an
interrupted sweep picks up where it stopped):

- ``tiny``: every engine x carrier x rate of the grid on a seeded subset of the English
  minimal pairs (``--n-pairs``), tiny.en;
- ``base``: the ``--top`` best tiny.en setups again on base (same subset);
- ``full``: the best tiny.en setup on ``--n-full`` minimal pairs (0: the whole list);
- ``spanish``: the Spanish side of en-es with espeak on base, Spanish carrier.
- ``extra``: the default setup on the other lists: semantic pairs and the English side of
  en-es on tiny.en, and ``--n-full`` minimal pairs on base.

Ends by writing a markdown table of every finished run (``--table``, default
``<out-root>/table.md``) and printing it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from whisperlens._io import atomic_write_text, cache_dir
from whisperlens.studies.baseline import SUMMARY_FILE, BaselineConfig, run_baseline

# (engine, carrier, rate) on tiny.en: every engine x carrier x rate.
GRID: tuple[tuple[str, str, float], ...] = tuple(
    itertools.product(("piper", "espeak"), ("bare", "the_word_is", "say_again"), (1.0, 0.85, 0.7))
)
STAGES = ("tiny", "base", "full", "spanish", "extra")


def run_name(c: BaselineConfig) -> str:
    subset = "all" if c.n_pairs is None else str(c.n_pairs)
    return f"{c.words}-{c.sides}-n{subset}-{c.model}-{c.engine}-{c.carrier}-r{c.rate:g}"


def run_one(config: BaselineConfig, root: Path) -> dict[str, Any]:
    config = replace(config, out=root / run_name(config))
    start = time.perf_counter()
    summary = run_baseline(config, progress=True)
    fc = summary["overall"]["forced_choice"]
    print(f"{run_name(config)}: fc {fc['accuracy']:.3f} ({time.perf_counter() - start:.0f} s)")
    return summary


def rank_key(summary: dict[str, Any]) -> tuple[float, float]:
    fc = summary["overall"]["forced_choice"]
    return fc["accuracy"], fc["mean_margin"]


def neg_rank(summary: dict[str, Any]) -> tuple[float, float]:
    acc, margin = rank_key(summary)
    return -acc, -margin


def stage_tiny(root: Path, n_pairs: int, seed: int) -> list[dict[str, Any]]:
    return [
        run_one(
            BaselineConfig("minimal", root, e, "tiny.en", c, r, n_pairs=n_pairs, seed=seed), root
        )
        for e, c, r in GRID
    ]


def best_tiny(root: Path, n_pairs: int, seed: int, k: int) -> list[BaselineConfig]:
    """The ``k`` best tiny.en grid setups, best first (runs stage tiny if needed)."""
    ranked = sorted(stage_tiny(root, n_pairs, seed), key=rank_key, reverse=True)
    return [config_of(s, root) for s in ranked[:k]]


def config_of(summary: dict[str, Any], root: Path) -> BaselineConfig:
    ident = {k: v for k, v in summary["config"].items() if k != "format_version"}
    return BaselineConfig(out=root, **ident)


def run_stages(args: argparse.Namespace) -> None:
    root, n, seed = args.out_root, args.n_pairs, args.seed
    if "tiny" in args.stages:
        stage_tiny(root, n, seed)
    if "base" in args.stages:
        for config in best_tiny(root, n, seed, args.top):
            run_one(replace(config, model="base"), root)
    if "full" in args.stages:
        [best] = best_tiny(root, n, seed, 1)
        run_one(replace(best, n_pairs=args.n_full or None), root)
    if "spanish" in args.stages:
        spanish = BaselineConfig(
            "en-es", root, "espeak", "base", "es_la_palabra", args.spanish_rate, sides="b",
            n_pairs=args.n_spanish or None, seed=seed,
        )  # fmt: skip
        run_one(spanish, root)
    if "extra" in args.stages:
        default = BaselineConfig("semantic", root, seed=seed)
        run_one(default, root)
        run_one(replace(default, words="en-es", sides="a", n_pairs=args.n_spanish or None), root)
        run_one(replace(default, words="minimal", model="base", n_pairs=args.n_full or None), root)


def refresh_summaries(root: Path) -> None:
    """Rewrite every finished run's summary.json with the current statistics code (no scoring:
    a finished run has no pending items, so no model is loaded)."""
    for path in sorted(root.glob(f"*/{SUMMARY_FILE}")):
        config = replace(config_of(json.loads(path.read_text()), root), out=path.parent)
        run_baseline(config, progress=False)


def table(root: Path) -> str:
    """Markdown table of every finished run under ``root``, best forced choice first."""
    summaries = [json.loads(p.read_text()) for p in sorted(root.glob(f"*/{SUMMARY_FILE}"))]
    summaries.sort(key=lambda s: (s["config"]["words"], s["config"]["model"], *neg_rank(s)))
    lines = [
        "| words | side | model | engine | carrier | rate | n | greedy exact | "
        "forced choice [95 % CI] | mean margin | mean p_target | s/item |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [table_row(s) for s in summaries]
    return "\n".join(lines) + "\n"


def table_row(s: dict[str, Any]) -> str:
    c, o = s["config"], s["overall"]
    fc, greedy = o["forced_choice"], o["greedy"]
    lo, hi = fc["ci95"]
    subset = "all" if c["n_pairs"] is None else f"{c['n_pairs']} pairs"
    cells = [
        f"{c['words']} ({subset})",
        c["sides"],
        c["model"],
        c["engine"],
        c["carrier"],
        f"{c['rate']:g}",
        str(o["n_items"]),
        f"{greedy['exact_match']:.1%}",
        f"**{fc['accuracy']:.1%}** [{lo:.1%}, {hi:.1%}]" + _n_fc_note(o),
        f"{fc['mean_margin']:.2f}",
        f"{fc['mean_p_target']:.3f}",
        f"{o['mean_seconds']:.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


def _n_fc_note(overall: dict[str, Any]) -> str:
    n_fc = overall["forced_choice"]["n_items"]
    return "" if n_fc == overall["n_items"] else f" (n={n_fc})"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--out-root", type=Path, default=None, help="default: the user cache")
    p.add_argument("--n-pairs", type=int, default=30, help="minimal pairs in the grid subset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=2, help="tiny.en setups re-run on base")
    p.add_argument("--n-full", type=int, default=200, help="pairs in stage full (0: all)")
    p.add_argument("--spanish-rate", type=float, default=1.0)
    p.add_argument("--n-spanish", type=int, default=0, help="en-es pairs in stage spanish (0: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 on shared cores)")
    p.add_argument("--table", type=Path, default=None, help="default: <out-root>/table.md")
    p.add_argument("--table-only", action="store_true", help="only rebuild the table")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out_root = args.out_root or cache_dir("runs", "baseline_sweep")
    if args.table_only:
        refresh_summaries(args.out_root)
    else:
        run_stages(args)
    text = table(args.out_root)
    atomic_write_text(args.table or args.out_root / "table.md", text)
    print(text)


if __name__ == "__main__":
    main()
