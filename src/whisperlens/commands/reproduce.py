"""``whisperlens reproduce``: the seed studies (patching, steering, SAEs) in one run and report.

    whisperlens reproduce --scale quick --out runs/reproduce     # the main job, ~20 min on 2 cores
    whisperlens reproduce --scale full --executor ray:ADDRESS --out runs/reproduce-full

Writes each study's run directory under ``--out`` (``patching-a/``, ``patching-a-span/``,
``patching-b/``, ``steering-<concept>/``, ``sae/``), a combined ``summary.json`` (every
claim with our measurement and verdict) and ``report.html`` (claims table first). A rerun
with the same options resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from whisperlens.executors import add_executor_arguments, executor_from_args
from whisperlens.studies.reproduce import SCALES, STUDIES, ReproduceConfig, run_reproduce


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reproduce", help="run the seed studies and write one report of their claims"
    )
    parser.add_argument("--out", required=True, type=Path, help="run directory")
    parser.add_argument("--scale", choices=SCALES, default="quick",
                        help="quick: minutes on 2 CPU cores (default); full: the seeds' sizes; "
                        "tiny: a smoke test")  # fmt: skip
    parser.add_argument("--study", action="append", choices=list(STUDIES),
                        help="repeatable; default: all of them")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="discard a different run")
    parser.add_argument("--json", action="store_true", help="print summary.json on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_executor_arguments(parser)
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> ReproduceConfig:
    """The ReproduceConfig that parsed arguments describe (validated on construction)."""
    return ReproduceConfig(args.out, scale=args.scale, studies=tuple(args.study or STUDIES))


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    summary = run_reproduce(config, executor=executor_from_args(args), overwrite=args.overwrite,
                            progress=not args.no_progress)  # fmt: skip
    for c in summary["claims"]:
        print(f"{c['id']}: {c['verdict']}", file=sys.stderr)
    print(f"report: {config.out / 'report.html'}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    return 0
