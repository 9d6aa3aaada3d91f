"""The ``whisperlens`` command line.

Each subcommand lives in ``whisperlens.commands.<name>`` and exposes
``add_parser(subparsers)``, which registers it with ``set_defaults(func=run)``;
``run(args) -> int`` parses nothing itself and calls one library function.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from whisperlens.errors import WhisperlensError

COMMAND_MODULES = (
    "models",
    "transcribe",
    "cache",
    "sites",
    "stimuli",
    "baseline",
    "evaluate",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whisperlens",
        description="Mechanistic interpretability for Whisper: hooks, caches, patching, steering.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"whisperlens.commands.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet
            if exc.name == f"whisperlens.commands.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WhisperlensError as exc:
        print(f"whisperlens: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("whisperlens: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
