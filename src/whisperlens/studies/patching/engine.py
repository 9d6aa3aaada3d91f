"""The patching engine: clean states once, continuation from the patched block, cheap scoring.

Every cell of a patching matrix is "run the encoder with block ``L``'s output changed, then
read the decoder". The engine never runs a full patched forward:

- :func:`clean_run` records every encoder block's output (``hook_resid_post``) and the
  encoder output of one clip in one forward pass;
- :func:`seed_encodings` (the seed's whole-block replacement) feeds the source word's block-S
  output into block ``L + 1`` with :meth:`HookedWhisper.encode_from`; the result depends
  only on (source word, S, L), so it is computed once per source word, batched over ``S``,
  and the diagonal ``S = L`` *is* the clean source run (no computation);
- :func:`span_encodings` replaces only the target word's frames (plus a margin) of the
  target's block-L output with the source word's block-S frames, aligned at word onset, and
  continues from ``L + 1``;
- :func:`score_cells` decodes only the word after the forced carrier prefix (a handful of
  tokens) and scores the source word against each target word by teacher forcing, both
  batched over cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from whisperlens.decoding import (
    decoder_step,
    greedy_continue,
    special_tokens,
    token_limit,
)
from whisperlens.features import AudioOrFeatures
from whisperlens.hooks import HookedWhisper
from whisperlens.scoring import case_and_period, scoring_prefix
from whisperlens.tokens import text_ids

Cell = tuple[int, int]  # (source layer S, target layer L)
COMPONENTS = ("attn_out", "mlp_out", "resid_mid")  # component mode: what one block writes
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)  # interpolate mode: weight of the source states
CELL_BATCH = 8  # encoder outputs decoded together (even: ``follow`` pairs stay together)


@dataclass(frozen=True)
class CleanRun:
    """One clip's unpatched encoder: every block's output and the encoder output."""

    states: tuple[torch.Tensor, ...]  # block outputs [1, 1500, d], block 0 first
    enc_1FD: torch.Tensor  # encoder output (after the final LayerNorm)
    points: dict[str, tuple[torch.Tensor, ...]]  # other per-block points asked for, by name


@dataclass(frozen=True)
class Window:
    """Aligned frame windows: target frames ``target..target+n`` take source frames."""

    target: int  # first target frame replaced
    source: int  # first source frame copied
    n: int  # frames replaced

    @property
    def target_slice(self) -> slice:
        return slice(self.target, self.target + self.n)

    @property
    def source_slice(self) -> slice:
        return slice(self.source, self.source + self.n)


def resid_post_sites(n_layers: int) -> list[str]:
    return [f"encoder.blocks.{i}.hook_resid_post" for i in range(n_layers)]


def clean_run(model: HookedWhisper, audio: AudioOrFeatures, points: Sequence[str] = ()) -> CleanRun:
    """Block outputs, encoder output and the per-block ``points`` ("hook_attn_out", ...) of
    one clip, from one forward pass."""
    names = resid_post_sites(model.n_layers)
    extra = {p: [f"encoder.blocks.{i}.{p}" for i in range(model.n_layers)] for p in points}
    every = [*names, "encoder.hook_ln_post", *(n for group in extra.values() for n in group)]
    cache = model.run_with_cache(audio, names=every)
    recorded = {p: tuple(cache[n] for n in group) for p, group in extra.items()}
    return CleanRun(tuple(cache[n] for n in names), cache["encoder.hook_ln_post"], recorded)


def seed_encodings(model: HookedWhisper, source: CleanRun) -> dict[Cell, torch.Tensor]:
    """The seed's patch for every (S, L): block L's whole output := the source's block-S output.

    The target's audio plays no part, so this is the encoder output for every target of
    this source word. Off-diagonal cells continue from block ``L + 1`` (one batch over S per
    L); the diagonal is the clean source run itself.
    """
    n = len(source.states)
    out: dict[Cell, torch.Tensor] = {}
    for target_layer in range(n):
        sources = [s for s in range(n) if s != target_layer]
        if sources:
            batch_BFD = torch.cat([source.states[s] for s in sources])
            enc_BFD = model.encode_from(target_layer + 1, batch_BFD)
            for i, s in enumerate(sources):
                out[(s, target_layer)] = enc_BFD[i : i + 1]
        out[(target_layer, target_layer)] = source.enc_1FD
    return out


def align_windows(
    source_span: tuple[int, int], target_span: tuple[int, int], margin: int, n_frames: int
) -> Window:
    """Windows of equal length starting ``margin`` frames before each word's onset.

    The length covers the longer of the two words plus ``margin`` frames on both sides,
    trimmed to stay inside both clips' ``n_frames`` frames.
    """
    length = max(source_span[1] - source_span[0], target_span[1] - target_span[0]) + 2 * margin
    t0, s0 = target_span[0] - margin, source_span[0] - margin
    cut = max(0, -t0, -s0)
    t0, s0, length = t0 + cut, s0 + cut, length - cut
    length = min(length, n_frames - t0, n_frames - s0)
    if length < 1:
        raise ValueError(f"no frames to patch for spans {source_span} -> {target_span}")
    return Window(t0, s0, length)


def span_encodings(
    model: HookedWhisper,
    target: CleanRun,
    source_states: Sequence[torch.Tensor],
    window: Window,
    cells: Sequence[Cell],
) -> dict[Cell, torch.Tensor]:
    """Encoder outputs with the target's block-L output at ``window.target_slice`` replaced
    by the source's block-S frames at ``window.source_slice``, for each (S, L) in ``cells``.

    ``source_states`` are the source's block outputs [1, frames, d] (whole clips or any
    frames that contain ``window.source_slice``, indexed as in the clip).
    """
    out: dict[Cell, torch.Tensor] = {}
    for target_layer in sorted({c[1] for c in cells}):
        layer_cells = [c for c in cells if c[1] == target_layer]
        states_BFD = target.states[target_layer].expand(len(layer_cells), -1, -1).clone()
        for i, (s, _) in enumerate(layer_cells):
            states_BFD[i, window.target_slice] = source_states[s][0, window.source_slice]
        enc_BFD = model.encode_from(target_layer + 1, states_BFD)
        for i, cell in enumerate(layer_cells):
            out[cell] = enc_BFD[i : i + 1]
    return out


def interpolate_encodings(
    model: HookedWhisper,
    target: CleanRun,
    source_states: Sequence[torch.Tensor],
    window: Window,
    alphas: Sequence[float] = ALPHAS,
) -> dict[tuple[int, float], torch.Tensor]:
    """Encoder outputs with block L's output in the target window set to
    ``(1 - alpha) * target + alpha * source`` (the source's block-L frames, S = L), for every
    (L, alpha); alpha 0 is the clean target, alpha 1 the span patch of the diagonal."""
    out: dict[tuple[int, float], torch.Tensor] = {}
    for layer, target_1FD in enumerate(target.states):
        states_BFD = target_1FD.expand(len(alphas), -1, -1).clone()
        t_rows = target_1FD[0, window.target_slice]
        s_rows = source_states[layer][0, window.source_slice]
        for i, alpha in enumerate(alphas):
            states_BFD[i, window.target_slice] = torch.lerp(t_rows, s_rows, float(alpha))
        enc_BFD = model.encode_from(layer + 1, states_BFD)
        for i, alpha in enumerate(alphas):
            out[(layer, float(alpha))] = enc_BFD[i : i + 1]
    return out


def component_encodings(
    model: HookedWhisper,
    target: CleanRun,
    source: CleanRun,
    window: Window,
    components: Sequence[str] = COMPONENTS,
) -> dict[tuple[int, str], torch.Tensor]:
    """Encoder outputs with one component of block L (its attention output, MLP output or
    the residual after attention) in the target window replaced by the source's, S = L.

    Block L reruns from the target's block input with the patch hook active
    (:meth:`HookedWhisper.encode_from`), so what the block computes after the patched
    component sees it. ``target`` needs the point ``hook_resid_pre``, ``source`` the
    ``components`` (:func:`clean_run` ``points=``).
    """
    out: dict[tuple[int, str], torch.Tensor] = {}
    for layer in range(len(target.states)):
        block_input = target.points["hook_resid_pre"][layer]
        for comp in components:
            rows = source.points[f"hook_{comp}"][layer][0, window.source_slice]
            with model.patch(f"encoder.blocks.{layer}.hook_{comp}", rows, window.target_slice):
                out[(layer, comp)] = model.encode_from(layer, block_input)
    return out


@dataclass(frozen=True)
class CellScores:
    """What the decoder makes of one encoder output."""

    transcript: str  # greedy continuation after the forced prefix
    truncated: bool  # decoding hit max_new_tokens
    logprobs: tuple[float, ...]  # per candidate (log p of carrier rest with that word)


def score_cells(
    model: HookedWhisper,
    encs: Sequence[torch.Tensor],
    candidates: Sequence[str],
    *,
    language: str,
    prefix: str | None,
    max_new_tokens: int,
    follow: bool = False,
) -> list[CellScores]:
    """Greedy continuation after ``prefix`` and candidate log-probs for each encoder output.

    With ``follow`` the encoder outputs come in pairs and each odd row decodes the tokens
    its even neighbour chose (the same tokens, see :func:`decoder_scores`).

    Equal to :func:`whisperlens.decoding.decode` (``prefix=``) and
    :func:`whisperlens.scoring.score_encoded` (``carrier=prefix``,
    ``variants=case_and_period``) run separately, but the prompt and prefix run once for
    a batch of cells, so each cell's cross-attention keys and values are computed once and shared
    by decoding and every candidate (the self-attention cache is cropped back to the prefix
    between them). ``candidates`` are the scored texts after the prefix ("bat.", "pat.").

    At most :data:`CELL_BATCH` encoder outputs are decoded together: their cross-attention
    keys and values (2 x layers x batch x 1500 x d floats, 240 MB for 13 cells of tiny.en)
    are what scoring holds at its peak. Smaller batches give the same numbers here (measured
    bit for bit on tiny.en) and took the same time per source word.
    """
    prompt = scoring_prefix(model, language, "transcribe", None, prefix)
    tok = model.processor.tokenizer
    out: list[CellScores] = []
    for i in range(0, len(encs), CELL_BATCH):
        enc_BFD = torch.cat(list(encs[i : i + CELL_BATCH]))
        logits_BTV, cache = decoder_step(model, enc_BFD, torch.tensor([prompt] * len(enc_BFD)))
        first_BV = logits_BTV[:, -1].float()
        tokens, truncated = _greedy(
            model, enc_BFD, first_BV, cache, len(prompt), max_new_tokens, follow
        )
        lp_BC = _candidate_logprobs(model, enc_BFD, first_BV, cache, len(prompt), candidates)
        out += [
            CellScores(tok.decode(t).strip(), cut, tuple(float(x) for x in lp_BC[b]))
            for b, (t, cut) in enumerate(zip(tokens, truncated, strict=True))
        ]
        del cache  # this batch's cross-attention keys and values, before the next batch's
    return out


def _greedy(
    model: HookedWhisper,
    enc_BFD: torch.Tensor,
    first_BV: torch.Tensor,
    cache: Any,
    n_prompt: int,
    max_new_tokens: int,
    follow: bool = False,
) -> tuple[list[list[int]], list[bool]]:
    """Greedy ids after the prompt (:func:`whisperlens.decoding.greedy_continue`); the cache
    is cropped back to the prompt afterwards. ``follow``: odd rows copy the even rows' ids."""
    limit = token_limit(model, n_prompt, max_new_tokens)
    decoded = greedy_continue(model, enc_BFD, first_BV, cache, limit,
                              tie=_follow_even_rows if follow else None)  # fmt: skip
    _crop(cache, n_prompt)
    return [ids for ids, _ in decoded], [len(ids) == limit for ids, _ in decoded]


def _follow_even_rows(next_B: torch.Tensor) -> torch.Tensor:
    """Each odd row takes the token its even neighbour chose (source decodes target's)."""
    out = next_B.clone()
    out[1::2] = next_B[0::2]
    return out


def _candidate_logprobs(
    model: HookedWhisper,
    enc_BFD: torch.Tensor,
    first_BV: torch.Tensor,
    cache: Any,
    n_prompt: int,
    candidates: Sequence[str],
) -> torch.Tensor:
    """[cells, candidates]: each candidate's logsumexp over its case/period spellings of
    log p(spelling tokens + <|endoftext|> | prompt).

    A spelling's tokens after its first are read from one teacher-forced decoder step over
    all cells on the shared cache (cropped back to the prompt after it); a spelling whose
    fed tokens begin another's ("bat" in "bat.") is read from that step's logits. Only the
    log-probs some spelling reads are kept from a step, not its [cells, T, vocab] tensor.
    """
    st = special_tokens(model)
    tok = model.processor.tokenizer
    first_lp_BV = first_BV.log_softmax(-1)
    spellings = [[(*text_ids(tok, t), st.eot) for t in case_and_period(c)] for c in candidates]
    longer = {ids for group in spellings for ids in group if len(ids) > 1}
    read: dict[tuple[int, ...], torch.Tensor] = {}  # spelling -> [cells, tokens after first]
    for feed in sorted({ids[:-1] for ids in longer}, key=len, reverse=True):
        todo = [ids for ids in longer if ids not in read and feed[: len(ids) - 1] == ids[:-1]]
        if all(ids[:-1] != feed for ids in todo):
            continue  # read from a longer feed that begins with this one
        ids_BT = torch.tensor([list(feed)] * first_BV.shape[0])
        logits_BTV, cache = decoder_step(model, enc_BFD, ids_BT, cache)
        lp_BTV = logits_BTV.float().log_softmax(-1)
        for ids in todo:
            read[ids] = torch.stack([lp_BTV[:, i, t] for i, t in enumerate(ids[1:])], -1)
        del logits_BTV, lp_BTV  # before the next step's
        _crop(cache, n_prompt)
    out = []
    for group in spellings:
        per_spelling = []
        for ids in group:
            lp_B = first_lp_BV[:, ids[0]].double()
            for i in range(len(ids) - 1):
                lp_B = lp_B + read[ids][:, i].double()
            per_spelling.append(lp_B)
        out.append(torch.stack(per_spelling, -1).logsumexp(-1))
    return torch.stack(out, -1).float().cpu()


def decoder_scores(
    model: HookedWhisper,
    target_enc: torch.Tensor,
    source_enc: torch.Tensor,
    candidates: Sequence[str],
    *,
    language: str,
    prefix: str | None,
    max_new_tokens: int,
) -> dict[int, CellScores]:
    """Per decoder block k: the target run with block k's cross-attention output replaced by
    its value under the source audio for the same tokens.

    Target and source run as one batch of two; the source row decodes the target row's
    tokens (``follow``) and a hook copies its ``hook_cross_attn_out`` into the target row.
    """
    pair_BFD = torch.cat([target_enc, source_enc])
    out: dict[int, CellScores] = {}
    for block in range(model.n_decoder_layers):
        with model.edit(f"decoder.blocks.{block}.hook_cross_attn_out", _source_into_target):
            scores = score_cells(model, [pair_BFD], candidates, language=language,
                                 prefix=prefix, max_new_tokens=max_new_tokens, follow=True)  # fmt: skip
        out[block] = scores[0]
    return out


def _source_into_target(rows: torch.Tensor, _site: object) -> torch.Tensor:
    """Rows [target, source, target, source, ...]: each target row := its source row."""
    out = rows.clone()
    out[0::2] = rows[1::2]
    return out


def _crop(cache: Any, n_tokens: int) -> None:
    """Cut the self-attention cache back to its first ``n_tokens`` (cross-attention stays)."""
    extra = int(cache.get_seq_length()) - n_tokens
    if extra > 0:
        cache.crop(-extra)
