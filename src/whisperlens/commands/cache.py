"""``whisperlens cache AUDIO --model M --sites SITE... --out FILE.safetensors``."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from whisperlens.errors import WhisperlensError


@dataclass(frozen=True)
class CacheConfig:
    audio: Path  # audio file to run
    model: str  # offline name, hub id or path
    sites: tuple[str, ...]  # site names or globs
    out: Path  # .safetensors output
    start_s: float | None = None  # keep only frames from here ...
    end_s: float | None = None  # ... to here (default: the frames covering real audio)

    def __post_init__(self) -> None:
        if self.out.suffix != ".safetensors":
            raise WhisperlensError(f"output {self.out} must end in .safetensors", "rename it")
        if (self.start_s is None) != (self.end_s is None):
            raise WhisperlensError("--start and --end go together", "give both or neither")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="record activations at named sites into a safetensors file")
    p.add_argument("audio", type=Path)
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--sites", nargs="+", default=["encoder.blocks.*.hook_resid_post"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--start", type=float, default=None, help="span start (s)")
    p.add_argument("--end", type=float, default=None, help="span end (s)")
    p.add_argument("--all-frames", action="store_true", help="keep the 30 s padding frames too")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = CacheConfig(args.audio, args.model, tuple(args.sites), args.out, args.start, args.end)
    summary = cache_activations(config, all_frames=args.all_frames)
    print(json.dumps(summary))
    return 0


def cache_activations(config: CacheConfig, *, all_frames: bool = False) -> dict:
    """Run one clip and write its activations; returns a summary dict."""
    from whisperlens.audio import load_audio
    from whisperlens.frames import frames_for_span, n_audio_frames
    from whisperlens.hooks import HookedWhisper

    audio = load_audio(config.audio)
    hooked = HookedWhisper.from_pretrained(config.model)
    if config.start_s is not None and config.end_s is not None:
        frames: slice | None = frames_for_span(config.start_s, config.end_s)
    else:
        frames = None if all_frames else slice(0, n_audio_frames(len(audio)))
    cache = hooked.run_with_cache(audio, names=list(config.sites), frames=frames)
    meta = {"audio": config.audio.name, "n_samples": str(len(audio))}
    cache.save(config.out, extra_metadata=meta)
    return {
        "out": str(config.out),
        "model": hooked.loaded.name,
        "sites": list(cache),
        "shape": list(next(iter(cache.values())).shape),
        "frames": None if frames is None else [frames.start, frames.stop],
    }
