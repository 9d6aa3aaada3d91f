"""Mapping text-model vectors (d_text) into Whisper's encoder space (d_whisper), and layouts.

Reducers, each fit on a concept's per-sample differences ``X`` [N, d_text]:

- ``pca``: principal axes of the centred samples (``torch.linalg.svd``). ``frames`` are the
  centred scores, exactly what the seed's ``PCA(n_components).fit_transform(X)`` gives (so
  their mean over samples is zero: the concept's mean direction is removed); ``direction``
  projects the uncentred mean vector on the same axes. Axes beyond ``min(N, d_text)`` are zero.
- ``ae``: a small autoencoder ``z = tanh(W x / sigma + b)``, linear decoder, trained on ``X``
  (MSE, Adam, seeded); ``frames`` are the codes, ``direction`` is ``enc(mean) - enc(0)``.
- ``gaussian``: ``R`` [d_whisper, d_text] with N(0, 1/d_whisper) entries (as scikit-learn's
  GaussianRandomProjection); ``frames = X R^T``, ``direction = R mean``.
- ``sparse``: Li et al.'s very sparse projection, density ``1/sqrt(d_text)``, entries
  ``+-1/sqrt(density * d_whisper)`` (scikit-learn's SparseRandomProjection).
- ``aligned``: a learned linear map ``W`` [d_whisper, d_text], fit by ridge regression on
  words read by the text model and heard by Whisper (:mod:`.alignment`), passed in as
  ``alignment``; ``frames = X W^T``, ``direction = W mean`` (the linear part only: the
  samples are differences).

Layouts: ``frames`` puts sample ``i`` at encoder frame ``i`` and zeros after (the seed's
[1500, d] tensor); ``direction`` is one [d] vector, added on the clip's speech frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

from whisperlens.errors import ShapeError
from whisperlens.frames import N_ENCODER_FRAMES

Reducer = Literal["pca", "ae", "gaussian", "sparse", "aligned"]
REDUCERS: tuple[str, ...] = get_args(Reducer)
Layout = Literal["frames", "direction"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
Scale = Literal["unit", "raw"]
SCALES: tuple[str, ...] = get_args(Scale)
AE_EPOCHS, AE_LR = 400, 3e-3


def pca_axes(X_ND: torch.Tensor, k: int) -> torch.Tensor:
    """The top ``k`` principal axes [k', d] of ``X`` (k' = min(k, N, d)), sign fixed so the
    largest-magnitude entry of each axis is positive (deterministic)."""
    Xc = (X_ND - X_ND.mean(0)).double()
    _, _, Vh = torch.linalg.svd(Xc, full_matrices=False)
    axes = Vh[: min(k, *X_ND.shape)]
    signs = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    return (axes * signs).to(X_ND.dtype)


def _pad(M: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(M, (0, width - M.shape[-1]))


def gaussian_matrix(d_out: int, d_in: int, seed: int) -> torch.Tensor:
    """[d_out, d_in] with N(0, 1/d_out) entries: E|R x|^2 = |x|^2."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(d_out, d_in, generator=gen, dtype=torch.float64).float() / math.sqrt(d_out)


def sparse_matrix(d_out: int, d_in: int, seed: int) -> torch.Tensor:
    """[d_out, d_in] very sparse random projection (density 1/sqrt(d_in)): E|R x|^2 = |x|^2."""
    density = 1 / math.sqrt(d_in)
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(d_out, d_in, generator=gen, dtype=torch.float64)
    value = 1 / math.sqrt(density * d_out)
    R = torch.zeros(d_out, d_in, dtype=torch.float64)
    R[u < density / 2] = -value
    R[(u >= density / 2) & (u < density)] = value
    return R.float()


@dataclass(frozen=True)
class AutoEncoder:
    """The trained encoder half: ``codes(x) = tanh(W x / sigma + b)``."""

    encoder: torch.nn.Module  # Linear + Tanh
    sigma: float  # RMS of the training samples (inputs are divided by it)
    final_loss: float  # training MSE on the scaled samples after the last epoch

    @torch.no_grad()
    def codes(self, X: torch.Tensor) -> torch.Tensor:
        return self.encoder(X / self.sigma)


def train_autoencoder(X_ND: torch.Tensor, d_out: int, seed: int) -> AutoEncoder:
    """A tanh encoder [d_text -> d_out] with a linear decoder, trained on ``X`` (MSE)."""
    torch.manual_seed(seed)
    encoder = torch.nn.Sequential(torch.nn.Linear(X_ND.shape[1], d_out), torch.nn.Tanh())
    model = torch.nn.Sequential(encoder, torch.nn.Linear(d_out, X_ND.shape[1]))
    sigma = float(X_ND.pow(2).mean().sqrt().clamp(min=1e-8))
    Xs = X_ND / sigma
    opt = torch.optim.Adam(model.parameters(), lr=AE_LR)
    loss = torch.tensor(math.nan)
    with torch.enable_grad():
        for _ in range(AE_EPOCHS):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(Xs), Xs)
            loss.backward()
            opt.step()
    return AutoEncoder(encoder.eval(), sigma, float(loss.detach()))


