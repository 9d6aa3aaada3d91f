"""Hook sites: the one table of named points in Whisper where activations can be read or set.

Names follow TransformerLens: ``encoder.blocks.2.hook_resid_post``. Each point is
described once in :data:`POINTS`; site lists, CLI choices and validation derive from it.

Encoder block ``i`` (pre-LN transformer)::

    resid_pre -> LN -> self-attn -> attn_out ; resid_mid = resid_pre + attn_out
    resid_mid -> LN -> MLP -> mlp_out ; resid_post = resid_mid + mlp_out

Decoder block ``i`` adds cross-attention between the two::

    resid_mid (after self-attn) -> LN -> cross-attn -> cross_attn_out
    resid_mid_cross = resid_mid + cross_attn_out -> LN -> MLP -> mlp_out
    resid_post = resid_mid_cross + mlp_out

Stack-level points: ``hook_embed`` (input of block 0: conv stem + positional
embedding for the encoder, token + positional embedding for the decoder) and
``hook_ln_post`` (after the final LayerNorm, i.e. what the encoder hands to the
decoder; transformers' ``last_hidden_state``). Attention patterns
(``attn.hook_pattern``, ``cross_attn.hook_pattern``: [batch, head, query, key]) are
read-only and computed only when requested.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

Stack = Literal["encoder", "decoder"]
STACKS: tuple[Stack, ...] = get_args(Stack)


@dataclass(frozen=True)
class PointSpec:
    """One kind of hook point."""

    stacks: tuple[Stack, ...]  # which stacks have it
    per_block: bool  # True: one per block (``blocks.{i}.``); False: one per stack
    module: str  # where its HookPoint lives, inside the block (per_block) or the stack
    description: str
    residual: bool = True  # a d_model-wide residual-stream vector (steerable by a d_model vector)
    pattern: bool = False  # an attention pattern (read-only, computed with eager attention)


_DEC: tuple[Stack, ...] = ("decoder",)
POINTS: dict[str, PointSpec] = {
    "hook_embed": PointSpec(STACKS, False, "hook_embed", "input of block 0 (embeddings)"),
    "hook_resid_pre": PointSpec(STACKS, True, "hook_resid_pre", "block input"),
    "hook_attn_out": PointSpec(STACKS, True, "hook_attn_out", "self-attention output"),
    "hook_resid_mid": PointSpec(STACKS, True, "hook_resid_mid", "residual after self-attention"),
    "hook_cross_attn_out": PointSpec(_DEC, True, "hook_cross_attn_out", "cross-attention output"),
    "hook_resid_mid_cross": PointSpec(
        _DEC, True, "hook_resid_mid_cross", "residual after cross-attention (MLP input)"
    ),
    "hook_mlp_out": PointSpec(STACKS, True, "hook_mlp_out", "MLP output"),
    "hook_resid_post": PointSpec(STACKS, True, "hook_resid_post", "block output"),
    "attn.hook_pattern": PointSpec(
        STACKS,
        True,
        "self_attn.hook_pattern",
        "self-attention probabilities",
        residual=False,
        pattern=True,
    ),
    "cross_attn.hook_pattern": PointSpec(
        _DEC,
        True,
        "encoder_attn.hook_pattern",
        "cross-attention probabilities",
        residual=False,
        pattern=True,
    ),
    "hook_ln_post": PointSpec(STACKS, False, "hook_ln_post", "after the final LayerNorm"),
}

_NAME_RE = re.compile(r"^(encoder|decoder)\.(?:blocks\.(\d+)\.)?(.+)$")


@dataclass(frozen=True, order=True)
class Site:
    """A parsed site name: stack, block index (None for stack-level points) and point."""

    stack: Stack
    layer: int | None
    point: str

    def __post_init__(self) -> None:
        spec = POINTS.get(self.point)
        if spec is None or self.stack not in spec.stacks:
            raise ValueError(f"no point {self.point!r} in the {self.stack}")
        if spec.per_block != (self.layer is not None):
            raise ValueError(
                f"point {self.point!r} {'needs' if spec.per_block else 'takes no'} layer"
            )

    @property
    def name(self) -> str:
        block = f"blocks.{self.layer}." if self.layer is not None else ""
        return f"{self.stack}.{block}{self.point}"

    @property
    def spec(self) -> PointSpec:
        return POINTS[self.point]

    @property
    def module_path(self) -> str:
        """Path of this site's HookPoint inside transformers' ``WhisperModel``."""
        block = f"layers.{self.layer}." if self.layer is not None else ""
        return f"{self.stack}.{block}{self.spec.module}"

    def __str__(self) -> str:
        return self.name


def site_names(
    n_layers: int,
    n_decoder_layers: int,
    *,
    stacks: tuple[Stack, ...] = STACKS,
    patterns: bool = True,
) -> list[str]:
    """Every valid site name for a model with these depths, in forward order."""
    names: list[str] = []
    depth = {"encoder": n_layers, "decoder": n_decoder_layers}
    for stack in stacks:
        for point, spec in POINTS.items():
            if stack not in spec.stacks or spec.per_block or point == "hook_ln_post":
                continue
            names.append(Site(stack, None, point).name)
        for i in range(depth[stack]):
            for point, spec in POINTS.items():
                if stack in spec.stacks and spec.per_block and (patterns or not spec.pattern):
                    names.append(Site(stack, i, point).name)
        names.append(Site(stack, None, "hook_ln_post").name)
    return names


def parse_site(name: str, valid: list[str]) -> Site:
    """Parse a site name, or raise SiteError listing the nearest valid names."""
    from whisperlens.errors import SiteError

    if name not in valid:
        near = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(near)}?"
            if near
            else "see `whisperlens sites` or HookedWhisper.site_names()"
        )
        raise SiteError(f"unknown hook site {name!r}", hint)
    m = _NAME_RE.match(name)
    assert m is not None  # every valid name matches
    stack, layer, point = m.group(1), m.group(2), m.group(3)
    return Site(stack, None if layer is None else int(layer), point)  # type: ignore[arg-type]


def resolve_sites(names: str | Sequence[str], valid: list[str]) -> list[Site]:
    """Expand names and shell-style globs (``encoder.blocks.*.hook_resid_post``) into Sites.

    Order follows ``valid`` (forward order) for globs; explicit names keep their order.
    """
    from whisperlens.errors import SiteError

    items = [names] if isinstance(names, str) else list(names)
    out: list[Site] = []
    for item in items:
        if any(ch in item for ch in "*?["):
            matched = [v for v in valid if fnmatch.fnmatchcase(v, item)]
            if not matched:
                raise SiteError(f"site pattern {item!r} matches no site", "check the spelling")
            out.extend(parse_site(v, valid) for v in matched)
        else:
            out.append(parse_site(item, valid))
    seen: set[Site] = set()
    return [s for s in out if not (s in seen or seen.add(s))]  # type: ignore[func-returns-value]
