"""``whisperlens patch``: activation patching between word pairs (seed 001, experiments A and B).

    whisperlens patch a --n-pairs 30 --out runs/patch-a
    whisperlens patch b --model base --mode span --out runs/patch-b
    whisperlens patch compare runs/patch-a runs/patch-a-base --out runs/patch-a-compare

Writes ``config.json``, ``rows.jsonl`` (one row per pair direction x (S, L); a rerun with the
same options resumes), ``summary.json`` (layer x layer matrices with bootstrap CIs, the seed's
matrices and the differences) and ``report.html`` into ``--out``. ``compare`` puts runs of
models with different numbers of blocks side by side by relative depth (block l of n at
(l + 1) / n; :mod:`whisperlens.studies.patching.compare`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, get_args

from whisperlens.executors import add_executor_arguments, executor_from_args
from whisperlens.studies.patching import MODES, PatchConfig, run_patching
from whisperlens.studies.patching.study import Experiment, Stimuli


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "patch", help="activation patching between word pairs (seed 001, experiments A and B)"
    )
    kinds = parser.add_subparsers(dest="experiment", metavar="a|b|compare", required=True)
    helps = {"a": "English -> English word pairs (default model tiny.en)",
             "b": "English states into Spanish audio (default model base)"}  # fmt: skip
    for experiment in get_args(Experiment):
        sub = kinds.add_parser(experiment, help=helps[experiment])
        add_run_arguments(sub)
        sub.set_defaults(func=run)
    compare = kinds.add_parser(
        "compare", help="seed/span runs of different model sizes side by side, by relative depth"
    )
    compare.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                         help="--out directories of finished `patch a|b` runs (seed or span mode)")  # fmt: skip
    compare.add_argument("--out", required=True, type=Path, help="comparison directory")
    compare.add_argument("--overwrite", action="store_true", help="discard a different comparison")
    compare.add_argument("--json", action="store_true", help="print summary.json on stdout")
    compare.set_defaults(func=run_compare_command)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``patch a`` and ``patch b`` (the fields of PatchConfig)."""
    parser.add_argument("--out", required=True, type=Path, help="run directory")
    parser.add_argument("--mode", default="seed", help=" | ".join(MODES))
    parser.add_argument("--model", default=None,
                        help="offline name, local path or hub id (default: tiny.en (a), base (b))")  # fmt: skip
    parser.add_argument("--words", default=None, help="default: english (a), en-es (b)")
    parser.add_argument("--n-pairs", type=int, default=None,
                        help="seeded subset, stratified by kind (default: the seed's 869 / 162)")  # fmt: skip
    parser.add_argument("--stimuli", choices=get_args(Stimuli), default="carrier")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pair draw")
    parser.add_argument("--span-margin", type=int, default=2, help="span mode: frames each side")
    parser.add_argument("--max-new-tokens", type=int, default=6)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--overwrite", action="store_true", help="discard a different run")
    parser.add_argument("--json", action="store_true", help="print summary.json on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_executor_arguments(parser)


def config_from_args(args: argparse.Namespace) -> PatchConfig:
    """The PatchConfig that parsed arguments describe (validated on construction)."""
    return PatchConfig(
        experiment=args.experiment,
        out=args.out,
        mode=args.mode,
        model=args.model,
        words=args.words,
        n_pairs=args.n_pairs,
        stimuli=args.stimuli,
        seed=args.seed,
        span_margin=args.span_margin,
        max_new_tokens=args.max_new_tokens,
        n_bootstrap=args.n_bootstrap,
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    summary = run_patching(
        config, executor=executor_from_args(args), overwrite=args.overwrite,
        progress=not args.no_progress,
    )  # fmt: skip
    h = summary["headline"]
    diag, off = h["diagonal"], h["off_diagonal"]
    print(
        f"{summary['n_pairs']} pairs, {summary['n_rows']} rows: override diagonal "
        f"{_pct(diag['override']['value'])}, off-diagonal {_pct(off['override']['value'])}; "
        f"margin diagonal {_num(diag['margin']['value'])}, off-diagonal "
        f"{_num(off['margin']['value'])} -> {config.out}",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    return 0


def run_compare_command(args: argparse.Namespace) -> int:
    from whisperlens.studies.patching.compare import run_compare

    comparison = run_compare(args.runs, args.out, overwrite=args.overwrite)
    for entry in comparison["runs"]:
        t = entry["triangles"]
        print(
            f"{entry['label']}: override diagonal {_pct(t['diagonal']['override']['value'])}, "
            f"below (S > L) {_pct(t['below']['override']['value'])}, above (S < L) "
            f"{_pct(t['above']['override']['value'])}",
            file=sys.stderr,
        )
    print(f"-> {args.out}", file=sys.stderr)
    if args.json:
        print(json.dumps(comparison, ensure_ascii=False))
    return 0


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"
