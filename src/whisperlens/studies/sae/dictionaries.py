"""Dictionaries over a Whisper site: a trained SAE and the baselines it is compared with.

A dictionary maps activations ``x`` [n, d] to codes ``z`` [n, m] and back. Three kinds share
one interface, so evaluation, feature labelling and steering treat them alike:

- `SAEDictionary`: a SAELens sparse autoencoder (TopK, ReLU+L1, BatchTopK, JumpReLU);
- `PCADictionary`: the top principal components of the training activations (codes are the
  projections on them; with k components it is the best rank-k linear reconstruction);
- `RandomDictionary`: random unit directions with TopK codes and a least-squares scale, the
  "random directions" control of the seed's reviewers.

`splice` substitutes a dictionary's reconstruction (optionally with an edit of the codes,
such as zeroing one latent) at a site of a running `HookedWhisper`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from whisperlens.errors import WhisperlensError

CodeEdit = Callable[[torch.Tensor], torch.Tensor]  # z [n, m] -> edited z


class DictionaryError(WhisperlensError, ValueError):
    """A dictionary that cannot be built, loaded or applied."""


class Dictionary(Protocol):
    name: str  # "sae", "pca" or "random"

    @property
    def d_model(self) -> int: ...

    @property
    def n_latents(self) -> int: ...

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor: ...

    @property
    def directions(self) -> torch.Tensor: ...  # [m, d], unit rows: where each latent writes


def _check_input(x: torch.Tensor, d: int, who: str) -> torch.Tensor:
    if x.shape[-1] != d:
        raise DictionaryError(
            f"{who} expects activations with last dimension {d}, got {tuple(x.shape)}",
            "use activations of the site and model this dictionary was fitted on",
        )
    return x.to(torch.float32)


class SAEDictionary:
    """A SAELens SAE as a `Dictionary` (``sae`` is any ``sae_lens.SAE``)."""

    name = "sae"

    def __init__(self, sae: Any):
        self.sae = sae.eval()
        self.d_model = int(sae.cfg.d_in)
        self.n_latents = int(sae.cfg.d_sae)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(_check_input(x, self.d_model, "this SAE"))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.sae.decode(z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @property
    def directions(self) -> torch.Tensor:
        w = self.sae.W_dec.detach().to(torch.float32)
        return w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass
class PCADictionary:
    """The top ``k`` principal components: ``z = (x - mean) @ C.T``, ``x_hat = mean + z @ C``."""

    mean: torch.Tensor  # [d]
    components: torch.Tensor  # [k, d], orthonormal rows, by decreasing variance
    explained_variance: torch.Tensor  # [k]
    name: str = "pca"

    @classmethod
    def fit(cls, acts: torch.Tensor, k: int) -> PCADictionary:
        x = acts.to(torch.float64)
        n, d = x.shape
        if not 1 <= k <= d:
            raise DictionaryError(f"PCA with {k} components of {d}-d activations",
                                  f"choose k in 1..{d}")  # fmt: skip
        if n < 2:
            raise DictionaryError("PCA needs at least 2 activation rows", "pass more frames")
        mean = x.mean(0)
        cov = (x - mean).T @ (x - mean) / (n - 1)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        order = torch.argsort(evals, descending=True)[:k]
        comps = evecs[:, order].T
        # a deterministic sign: the largest-magnitude entry of each component is positive
        signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True))).squeeze(1)
        comps = comps * torch.where(signs < 0, -1.0, 1.0).to(comps.dtype).unsqueeze(1)
        return cls(mean.float(), comps.float(), evals[order].float())

    @property
    def d_model(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_latents(self) -> int:
        return int(self.components.shape[0])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (_check_input(x, self.d_model, "this PCA") - self.mean) @ self.components.T

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean + z.to(torch.float32) @ self.components

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @property
    def directions(self) -> torch.Tensor:
        return self.components

    def truncate(self, k: int) -> PCADictionary:
        """The first ``k`` components (the best rank-k reconstruction)."""
        return PCADictionary(self.mean, self.components[:k], self.explained_variance[:k])


@dataclass
class RandomDictionary:
    """``m`` random unit directions; codes keep the ``k`` largest projections of the centred
    activation (TopK, like the SAE) and decoding scales them by one least-squares factor."""

    mean: torch.Tensor  # [d]
    atoms: torch.Tensor  # [m, d], unit rows
    k: int
    scale: float = 1.0
    name: str = "random"

    @classmethod
    def fit(cls, acts: torch.Tensor, n_latents: int, k: int, seed: int = 0) -> RandomDictionary:
        x = acts.to(torch.float32)
        d = x.shape[-1]
        if not 1 <= k <= n_latents:
            raise DictionaryError(f"random dictionary with k={k} of {n_latents} latents",
                                  "choose 1 <= k <= n_latents")  # fmt: skip
        gen = torch.Generator().manual_seed(seed)
        atoms = torch.randn(n_latents, d, generator=gen)
        atoms = atoms / atoms.norm(dim=-1, keepdim=True)
        out = cls(x.mean(0), atoms, k)
        xc = x - out.mean
        recon = out.encode(x) @ atoms  # unscaled
        denom = float((recon * recon).sum())
        out.scale = float((recon * xc).sum()) / denom if denom > 0 else 1.0
        return out

    @property
    def d_model(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_latents(self) -> int:
        return int(self.atoms.shape[0])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        proj = (_check_input(x, self.d_model, "this dictionary") - self.mean) @ self.atoms.T
        top = proj.topk(self.k, dim=-1)
        return torch.zeros_like(proj).scatter_(-1, top.indices, top.values)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean + self.scale * (z.to(torch.float32) @ self.atoms)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @property
    def directions(self) -> torch.Tensor:
        return self.atoms


def load_sae(path: str | os.PathLike[str], device: str = "cpu") -> SAEDictionary:
    """A SAE saved in SAELens's format (``cfg.json`` + ``sae_weights.safetensors``)."""
    path = Path(path)
    missing = [n for n in ("cfg.json", "sae_weights.safetensors") if not (path / n).is_file()]
    if missing:
        raise DictionaryError(
            f"{path} is not a saved SAE (missing {', '.join(missing)})",
            "pass the directory `whisperlens sae train` wrote (its `sae/` folder)",
        )
    try:
        from sae_lens import SAE
    except ImportError:
        raise DictionaryError(
            "loading a SAE needs the sae-lens package", "pip install 'whisperlens[sae]'"
        ) from None
    return SAEDictionary(SAE.load_from_disk(path, device=device))


