"""``whisperlens evaluate --dataset asterisk-en --model tiny.en --out DIR``: WER on a dataset.

Writes ``config.json``, ``rows.jsonl`` (resumable), ``summary.json`` and ``report.html``;
prints the summary as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json

from whisperlens.executors import add_executor_arguments, executor_from_args
from whisperlens.studies.evaluate import BUILDERS, EvalConfig, run_evaluation


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="word error rate of a model on an audio dataset")
    p.add_argument("--dataset", required=True, help=f"{'|'.join(BUILDERS)} or a manifest path")
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--out", required=True, help="output directory (resumable)")
    p.add_argument("--language", default=None)
    p.add_argument("--n-items", type=int, default=None, help="seeded subset size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--overwrite", action="store_true", help="discard a different run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_executor_arguments(p)
    p.set_defaults(func=run)


def parse_config(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(
        dataset=args.dataset,
        model=args.model,
        out=args.out,
        language=args.language,
        n_items=args.n_items,
        seed=args.seed,
        batch_size=args.batch_size,
    )


def run(args: argparse.Namespace) -> int:
    summary = run_evaluation(
        parse_config(args),
        progress=not args.no_progress,
        executor=executor_from_args(args),
        overwrite=args.overwrite,
    )
    print(json.dumps(summary))
    return 0
