"""Learned cross-model alignment: a linear map from a text model's residual stream into
Whisper's encoder, fit on the same words read and heard (the ``aligned`` reducer).

Paired data, one row per word:

- words: distinct English words of the shipped word lists (``english``: the minimal pairs
  and the semantic pairs of :mod:`whisperlens.stimuli.wordlists`), a seeded sample;
- Whisper side ``Y`` [N, d_whisper]: the word spoken by Piper in the carrier "The word is
  {word}." (Whisper hears carried words better than bare ones), each encoder block's output
  averaged over the word's frames (its TTS word timing through ``frames_for_span``, as in the
  patching study). The target is the **mean of these over the steered blocks**: the study
  adds one vector to every steered block, so one map into their common space is fit;
- text side ``X`` [N, d_text]: the residual stream of the bare word after the CAA layer,
  pooled at the CAA position (:func:`.vectors.all_layer_residuals`).

Fit: ridge regression on centred data, ``Y - y_mean ~ (X - x_mean) W^T``, with
``lambda = alpha * ||X_c||_F^2 / d_text`` (``alpha`` relative to the mean eigenvalue of
``X_c^T X_c``, so the grid does not depend on the residual scale), ``alpha`` chosen by
K-fold cross-validation on the training words. A *difference* vector maps through the
linear part only: ``W (x_pos - x_neg)``.

Fit quality is measured on ``TEST_FRACTION`` of the words (seeded split) that take no part
in fitting or in choosing ``alpha``: R^2 (variance explained, ``1 - SSE / SST`` about the
held-out mean, all dimensions pooled) and the mean cosine between predicted and actual
deviations from the training mean. The null repeats the whole fit (``alpha`` selection
included) on training pairs whose rows are shuffled, evaluated on the true held-out pairs.
The map used for steering is the one evaluated (fit on the training words).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from whisperlens._io import cache_dir, stable_hash
from whisperlens.errors import WhisperlensError
from whisperlens.frames import frames_for_span
from whisperlens.interventions import load_payloads, save_payloads

WORDLIST = "english"  # shipped word lists the words come from
CARRIER = "the_word_is"  # Whisper hears "The word is {word}."
ALPHAS = tuple(float(10**e) for e in np.arange(-4.0, 4.01, 0.5))  # ridge grid, relative
N_FOLDS = 5  # cross-validation folds for alpha, on the training words
TEST_FRACTION = 0.2  # held-out words
N_NULL = 20  # shuffled-pairing fits of the null
FORMAT = 1  # cache format


class AlignmentError(WhisperlensError, ValueError):
    """Paired data that cannot give a map (too few words, mismatched rows)."""


# --- the words and their activations -------------------------------------------------


def alignment_words(n_words: int, seed: int = 0) -> list[str]:
    """A seeded sample of ``n_words`` distinct alphabetic words of the shipped lists, sorted."""
    from whisperlens.stimuli.wordlists import load_pairs

    seen: dict[str, None] = {}
    for pair in load_pairs(WORDLIST):
        for word in (pair.a, pair.b):
            if word.isalpha():
                seen.setdefault(word.lower(), None)
    pool = sorted(seen)
    if not 2 * N_FOLDS <= n_words <= len(pool):
        raise AlignmentError(
            f"{n_words} alignment words requested; the {WORDLIST!r} lists hold {len(pool)}",
            f"use {2 * N_FOLDS}..{len(pool)} words",
        )
    order = np.random.default_rng(seed).permutation(len(pool))[:n_words]
    return sorted(pool[i] for i in order)


@torch.no_grad()
def spoken_word_states(
    model: Any, words: Sequence[str], engine: str = "piper", batch_size: int = 8
) -> tuple[list[str], torch.Tensor]:
    """Each block's output averaged over the word's frames in "The word is {word}.":
    the words that have TTS word timings and [n_blocks, n_kept, d]."""
    from whisperlens.stimuli.carriers import CARRIERS
    from whisperlens.stimuli.tts import synthesize

    names = [f"encoder.blocks.{b}.hook_resid_post" for b in range(model.n_layers)]
    items = []
    for word in words:
        phrase = CARRIERS[CARRIER].render(word)
        stim = synthesize(phrase.text, engine=engine)
        times = stim.time_span(phrase.word_span)
        if times is not None:
            items.append((word, stim.audio, frames_for_span(*times)))
    out = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        cache = model.run_with_cache([audio for _, audio, _ in chunk], names=names)
        out += [
            torch.stack([cache[name][i, span].mean(0) for name in names])
            for i, (_, _, span) in enumerate(chunk)
        ]  # fmt: skip
    if not out:
        raise AlignmentError(f"no word of {len(words)} has TTS word timings",
                             "use the piper engine, which gives word timings")  # fmt: skip
    return [w for w, _, _ in items], torch.stack(out, dim=1).float()


def cached(path: Path, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``compute()`` saved as safetensors at ``path`` (atomically), or read from there."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_payloads(path, compute())
    return load_payloads(path)


def whisper_key(model: Any) -> dict[str, Any]:
    loaded = getattr(model, "loaded", model)
    return {"name": loaded.name, "source": loaded.source, "info": loaded.info}


def paired_data(
    whisper: Any, text_model: Any, words: Sequence[str], layer: int, position: str,
    engine: str = "piper",
) -> tuple[list[str], torch.Tensor, torch.Tensor]:  # fmt: skip
    """(kept words, X [N, d_text], Y [n_blocks, N, d_whisper]), both sides cached in the user
    cache dir (Whisper side keyed on the model, words and engine; text side also on layer
    and position)."""
    from whisperlens.studies.steering.vectors import all_layer_residuals

    kept, heard = heard_words(whisper, words, engine)
    tkey = stable_hash({"text_model": text_model.name, "info": dict(text_model.info),
                        "words": kept, "layer": layer, "position": position,
                        "format": FORMAT})  # fmt: skip

    def read() -> dict[str, torch.Tensor]:
        return {"states": all_layer_residuals(text_model, kept, position)[layer]}  # type: ignore[arg-type]

    text = cached(cache_dir("steering") / f"align-text-{tkey}.safetensors", read)
    return kept, text["states"], heard


def heard_words(
    whisper: Any, words: Sequence[str], engine: str = "piper"
) -> tuple[list[str], torch.Tensor]:
    """:func:`spoken_word_states`, cached in the user cache dir (model, words, engine)."""
    key = stable_hash({"whisper": whisper_key(whisper), "words": list(words), "engine": engine,
                       "carrier": CARRIER, "format": FORMAT})  # fmt: skip

    def heard() -> dict[str, torch.Tensor]:
        kept, states = spoken_word_states(whisper, words, engine)
        return {"states": states, "kept": torch.tensor([w in kept for w in words])}

    spoken = cached(cache_dir("steering") / f"align-whisper-{key}.safetensors", heard)
    kept = [w for w, k in zip(words, spoken["kept"].tolist(), strict=True) if k]
    return kept, spoken["states"]


# --- ridge regression ------------------------------------------------------------------


@dataclass(frozen=True)
class RidgeMap:
    """``y = (x - x_mean) W^T + y_mean``; a difference vector maps by ``W`` alone."""

    weight: torch.Tensor  # [d_out, d_in]
    x_mean: torch.Tensor  # [d_in]
    y_mean: torch.Tensor  # [d_out]
    alpha: float  # ridge strength relative to the mean eigenvalue of X_c^T X_c

    def predict(self, X_ND: torch.Tensor) -> torch.Tensor:
        return (X_ND.double() - self.x_mean) @ self.weight.T + self.y_mean


def _lambda(Xc: torch.Tensor, alpha: float) -> float:
    return alpha * float(Xc.pow(2).sum()) / Xc.shape[1]


def ridge_weights(X_ND: torch.Tensor, Y_NE: torch.Tensor, alphas: Sequence[float]
                  ) -> list[RidgeMap]:  # fmt: skip
    """One centred ridge fit per ``alpha`` from a single SVD of the centred ``X``."""
    X, Y = X_ND.double(), Y_NE.double()
    x_mean, y_mean = X.mean(0), Y.mean(0)
    Xc, Yc = X - x_mean, Y - y_mean
    U, S, Vh = torch.linalg.svd(Xc, full_matrices=False)
    UtY = U.T @ Yc
    maps = []
    for alpha in alphas:
        shrink = S / (S**2 + _lambda(Xc, alpha))
        maps.append(RidgeMap((Vh.T @ (shrink[:, None] * UtY)).T, x_mean, y_mean, alpha))
    return maps


def folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    """``k`` disjoint validation index sets covering ``range(n)`` (seeded)."""
    return np.array_split(np.random.default_rng(seed).permutation(n), k)


def select_alpha(
    X_ND: torch.Tensor, Y_NE: torch.Tensor, alphas: Sequence[float] = ALPHAS,
    n_folds: int = N_FOLDS, seed: int = 0,
) -> tuple[float, list[float]]:  # fmt: skip
    """The alpha with the least K-fold validation squared error, and the error per alpha
    (summed over the folds, as a fraction of the total sum of squares)."""
    X, Y = X_ND.double(), Y_NE.double()
    sse = np.zeros(len(alphas))
    for val in folds(len(X), n_folds, seed):
        train = np.setdiff1d(np.arange(len(X)), val)
        for i, m in enumerate(ridge_weights(X[train], Y[train], alphas)):
            sse[i] += float((m.predict(X[val]) - Y[val]).pow(2).sum())
    errors = sse / float((Y - Y.mean(0)).pow(2).sum())
    return float(alphas[int(np.argmin(errors))]), [round(float(e), 6) for e in errors]


def fit_ridge(X_ND: torch.Tensor, Y_NE: torch.Tensor, seed: int = 0) -> RidgeMap:
    """Ridge map with alpha chosen by cross-validation on these rows."""
    alpha, _ = select_alpha(X_ND, Y_NE, seed=seed)
    return ridge_weights(X_ND, Y_NE, [alpha])[0]


def fit_quality(m: RidgeMap, X_ND: torch.Tensor, Y_NE: torch.Tensor) -> dict[str, float]:
    """Held-out R^2 (about the held-out mean) and mean cosine of the predicted and actual
    deviations from the training mean."""
    Y = Y_NE.double()
    pred = m.predict(X_ND)
    r2 = 1 - float((Y - pred).pow(2).sum()) / float((Y - Y.mean(0)).pow(2).sum())
    cos = torch.nn.functional.cosine_similarity(pred - m.y_mean, Y - m.y_mean, dim=1)
    return {"r2": r2, "cosine": float(cos.mean())}


@dataclass(frozen=True)
class Alignment:
    """The fitted map and its held-out report."""

    map: RidgeMap
    report: dict[str, Any]


def fit_alignment(
    X_ND: torch.Tensor, Y_NE: torch.Tensor, seed: int = 0,
    test_fraction: float = TEST_FRACTION, n_null: int = N_NULL,
) -> Alignment:  # fmt: skip
    """Fit on a seeded training split, report held-out quality and the shuffled null."""
    n = X_ND.shape[0]
    if Y_NE.shape[0] != n:
        raise AlignmentError(f"{n} text rows but {Y_NE.shape[0]} Whisper rows",
                             "pair every word once on both sides")  # fmt: skip
    n_test = max(1, round(test_fraction * n))
    if n - n_test < 2 * N_FOLDS:
        raise AlignmentError(f"{n} words leave too few for {N_FOLDS}-fold fitting",
                             f"use at least {2 * N_FOLDS + n_test} words")  # fmt: skip
    order = np.random.default_rng(seed).permutation(n)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    alpha, cv = select_alpha(X_ND[train], Y_NE[train], seed=seed)
    fitted = ridge_weights(X_ND[train], Y_NE[train], [alpha])[0]
    held = fit_quality(fitted, X_ND[test], Y_NE[test])
    rng = np.random.default_rng(seed + 1)
    null = [fit_quality(fit_ridge(X_ND[train], Y_NE[train][rng.permutation(len(train))], seed),
                        X_ND[test], Y_NE[test]) for _ in range(n_null)]  # fmt: skip
    report = {
        "n_train": len(train), "n_test": len(test), "alpha": alpha,
        "alphas": list(ALPHAS), "cv_error": cv, "heldout": held,
        "null": {key: _summary([q[key] for q in null]) for key in ("r2", "cosine")} | {
            "n": n_null},
    }  # fmt: skip
    return Alignment(fitted, report)


def _summary(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return {"mean": float("nan"), "q95": float("nan"), "max": float("nan")}
    return {"mean": float(arr.mean()), "q95": float(np.quantile(arr, 0.95)),
            "max": float(arr.max())}  # fmt: skip


def align(
    whisper: Any, text_model: Any, blocks: Sequence[int], layer: int, position: str,
    n_words: int, seed: int = 0, engine: str = "piper",
) -> Alignment:  # fmt: skip
    """The text -> Whisper map for the steered ``blocks`` (target: their mean output)."""
    words = alignment_words(n_words, seed)
    kept, X, Y_BNE = paired_data(whisper, text_model, words, layer, position, engine)
    result = fit_alignment(X, Y_BNE[list(blocks)].mean(0), seed)
    per_block = {
        str(b): fit_alignment(X, Y_BNE[b], seed, n_null=0).report["heldout"]
        for b in range(Y_BNE.shape[0])
    }  # fmt: skip
    info = {"words": kept, "n_words_requested": n_words, "wordlist": WORDLIST,
            "carrier": CARRIER, "engine": engine, "target_blocks": list(blocks),
            "target": "mean over the steered blocks of the block outputs, over the word's frames",
            "text_layer": layer, "text_position": position,
            "heldout_per_block_map": per_block}  # fmt: skip
    return Alignment(result.map, {**result.report, **info})
