"""ActivationCache: recorded activations by site name, with frame/time slicing and I/O.

:func:`cache_activations` records one clip into a safetensors file (``whisperlens cache``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from whisperlens._io import atomic_path, check_output_file
from whisperlens.errors import ShapeError, SiteError, WhisperlensError
from whisperlens.frames import N_ENCODER_FRAMES, SAMPLE_RATE, frames_for_span, n_audio_frames

_FRAME_INDEX_KEY = "__frame_index__"
_LOGITS_KEY = "__logits__"
_FORMAT = "whisperlens.activation_cache/1"


class ActivationCache(Mapping[str, torch.Tensor]):
    """Activations keyed by canonical site name.

    Encoder tensors are [batch, frame, d_model]; ``frame_index`` lists the absolute
    encoder frames they hold (None: all 1500). Decoder tensors are [batch, token, d].
    Attention patterns are [batch, head, query, key].
    """

    def __init__(
        self,
        store: dict[str, torch.Tensor],
        *,
        model_name: str = "",
        frame_index: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
    ):
        self._store = dict(store)
        self.model_name = model_name
        self.frame_index = None if frame_index is None else frame_index.long().cpu()
        self.logits = logits

    # -- mapping -------------------------------------------------------------------
    def __getitem__(self, name: object) -> torch.Tensor:
        key = str(name)
        if key not in self._store:
            import difflib

            near = difflib.get_close_matches(key, list(self._store), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(near)}?" if near else "record it with names=[...]"
            raise SiteError(f"site {key!r} is not in this cache", hint)
        return self._store[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        mib = self.nbytes / 2**20
        return f"ActivationCache({len(self)} sites, {mib:.1f} MiB, model={self.model_name!r})"

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._store.values())

    def _replace(
        self, store: dict[str, torch.Tensor], frame_index=..., logits=...
    ) -> ActivationCache:
        return ActivationCache(
            store,
            model_name=self.model_name,
            frame_index=self.frame_index if frame_index is ... else frame_index,
            logits=self.logits if logits is ... else logits,
        )

    # -- transforms ----------------------------------------------------------------
    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        """Copy to another device and/or floating dtype (integer tensors keep theirs)."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        logits = None if self.logits is None else move(self.logits)
        return self._replace({k: move(v) for k, v in self._store.items()}, logits=logits)

    def frames(self, frames: slice | list[int] | torch.Tensor) -> ActivationCache:
        """Keep only these absolute encoder frames (decoder entries are kept whole)."""
        have = self.frame_index if self.frame_index is not None else torch.arange(N_ENCODER_FRAMES)
        want = (
            torch.arange(N_ENCODER_FRAMES)[frames]
            if isinstance(frames, slice)
            else torch.as_tensor(frames).long()
        )
        pos = {int(f): i for i, f in enumerate(have)}
        missing = [int(f) for f in want if int(f) not in pos]
        if missing:
            raise ShapeError(
                f"frames {missing[:5]} are not in this cache (it holds {len(have)} frames)",
                "record them with run_with_cache(frames=...) covering the span",
            )
        local = torch.tensor([pos[int(f)] for f in want], dtype=torch.long)
        store = {k: self._slice(k, v, local) for k, v in self._store.items()}
        return self._replace(store, frame_index=want)

    def seconds(self, start_s: float, end_s: float) -> ActivationCache:
        """Keep the encoder frames overlapping [start_s, end_s) (20 ms per frame)."""
        span = frames_for_span(start_s, end_s)
        return self.frames(list(range(span.start, span.stop)))

    @staticmethod
    def _slice(name: str, t: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        if not name.startswith("encoder.") or name.endswith("hook_pattern"):
            return t
        return t.index_select(1, local.to(t.device))

    def stack(self, point: str = "hook_resid_post", stack: str = "encoder") -> torch.Tensor:
        """Stack one point over blocks: [n_blocks, batch, frame, d]."""
        names = sorted(
            (
                k
                for k in self._store
                if k.startswith(f"{stack}.blocks.") and k.endswith("." + point)
            ),
            key=lambda k: int(k.split(".")[2]),
        )
        if not names:
            raise SiteError(f"no {stack} {point} sites in this cache", "record them first")
        return torch.stack([self._store[k] for k in names])

    # -- I/O -----------------------------------------------------------------------
    def save(self, path: str | Path, extra_metadata: dict[str, str] | None = None) -> Path:
        """Write a safetensors file atomically (metadata: model, sites, frame index)."""
        path = Path(path)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self._store.items()}
        if self.frame_index is not None:
            tensors[_FRAME_INDEX_KEY] = self.frame_index.contiguous()
        if self.logits is not None:
            tensors[_LOGITS_KEY] = self.logits.detach().contiguous().cpu()
        meta = {"format": _FORMAT, "model": self.model_name, "sites": json.dumps(list(self._store))}
        meta.update(extra_metadata or {})
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> ActivationCache:
        path = Path(path)
        if not path.is_file():
            raise WhisperlensError(f"activation cache {path} does not exist", "check the path")
        try:
            with safe_open(str(path), framework="pt", device=device) as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except Exception as exc:  # safetensors raises several types for bad files
            raise WhisperlensError(
                f"{path} is not a readable safetensors activation cache ({exc})",
                "re-create it with `whisperlens cache`",
            ) from exc
        if meta.get("format") != _FORMAT:
            raise WhisperlensError(f"{path} is not a whisperlens activation cache", "re-create it")
        order = json.loads(meta.get("sites", "[]"))  # safetensors sorts keys; keep ours
        return cls(
            {k: tensors[k] for k in order},
            model_name=meta.get("model", ""),
            frame_index=tensors.get(_FRAME_INDEX_KEY),
            logits=tensors.get(_LOGITS_KEY),
        )


