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

import types
from typing import Any

import torch
from torch import nn

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
    _set_offsets(self, _cache_offset(past_key_values, self.self_attn.layer_idx))
    hidden_states = _self_attn_sublayer(
        self,
        hidden_states,
        past_key_values=past_key_values,
        attention_mask=attention_mask,
        **kwargs,
    )
    if encoder_hidden_states is not None:
        residual = hidden_states
        hidden_states = self.encoder_attn_layer_norm(hidden_states)
        hidden_states, weights = self.encoder_attn(
            hidden_states,
            key_value_states=encoder_hidden_states,
            attention_mask=encoder_attention_mask,
            past_key_values=past_key_values,
            **kwargs,
        )
        if weights is not None:
            self.encoder_attn.hook_pattern(weights)
        hidden_states = self.hook_cross_attn_out(_dropout(self, hidden_states, self.dropout))
        hidden_states = self.hook_resid_mid_cross(residual + hidden_states)
    return self.hook_resid_post(_mlp_sublayer(self, hidden_states))


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


_ENCODER_POINTS = (
    "hook_resid_pre",
    "hook_attn_out",
    "hook_resid_mid",
    "hook_mlp_out",
    "hook_resid_post",
)
_DECODER_POINTS = _ENCODER_POINTS + ("hook_cross_attn_out", "hook_resid_mid_cross")


def instrument(model: nn.Module) -> dict[str, HookPoint]:
    """Add HookPoints to a ``WhisperForConditionalGeneration`` (idempotent).

    Returns the mapping from canonical site name to its HookPoint.
    """
    inner: Any = model.model  # WhisperModel
    if not getattr(model, INSTRUMENTED_FLAG, False):
        for stack_name in ("encoder", "decoder"):
            _instrument_stack(getattr(inner, stack_name), stack_name)
        setattr(model, INSTRUMENTED_FLAG, True)
    return _collect(inner)


def _instrument_stack(stack: Any, stack_name: str) -> None:
    decoder = stack_name == "decoder"
    points = _DECODER_POINTS if decoder else _ENCODER_POINTS
    forward = _decoder_layer_forward if decoder else _encoder_layer_forward
    for layer in stack.layers:
        for point in points:
            layer.add_module(point, HookPoint())
        layer.self_attn.add_module("hook_pattern", HookPoint())
        if decoder:
            layer.encoder_attn.add_module("hook_pattern", HookPoint())
        layer.forward = types.MethodType(forward, layer)
    stack.add_module("hook_embed", HookPoint())
    stack.add_module("hook_ln_post", HookPoint())
    stack.layers[0].register_forward_pre_hook(_route_embed(stack), with_kwargs=True)
    stack.layer_norm.register_forward_hook(lambda _m, _a, out: stack.hook_ln_post(out))


def _route_embed(stack: Any):
    def pre_hook(layer, args, kwargs):
        if args:
            hook = stack.hook_embed
            hook.offset = _cache_offset(kwargs.get("past_key_values"), 0)
            return (hook(args[0]), *args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = stack.hook_embed(kwargs["hidden_states"])
        return args, kwargs

    return pre_hook


def _collect(inner: Any) -> dict[str, HookPoint]:
    out: dict[str, HookPoint] = {}
    for stack_name in ("encoder", "decoder"):
        stack = getattr(inner, stack_name)
        out[f"{stack_name}.hook_embed"] = stack.hook_embed
        for i, layer in enumerate(stack.layers):
            prefix = f"{stack_name}.blocks.{i}."
            for name, module in layer.named_modules():
                if isinstance(module, HookPoint):
                    point = name.replace("self_attn.", "attn.").replace(
                        "encoder_attn.", "cross_attn."
                    )
                    out[prefix + point] = module
        out[f"{stack_name}.hook_ln_post"] = stack.hook_ln_post
    return out