@contextmanager
def splice(
    model: Any,
    dictionary: Dictionary,
    site: str,
    frames: Any = None,
    *,
    edit: CodeEdit | None = None,
    keep_error: bool = False,
) -> Iterator[None]:
    """Within the block, the activation at ``site`` (on ``frames``) is replaced by the
    dictionary's reconstruction, with the codes first passed through ``edit``.

    ``keep_error`` adds back the reconstruction error ``x - decode(encode(x))``, so that only
    the effect of ``edit`` remains (with ``edit=None`` the activation is then unchanged):
    the usual way to ablate or steer one latent without the SAE's own error in the way.
    """

    def replace(rows: torch.Tensor, _site: Any) -> torch.Tensor:
        shape, dtype = rows.shape, rows.dtype
        x = rows.reshape(-1, shape[-1]).to(torch.float32)
        z = dictionary.encode(x)
        out = dictionary.decode(edit(z) if edit is not None else z)
        if keep_error:
            out = out + (x - dictionary.decode(z))
        return out.reshape(shape).to(dtype)

    with torch.no_grad(), model.edit(site, replace, frames):
        yield


def zero_latents(latents: list[int] | torch.Tensor) -> CodeEdit:
    """A code edit that zeroes the given latents."""
    index = torch.as_tensor(latents, dtype=torch.long)

    def edit(z: torch.Tensor) -> torch.Tensor:
        z = z.clone()
        z[:, index] = 0.0
        return z

    return edit


def set_latents(latents: list[int] | torch.Tensor, value: float) -> CodeEdit:
    """A code edit that clamps the given latents to ``value`` (steering by a latent)."""
    index = torch.as_tensor(latents, dtype=torch.long)

    def edit(z: torch.Tensor) -> torch.Tensor:
        z = z.clone()
        z[:, index] = value
        return z

    return edit
