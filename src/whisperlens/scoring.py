"""Scoring Whisper outputs: teacher-forced log-probabilities of candidate transcripts.

Decoding (greedy transcription, prompts, language identification) lives in
:mod:`whisperlens.decoding`; normalisation and WER/CER in :mod:`whisperlens.metrics`.

Candidate scoring (:func:`score_encoded` on an encoder output, :func:`candidate_logprobs`
on audio) teacher-forces, for each candidate, the decoder sequence ::

    [<|startofprev|> " "+prompt]  <|startoftranscript|> [<|LANG|> <|TASK|>] <|notimestamps|>
    [" "+carrier]  " "+candidate  [<|endoftext|>]

(bracketed parts are optional; ``<|LANG|> <|TASK|>`` only on multilingual models) and sums
log P(token | everything before it) over the candidate's tokens and ``<|endoftext|>``
(``include_eot=True``). Text is encoded with one leading space, as Whisper's decoder emits
the first word (" Apple." is ids [4196, 13] on tiny.en). Prompt and carrier tokens are
given, not scored: with ``carrier="The word is"`` and candidates ``["apple.", "table."]``
the scores differ only through the candidate tokens, so differences and the softmax over
candidates equal those of scoring the full sentences "The word is apple." and "The word is
table." (the carrier's log-prob is a shared constant; GPT-2 byte-level BPE splits on the
space before each word, so the carrier's tokens are the same either way).

Whisper usually writes a lone word capitalised with a period (" Apple."). To compare
candidates fairly regardless of casing and punctuation, pass ``variants=case_and_period``:
each candidate's score is then ``logsumexp`` over the log-probs of its spellings
(lowercase / Capitalised, with / without a trailing ".") -- the probability that the model
writes *that word* in any of these forms. ``variants=None`` scores the text exactly as given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from whisperlens.decoding import (
    DecodingError,
    Encoded,
    Task,
    as_encoded,
    decoder_step,
    encode,
    prompt_ids,
    resolve_languages,
    special_tokens,
)
from whisperlens.features import AudioLike, AudioOrFeatures, WhisperLike, as_features
from whisperlens.tokens import SpecialTokens, text_ids

__all__ = [
    "ForcedChoiceResult",
    "Variants",
    "candidate_logprobs",
    "case_and_period",
    "forced_choice",
    "score_encoded",
    "scoring_prefix",
    "sequence_logprobs",
]

Variants = Callable[[str], list[str]]


def case_and_period(text: str) -> list[str]:
    """Spellings of ``text``: lowercase and Capitalised, each without and with a final ".".

    ``"bat"`` -> ``["bat", "bat.", "Bat", "Bat."]``. Only the first letter's case and one
    trailing period vary; other punctuation is kept as given.
    """
    core = text.strip().removesuffix(".")
    cased = dict.fromkeys([core.lower(), core[:1].upper() + core[1:].lower()])
    return list(dict.fromkeys(s for c in cased for s in (c, c + ".")))


def scoring_prefix(
    model: WhisperLike,
    language: str | None,
    task: Task = "transcribe",
    prompt: str | None = None,
    carrier: str | None = None,
) -> list[int]:
    """Teacher-forced, unscored decoder ids before each candidate (see the module docstring)."""
    st = special_tokens(model)
    tok = model.processor.tokenizer
    prev = [st.sot_prev, *text_ids(tok, prompt)] if prompt else []
    return prev + prompt_ids(st, language, task) + text_ids(tok, carrier)


def sequence_logprobs(
    model: WhisperLike,
    enc_1FD: torch.Tensor,
    prefix: list[int],
    continuations: Sequence[list[int]],
    chunk_size: int = 64,
) -> torch.Tensor:
    """Summed log-prob [n_continuations] of each continuation after ``prefix`` (teacher forced).

    The prefix runs once per chunk (batch 1, filling the self- and cross-attention cache);
    the cache is repeated over the chunk's continuations, which run as one right-padded batch
    (padding sits after the real tokens, so causal attention never sees it).
    """
    n_ctx = int(model.model.config.max_target_positions)
    if not continuations or min(map(len, continuations)) == 0:
        raise DecodingError("every candidate needs at least one token", "pass non-empty text")
    if len(prefix) + max(map(len, continuations)) > n_ctx:
        raise DecodingError(f"prompt + candidate is longer than the decoder's {n_ctx} positions")
    parts = [
        _chunk_logprobs(model, enc_1FD, prefix, list(continuations[i : i + chunk_size]))
        for i in range(0, len(continuations), chunk_size)
    ]
    return torch.cat(parts)


def _chunk_logprobs(
    model: WhisperLike, enc_1FD: torch.Tensor, prefix: list[int], seqs: list[list[int]]
) -> torch.Tensor:
    logits_1TV, kv_cache = decoder_step(model, enc_1FD, torch.tensor([prefix]))
    first_lp_V = logits_1TV[0, -1].float().log_softmax(-1)
    n_seq, max_len = len(seqs), max(map(len, seqs))
    ids_SL = torch.tensor([s + [s[-1]] * (max_len - len(s)) for s in seqs], device=enc_1FD.device)
    lp_SL = torch.zeros(n_seq, max_len, dtype=torch.float64, device=enc_1FD.device)
    lp_SL[:, 0] = first_lp_V[ids_SL[:, 0]].double()
    if max_len > 1:
        kv_cache.batch_repeat_interleave(n_seq)
        enc_SFD = enc_1FD.expand(n_seq, -1, -1)
        logits_STV, _ = decoder_step(model, enc_SFD, ids_SL[:, :-1], kv_cache)
        lp_STV = logits_STV.float().log_softmax(-1)
        lp_SL[:, 1:] = lp_STV.gather(-1, ids_SL[:, 1:, None])[..., 0].double()
    lengths_S = torch.tensor([len(s) for s in seqs], device=enc_1FD.device)
    real_SL = torch.arange(max_len, device=enc_1FD.device)[None, :] < lengths_S[:, None]
    return torch.where(real_SL, lp_SL, 0.0).sum(-1).float().cpu()


def score_encoded(
    model: WhisperLike,
    encoded: Encoded,
    candidates: Sequence[str] | Sequence[Sequence[str]],
    *,
    language: str | None = None,
    task: Task = "transcribe",
    prompt: str | None = None,
    carrier: str | None = None,
    include_eot: bool = True,
    variants: Variants | None = None,
) -> torch.Tensor:
    """Teacher-forced log-probability [batch, n_candidates] of each candidate transcript,
    given encoder outputs (``whisperlens.decoding.encode``'s tensor [batch, 1500, d] or
    [1500, d], or an ActivationCache holding ``encoder.hook_ln_post``).

    ``candidates`` is one list of strings used for every clip, or one list per clip (all of
    the same length). The decoder sequence scored is in the module docstring: optional
    ``prompt`` (after ``<|startofprev|>``) and ``carrier`` text are forced but not scored;
    the candidate's tokens and, with ``include_eot``, ``<|endoftext|>`` are summed.
    ``language=None`` means English on ``.en`` models and, on multilingual models, each
    clip's most probable language token (as ``decoding.decode`` does). With ``variants``
    (e.g. :func:`case_and_period`) a candidate scores the logsumexp over its spellings.

    A clip's candidates (and variants) share one prefix pass and run as one decoder batch.
    """
    st = special_tokens(model)
    enc_BFD = as_encoded(model, encoded)
    per_clip = _candidates_per_clip(candidates, enc_BFD.shape[0])
    rows = []
    for b, cands in enumerate(per_clip):
        enc_1FD = enc_BFD[b : b + 1]
        [lang] = resolve_languages(model, enc_1FD, language)
        prefix = scoring_prefix(model, lang, task, prompt, carrier)
        rows.append(_score_candidates(model, enc_1FD, prefix, cands, st, include_eot, variants))
    return torch.stack(rows)


def candidate_logprobs(
    model: WhisperLike,
    audio_or_features: AudioOrFeatures,
    candidates: Sequence[str] | Sequence[Sequence[str]],
    *,
    language: str | None = None,
    task: Task = "transcribe",
    prompt: str | None = None,
    carrier: str | None = None,
    include_eot: bool = True,
    variants: Variants | None = None,
) -> torch.Tensor:
    """:func:`score_encoded` of 16 kHz clips (one array, a list) or log-mel features:
    [n_clips, n_candidates]. The encoder runs once per clip (options as score_encoded)."""
    features_BMT = as_features(model, audio_or_features)
    per_clip = _candidates_per_clip(candidates, features_BMT.shape[0])
    rows = [
        score_encoded(
            model,
            encode(model, features_BMT[b : b + 1]),
            [cands],
            language=language,
            task=task,
            prompt=prompt,
            carrier=carrier,
            include_eot=include_eot,
            variants=variants,
        )[0]
        for b, cands in enumerate(per_clip)
    ]
    return torch.stack(rows)


def _candidates_per_clip(
    candidates: Sequence[str] | Sequence[Sequence[str]], n_clips: int
) -> list[list[str]]:
    if not candidates:
        raise DecodingError("no candidates given", "pass at least one candidate transcript")
    if all(isinstance(c, str) for c in candidates):
        return [list(candidates)] * n_clips  # type: ignore[arg-type]
    per_clip = [list(c) for c in candidates]
    if len(per_clip) != n_clips or len({len(c) for c in per_clip}) != 1:
        raise DecodingError(
            f"got {len(per_clip)} candidate lists for {n_clips} clips",
            "pass one list of strings for all clips, or one equally long list per clip",
        )
    return per_clip  # type: ignore[return-value]


def _score_candidates(
    model: WhisperLike,
    enc_1FD: torch.Tensor,
    prefix: list[int],
    cands: list[str],
    st: SpecialTokens,
    include_eot: bool,
    variants: Variants | None,
) -> torch.Tensor:
    tok = model.processor.tokenizer
    eot = [st.eot] if include_eot else []
    seqs, owner = [], []
    for i, cand in enumerate(cands):
        for text in variants(cand) if variants else [cand]:
            seqs.append(text_ids(tok, text) + eot)
            owner.append(i)
    lp_S = sequence_logprobs(model, enc_1FD, prefix, seqs)
    owner_S = torch.tensor(owner)
    return torch.stack([lp_S[owner_S == i].logsumexp(0) for i in range(len(cands))])


@dataclass(frozen=True)
class ForcedChoiceResult:
    """Graded forced choice among candidate transcripts of one clip."""

    logprobs: torch.Tensor  # [n_candidates] from candidate_logprobs
    target: int  # index of the correct candidate
    choice: int  # argmax of logprobs
    margin: float  # logprobs[target] - max over the other candidates (> 0: target wins)
    p_target: float  # softmax(logprobs)[target]: probability of target among the candidates

    @property
    def correct(self) -> bool:
        return self.choice == self.target


def forced_choice(
    model: WhisperLike,
    audio: AudioLike,
    candidates: Sequence[str],
    target: int = 0,
    *,
    language: str | None = None,
    task: Task = "transcribe",
    prompt: str | None = None,
    carrier: str | None = None,
    include_eot: bool = True,
    variants: Variants | None = None,
) -> ForcedChoiceResult:
    """Score one clip's ``candidates`` against ``target`` (options as :func:`score_encoded`).

    ``audio`` is one 16 kHz waveform [samples] or its features [n_mels, 3000].
    """
    if len(candidates) < 2 or not 0 <= target < len(candidates):
        raise DecodingError(
            f"forced choice needs >= 2 candidates and 0 <= target < {len(candidates)}"
        )
    lp_BC = candidate_logprobs(
        model,
        audio,
        list(candidates),
        language=language,
        task=task,
        prompt=prompt,
        carrier=carrier,
        include_eot=include_eot,
        variants=variants,
    )
    if lp_BC.shape[0] != 1:
        raise DecodingError(f"forced_choice takes one clip, got {lp_BC.shape[0]}")
    lp_C = lp_BC[0]
    others_C = torch.cat([lp_C[:target], lp_C[target + 1 :]])
    return ForcedChoiceResult(
        logprobs=lp_C,
        target=target,
        choice=int(lp_C.argmax()),
        margin=float(lp_C[target] - others_C.max()),
        p_target=float(lp_C.softmax(-1)[target]),
    )
