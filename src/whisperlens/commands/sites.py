"""``whisperlens sites [--model M] [--stack encoder|decoder]``: list the hook-site names."""

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
    from whisperlens.models.whisper import load_whisper

    loaded = load_whisper(args.model)
    stacks = STACKS if args.stack is None else (args.stack,)
    for name in site_names(loaded.n_layers, loaded.n_decoder_layers, stacks=stacks):
        print(name)
    return 0
