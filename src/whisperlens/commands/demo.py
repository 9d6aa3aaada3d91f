"""``whisperlens demo``: a short end-to-end run on the offline default models."""

from __future__ import annotations

import argparse
import json

from whisperlens.demo import DemoConfig, run_demo


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="transcribe, cache, patch and steer on the offline models")
    p.add_argument("--model", default=DemoConfig.model)
    p.add_argument("--engine", default=DemoConfig.engine, choices=["piper", "espeak"])
    p.add_argument("--json", action="store_true", help="print the result as JSON at the end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    result = run_demo(DemoConfig(model=args.model, engine=args.engine))
    if args.json:
        print(json.dumps(result.__dict__))
    return 0
