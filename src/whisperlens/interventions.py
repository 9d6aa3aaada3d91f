"""Interventions as data: what to do, where, at which positions, with which payload.

An :class:`Intervention` is a frozen, JSON-serialisable record, so a run's
``config.json`` names exactly what was done::

    Intervention("steer", "encoder.blocks.2.hook_resid_post", frames=Span(0, 50),
                 payload="vectors/pca-frames.safetensors#vector", strength=4.0)

:meth:`whisperlens.hooks.HookedWhisper.apply` installs a list of them. Kinds, on the
activation rows ``x`` [batch, n_sel, d] at the selected positions, with payload ``p``:

- ``patch``: ``x := p``
- ``steer``: ``x := x + strength * p``
- ``ablate``: ``x := 0`` (``ablation="zero"``) or ``x := mean`` (``"mean"``: ``p`` if
  given, else the rows' own mean over positions)
- ``clamp``: with ``d = p / |p|``, ``x := x + (strength - x.d) d``: the component along
  ``d`` is set to ``strength``, the orthogonal part is left alone.

A payload is [d], [n_sel, d] or [batch, n_sel, d] (clamp: [d] or [n_sel, d]). The
``payload`` field is a reference, never the tensor itself:

- ``"FILE.safetensors#NAME"``: tensor ``NAME`` of a safetensors file (``"FILE.safetensors"``
  alone: its only tensor); relative paths are resolved against ``base_dir``;
- anything else: a key into the ``payloads`` mapping passed at apply time.

Positions (``frames``), in canonical form:

- ``None``: every position;
- :class:`Span` ``(start, stop)``: positions ``start..stop-1`` (``stop=None``: to the end);
  JSON ``{"start": s, "stop": e}``;
- ``tuple[int, ...]``: explicit positions, in order; JSON ``[3, 5]``.

:func:`as_frames` converts a Python ``slice``, ``range``, list, tuple, index or boolean
tensor to this form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from whisperlens._io import atomic_path
from whisperlens.errors import ShapeError, WhisperlensError
from whisperlens.frames import N_ENCODER_FRAMES
from whisperlens.sites import Site

Kind = Literal["patch", "steer", "ablate", "clamp"]
KINDS: tuple[Kind, ...] = get_args(Kind)
Ablation = Literal["zero", "mean"]
ABLATIONS: tuple[Ablation, ...] = get_args(Ablation)
PAYLOAD_SUFFIX = ".safetensors"


class InterventionError(WhisperlensError, ValueError):
    """An intervention that cannot be applied: bad kind, strength, payload or reference."""


@dataclass(frozen=True)
class Span:
    """Contiguous positions ``start..stop-1``; ``stop=None`` runs to the last position."""

    start: int = 0
    stop: int | None = None


FrameSpec = Span | tuple[int, ...] | None
FramesLike = FrameSpec | slice | range | Sequence[int] | torch.Tensor


def as_frames(frames: FramesLike) -> FrameSpec:
    """The canonical form of a position selection (see the module docstring)."""
    if frames is None or isinstance(frames, Span):
        return frames
    if isinstance(frames, slice | range):
        step = 1 if frames.step is None else frames.step
        start = 0 if frames.start is None else int(frames.start)
        if step == 1:
            return Span(start, None if frames.stop is None else int(frames.stop))
        if frames.stop is None:
            raise ShapeError(f"frames {frames} has a step but no stop", "give the stop")
        return tuple(range(start, int(frames.stop), step))
    if isinstance(frames, torch.Tensor):
        t = frames.detach().cpu()
        t = t.nonzero().reshape(-1) if t.dtype == torch.bool else t.reshape(-1)
        return tuple(int(i) for i in t.tolist())
    return tuple(int(i) for i in frames)


def check_frames(frames: FrameSpec, site: str, stack: str | None) -> None:
    """Refuse negative, reversed or empty selections, and encoder positions past 1499.

    ``stack`` is the site's stack, or None when not known (a glob over both stacks).
    """
    if frames is None:
        return
    window = f"0..{N_ENCODER_FRAMES - 1}" if stack == "encoder" else "0 or more"
    valid = f"(valid positions: {window})"
    if isinstance(frames, Span):
        empty = frames.stop is not None and frames.stop <= frames.start
        first = frames.start
        last = frames.start if frames.stop is None else frames.stop - 1
    else:
        empty = not frames
        first, last = (min(frames), max(frames)) if frames else (0, 0)
    if empty:
        raise ShapeError(
            f"frames {_show(frames)} select no positions of {site} {valid}",
            "pass a non-empty selection, e.g. slice(10, 21) or [3, 5]",
        )
    if first < 0 or (stack == "encoder" and last >= N_ENCODER_FRAMES):
        raise ShapeError(
            f"frames {_show(frames)} are out of range for {site} {valid}",
            f"use positions in {window}",
        )


def _show(frames: FrameSpec) -> str:
    if isinstance(frames, Span):
        return f"{frames.start}:{'' if frames.stop is None else frames.stop}"
    shown = ", ".join(map(str, frames[:8])) if frames is not None else ""
    return f"[{shown}{', ...' if frames is not None and len(frames) > 8 else ''}]"


@dataclass(frozen=True)
class Intervention:
    """One intervention: ``kind`` at ``site`` (a name or glob) on ``frames`` with ``payload``."""

    kind: Kind  # patch | steer | ablate | clamp (see the module docstring)
    site: str  # canonical site name or glob, e.g. "encoder.blocks.*.hook_resid_post"
    frames: FrameSpec = None  # None = all positions; Span; or explicit positions
    payload: str | None = None  # mapping key or "FILE.safetensors#NAME" (see module docstring)
    strength: float = 1.0  # steer: scale of the payload; clamp: target projection
    ablation: Ablation = "zero"  # ablate only: "zero" or "mean"

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames", as_frames(self.frames))
        object.__setattr__(self, "strength", float(self.strength))
        where = f"intervention at {self.site}"
        if not isinstance(self.site, str) or not self.site:
            raise InterventionError(f"site {self.site!r} is not a site name", "name one or a glob")
        if self.kind not in KINDS:
            raise InterventionError(f"unknown kind {self.kind!r} ({where})", f"use one of {KINDS}")
        if self.ablation not in ABLATIONS:
            raise InterventionError(
                f"unknown ablation {self.ablation!r} ({where})", f"use one of {ABLATIONS}"
            )
        if not math.isfinite(self.strength):
            raise InterventionError(
                f"strength {self.strength} of {where} is not finite", "use a finite number"
            )
        if self.kind in ("patch", "ablate") and self.strength != 1.0:
            raise InterventionError(f"{where}: {self.kind} takes no strength", "leave it at 1.0")
        if self.kind != "ablate" and self.ablation != "zero":
            raise InterventionError(f"{where}: ablation= is for kind 'ablate'", "leave it out")
        needs_payload = self.kind in ("patch", "steer", "clamp")
        if needs_payload and self.payload is None:
            raise InterventionError(f"{where}: {self.kind} needs a payload", "name one")
        if self.kind == "ablate" and self.ablation == "zero" and self.payload is not None:
            raise InterventionError(f"{where}: zero ablation takes no payload", "leave it out")
        stack = self.site.split(".", 1)[0]
        check_frames(self.frames, self.site, stack if stack in ("encoder", "decoder") else None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (frames: null, [positions] or {"start", "stop"})."""
        out = asdict(self)
        frames = self.frames
        out["frames"] = asdict(frames) if isinstance(frames, Span) else _list_or_none(frames)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Intervention:
        """Inverse of :meth:`to_dict` (validates, and refuses unknown keys)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InterventionError(
                f"unknown intervention keys {unknown}", f"use only {sorted(known)}"
            )
        kwargs = dict(data)
        frames = kwargs.get("frames")
        if isinstance(frames, Mapping):
            kwargs["frames"] = Span(int(frames.get("start", 0)), frames.get("stop"))
        return cls(**kwargs)


def _list_or_none(frames: tuple[int, ...] | None) -> list[int] | None:
    return None if frames is None else list(frames)


# -- payloads -----------------------------------------------------------------------------
def save_payloads(path: str | Path, tensors: Mapping[str, torch.Tensor]) -> Path:
    """Write named payload tensors to a safetensors file atomically (never pickle)."""
    path = Path(path)
    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(data, str(tmp), metadata={"format": "whisperlens.payloads/1"})
    return path


def load_payloads(path: str | Path) -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise InterventionError(f"payload file {path} does not exist", "check the path")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises several types for bad files
        raise InterventionError(
            f"{path} is not a readable safetensors file ({exc})", "re-create it with save_payloads"
        ) from exc


def is_file_reference(ref: str) -> bool:
    """True for ``FILE.safetensors`` and ``FILE.safetensors#NAME`` references."""
    return ref.split("#", 1)[0].endswith(PAYLOAD_SUFFIX)


