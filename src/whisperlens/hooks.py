"""HookedWhisper: named hook points, activation caching, patching, steering, ablation.

Interventions are data (:class:`~whisperlens.interventions.Intervention`);
:meth:`HookedWhisper.apply` installs a list of them as one context manager, which adds
PyTorch hooks on the model's :class:`~whisperlens.instrument.HookPoint` modules on entry
and removes them on exit, also when the body raises. ``patch``, ``steer``, ``ablate``
and ``clamp`` are the ergonomic layer over ``apply``; ``edit`` takes an arbitrary
callable (not serialisable). Contexts compose (nest them), can be entered again, and
act on anything that runs the model: teacher-forced forward passes, ``generate`` with a
KV cache, and the scoring functions in :mod:`whisperlens.scoring`.

Positions (``frames=``) are encoder frames (20 ms each, 0..1499) for encoder sites and
token positions for decoder sites; during cached decoding each step's rows are mapped to
their absolute positions, so ``frames=[3]`` on a decoder site hits the 4th token
whether it is computed teacher-forced or one step at a time. Out-of-window, negative,
reversed and empty selections are refused when the context is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.hooks import RemovableHandle

from whisperlens import decoding
from whisperlens._perf import tune_allocator
from whisperlens.cache import ActivationCache
from whisperlens.errors import ShapeError
from whisperlens.features import AudioOrFeatures, as_features
from whisperlens.frames import N_ENCODER_FRAMES
from whisperlens.instrument import HookPoint, instrument
from whisperlens.interventions import (
    FramesLike,
    FrameSpec,
    Intervention,
    InterventionError,
    Kind,
    RowFn,
    Span,
    as_frames,
    check_frames,
    n_selected,
    resolve_payload,
    row_fn,
    select_rows,
)
from whisperlens.models.base import LoadedWhisper
from whisperlens.sites import Site, resolve_sites, site_names

Frames = FramesLike  # slice, range, positions, index or bool tensor, Span, or None (all)
# fn(activation rows at the selected positions [batch, n_sel, ...], site) -> replacement
EditFn = Callable[[torch.Tensor, Site], torch.Tensor]
SiteArg = str | Sequence[str]
_Hook = Callable[[HookPoint, Any, torch.Tensor], torch.Tensor | None]
_VALUE_KEY = "value"  # payload key the ergonomic layer uses for its tensor


class HookContext:
    """Installs forward hooks on entry and removes them on exit (also when the body raises).

    Reusable: ``with ctx: ...`` may be repeated. Entering it again while it is active
    installs its hooks a second time (like nesting two identical contexts).
    """

    def __init__(self, installs: Sequence[tuple[HookPoint, _Hook]]):
        self._installs = list(installs)
        self._active: list[list[RemovableHandle]] = []

    def __enter__(self) -> HookContext:
        handles: list[RemovableHandle] = []
        self._active.append(handles)
        try:
            for point, hook in self._installs:
                handles.append(point.register_forward_hook(hook))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._active.pop():
            handle.remove()


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
        return as_features(self, audio_or_features)

    def encode(self, audio_or_features: AudioOrFeatures) -> torch.Tensor:
        """Encoder output [batch, 1500, d_model] (after the final LayerNorm)."""
        return decoding.encode(self, audio_or_features)

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
    def encode_from(self, layer: int, hidden_BFD: torch.Tensor) -> torch.Tensor:
        """Encoder output [batch, 1500, d_model] from the input states of block ``layer``.

        Runs encoder blocks ``layer..n_layers-1`` and the final LayerNorm on
        ``hidden_BFD`` (hooks active), so the continuation after block ``L``'s output
        ``states`` is ``encode_from(L + 1, states)`` (``layer = n_layers``: only the
        LayerNorm), without recomputing the convolution stem and earlier blocks.
        """
        encoder = self.model.model.encoder
        n_layers = len(encoder.layers)
        if not 0 <= layer <= n_layers:
            raise ShapeError(
                f"encode_from layer {layer} is outside 0..{n_layers} for this encoder",
                f"pass a block index in 0..{n_layers} ({n_layers}: only the final LayerNorm)",
            )
        if hidden_BFD.ndim != 3 or hidden_BFD.shape[-1] != self.d_model:
            raise ShapeError(
                f"encode_from needs states [batch, frames, {self.d_model}], "
                f"got {tuple(hidden_BFD.shape)}",
                "pass a block's residual stream, e.g. from run_with_cache",
            )
        param = next(self.model.parameters())
        hidden = hidden_BFD.to(device=param.device, dtype=param.dtype)
        for block in encoder.layers[layer:]:
            hidden = block(hidden, None)
        return encoder.layer_norm(hidden)

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
        attention patterns keep all positions. Attention patterns are computed with
        eager attention when requested.
        """
        sites = self.sites(names) if names is not None else self._default_cache_sites()
        needs_decoder = any(s.stack == "decoder" for s in sites)
        if needs_decoder and decoder_input_ids is None:
            raise ShapeError(
                "decoder sites were requested but no decoder_input_ids were given",
                "pass decoder_input_ids (e.g. the prompt tokens) or only encoder sites",
            )
        spec = as_frames(frames)
        framed = [s for s in sites if s.stack == "encoder" and not s.spec.pattern]
        check_frames(spec, framed[0].name if framed else "the encoder", "encoder")
        feats = self.features(audio_or_features)
        store: dict[str, torch.Tensor] = {}
        with ExitStack() as stack:
            for site in sites:
                stack.enter_context(self._record(site, store, spec if site in framed else None))
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
            frame_index=None if spec is None else _positions(spec, N_ENCODER_FRAMES),
            logits=logits,
        )

    def _default_cache_sites(self) -> list[Site]:
        return [s for s in self.sites("encoder.*") if s.spec.residual]

    def _record(self, site: Site, store: dict[str, torch.Tensor], frames: FrameSpec):
        def hook(module: HookPoint, _args, output: torch.Tensor) -> None:
            value = output.detach()
            if isinstance(frames, Span):
                value = value[:, frames.start : frames.stop].clone()
            elif frames is not None:
                value = value[:, _positions(frames, value.shape[1]).to(value.device)]
            prev = store.get(site.name)
            # decoder steps with a KV cache arrive one position at a time: append
            store[site.name] = (
                value if prev is None or module.offset == 0 else torch.cat([prev, value], 1)
            )

        return HookContext([(self.hook_points[site.name], hook)])

    # -- interventions ----------------------------------------------------------------
    def apply(
        self,
        interventions: Intervention | Sequence[Intervention],
        payloads: Mapping[str, torch.Tensor] | None = None,
        *,
        base_dir: str | Path | None = None,
    ) -> HookContext:
        """One context manager installing ``interventions`` in order (see
        :mod:`whisperlens.interventions`).

        Payload references are looked up in ``payloads`` or loaded from safetensors files
        relative to ``base_dir``. Sites, positions and payloads (shape, finite values) are
        validated here, before anything is installed.
        """
        items = [interventions] if isinstance(interventions, Intervention) else interventions
        installs: list[tuple[HookPoint, _Hook]] = []
        resolved: dict[str, torch.Tensor] = {}
        for iv in items:
            for site in self._editable_sites(iv.site):
                check_frames(iv.frames, site.name, site.stack)
                value = None
                if iv.payload is not None:
                    if iv.payload not in resolved:
                        resolved[iv.payload] = resolve_payload(
                            iv.payload, payloads, base_dir, site.name
                        )
                    value = resolved[iv.payload]
                    self._check_payload(iv, value, site)
                hook = _edit_hook(site, row_fn(iv, value), iv.frames)
                installs.append((self.hook_points[site.name], hook))
        return HookContext(installs)

    def edit(self, names: SiteArg, fn: EditFn, frames: Frames = None) -> HookContext:
        """Generic intervention: replace the activation rows at ``frames`` by ``fn(rows, site)``.

        ``rows`` is [batch, n_sel, ...] for the selected positions present in this call
        (during cached decoding, one step's rows). An arbitrary callable cannot be written
        to a config: prefer :meth:`apply` with Interventions for anything a run records.
        """
        spec = as_frames(frames)
        installs: list[tuple[HookPoint, _Hook]] = []
        for site in self._editable_sites(names):
            check_frames(spec, site.name, site.stack)
            hook = _edit_hook(site, lambda rows, site, _sel: fn(rows, site), spec)
            installs.append((self.hook_points[site.name], hook))
        return HookContext(installs)

    def patch(
        self, names: SiteArg, value: torch.Tensor | EditFn, frames: Frames = None
    ) -> HookContext:
        """Set the activation at ``frames`` to ``value`` (or to ``value(rows, site)``).

        A tensor value may be [d], [n_sel, d] or [batch, n_sel, d] (n_sel = number of
        selected positions, all 1500 encoder frames when ``frames`` is None).
        """
        if callable(value) and not isinstance(value, torch.Tensor):
            return self.edit(names, value, frames)
        return self._apply_value("patch", names, value, frames)

    def steer(
        self, names: SiteArg, vector: torch.Tensor, strength: float = 1.0, frames: Frames = None
    ) -> HookContext:
        """Add ``strength * vector`` ([d] or [n_sel, d]) to the activation at ``frames``."""
        return self._apply_value("steer", names, vector, frames, strength=strength)

    def ablate(
        self,
        names: SiteArg,
        how: Literal["zero", "mean"] = "zero",
        frames: Frames = None,
        mean: torch.Tensor | None = None,
    ) -> HookContext:
        """Zero-ablate, or mean-ablate (replace by ``mean`` [d], default the rows' own mean)."""
        return self._apply_value("ablate", names, mean, frames, ablation=how)

    def clamp(
        self, names: SiteArg, direction: torch.Tensor, value: float, frames: Frames = None
    ) -> HookContext:
        """Set the component along ``direction`` ([d] or [n_sel, d]; normalised) to ``value``."""
        return self._apply_value("clamp", names, direction, frames, strength=value)

    def _apply_value(
        self,
        kind: Kind,
        names: SiteArg,
        value: torch.Tensor | None,
        frames: Frames,
        **options: Any,
    ) -> HookContext:
        spec = as_frames(frames)
        key = None if value is None else _VALUE_KEY
        items = [names] if isinstance(names, str) else list(names)
        ivs = [Intervention(kind, name, spec, key, **options) for name in items]
        return self.apply(ivs, None if value is None else {_VALUE_KEY: value})

    def _editable_sites(self, names: SiteArg) -> list[Site]:
        sites = self.sites(names)
        for site in sites:
            if site.spec.pattern:
                raise ShapeError(f"{site} is read-only", "patch attn_out or a residual site")
        return sites

    def _check_payload(self, iv: Intervention, value: torch.Tensor, site: Site) -> None:
        """Refuse payloads whose shape cannot fit ``site`` at ``iv.frames``."""
        n_sel = n_selected(iv.frames, site)
        shown = "n_positions" if n_sel is None else n_sel
        max_ndim = 2 if iv.kind == "clamp" else 3
        fits = 1 <= value.ndim <= max_ndim and value.shape[-1] == self.d_model
        if fits and value.ndim >= 2 and n_sel is not None:
            fits = value.shape[-2] == n_sel
        if not fits:
            batch = "" if iv.kind == "clamp" else " or [batch, n_sel, d]"
            raise ShapeError(
                f"{iv.kind} payload {iv.payload!r} of shape {tuple(value.shape)} does not fit "
                f"{site}: rows are d={self.d_model} wide and {shown} positions are selected",
                f"pass a tensor of shape [d]=[{self.d_model}], [n_sel, d]{batch} "
                f"with n_sel={shown}",
            )
        if iv.kind == "clamp" and bool((value.norm(dim=-1) == 0).any()):
            raise InterventionError(
                f"clamp direction {iv.payload!r} for {site} has zero norm", "pass a non-zero one"
            )


# -- positions --------------------------------------------------------------------------
def _edit_hook(site: Site, fn: RowFn, frames: FrameSpec) -> _Hook:
    def hook(module: HookPoint, _args, output: torch.Tensor) -> torch.Tensor | None:
        local, sel = select_rows(frames, output.shape[1], module.offset, output.device, site)
        if sel.rows.numel() == 0:
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


def _positions(frames: Span | tuple[int, ...], n: int) -> torch.Tensor:
    """Absolute positions selected among ``n`` (cpu, long)."""
    if isinstance(frames, Span):
        return torch.arange(frames.start, n if frames.stop is None else frames.stop)
    return torch.tensor(frames, dtype=torch.long)


@contextmanager
def _eager_attention(model) -> Iterator[None]:
    """Temporarily switch to eager attention so attention weights are returned."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)
