"""Contrastive activation addition (CAA) in a text model, and the layer chosen by measurement.

For each contrastive sample (:mod:`.concepts`) the text model's residual stream after every
block is read at one token position (default the last token, as CAA); the per-sample
difference positive - negative at layer ``L`` is a row of ``differences`` [N, d_text] and
their mean is the steering vector (as :meth:`ResidualAccess.contrastive_vector`).

The layer is chosen by **held-out linear separability**, leave-one-language-out: for each of
the 10 languages, the mean-difference direction and is fit on the other nine, and a held-out
pair counts as separated when its own difference projects positively on that direction (a
paired test, so a language's overall offset in the residual stream cancels). The layer with the best mean held-out accuracy wins (ties: the larger
held-out d', the separation of the projected class means in pooled standard deviations).
Holding out whole languages means the words tested were never seen, so a layer that only
separates the training words lexically does not win.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from whisperlens.models.residual import block_list, pool_positions
from whisperlens.studies.steering.concepts import Sample

Position = Literal["last", "mean"]


@torch.no_grad()
def all_layer_residuals(
    text_model: Any, texts: Sequence[str], position: Position = "last", batch_size: int = 32
) -> torch.Tensor:
    """Residual stream after every block, pooled at ``position``: [n_layers, n_texts, d]."""
    access = text_model.residual
    blocks = block_list(access.model)
    out: list[torch.Tensor] = []
    for start in range(0, len(texts), batch_size):
        batch = access.tokenize(list(texts[start : start + batch_size]))
        captured: list[torch.Tensor] = []

        def hook(_module: Any, _args: Any, output: Any, store: list = captured) -> None:
            store.append(output[0] if isinstance(output, tuple) else output)

        handles = [b.register_forward_hook(hook) for b in blocks]
        try:
            access.model(**batch, use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        mask = batch["attention_mask"]
        out.append(torch.stack([pool_positions(a, mask, position) for a in captured]))
    return torch.cat(out, dim=1).float()


@dataclass(frozen=True)
class LayerScan:
    """Held-out separability per layer (leave-one-language-out)."""

    accuracy: list[float]  # mean held-out accuracy per layer
    d_prime: list[float]  # mean held-out d' per layer
    best: int  # the chosen layer

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "d_prime": self.d_prime, "best": self.best}


def heldout_separability(
    pos_ND: np.ndarray, neg_ND: np.ndarray, groups: Sequence[str]
) -> tuple[float, float]:
    """Mean held-out (accuracy, d') of the mean-difference direction, one fold per group.

    A held-out pair counts as separated when ``(pos - neg) . v > 0``, with ``v`` the mean
    difference of the other groups (a paired test: a language's overall offset cancels);
    d' is the mean of the held-out projected differences over their standard deviation.
    """
    groups_N = np.asarray(groups)
    accs, dps = [], []
    for g in sorted(set(groups)):
        test, train = groups_N == g, groups_N != g
        direction_D = (pos_ND[train] - neg_ND[train]).mean(0)
        proj = (pos_ND[test] - neg_ND[test]) @ direction_D
        accs.append(float((proj > 0).mean()))
        dps.append(float(proj.mean() / (proj.std() + 1e-12)))
    return float(np.mean(accs)), float(np.mean(dps))


def scan_layers(
    pos_LND: torch.Tensor, neg_LND: torch.Tensor, samples: Sequence[Sample]
) -> LayerScan:
    """Held-out separability at every layer and the best layer (see the module docstring)."""
    groups = [s.language for s in samples]
    acc, dp = [], []
    for layer in range(pos_LND.shape[0]):
        a, d = heldout_separability(
            pos_LND[layer].double().numpy(), neg_LND[layer].double().numpy(), groups
        )
        acc.append(round(a, 6))
        dp.append(round(d, 6))
    best = max(range(len(acc)), key=lambda i: (acc[i], dp[i]))
    return LayerScan(acc, dp, best)


@dataclass(frozen=True)
class CAAVectors:
    """A concept's CAA vectors at one layer of one text model."""

    differences: torch.Tensor  # [N, d_text]: positive - negative per sample
    mean: torch.Tensor  # [d_text]: the steering vector
    layer: int
    scan: LayerScan | None  # None when the layer was given, not measured


def caa_vectors(
    text_model: Any,
    samples: Sequence[Sample],
    layer: int | None = None,
    position: Position = "last",
) -> CAAVectors:
    """Per-sample differences and their mean at ``layer`` (None: the best held-out layer)."""
    pos = all_layer_residuals(text_model, [s.positive for s in samples], position)
    neg = all_layer_residuals(text_model, [s.negative for s in samples], position)
    scan = scan_layers(pos, neg, samples) if layer is None else None
    chosen = scan.best if scan is not None else layer
    assert chosen is not None
    diffs_ND = (pos[chosen] - neg[chosen]).contiguous()
    return CAAVectors(diffs_ND, diffs_ND.mean(0), chosen, scan)
