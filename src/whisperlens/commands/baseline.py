"""``whisperlens baseline``: how well Whisper hears the synthetic stimuli (greedy + forced choice).

    whisperlens baseline --words minimal --engine piper --model tiny.en \\
        --carrier the_word_is --out runs/minimal-tiny
    whisperlens baseline --words en-es --sides b --engine espeak --model base \\
        --carrier es_la_palabra --out runs/es-base

Writes ``config.json``, ``rows.jsonl`` (one row per word; a rerun with the same options
resumes), ``summary.json`` and ``report.html`` into ``--out``; prints the headline numbers.
Clips run in parallel worker processes (``--workers``), or on Ray (``--executor ray:ADDR``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, get_args

from whisperlens.executors import add_executor_arguments, executor_from_args
from whisperlens.stimuli.carriers import CARRIERS, RATES
from whisperlens.stimuli.tts import ENGINES
from whisperlens.stimuli.wordlists import list_wordlists
from whisperlens.studies.baseline import (
    DEFAULT_CARRIER,
    DEFAULT_ENGINE,
    DEFAULT_RATE,
    BaselineConfig,
    Sides,
    run_baseline,
)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "baseline", help="accuracy of Whisper on synthetic word-pair stimuli"
    )
    parser.add_argument(
        "--words", required=True, help=f"{', '.join(list_wordlists())} or a .jsonl/.csv/.tsv"
    )
    parser.add_argument("--out", required=True, type=Path, help="run directory")
    parser.add_argument("--engine", choices=list(ENGINES), default=DEFAULT_ENGINE)
    parser.add_argument("--model", default="tiny.en", help="tiny.en, base, a path or hub id")
    parser.add_argument("--carrier", choices=list(CARRIERS), default=DEFAULT_CARRIER)
    parser.add_argument(
        "--rate", default=str(DEFAULT_RATE), help=f"multiplier or one of {', '.join(RATES)}"
    )
    parser.add_argument("--voice", default=None, help="TTS voice (default: per language)")
    parser.add_argument(
        "--language", default=None, help="decode/score language (default: each word's own)"
    )
    parser.add_argument("--sides", choices=get_args(Sides), default="both")
    parser.add_argument("--n-pairs", type=int, default=None, help="seeded subset of pairs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --n-pairs subset")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--overwrite", action="store_true", help="discard a different run")
    parser.add_argument("--json", action="store_true", help="print summary.json on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_executor_arguments(parser)
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> BaselineConfig:
    """The BaselineConfig that parsed arguments describe (validated on construction)."""
    return BaselineConfig(
        words=args.words,
        out=args.out,
        engine=args.engine,
        model=args.model,
        carrier=args.carrier,
        rate=args.rate,
        voice=args.voice,
        language=args.language,
        sides=args.sides,
        n_pairs=args.n_pairs,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    summary = run_baseline(
        config,
        executor=executor_from_args(args),
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    overall = summary["overall"]
    fc, greedy = overall["forced_choice"], overall["greedy"]
    lo, hi = fc["ci95"]
    print(
        f"{overall['n_items']} items: forced choice {fc['accuracy']:.1%} "
        f"[{lo:.1%}, {hi:.1%}], greedy exact match {greedy['exact_match']:.1%}, "
        f"mean margin {fc['mean_margin']:.2f} -> {config.out}",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    return 0