def resolve_payload(
    ref: str,
    payloads: Mapping[str, torch.Tensor] | None,
    base_dir: str | Path | None,
    site: str,
) -> torch.Tensor:
    """The tensor a payload reference names (see the module docstring); checks it is finite."""
    if is_file_reference(ref):
        file, _, name = ref.partition("#")
        path = Path(file) if base_dir is None else Path(base_dir) / file
        tensors = load_payloads(path)
        if not name and len(tensors) != 1:
            raise InterventionError(
                f"payload {ref!r} for {site}: {path} holds {len(tensors)} tensors",
                f"name one: {file}#NAME with NAME in {sorted(tensors)}",
            )
        if name and name not in tensors:
            raise InterventionError(
                f"payload {ref!r} for {site}: no tensor {name!r} in {path}",
                f"use one of {sorted(tensors)}",
            )
        value = tensors[name] if name else next(iter(tensors.values()))
    else:
        if payloads is None or ref not in payloads:
            have = sorted(payloads) if payloads else []
            raise InterventionError(
                f"payload {ref!r} for {site} is not in the payloads mapping (keys: {have})",
                f"pass payloads={{{ref!r}: tensor}} or a reference FILE{PAYLOAD_SUFFIX}#NAME",
            )
        value = payloads[ref]
    if not isinstance(value, torch.Tensor):
        raise InterventionError(f"payload {ref!r} for {site} is not a tensor", "pass a tensor")
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise InterventionError(
            f"payload {ref!r} for {site} has NaN or infinite values", "pass finite values"
        )
    return value


