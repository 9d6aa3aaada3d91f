"""Insert identity ``HookPoint`` modules at every site of a transformers Whisper.

Residual points such as ``hook_resid_mid`` are not the output of any module, so a
plain forward hook cannot replace them: the block keeps its own reference to the
residual. We therefore give each block a forward that performs exactly the same
operations as transformers' ``WhisperEncoderLayer`` / ``WhisperDecoderLayer`` in the
same order, passing the intermediate values through ``HookPoint`` modules.
With no hook attached the outputs are bitwise identical to the original model
(tested against an uninstrumented copy).
"""

from __future__ import annotations

import inspect
import types
from typing import Any

import torch
from torch import nn
from transformers.models.whisper.modeling_whisper import WhisperAttention

from whisperlens.sites import POINTS, STACKS, Stack, resolve_sites, site_names

INSTRUMENTED_FLAG = "_whisperlens_instrumented"


class HookPoint(nn.Module):
    """Identity module; hooks attached to it read or replace the value passing through.

    ``offset`` is the absolute position of the first row of the current tensor along
    the sequence axis (non-zero for decoder steps with a KV cache).
    """

    def __init__(self) -> None:
        super().__init__()
        self.offset = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _encoder_layer_forward(self, hidden_states, attention_mask=None, **kwargs):
    hidden_states = _self_attn_sublayer(
        self, hidden_states, attention_mask=attention_mask, **kwargs
    )
    hidden_states = _mlp_sublayer(self, hidden_states)
    if hidden_states.dtype == torch.float16:
        clamp_value = torch.finfo(hidden_states.dtype).max - 1000
        hidden_states = torch.clamp(hidden_states, min=-clamp_value, max=clamp_value)
    return self.hook_resid_post(hidden_states)


def _self_attn_sublayer(layer, hidden_states, **attn_kwargs):
    """resid_pre -> LN -> self-attention -> attn_out; returns resid_mid (all hooked)."""
    hidden_states = layer.hook_resid_pre(hidden_states)
    residual = hidden_states
    hidden_states = layer.self_attn_layer_norm(hidden_states)
    hidden_states, weights = layer.self_attn(hidden_states, **attn_kwargs)
    if weights is not None:
        layer.self_attn.hook_pattern(weights)
    hidden_states = layer.hook_attn_out(_dropout(layer, hidden_states, layer.dropout))
    return layer.hook_resid_mid(residual + hidden_states)


def _mlp_sublayer(layer, hidden_states):
    """LN -> fc1 -> activation -> fc2 -> mlp_out; returns the residual sum (before resid_post)."""
    residual = hidden_states
    hidden_states = layer.final_layer_norm(hidden_states)
    hidden_states = layer.activation_fn(layer.fc1(hidden_states))
    hidden_states = _dropout(layer, hidden_states, layer.activation_dropout)
    hidden_states = layer.fc2(hidden_states)
    hidden_states = layer.hook_mlp_out(_dropout(layer, hidden_states, layer.dropout))
    return residual + hidden_states


def _decoder_layer_forward(
    self,
    hidden_states,
    attention_mask=None,
    encoder_hidden_states=None,
    encoder_attention_mask=None,
    past_key_values=None,
    use_cache=True,
    **kwargs,
):
    cache = _pop_cache(kwargs, past_key_values)
    _set_offsets(self, _cache_offset(cache, self.self_attn.layer_idx))
    hidden_states = _self_attn_sublayer(
        self, hidden_states, attention_mask=attention_mask, **{_CACHE_KWARG: cache}, **kwargs
    )
    if encoder_hidden_states is not None:
        residual = hidden_states
        hidden_states = self.encoder_attn_layer_norm(hidden_states)
        hidden_states, weights = self.encoder_attn(
            hidden_states,
            key_value_states=encoder_hidden_states,
            attention_mask=encoder_attention_mask,
            **{_CACHE_KWARG: cache},
            **kwargs,
        )
        if weights is not None:
            self.encoder_attn.hook_pattern(weights)
        hidden_states = self.hook_cross_attn_out(_dropout(self, hidden_states, self.dropout))
        hidden_states = self.hook_resid_mid_cross(residual + hidden_states)
    return self.hook_resid_post(_mlp_sublayer(self, hidden_states))


