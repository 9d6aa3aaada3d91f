"""``whisperlens stimuli``: synthesize speech stimuli offline.

    whisperlens stimuli synth --text "cat" --engine espeak --carrier the_word_is \\
        --rate slow --out cat.wav --json
    whisperlens stimuli carriers [--language es]

``--out`` may end in .wav (16 kHz PCM16), .flac, .ogg (Vorbis) or .mp3, as far as the
installed libsndfile supports them; every output path is checked before synthesis.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import soundfile as sf

from whisperlens._io import atomic_path, atomic_write_json, check_output_file
from whisperlens.audio import save_wav
from whisperlens.stimuli.carriers import CARRIERS, RATES, carrier_names, get_carrier, parse_rate
from whisperlens.stimuli.tts import ENGINES, StimulusError, SynthesisRequest, synthesize_request

# extension -> (libsndfile format, subtype); .wav goes through audio.save_wav (PCM16)
AUDIO_FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}


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
    synth.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output audio: .wav (16 kHz PCM16), .flac, .ogg or .mp3",
    )
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
    check_audio_output(args.out)
    if args.json and args.json != "-":
        check_output_file(args.json)
    request, span = parse_request(args)
    stimulus = synthesize_request(request, use_cache=not args.no_cache)
    write_audio(args.out, stimulus.audio, stimulus.sample_rate)
    meta = {**stimulus.metadata(), "out": str(args.out)}
    if span is not None:
        meta["target"] = {"char_span": list(span), "time_span": stimulus.time_span(span)}
    if args.json == "-":
        json.dump(meta, sys.stdout, indent=2, ensure_ascii=False)
        print()
    elif args.json:
        atomic_write_json(args.json, meta)
    summary = f"wrote {args.out} ({stimulus.duration_s:.2f} s, {stimulus.engine})"
    print(summary, file=sys.stderr if args.json == "-" else sys.stdout)
    return 0


def supported_extensions() -> list[str]:
    """Output extensions this libsndfile can write."""
    formats = sf.available_formats()
    return [ext for ext, (fmt, _) in AUDIO_FORMATS.items() if fmt in formats]


def check_audio_output(path: Path) -> None:
    """Refuse, before any work, an output the extension or location of which cannot be used."""
    supported = supported_extensions()
    if path.suffix.lower() not in supported:
        raise StimulusError(
            f"cannot write {path}: unsupported audio extension {path.suffix or '(none)'!r}",
            f"use one of {', '.join(supported)}",
        )
    check_output_file(path)


def write_audio(path: Path, audio: Any, sample_rate: int) -> None:
    """Write ``audio`` atomically in the format of ``path``'s extension."""
    fmt, subtype = AUDIO_FORMATS[path.suffix.lower()]
    if fmt == "WAV":
        save_wav(path, audio, sample_rate)
        return
    with atomic_path(path) as tmp:
        sf.write(tmp, audio, sample_rate, format=fmt, subtype=subtype)