# -- what an intervention does to activation rows --------------------------------------
class Selection:
    """Which selected positions the current rows are.

    ``rows`` index the value's position axis; ``total`` is the number of selected
    positions overall (None when not known in advance: all positions of a decoder run).
    """

    def __init__(self, rows: torch.Tensor, total: int | None):
        self.rows = rows
        self.total = total


# internal form of an edit: (rows [batch, n, ...], site, selection) -> replacement rows
RowFn = Callable[[torch.Tensor, Site, Selection], torch.Tensor]


def row_fn(iv: Intervention, value: torch.Tensor | None) -> RowFn:
    """The edit that ``iv`` makes, with its payload already resolved to ``value``."""
    strength = iv.strength

    def patch(rows: torch.Tensor, site: Site, sel: Selection) -> torch.Tensor:
        assert value is not None
        return fit_payload(value, rows, site, sel).expand_as(rows)

    def steer(rows: torch.Tensor, site: Site, sel: Selection) -> torch.Tensor:
        assert value is not None
        return rows + strength * fit_payload(value, rows, site, sel)

    def ablate(rows: torch.Tensor, site: Site, sel: Selection) -> torch.Tensor:
        if iv.ablation == "zero":
            return torch.zeros_like(rows)
        m = rows.mean(dim=1, keepdim=True) if value is None else fit_payload(value, rows, site, sel)
        return m.expand_as(rows).clone()

    def clamp(rows: torch.Tensor, site: Site, sel: Selection) -> torch.Tensor:
        assert value is not None
        d = fit_payload(value, rows, site, sel)
        d = d / d.norm(dim=-1, keepdim=True)
        return rows + (strength - (rows * d).sum(-1, keepdim=True)) * d

    fns: dict[Kind, RowFn] = {"patch": patch, "steer": steer, "ablate": ablate, "clamp": clamp}
    return fns[iv.kind]


def fit_payload(
    value: torch.Tensor, rows: torch.Tensor, site: Site, sel: Selection
) -> torch.Tensor:
    """Fit ``value`` ([d], [n_sel, d] or [batch, n_sel, d]) onto ``rows`` [batch, n, d]."""
    v = value.to(device=rows.device, dtype=rows.dtype)
    if v.ndim == 1 and v.shape[0] == rows.shape[-1]:
        return v
    fits = v.ndim in (2, 3) and v.shape[-1] == rows.shape[-1]
    if fits:
        n_value = v.shape[-2]
        fits = n_value == sel.total if sel.total is not None else n_value > int(sel.rows.max())
        fits = fits and (v.ndim == 2 or v.shape[0] in (1, rows.shape[0]))
    if not fits:
        n_sel = sel.total if sel.total is not None else "n_positions"
        raise ShapeError(
            f"value of shape {tuple(v.shape)} does not fit {site}: rows are {tuple(rows.shape)} "
            f"and {n_sel} positions are selected",
            f"pass a tensor of shape [d]=[{rows.shape[-1]}], [n_sel, d] or [batch, n_sel, d] "
            f"with n_sel={n_sel}",
        )
    return v.index_select(-2, sel.rows)


def select_rows(
    frames: FrameSpec, n: int, offset: int, device: torch.device, site: Site
) -> tuple[slice | torch.Tensor | None, Selection]:
    """Local rows of the current tensor (absolute positions offset..offset+n) to edit."""
    encoder = site.stack == "encoder"
    if frames is None:
        total = n if (encoder or offset == 0) else None
        return None, Selection(torch.arange(offset, offset + n, device=device), total)
    if isinstance(frames, Span):
        stop = frames.stop if frames.stop is not None or not encoder else N_ENCODER_FRAMES
        lo = max(frames.start, offset)
        hi = max(lo, offset + n if stop is None else min(stop, offset + n))
        total = None if stop is None else stop - frames.start
        rows = torch.arange(lo - frames.start, hi - frames.start, device=device)
        return slice(lo - offset, hi - offset), Selection(rows, total)
    absolute = torch.tensor(frames, device=device)
    keep = (absolute >= offset) & (absolute < offset + n)
    return absolute[keep] - offset, Selection(keep.nonzero().squeeze(-1), len(frames))


def n_selected(frames: FrameSpec, site: Site) -> int | None:
    """Number of selected positions, when known before the run."""
    encoder = site.stack == "encoder"
    if frames is None:
        return N_ENCODER_FRAMES if encoder else None
    if isinstance(frames, Span):
        stop = frames.stop if frames.stop is not None or not encoder else N_ENCODER_FRAMES
        return None if stop is None else stop - frames.start
    return len(frames)