# ---------------------------------------------------------------- recording one clip


@dataclass(frozen=True)
class CacheConfig:
    """One clip's activations to record; the ``whisperlens cache`` command builds this."""

    audio: Path  # audio file to run
    model: str  # offline name, hub id or path
    sites: tuple[str, ...]  # site names or globs
    out: Path  # .safetensors output
    start_s: float | None = None  # keep only frames from here ...
    end_s: float | None = None  # ... to here (default: the frames covering real audio)
    all_frames: bool = False  # keep the 30 s padding frames too (no span given)

    def __post_init__(self) -> None:
        if Path(self.out).suffix != ".safetensors":
            raise WhisperlensError(f"output {self.out} must end in .safetensors", "rename it")
        if (self.start_s is None) != (self.end_s is None):
            raise WhisperlensError("--start and --end go together", "give both or neither")
        if self.start_s is None or self.end_s is None:
            return
        if self.start_s < 0:
            raise WhisperlensError(
                f"span start {self.start_s:g} s is negative", "give --start 0 or later"
            )
        if self.end_s <= self.start_s:
            raise WhisperlensError(
                f"span end {self.end_s:g} s is before its start {self.start_s:g} s "
                "(or equal to it)",
                "give --end after --start",
            )


def span_frames(config: CacheConfig, n_samples: int) -> slice | None:
    """The encoder frames to keep for a clip of ``n_samples``; refuses spans past its end."""
    if config.start_s is None or config.end_s is None:
        return None if config.all_frames else slice(0, n_audio_frames(n_samples))
    length_s = n_samples / SAMPLE_RATE
    if config.end_s > length_s + 0.5 / SAMPLE_RATE:
        raise WhisperlensError(
            f"span {config.start_s:g}-{config.end_s:g} s ends after the clip "
            f"{config.audio} ({length_s:.2f} s long)",
            f"give --end {length_s:.2f} or less",
        )
    return frames_for_span(config.start_s, config.end_s)


def cache_activations(config: CacheConfig, *, progress: bool = False) -> dict[str, Any]:
    """Record one clip's activations at ``config.sites`` into ``config.out``; a summary dict.

    Checks the output path and the span before loading the model; ``progress`` shows a
    step bar on stderr.
    """
    from tqdm.auto import tqdm

    from whisperlens.audio import load_audio
    from whisperlens.hooks import HookedWhisper

    check_output_file(config.out)
    audio = load_audio(config.audio)
    frames = span_frames(config, len(audio))
    with tqdm(total=3, desc="cache", disable=not progress, leave=False) as bar:
        bar.set_postfix_str(f"loading {config.model}")
        hooked = HookedWhisper.from_pretrained(config.model)
        bar.update()
        bar.set_postfix_str("recording")
        cache = hooked.run_with_cache(audio, names=list(config.sites), frames=frames)
        bar.update()
        bar.set_postfix_str(f"writing {config.out.name}")
        meta = {"audio": config.audio.name, "n_samples": str(len(audio))}
        cache.save(config.out, extra_metadata=meta)
        bar.update()
    return {
        "out": str(config.out),
        "model": hooked.loaded.name,
        "sites": list(cache),
        "shape": list(next(iter(cache.values())).shape),
        "frames": None if frames is None else [frames.start, frames.stop],
    }
