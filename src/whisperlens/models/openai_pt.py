"""Map an openai-whisper ``.pt`` checkpoint onto transformers parameter names.

The checkpoint is ``{"dims": {...ModelDimensions...}, "model_state_dict": {...}}``; it is
read with ``torch.load(weights_only=True)``, which never unpickles arbitrary objects.
Names: ``encoder.blocks.N.attn.query`` -> ``model.encoder.layers.N.self_attn.q_proj``,
``mlp.0``/``mlp.2`` -> ``fc1``/``fc2``, ``attn_ln``/``cross_attn_ln``/``mlp_ln`` -> the three
layer norms, ``ln_post``/``ln`` -> the final norms, ``positional_embedding`` ->
``embed_positions.weight``. The key projection has no bias in either library.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch

from whisperlens.errors import CorruptWeightsError, ModelNotAvailableError
from whisperlens.models.registry import WhisperDims

_ATTN = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "out": "out_proj"}
_BLOCK = {
    "attn_ln": "self_attn_layer_norm",
    "cross_attn_ln": "encoder_attn_layer_norm",
    "mlp_ln": "final_layer_norm",
    "mlp.0": "fc1",
    "mlp.2": "fc2",
    **{f"attn.{k}": f"self_attn.{v}" for k, v in _ATTN.items()},
    **{f"cross_attn.{k}": f"encoder_attn.{v}" for k, v in _ATTN.items()},
}
_TOP = {
    "encoder.conv1": "model.encoder.conv1",
    "encoder.conv2": "model.encoder.conv2",
    "encoder.ln_post": "model.encoder.layer_norm",
    "decoder.ln": "model.decoder.layer_norm",
    "decoder.token_embedding": "model.decoder.embed_tokens",
}
_POSITIONS = {
    "encoder.positional_embedding": "model.encoder.embed_positions.weight",
    "decoder.positional_embedding": "model.decoder.embed_positions.weight",
}


def hf_name(openai_name: str) -> str | None:
    """The transformers name of an openai-whisper parameter, or None if it has none."""
    if openai_name in _POSITIONS:
        return _POSITIONS[openai_name]
    module, _, leaf = openai_name.rpartition(".")
    if module in _TOP:
        return f"{_TOP[module]}.{leaf}"
    parts = module.split(".")
    if len(parts) >= 4 and parts[1] == "blocks" and parts[0] in ("encoder", "decoder"):
        inner = _BLOCK.get(".".join(parts[3:]))
        if inner is not None:
            return f"model.{parts[0]}.layers.{parts[2]}.{inner}.{leaf}"
    return None


def _dims(raw: object, path: Path) -> WhisperDims:
    if not isinstance(raw, dict):
        raise CorruptWeightsError(f"{path}: 'dims' is not a dict; not an openai-whisper checkpoint")
    known = {f.name for f in fields(WhisperDims)}
    try:
        return WhisperDims(**{k: int(v) for k, v in raw.items() if k in known})
    except (TypeError, ValueError) as exc:
        raise CorruptWeightsError(f"{path}: invalid dims {raw}: {exc}") from exc


def read_openai_checkpoint(path: Path) -> tuple[WhisperDims, dict[str, torch.Tensor]]:
    """(dims, transformers state dict in float32) from an openai-whisper ``.pt`` file."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncation, disallowed globals
        raise CorruptWeightsError(
            f"{path} cannot be read as an openai-whisper checkpoint ({type(exc).__name__}: {exc})",
            "re-download it; only plain tensor checkpoints are accepted (weights_only=True)",
        ) from exc
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt or "dims" not in ckpt:
        raise ModelNotAvailableError(
            f"{path} is not an openai-whisper checkpoint (no 'dims' / 'model_state_dict')"
        )
    dims = _dims(ckpt["dims"], path)
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for name, tensor in ckpt["model_state_dict"].items():
        target = hf_name(name)
        if target is None:
            if name != "alignment_heads":  # a non-persistent buffer in openai-whisper
                unmapped.append(name)
            continue
        out[target] = tensor.detach().to(torch.float32).clone()
    if unmapped:
        raise CorruptWeightsError(
            f"{path}: {len(unmapped)} tensor(s) with no transformers counterpart: {unmapped[:5]}"
        )
    if "model.decoder.embed_tokens.weight" in out:
        out["proj_out.weight"] = out["model.decoder.embed_tokens.weight"]
    return dims, out
