"""HookedWhisper: named hook points, activation caching, patching, steering, ablation.

Every intervention is a context manager that installs PyTorch hooks on the
model's :class:`~whisperlens.instrument.HookPoint` modules and removes them in
``finally``. They compose (nest them), and act on anything that runs the model:
teacher-forced forward passes, ``generate`` with a KV cache, and the scoring
functions in :mod:`whisperlens.scoring`.

Positions (``frames=``) are encoder frames (20 ms each) for encoder sites and token
positions for decoder sites; during cached decoding each step's rows are mapped to
their absolute positions, so ``frames=[3]`` on a decoder site hits the 4th token
whether it is computed teacher-forced or one step at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Literal

import torch

from whisperlens._perf import tune_allocator
from whisperlens.cache import ActivationCache
from whisperlens.errors import ShapeError
from whisperlens.features import AudioOrFeatures, as_features
from whisperlens.frames import N_ENCODER_FRAMES
from whisperlens.instrument import HookPoint, instrument
from whisperlens.models.base import LoadedWhisper
from whisperlens.sites import Site, resolve_sites, site_names

Frames = slice | Sequence[int] | torch.Tensor | None
# fn(activation rows at the selected positions [batch, n_sel, ...], site) -> replacement
EditFn = Callable[[torch.Tensor, Site], torch.Tensor]
SiteArg = str | Sequence[str]


class HookedWhisper:
    """A Whisper model with named hook points (see :mod:`whisperlens.sites`)."""

    def __init__(self, loaded: LoadedWhisper):
        tune_allocator()  # see whisperlens._perf: avoids page-fault churn on CPU
        self.loaded = loaded
        self.model = loaded.model
        self.processor = loaded.processor
        self.hook_points: dict[str, HookPoint] = instrument(self.model)
        self._valid = site_names(loaded.n_layers, loaded.n_decoder_layers)

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> HookedWhisper:
        from whisperlens.models.whisper import load_whisper

        return cls(load_whisper(name_or_path, **kwargs))

    # -- introspection -------------------------------------------------------------
    def site_names(self, stack: Literal["encoder", "decoder"] | None = None) -> list[str]:
        return [n for n in self._valid if stack is None or n.startswith(stack + ".")]

    def sites(self, names: SiteArg) -> list[Site]:
        """Resolve names or globs (``encoder.blocks.*.hook_resid_post``) to Sites."""
        return resolve_sites(names, self._valid)

    def __getattr__(self, name: str):  # dims etc. from the LoadedWhisper
        if name in {"loaded", "model", "processor", "hook_points", "_valid"}:
            raise AttributeError(name)
        return getattr(self.loaded, name)

    # -- running ------------------------------------------------------------------
    def features(self, audio_or_features: AudioOrFeatures) -> torch.Tensor:
        return as_features(self.loaded, audio_or_features)

    @torch.no_grad()
    def encode(self, audio_or_features: AudioOrFeatures) -> torch.Tensor:
        """Encoder output [batch, 1500, d_model] (after the final LayerNorm)."""
        feats = self.features(audio_or_features)
        return self.model.model.encoder(feats).last_hidden_state

    @torch.no_grad()
    def forward(
        self, audio_or_features: AudioOrFeatures, decoder_input_ids: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced logits [batch, tokens, vocab]."""
        feats = self.features(audio_or_features)
        ids = decoder_input_ids.to(feats.device)
        ids = ids if ids.ndim == 2 else ids.unsqueeze(0)
        return self.model(input_features=feats, decoder_input_ids=ids, use_cache=False).logits

    @torch.no_grad()
    def generate(self, audio_or_features: AudioOrFeatures, **kwargs) -> torch.Tensor:
        """``model.generate`` on features (hooks active); returns token ids."""
        return self.model.generate(input_features=self.features(audio_or_features), **kwargs)

    @torch.no_grad()
    def run_with_cache(
        self,
        audio_or_features: AudioOrFeatures,
        names: SiteArg | None = None,
        frames: Frames = None,
        decoder_input_ids: torch.Tensor | None = None,
    ) -> ActivationCache:
        """Run and record activations at ``names`` (default: every encoder residual site).

        Without ``decoder_input_ids`` only the encoder runs (decoder sites then need ids).
        With them, the decoder runs teacher-forced and ``cache.logits`` holds its logits.
        ``frames`` keeps only those encoder frames (saves memory); decoder sites and
        attention patterns keep all positions. Attention patterns are computed with eager attention when requested.
        """
        sites = self.sites(names) if names is not None else self._default_cache_sites()
        needs_decoder = any(s.stack == "decoder" for s in sites)
        if needs_decoder and decoder_input_ids is None:
            raise ShapeError(
                "decoder sites were requested but no decoder_input_ids were given",
                "pass decoder_input_ids (e.g. the prompt tokens) or only encoder sites",
            )
        feats = self.features(audio_or_features)
        store: dict[str, torch.Tensor] = {}
        with ExitStack() as stack:
            for site in sites:
                framed = site.stack == "encoder" and not site.spec.pattern
                stack.enter_context(self._record(site, store, frames if framed else None))
            if any(s.spec.pattern for s in sites):
                stack.enter_context(_eager_attention(self.model))
            logits = None
            if decoder_input_ids is None:
                self.model.model.encoder(feats)
            else:
                logits = self.forward(feats, decoder_input_ids)
        return ActivationCache(
            store,
            model_name=self.loaded.name,
            frame_index=_frame_index(frames),
            logits=logits,
        )

    def _default_cache_sites(self) -> list[Site]:
        return [s for s in self.sites("encoder.*") if s.spec.residual]

    @contextmanager
    def _record(self, site: Site, store: dict[str, torch.Tensor], frames: Frames) -> Iterator[None]:
        def hook(module: HookPoint, _args, output: torch.Tensor) -> None:
            value = output.detach()
            if frames is not None:
                value = value[:, _as_index(frames, value.shape[1], value.device)].clone()
            prev = store.get(site.name)
            # decoder steps with a KV cache arrive one position at a time: append
            store[site.name] = (
                value if prev is None or module.offset == 0 else torch.cat([prev, value], 1)
            )

        handle = self.hook_points[site.name].register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    # -- interventions ----------------------------------------------------------------
    def edit(self, names: SiteArg, fn: EditFn, frames: Frames = None):
        """Generic intervention: replace the activation rows at ``frames`` by ``fn(rows, site)``.

        ``rows`` is [batch, n_sel, ...] for the selected positions present in this call
        (during cached decoding, one step's rows). ``patch``, ``steer`` and ``ablate`` are
        thin variants of this.
        """
        return self._edit(names, lambda rows, site, _sel: fn(rows, site), frames)

    @contextmanager
    def _edit(self, names: SiteArg, fn: _RowFn, frames: Frames) -> Iterator[None]:
        handles = []
        try:
            for site in self.sites(names):
                if site.spec.pattern:
                    raise ShapeError(f"{site} is read-only", "patch attn_out or a residual site")
                point = self.hook_points[site.name]
                handles.append(point.register_forward_hook(_edit_hook(site, fn, frames)))
            yield
        finally:
            for h in handles:
                h.remove()

    def patch(self, names: SiteArg, value: torch.Tensor | EditFn, frames: Frames = None):
        """Set the activation at ``frames`` to ``value`` (or to ``value(rows, site)``).

        A tensor value may be [d], [n_sel, d] or [batch, n_sel, d] (n_sel = number of
        selected positions, all 1500 encoder frames when ``frames`` is None).
        """
        if callable(value) and not isinstance(value, torch.Tensor):
            return self.edit(names, value, frames)
        return self._edit(names, _setter(value), frames)

    def steer(
        self, names: SiteArg, vector: torch.Tensor, strength: float = 1.0, frames: Frames = None
    ):
        """Add ``strength * vector`` ([d] or [n_sel, d]) to the activation at ``frames``."""

        def add(rows: torch.Tensor, site: Site, sel: _Selection) -> torch.Tensor:
            return rows + strength * _fit(vector, rows, site, sel)

        return self._edit(names, add, frames)

    def ablate(
        self,
        names: SiteArg,
        how: Literal["zero", "mean"] = "zero",
        frames: Frames = None,
        mean: torch.Tensor | None = None,
    ):
        """Zero-ablate, or mean-ablate (replace by ``mean`` [d], default the rows' own mean)."""
        if how not in ("zero", "mean"):
            raise ValueError(f"ablation must be 'zero' or 'mean', got {how!r}")

        def ablate_rows(rows: torch.Tensor, site: Site, sel: _Selection) -> torch.Tensor:
            if how == "zero":
                return torch.zeros_like(rows)
            m = rows.mean(dim=1, keepdim=True) if mean is None else _fit(mean, rows, site, sel)
            return m.expand_as(rows).clone()

        return self._edit(names, ablate_rows, frames)