# transformers >= 5.2x passes the KV cache as ``cache=`` (formerly ``past_key_values=``)
_CACHE_KWARG = (
    "cache"
    if "cache" in inspect.signature(WhisperAttention.forward).parameters
    else "past_key_values"
)


def _pop_cache(kwargs: dict[str, Any], past_key_values: Any = None) -> Any:
    """The KV cache passed under either name (removed from ``kwargs``)."""
    cache = kwargs.pop("cache", None)
    legacy = kwargs.pop("past_key_values", None)
    for candidate in (cache, past_key_values, legacy):
        if candidate is not None:
            return candidate
    return None


def _dropout(layer: nn.Module, x: torch.Tensor, p: float) -> torch.Tensor:
    return nn.functional.dropout(x, p=p, training=layer.training)


def _cache_offset(past_key_values: Any, layer_idx: int | None) -> int:
    """Tokens already in this layer's self-attention cache (0 without a cache)."""
    if past_key_values is None:
        return 0
    cache = getattr(past_key_values, "self_attention_cache", past_key_values)
    return int(cache.get_seq_length(layer_idx or 0))


def _set_offsets(layer: nn.Module, offset: int) -> None:
    for module in layer.modules():
        if isinstance(module, HookPoint):
            module.offset = offset


def instrument(model: nn.Module) -> dict[str, HookPoint]:
    """Add HookPoints to a ``WhisperForConditionalGeneration`` (idempotent).

    Where each HookPoint goes comes from :data:`whisperlens.sites.POINTS` (``module``).
    Returns the mapping from canonical site name to its HookPoint, in forward order.
    """
    inner: Any = model.model  # WhisperModel
    if not getattr(model, INSTRUMENTED_FLAG, False):
        for stack_name in STACKS:
            _instrument_stack(getattr(inner, stack_name), stack_name)
        setattr(model, INSTRUMENTED_FLAG, True)
    return _collect(inner)


def _instrument_stack(stack: Any, stack_name: Stack) -> None:
    for spec in POINTS.values():
        if stack_name in spec.stacks:
            for owner in stack.layers if spec.per_block else [stack]:
                parent, _, leaf = spec.module.rpartition(".")
                owner.get_submodule(parent).add_module(leaf, HookPoint())
    forward = _decoder_layer_forward if stack_name == "decoder" else _encoder_layer_forward
    for layer in stack.layers:
        layer.forward = types.MethodType(forward, layer)
    stack.layers[0].register_forward_pre_hook(_route_embed(stack), with_kwargs=True)
    stack.layer_norm.register_forward_hook(_route_ln_post(stack))


def _route_embed(stack: Any):
    def pre_hook(layer, args, kwargs):
        hook = stack.hook_embed
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        hook.offset = _cache_offset(cache, 0)
        if args:
            return (hook(args[0]), *args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = hook(kwargs["hidden_states"])
        return args, kwargs

    return pre_hook


def _route_ln_post(stack: Any):
    def hook(_module, _args, output: torch.Tensor) -> torch.Tensor:
        stack.hook_ln_post.offset = stack.hook_embed.offset  # same positions as the embeddings
        return stack.hook_ln_post(output)

    return hook


def _collect(inner: Any) -> dict[str, HookPoint]:
    n_layers, n_decoder_layers = len(inner.encoder.layers), len(inner.decoder.layers)
    valid = site_names(n_layers, n_decoder_layers)
    return {
        site.name: inner.get_submodule(site.module_path) for site in resolve_sites(valid, valid)
    }
