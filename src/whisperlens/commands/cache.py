"""``whisperlens cache AUDIO --model M --sites SITE... --out FILE.safetensors``.

Prints a JSON summary (out, model, sites, shape, frames) on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="record activations at named sites into a safetensors file")
    p.add_argument("audio", type=Path)
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--sites", nargs="+", default=["encoder.blocks.*.hook_resid_post"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--start", type=float, default=None, help="span start (s)")
    p.add_argument("--end", type=float, default=None, help="span end (s), within the clip")
    p.add_argument("--all-frames", action="store_true", help="keep the 30 s padding frames too")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from whisperlens.cache import CacheConfig, cache_activations

    config = CacheConfig(
        args.audio, args.model, tuple(args.sites), args.out, args.start, args.end, args.all_frames
    )
    summary = cache_activations(config, progress=sys.stderr.isatty())
    print(json.dumps(summary))
    return 0