def _setter(value: torch.Tensor) -> _RowFn:
    def set_rows(rows: torch.Tensor, site: Site, sel: _Selection) -> torch.Tensor:
        return _fit(value, rows, site, sel).expand_as(rows)

    return set_rows


class _Selection:
    """Which selected positions the current rows are.

    ``rows`` index the value's position axis; ``total`` is the number of selected
    positions overall (None when not known in advance: all positions of a decoder run).
    """

    def __init__(self, rows: torch.Tensor, total: int | None):
        self.rows = rows
        self.total = total


# internal form of an edit: (rows [batch, n, ...], site, selection) -> replacement rows
_RowFn = Callable[[torch.Tensor, Site, _Selection], torch.Tensor]


def _fit(value: torch.Tensor, rows: torch.Tensor, site: Site, sel: _Selection) -> torch.Tensor:
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


def _edit_hook(site: Site, fn: _RowFn, frames: Frames):
    def hook(module: HookPoint, _args, output: torch.Tensor) -> torch.Tensor | None:
        n, offset = output.shape[1], module.offset
        local, sel = _select(frames, n, offset, output.device, site)
        if local is not None and local.numel() == 0:
            return None  # no selected position in this step
        rows = output if local is None else output[:, local]
        new_rows = fn(rows, site, sel)
        if new_rows.shape != rows.shape:
            raise ShapeError(
                f"intervention at {site} returned shape {tuple(new_rows.shape)}, "
                f"expected {tuple(rows.shape)}",
                "return a tensor of the same shape as the rows it was given",
            )
        if local is None:
            return new_rows.to(output.dtype)
        out = output.clone()
        out[:, local] = new_rows.to(out.dtype)
        return out

    return hook


