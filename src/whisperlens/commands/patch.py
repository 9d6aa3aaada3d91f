"""``whisperlens patch``: activation patching between word pairs (seed 001, experiments A and B).

    whisperlens patch a --n-pairs 30 --out runs/patch-a
    whisperlens patch b --model base --mode span --out runs/patch-b

Writes ``config.json``, ``rows.jsonl`` (one row per pair direction x (S, L); a rerun with the
same options resumes), ``summary.json`` (layer x layer matrices with bootstrap CIs, the seed's
matrices and the differences) and ``report.html`` into ``--out``.
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
    parser.add_argument("experiment", choices=get_args(Experiment),
                        help="a: English -> English (tiny.en); b: English -> Spanish (base)")  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="run directory")
    parser.add_argument("--mode", default="seed", help=" | ".join(MODES))
    parser.add_argument("--model", default=None, help="default: tiny.en (a), base (b)")
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
    parser.set_defaults(func=run)


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


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"
