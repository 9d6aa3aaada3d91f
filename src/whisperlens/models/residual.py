"""One way to read and modify the residual stream of any transformers causal LM.

Convention: **layer ``i`` is the output of block ``i``** (0-based), i.e. the residual
stream after block ``i``. It equals ``hidden_states[i + 1]`` of a transformers forward with
``output_hidden_states=True`` for every layer except the last: transformers puts the
*final norm's output* into ``hidden_states[-1]``, so for ``i = n_layers - 1`` the residual
here is the raw block output and ``final_norm(residual) == hidden_states[-1]``.

Reads run the model on right-padded batches (real tokens first, pads after, the attention
mask hides them), so under causal attention every real token sees exactly what it would see
unbatched; ``"last"`` and ``"mean"`` use real tokens only. The forward stops right after the
requested block (less work for early layers).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from whisperlens.errors import ShapeError

Position = Literal["all", "last", "mean"]
POSITIONS: tuple[str, ...] = get_args(Position)


@dataclass(frozen=True)
class StackLayout:
    """Where one architecture family keeps its blocks."""

    blocks: str  # dotted path of the nn.ModuleList of transformer blocks
    final_norm: str | None  # dotted path of the norm applied before the unembedding
    families: str  # model_types that use it (documentation only)


LAYOUTS: tuple[StackLayout, ...] = (
    StackLayout("model.layers", "model.norm", "llama mistral mixtral qwen2 qwen3 gemma phi3 olmo"),
    StackLayout("transformer.h", "transformer.ln_f", "gpt2 gptj bloom falcon codegen"),
    StackLayout("gpt_neox.layers", "gpt_neox.final_layer_norm", "gpt_neox (pythia)"),
    StackLayout("model.decoder.layers", "model.decoder.final_layer_norm", "opt"),
    StackLayout("transformer.blocks", "transformer.norm_f", "mpt"),
    StackLayout("model.language_model.layers", "model.language_model.norm", "gemma3 (multimodal)"),
)


class _StopForward(Exception):
    """Raised by a read hook once the wanted block has run: skips the rest of the model."""


def _get_path(root: nn.Module, dotted: str) -> Any:
    obj: Any = root
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def stack_layout(model: nn.Module) -> StackLayout:
    """The first layout in ``LAYOUTS`` whose block list exists in ``model``."""
    for layout in LAYOUTS:
        if isinstance(_get_path(model, layout.blocks), nn.ModuleList):
            return layout
    known = ", ".join(layout.blocks for layout in LAYOUTS)
    raise ShapeError(
        f"cannot find the transformer blocks of {type(model).__name__} (looked for {known})",
        "add the architecture's block path to whisperlens.models.residual.LAYOUTS",
    )


def block_list(model: nn.Module) -> nn.ModuleList:
    """The ``nn.ModuleList`` of transformer blocks, whatever the architecture."""
    return _get_path(model, stack_layout(model).blocks)


def final_norm(model: nn.Module) -> nn.Module | None:
    """The norm transformers applies after the last block (and puts in ``hidden_states[-1]``)."""
    path = stack_layout(model).final_norm
    return None if path is None else _get_path(model, path)


def residual_module(model: nn.Module, layer: int) -> nn.Module:
    """Block ``layer``; its output is the residual stream at ``layer`` (negative indices ok)."""
    blocks = block_list(model)
    n_layers = len(blocks)
    if not -n_layers <= layer < n_layers:
        raise ShapeError(
            f"layer {layer} does not exist: the model has {n_layers} blocks",
            f"pass a layer in 0..{n_layers - 1} (or a negative index)",
        )
    return blocks[layer]


def _hidden(output: Any) -> Tensor:
    """The hidden-state tensor in a block's output (a tensor, or a tuple led by one)."""
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output: Any, hidden: Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _steer_hook(delta_D: Tensor, positions: Sequence[int] | None):
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        hidden_BSD = _hidden(output)
        delta = delta_D.to(device=hidden_BSD.device, dtype=hidden_BSD.dtype)
        if positions is None:
            return _replace_hidden(output, hidden_BSD + delta)
        steered_BSD = hidden_BSD.clone()
        seq_len = hidden_BSD.shape[-2]
        index = [p for p in positions if -seq_len <= p < seq_len]
        steered_BSD[..., index, :] += delta
        return _replace_hidden(output, steered_BSD)

    return hook