def _select(frames: Frames, n: int, offset: int, device: torch.device, site: Site):
    """Local rows of the current tensor (absolute positions offset..offset+n) to edit."""
    if frames is None:
        total = n if (site.stack == "encoder" or offset == 0) else None
        return None, _Selection(torch.arange(offset, offset + n, device=device), total)
    length = N_ENCODER_FRAMES if site.stack == "encoder" else offset + n
    absolute = _as_index(frames, length, device)
    too_far = site.stack == "encoder" and absolute.numel() and int(absolute.max()) >= length
    if absolute.numel() and (int(absolute.min()) < 0 or too_far):
        raise ShapeError(
            f"positions {absolute.tolist()[:8]}... are out of range for {site}",
            f"use positions 0..{length - 1}" if too_far else "use non-negative positions",
        )
    keep = (absolute >= offset) & (absolute < offset + n)
    return absolute[keep] - offset, _Selection(keep.nonzero().squeeze(-1), int(absolute.numel()))


def _as_index(frames: Frames, n: int, device: torch.device) -> torch.Tensor:
    """Absolute positions selected by ``frames`` among ``n`` positions."""
    if isinstance(frames, slice):
        return torch.arange(n, device=device)[frames]
    idx = torch.as_tensor(frames, device=device)
    if idx.dtype == torch.bool:
        return idx.nonzero().squeeze(-1)
    return idx.long().reshape(-1)


def _frame_index(frames: Frames) -> torch.Tensor | None:
    if frames is None:
        return None
    return _as_index(frames, N_ENCODER_FRAMES, torch.device("cpu"))


@contextmanager
def _eager_attention(model) -> Iterator[None]:
    """Temporarily switch to eager attention so attention weights are returned."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)