def reduce(
    reducer: str, X_ND: torch.Tensor, mean_D: torch.Tensor, d_out: int, seed: int = 0,
    alignment: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Per-sample vectors [N, d_out] (the seed's reduced samples) and the mapped mean [d_out].

    ``alignment``: the fitted map ``W`` [d_out, d_text] that ``aligned`` applies."""
    X, mean = X_ND.float(), mean_D.float()
    if reducer == "aligned":
        W = _check_alignment(alignment, d_out, X.shape[1]).float()
        return X @ W.T, W @ mean
    if reducer == "pca":
        axes = pca_axes(X, d_out)
        return _pad((X - X.mean(0)) @ axes.T, d_out), _pad(axes @ mean, d_out)
    if reducer in ("gaussian", "sparse"):
        make = gaussian_matrix if reducer == "gaussian" else sparse_matrix
        R = make(d_out, X.shape[1], seed)
        return X @ R.T, R @ mean
    if reducer == "ae":
        ae = train_autoencoder(X, d_out, seed)
        return ae.codes(X), ae.codes(mean) - ae.codes(torch.zeros_like(mean))
    raise ValueError(f"unknown reducer {reducer!r}; use one of {REDUCERS}")


def _check_alignment(alignment: torch.Tensor | None, d_out: int, d_in: int) -> torch.Tensor:
    if alignment is None:
        raise ShapeError(
            "the aligned reducer needs a fitted text -> Whisper map",
            "pass alignment=W from alignment.fit_alignment (the study builds it: "
            "study.build_alignment)",
        )
    if tuple(alignment.shape) != (d_out, d_in):
        raise ShapeError(
            f"alignment map has shape {tuple(alignment.shape)}, expected ({d_out}, {d_in})",
            "fit the map for this text model (its width) and this Whisper model",
        )
    return alignment


def layout_vector(layout: str, samples_ND: torch.Tensor, mean_D: torch.Tensor) -> torch.Tensor:
    """``frames``: [1500, d], sample i at frame i, zero after; ``direction``: the mean [d]."""
    if layout == "direction":
        return mean_D.clone()
    if layout != "frames":
        raise ValueError(f"unknown layout {layout!r}; use one of {LAYOUTS}")
    n, d = samples_ND.shape
    if n > N_ENCODER_FRAMES:
        raise ShapeError(
            f"{n} samples do not fit the {N_ENCODER_FRAMES} encoder frames",
            f"use at most {N_ENCODER_FRAMES} samples or the direction layout",
        )
    out = torch.zeros(N_ENCODER_FRAMES, d)
    out[:n] = samples_ND
    return out


def vector_norm(vector: torch.Tensor) -> float:
    """L2 norm of a direction; mean L2 norm of the non-zero frames of a frames vector."""
    if vector.ndim == 1:
        return float(vector.norm())
    norms = vector.norm(dim=-1)
    nonzero = norms[norms > 0]
    return float(nonzero.mean()) if nonzero.numel() else 0.0


def scaled(vector: torch.Tensor, scale: str) -> torch.Tensor:
    """``raw``: as mapped (the seed); ``unit``: rescaled to :func:`vector_norm` 1."""
    if scale == "raw":
        return vector
    norm = vector_norm(vector)
    if norm == 0:
        raise ShapeError("cannot scale a zero steering vector to unit norm", "use scale='raw'")
    return vector / norm


def random_like(vector: torch.Tensor, seed: int) -> torch.Tensor:
    """A Gaussian random vector with the same norm per frame (zero frames stay zero).

    The norms are rounded to 1e-6, so vectors of equal norm (unit-scaled directions of
    different reducers) get bit-identical controls, which the sweep computes once."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(vector.shape, generator=gen, dtype=torch.float64).float()
    norms = torch.round(vector.double().norm(dim=-1, keepdim=True) * 1e6) / 1e6
    return (noise.double() / noise.double().norm(dim=-1, keepdim=True) * norms).float()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors, flattened (the seed's comparison of frame layouts)."""
    a, b = a.flatten().double(), b.flatten().double()
    return float(a @ b / (a.norm() * b.norm()).clamp(min=1e-300))


def null_cosine_quantile(dim: int, n: int = 2000, q: float = 0.95, seed: int = 0) -> float:
    """The ``q`` quantile of |cos| between independent Gaussian vectors of dimension ``dim``."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    b = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    return float(cos.abs().quantile(q))
