"""``whisperlens stimuli``: synthesize speech stimuli offline.

    whisperlens stimuli synth --text "cat" --engine espeak --carrier the_word_is \\
        --rate slow --out cat.wav --json
    whisperlens stimuli carriers [--language es]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from whisperlens._io import atomic_write_json
from whisperlens.audio import save_wav
from whisperlens.stimuli.carriers import CARRIERS, RATES, carrier_names, get_carrier, parse_rate
from whisperlens.stimuli.tts import ENGINES, StimulusError, SynthesisRequest, synthesize_request


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("stimuli", help="synthesize speech stimuli offline (TTS)")
    sub = parser.add_subparsers(dest="stimuli_command", metavar="ACTION", required=True)
    synth = sub.add_parser("synth", help="text -> 16 kHz WAV with word/phoneme timings")
    synth.add_argument("--text", required=True, help="text to say (the word, with --carrier)")
    synth.add_argument("--engine", choices=list(ENGINES), default="piper")
    synth.add_argument("--language", default="en", help="language code, e.g. en, es")
    synth.add_argument("--voice", default=None, help="engine voice (default: per language)")
    synth.add_argument(
        "--rate", default="1.0", help=f"speed multiplier or one of {', '.join(RATES)}"
    )
    synth.add_argument("--carrier", choices=list(CARRIERS), help="put --text in this phrase")
    synth.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="engine parameter"
    )
    synth.add_argument("--out", required=True, type=Path, help="output WAV (16 kHz PCM16)")
    synth.add_argument(
        "--json", nargs="?", const="-", default=None, metavar="PATH",
        help="print the metadata JSON (or write it to PATH)",
    )  # fmt: skip
    synth.add_argument("--no-cache", action="store_true", help="re-synthesize even if cached")
    synth.set_defaults(func=run)
    listing = sub.add_parser("carriers", help="list carrier phrases")
    listing.add_argument("--language", default=None)
    listing.set_defaults(func=run)


def parse_request(args: argparse.Namespace) -> tuple[SynthesisRequest, tuple[int, int] | None]:
    """The SynthesisRequest the arguments describe, and the target word's character span."""
    text, span = args.text, None
    if args.carrier:
        phrase = get_carrier(args.carrier).render(args.text)
        text, span = phrase.text, phrase.word_span
    params = dict(_parse_param(p) for p in args.param)
    try:
        rate = parse_rate(args.rate)
    except ValueError as exc:
        raise StimulusError(str(exc), f"pass --rate 0.8 or one of {', '.join(RATES)}") from None
    request = SynthesisRequest(text, args.engine, args.language, args.voice, rate, params)
    return request, span


def _parse_param(item: str) -> tuple[str, float | int | str]:
    name, sep, raw = item.partition("=")
    if not sep or not name:
        raise StimulusError(f"--param {item!r} is not NAME=VALUE", "e.g. --param pitch=40")
    for cast in (int, float):
        try:
            return name, cast(raw)
        except ValueError:
            continue
    return name, raw


def run(args: argparse.Namespace) -> int:
    if args.stimuli_command == "carriers":
        for name in carrier_names(args.language):
            carrier = CARRIERS[name]
            print(f"{name:16s} {carrier.language:4s} {carrier.template}")
        return 0
    request, span = parse_request(args)
    stimulus = synthesize_request(request, use_cache=not args.no_cache)
    save_wav(args.out, stimulus.audio, stimulus.sample_rate)
    meta = {**stimulus.metadata(), "out": str(args.out)}
    if span is not None:
        meta["target"] = {"char_span": list(span), "time_span": stimulus.time_span(span)}
    if args.json == "-":
        json.dump(meta, sys.stdout, indent=2, ensure_ascii=False)
        print()
    elif args.json:
        atomic_write_json(args.json, meta)
    print(f"wrote {args.out} ({stimulus.duration_s:.2f} s, {stimulus.engine})", file=sys.stderr)
    return 0
