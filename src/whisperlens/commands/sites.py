"""``whisperlens sites [--model M] [--stack encoder|decoder]``: list the hook-site names.

Depths come from the model registry or the model's config.json; weights are loaded only for
sources that record them nowhere else (CTranslate2 directories, openai-whisper .pt files).
"""

from __future__ import annotations

import argparse

from whisperlens.sites import POINTS, STACKS, site_names


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sites", help="list hook-site names (from the one site table)")
    p.add_argument("--model", default="tiny.en", help="model whose depths to use")
    p.add_argument("--stack", choices=STACKS, default=None)
    p.add_argument("--points", action="store_true", help="describe the point kinds instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.points:
        for point, spec in POINTS.items():
            print(f"{point:<26} {'/'.join(spec.stacks):<16} {spec.description}")
        return 0
    from whisperlens.models.registry import layer_counts

    counts = layer_counts(args.model)
    if counts is None:
        from whisperlens.models.whisper import load_whisper

        loaded = load_whisper(args.model)
        counts = loaded.n_layers, loaded.n_decoder_layers
    stacks = STACKS if args.stack is None else (args.stack,)
    for name in site_names(*counts, stacks=stacks):
        print(name)
    return 0
