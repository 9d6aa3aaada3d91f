"""``whisperlens demo``: a short end-to-end run on the offline default models.

Writes a run directory (default under the user cache; ``--out`` to choose) with
``rows.jsonl``, ``summary.json``, ``payloads.safetensors`` and ``report.html``.
"""

from __future__ import annotations

import argparse
import json
import sys

from whisperlens.studies.demo import DemoConfig, default_out, run_demo


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="transcribe, cache, patch and steer on the offline models")
    p.add_argument("--model", default=DemoConfig.model)
    p.add_argument("--engine", default=DemoConfig.engine, choices=["piper", "espeak"])
    p.add_argument("--out", default=None, help="run directory (default: in the user cache)")
    p.add_argument("--overwrite", action="store_true", help="discard a different run")
    p.add_argument("--json", action="store_true", help="print summary.json on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = DemoConfig(model=args.model, engine=args.engine)
    out = args.out or default_out(config)
    summary = run_demo(config, out, log=lambda line: print(line, file=sys.stderr),
                       overwrite=args.overwrite)  # fmt: skip
    print(f"report: {out}/report.html", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    return 0
