"""The ``whisperlens`` command line.

Each subcommand lives in ``whisperlens.commands.<name>`` and exposes
``add_parser(subparsers)``, which registers it with ``set_defaults(func=run)``;
``run(args) -> int`` parses nothing itself, checks its outputs can be written, and calls
one library function.

Streams: final summaries go to stdout (machine-readable with ``--json``); notes, warnings
and progress bars go to stderr. Library chatter (transformers' loading bars and generation
warnings) is silenced unless ``--verbose``. Errors are one line, ``whisperlens: error: ...``,
exit status 2; an interrupt exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
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
    "patch",
    "steer",
    "sae",
    "reproduce",
)
EXIT_ERROR, EXIT_INTERRUPTED = 2, 130
INTERRUPTED = "whisperlens: interrupted; re-run the same command to resume"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whisperlens",
        description="Mechanistic interpretability for Whisper: hooks, caches, patching, steering.",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show library logs, warnings and loading bars"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"whisperlens.commands.{name}").add_parser(sub)
    return parser


def configure_output(verbose: bool) -> None:
    """Route whisperlens notes to stderr as one line each; quiet libraries unless verbose."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("whisperlens: %(message)s"))
    logger = logging.getLogger("whisperlens")
    logger.handlers[:] = [h for h in logger.handlers if not isinstance(h, _StderrHandler)]
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    warnings.showwarning = _one_line_warning
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers loads
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", module=r"(transformers|huggingface_hub|torch)\b")
    if "transformers" in sys.modules:  # already loaded: its environment was read
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.warn`` as ``whisperlens: warning: ...`` (no source line)."""
    text = " ".join(str(message).split())
    print(f"whisperlens: warning: {text}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_output(args.verbose)
    try:
        return int(args.func(args) or 0)
    except WhisperlensError as exc:
        print(f"whisperlens: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