@contextmanager
def add_to_residual(
    model: nn.Module,
    layer: int,
    vector: Tensor,
    strength: float = 1.0,
    positions: Sequence[int] | None = None,
) -> Iterator[None]:
    """Add ``strength * vector`` to the residual stream at ``layer`` while the block runs.

    ``positions`` are indices into the sequence each forward call sees (negative counts
    from the end; out-of-range ones are ignored); ``None`` steers every position, including
    tokens produced by ``generate``. Reads (:class:`ResidualAccess`) and transformers'
    ``output_hidden_states`` at ``layer + 1`` see the steered value. With a KV cache, each decoding step sees only the new
    token, so ``positions=[-1]`` means "the newest token" there. The hook is removed on exit,
    also when the body raises.
    """
    d_model = residual_width(model)
    if vector.shape != (d_model,):
        raise ShapeError(
            f"steering vector has shape {tuple(vector.shape)}, the residual stream has {d_model}",
            f"pass a 1-D vector of length {d_model}",
        )
    hook = _steer_hook(strength * vector.detach(), positions)
    # prepend: run before other forward hooks on the block, so recorders registered earlier
    # (transformers 5 captures GPT-2's output_hidden_states with one) see the steered output
    handle = residual_module(model, layer).register_forward_hook(hook, prepend=True)
    try:
        yield
    finally:
        handle.remove()


def residual_width(model: nn.Module) -> int:
    """Width of the residual stream: the token embedding's dimension."""
    embedding = model.get_input_embeddings()  # type: ignore[operator]
    return int(embedding.weight.shape[-1])


def _capture_block_output(model: nn.Module, layer: int, batch: dict[str, Tensor]) -> Tensor:
    """Run ``model`` until block ``layer`` and return that block's output hidden state."""
    captured: list[Tensor] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        captured.append(_hidden(output).detach())
        raise _StopForward

    handle = residual_module(model, layer).register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(**batch, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"block {layer} never ran during the forward pass")
    return captured[0]


def pool_positions(acts_BSD: Tensor, mask_BS: Tensor, position: Position) -> Tensor:
    """Reduce ``[batch, seq, d]`` activations over real tokens (``mask_BS`` 1) only.

    ``"all"`` keeps the layout and zeroes pad positions; ``"last"`` and ``"mean"`` give
    ``[batch, d]``.
    """
    mask = mask_BS.to(acts_BSD.dtype).unsqueeze(-1)
    if position == "all":
        return acts_BSD * mask
    if position == "mean":
        return (acts_BSD * mask).sum(-2) / mask.sum(-2).clamp(min=1)
    if position == "last":  # index of the last real token, whichever side was padded
        index_BS = torch.arange(mask_BS.shape[-1], device=mask_BS.device) * mask_BS.long()
        return acts_BSD[torch.arange(acts_BSD.shape[0]), index_BS.argmax(-1)]
    raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")


class ResidualAccess:
    """Read, pool and steer the residual stream of a causal LM with its tokenizer.

    A tokenizer without a pad token (GPT-2) gets ``pad_token = eos_token`` (set in place).
    Texts are tokenized with the tokenizer's own special-token settings, right-padded.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, batch_size: int = 16):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    @property
    def n_layers(self) -> int:
        return len(block_list(self.model))

    @property
    def d_model(self) -> int:
        return residual_width(self.model)

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Right-padded ``input_ids`` and ``attention_mask`` on the model's device."""
        if isinstance(texts, str) or len(texts) == 0:
            raise ValueError("texts must be a non-empty sequence of strings (not one string)")
        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True, padding_side="right")
        device = next(self.model.parameters()).device
        return {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}

    def get_residual(self, texts: Sequence[str], layer: int, position: Position = "all") -> Tensor:
        """Residual stream after block ``layer`` (``hidden_states[layer + 1]``, see module doc).

        ``"last"``/``"mean"``: ``[batch, d_model]`` over real tokens. ``"all"``:
        ``[batch, seq, d_model]``, right-padded (text ``b``'s tokens are ``[b, :len_b]``),
        zeros at pad positions.
        """
        if position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenize(texts[start : start + self.batch_size])
            acts_BSD = _capture_block_output(self.model, layer, batch)
            chunks.append(pool_positions(acts_BSD, batch["attention_mask"], position))
        if position != "all":
            return torch.cat(chunks)
        seq_len = max(c.shape[1] for c in chunks)
        return torch.cat([nn.functional.pad(c, (0, 0, 0, seq_len - c.shape[1])) for c in chunks])

    def contrastive_vector(
        self,
        pos_texts: Sequence[str],
        neg_texts: Sequence[str],
        layer: int,
        position: Literal["last", "mean"] = "last",
    ) -> Tensor:
        """CAA vector: mean residual of ``pos_texts`` minus mean of ``neg_texts``, ``[d_model]``.

        ``position="last"`` uses each text's last real token (contrastive activation
        addition); ``"mean"`` averages each text over its real tokens first.
        """
        if position not in ("last", "mean"):
            raise ValueError(f"position must be 'last' or 'mean', got {position!r}")
        pos_D = self.get_residual(pos_texts, layer, position).mean(0)
        neg_D = self.get_residual(neg_texts, layer, position).mean(0)
        return pos_D - neg_D

    def add_to_residual(
        self,
        layer: int,
        vector: Tensor,
        strength: float = 1.0,
        positions: Sequence[int] | None = None,
    ):
        """Context manager; see :func:`add_to_residual`."""
        return add_to_residual(self.model, layer, vector, strength, positions)
