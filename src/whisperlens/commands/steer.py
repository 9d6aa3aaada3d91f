"""``whisperlens steer``: text-model steering vectors added to Whisper's encoder, with controls.

    whisperlens steer --concept anger_calm --model tiny.en --out runs/steer-anger
    whisperlens steer --concept love_hate --reducer aligned --layout direction --out runs/al
    whisperlens steer --concept love_hate --text-model gpt2-xl --layer 20 \\
        --reducer pca --reducer gaussian --layout frames --blocks all \\
        --strengths=-6,-0.07,0,0.07,6 --scale raw --model tiny.en --out runs/steer-seed

Writes ``config.json``, ``text/caa.safetensors`` (CAA differences and mean),
``vectors/<reducer>-<layout>.safetensors`` (the vectors added), ``text/alignment.json``
(the aligned reducer's held-out fit), ``rows.jsonl`` (a rerun resumes), ``summary.json``
and ``report.html`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from whisperlens.executors import add_executor_arguments, executor_from_args
from whisperlens.studies.steering.concepts import list_concepts
from whisperlens.studies.steering.mapping import LAYOUTS, REDUCERS, SCALES
from whisperlens.studies.steering.study import (
    DEFAULT_REDUCERS,
    DEFAULT_STRENGTHS,
    SteerConfig,
    SteerError,
    run_steer,
)
from whisperlens.studies.steering.summary import EFFECT_SCORES


def parse_floats(text: str) -> tuple[float, ...]:
    """``"-6,-1,0,1,6"`` -> (-6.0, -1.0, 0.0, 1.0, 6.0)."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SteerError(f"strengths {text!r} are not numbers", "pass e.g. -4,-1,0,1,4") from None


def parse_blocks(text: str) -> tuple[int, ...] | None:
    """``"all"`` -> None (every block); ``"0,2"`` -> (0, 2)."""
    if text.strip() == "all":
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SteerError(f"blocks {text!r} are not block indices", "pass all or e.g. 0,2") from None


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "steer", help="add text-model concept vectors to Whisper's encoder (with controls)"
    )
    parser.add_argument("--concept", required=True, choices=list_concepts())
    parser.add_argument("--out", required=True, type=Path, help="run directory")
    parser.add_argument("--model", default="tiny.en", help="Whisper: tiny.en, base, a path")
    parser.add_argument("--text-model", default="smollm2-135m", help="load_text_model name")
    parser.add_argument("--layer", type=int, default=None, help="default: best held-out layer")
    parser.add_argument("--position", choices=("mean", "last"), default="mean")
    parser.add_argument(
        "--reducer", action="append", choices=REDUCERS,
        help=f"repeatable; default {','.join(DEFAULT_REDUCERS)} (aligned: a map fit on "
        "spoken words, a first build of a few minutes, then cached)",
    )  # fmt: skip
    parser.add_argument("--layout", action="append", choices=LAYOUTS, help="repeatable")
    parser.add_argument("--blocks", default="all", help="all, or encoder blocks e.g. 0,2")
    parser.add_argument(
        "--strengths", default=",".join(f"{s:g}" for s in DEFAULT_STRENGTHS),
        help="comma-separated (use --strengths=-4,0,4 for negatives)",
    )  # fmt: skip
    parser.add_argument("--scale", choices=SCALES, default="unit")
    parser.add_argument("--all-frames", action="store_true", help="direction on all 1500 frames")
    parser.add_argument("--n-random", type=int, default=2, help="random controls per vector")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-align-words", type=int, default=300, help="aligned reducer's words")
    parser.add_argument(
        "--n-language-clips", type=int, default=30, help="Asterisk clips per language"
    )
    parser.add_argument("--overwrite", action="store_true", help="discard a different run")
    parser.add_argument("--json", action="store_true", help="print summary.json on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_executor_arguments(parser)
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> SteerConfig:
    """The SteerConfig that parsed arguments describe (validated on construction)."""
    return SteerConfig(
        concept=args.concept,
        out=args.out,
        model=args.model,
        text_model=args.text_model,
        layer=args.layer,
        position=args.position,
        reducers=tuple(args.reducer or DEFAULT_REDUCERS),
        layouts=tuple(args.layout or LAYOUTS),
        blocks=parse_blocks(args.blocks),
        strengths=parse_floats(args.strengths),
        scale=args.scale,
        speech_only=not args.all_frames,
        n_random=args.n_random,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        n_align_words=args.n_align_words,
        n_language_clips=args.n_language_clips,
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    summary = run_steer(
        config,
        executor=executor_from_args(args),
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    for name, m in summary["mappings"].items():
        a = m["answer"]
        moved = "; ".join(
            f"{score.removesuffix('_delta')} at {a[score]['and_coherent_at']} "
            f"({a[score]['and_coherent_after_bh_at']} after BH)"
            for score in EFFECT_SCORES
            if score in a
        )
        print(f"{name}: beyond random, coherent: {moved}; broken at {a['broken_at']}",
              file=sys.stderr)  # fmt: skip
    print(f"-> {config.out}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    return 0
