"""``whisperlens transcribe``: greedy transcripts of audio files.

    whisperlens transcribe a.wav b.flac --model base --language es --json
    whisperlens transcribe talk.wav --split-long --timestamps

Each file is one 30 s window (longer files are refused unless ``--split-long``, which
transcribes consecutive 30 s windows independently and joins their text; segment times are
then relative to the file start). ``--json`` prints one object per file and line with
``path``, ``model``, ``language``, ``text``, ``avg_logprob``, ``n_windows``, with
``--timestamps`` ``segments``, and ``"truncated": true`` when a window stopped at
``--max-new-tokens`` (or the decoder's context) before the end of text.

A file that cannot be read (missing, corrupt, too long) does not stop the others: each is
reported on stderr (with ``--json``: a ``{"path", "error"}`` record on stdout), and the
command exits 1 once all files are done. A progress bar on stderr shows for several files.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any, get_args

from whisperlens.decoding import DecodeOptions, Segment, Task, Transcript, transcribe
from whisperlens.errors import AudioError, WhisperlensError
from whisperlens.frames import WINDOW_SECONDS

DEFAULT_MODEL = "tiny.en"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("transcribe", help="greedy transcription of audio files")
    parser.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files (wav, flac, ...)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="tiny.en, base, a hub id or path")
    parser.add_argument(
        "--language", default=None, help="language code (default: detect; .en models: en)"
    )
    parser.add_argument("--task", choices=get_args(Task), default="transcribe")
    parser.add_argument("--timestamps", action="store_true", help="also print timed segments")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=DecodeOptions.max_new_tokens,
        help="tokens per window (default: until end of text, up to the 448-token context)",
    )
    parser.add_argument("--batch-size", type=int, default=DecodeOptions.batch_size)
    parser.add_argument(
        "--split-long", action="store_true", help="transcribe files over 30 s window by window"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> DecodeOptions:
    """The :class:`DecodeOptions` the command line describes (validated)."""
    return DecodeOptions(
        language=args.language,
        task=args.task,
        max_new_tokens=args.max_new_tokens,
        timestamps=args.timestamps,
        batch_size=args.batch_size,
    )


def run(args: argparse.Namespace) -> int:
    """Transcribe every readable file; report each bad one and exit 1 if there was any."""
    from tqdm.auto import tqdm

    from whisperlens.models.whisper import load_whisper

    options = options_from_args(args)
    model = load_whisper(args.model)
    n_bad = 0
    bar = tqdm(args.audio, desc="transcribe", unit="file", disable=len(args.audio) < 2)
    for path in bar:
        try:
            transcripts = _transcribe_file(model, path, options, args.split_long)
        except WhisperlensError as exc:
            n_bad += 1
            message = " ".join(str(exc).split())
            if args.json:
                bar.write(json.dumps({"path": path, "error": message}), file=sys.stdout)
            else:
                bar.write(f"whisperlens: error: {message}", file=sys.stderr)
            continue
        bar.write(_format(path, args.model, transcripts, args.json, args.timestamps), sys.stdout)
        sys.stdout.flush()
    bar.close()
    return 1 if n_bad else 0


def _transcribe_file(
    model: Any, path: str, options: DecodeOptions, split_long: bool
) -> list[Transcript]:
    from whisperlens.audio import load_audio

    windows = load_audio(path, long="split")
    if len(windows) > 1 and not split_long:
        raise AudioError(
            f"{path} is longer than one {WINDOW_SECONDS:.0f} s Whisper window",
            "pass --split-long to transcribe it window by window",
        )
    return transcribe(model, windows, options)


def _join(transcripts: list[Transcript]) -> tuple[str, float, list[Segment]]:
    """Text, token-weighted mean log-prob and shifted segments of consecutive windows."""
    text = " ".join(t.text for t in transcripts if t.text)
    n_tokens = [len(t.tokens) + 1 for t in transcripts]
    avg = sum(t.avg_logprob * n for t, n in zip(transcripts, n_tokens, strict=True))
    segments = [
        Segment(_shift(s.start, i), _shift(s.end, i), s.text, s.tokens)
        for i, t in enumerate(transcripts)
        for s in t.segments
    ]
    return text, avg / sum(n_tokens), segments


def _shift(t: Any, window: int) -> Any:
    return None if t is None else round(t + window * WINDOW_SECONDS, 2)


def _format(
    path: str, model: str, transcripts: list[Transcript], as_json: bool, timestamps: bool
) -> str:
    text, avg_logprob, segments = _join(transcripts)
    language = transcripts[0].language
    if as_json:
        record: dict[str, Any] = {
            "path": path,
            "model": model,
            "language": language,
            "text": text,
            "avg_logprob": round(avg_logprob, 5),
            "n_windows": len(transcripts),
        }
        if any(t.truncated for t in transcripts):
            record["truncated"] = True
        if timestamps:
            record["segments"] = [
                {k: v for k, v in asdict(s).items() if k != "tokens"} for s in segments
            ]
        return json.dumps(record, ensure_ascii=False)
    lines = [f"{path} [{language}]: {text}"]
    for s in segments if timestamps else []:
        end = "?" if s.end is None else f"{s.end:.2f}"
        lines.append(f"  [{s.start:.2f} -> {end}] {s.text}")
    return "\n".join(lines)
