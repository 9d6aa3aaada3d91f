"""Scoring Whisper outputs: forced-choice log-probabilities of candidate transcripts,
and word/character error rates on Whisper-normalised text.

Decoding itself (greedy transcription, prompts, language identification) lives in
:mod:`whisperlens.decoding`; its public names are re-exported here.

Candidate scoring (:func:`candidate_logprobs`) teacher-forces, for each candidate, the
decoder sequence ::

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

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from typing import Any

import jiwer
import torch
from transformers.models.whisper.english_normalizer import (
    BasicTextNormalizer,
    EnglishTextNormalizer,
)

from whisperlens.decoding import (
    DecodeOptions,
    DecodingError,
    Segment,
    SpecialTokens,
    Task,
    Transcript,
    WhisperLike,
    decoder_step,
    encode,
    features_of,
    language_code,
    language_probs,
    prompt_ids,
    special_tokens,
    transcribe,
)
from whisperlens.decoding import _language_logprobs as language_logprobs_from_encoder
from whisperlens.features import AudioLike, AudioOrFeatures

__all__ = [
    "DecodeOptions",
    "Segment",
    "Transcript",
    "transcribe",
    "language_probs",
    "candidate_logprobs",
    "forced_choice",
    "ForcedChoiceResult",
    "case_and_period",
    "scoring_prefix",
    "sequence_logprobs",
    "normalize",
    "word_present",
    "wer",
    "cer",
    "ErrorCounts",
    "ErrorRates",
]

SPELLING_FILE = "whisper_english_spelling.json"  # in whisperlens/data, from openai-whisper (MIT)
Variants = Callable[[str], list[str]]


def case_and_period(text: str) -> list[str]:
    """Spellings of ``text``: lowercase and Capitalised, each without and with a final ".".

    ``"bat"`` -> ``["bat", "bat.", "Bat", "Bat."]``. Only the first letter's case and one
    trailing period vary; other punctuation is kept as given.
    """
    core = text.strip().removesuffix(".")
    cased = dict.fromkeys([core.lower(), core[:1].upper() + core[1:].lower()])
    return list(dict.fromkeys(s for c in cased for s in (c, c + ".")))


def _text_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` with exactly one leading space (as Whisper emits a first word)."""
    return list(tokenizer.encode(" " + text.strip(), add_special_tokens=False)) if text else []


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
    prev = [st.sot_prev, *_text_ids(tok, prompt)] if prompt else []
    return prev + prompt_ids(st, language, task) + _text_ids(tok, carrier or "")


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
    """Teacher-forced log-probability [n_clips, n_candidates] of each candidate transcript.

    ``candidates`` is one list of strings used for every clip, or one list per clip (all of
    the same length). The decoder sequence scored is in the module docstring: optional
    ``prompt`` (after ``<|startofprev|>``) and ``carrier`` text are forced but not scored;
    the candidate's tokens and, with ``include_eot``, ``<|endoftext|>`` are summed.
    ``language=None`` means English on ``.en`` models and, on multilingual models, each
    clip's most probable language token (as :func:`transcribe` does). With ``variants``
    (e.g. :func:`case_and_period`) a candidate scores the logsumexp over its spellings.

    The encoder runs once per clip; a clip's candidates (and variants) share one prefix
    pass and run as one batch on the decoder.
    """
    st = special_tokens(model)
    features_BMT = features_of(model, audio_or_features)
    per_clip = _candidates_per_clip(candidates, features_BMT.shape[0])
    rows = []
    for b, cands in enumerate(per_clip):
        enc_1FD = encode(model, features_BMT[b : b + 1])
        lang = _clip_language(model, enc_1FD, st, language)
        prefix = scoring_prefix(model, lang, task, prompt, carrier)
        rows.append(_score_candidates(model, enc_1FD, prefix, cands, st, include_eot, variants))
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


def _clip_language(
    model: WhisperLike, enc_1FD: torch.Tensor, st: SpecialTokens, language: str | None
) -> str | None:
    if language is not None or not st.multilingual:
        return None if language is None else language_code(language)
    best = int(language_logprobs_from_encoder(model, enc_1FD, st)[0].argmax())
    return list(st.languages)[best]


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
            seqs.append(_text_ids(tok, text) + eot)
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
    """Score one clip's ``candidates`` against ``target`` (options as :func:`candidate_logprobs`).

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


@cache
def _english_normalizer() -> EnglishTextNormalizer:
    spelling = resources.files("whisperlens").joinpath("data", SPELLING_FILE).read_text("utf-8")
    return EnglishTextNormalizer(json.loads(spelling))


@cache
def _basic_normalizer() -> BasicTextNormalizer:
    return BasicTextNormalizer()


def normalize(text: str, language: str | None = "en") -> str:
    """Text as Whisper's evaluations compare it.

    English (``language="en"``): transformers' ``EnglishTextNormalizer`` with Whisper's
    British->American spelling map (lowercase, no punctuation or fillers, numbers as digits,
    contractions expanded). Any other language (or None): ``BasicTextNormalizer`` (lowercase,
    symbols and bracketed text removed, diacritics kept). Whitespace is collapsed and stripped.
    """
    code = None if language is None else language_code(language)
    normalizer = _english_normalizer() if code == "en" else _basic_normalizer()
    return " ".join(normalizer(text).split())


def word_present(word: str, text: str, language: str | None = "en") -> bool:
    """Whether ``word`` (or a phrase) occurs as whole normalised word(s) in ``text``."""
    needle, words = normalize(word, language).split(), normalize(text, language).split()
    if not needle:
        return False
    n = len(needle)
    return any(words[i : i + n] == needle for i in range(len(words) - n + 1))


@dataclass(frozen=True)
class ErrorCounts:
    """Edit-distance counts of one hypothesis (or a corpus) against its reference."""

    n_substitutions: int
    n_deletions: int
    n_insertions: int
    n_ref: int  # reference words (WER) or characters (CER), after normalisation

    @property
    def n_errors(self) -> int:
        return self.n_substitutions + self.n_deletions + self.n_insertions

    @property
    def rate(self) -> float:
        """Errors / reference units; an empty reference gives 0 (no errors) or inf."""
        if self.n_ref == 0:
            return 0.0 if self.n_errors == 0 else math.inf
        return self.n_errors / self.n_ref


@dataclass(frozen=True)
class ErrorRates:
    """Corpus-level error rate (summed counts) and the per-utterance counts."""

    rate: float  # sum of errors / sum of reference units
    counts: ErrorCounts  # summed over utterances
    per_utterance: tuple[ErrorCounts, ...]


def wer(
    refs: str | Sequence[str], hyps: str | Sequence[str], language: str | None = "en"
) -> ErrorRates:
    """Word error rate on :func:`normalize`-d text (jiwer word alignment)."""
    return _error_rates(refs, hyps, language, jiwer.process_words)


def cer(
    refs: str | Sequence[str], hyps: str | Sequence[str], language: str | None = "en"
) -> ErrorRates:
    """Character error rate on :func:`normalize`-d text (spaces count as characters)."""
    return _error_rates(refs, hyps, language, jiwer.process_characters)


def _error_rates(
    refs: str | Sequence[str],
    hyps: str | Sequence[str],
    language: str | None,
    align: Callable[[str, str], Any],
) -> ErrorRates:
    refs_l = [refs] if isinstance(refs, str) else list(refs)
    hyps_l = [hyps] if isinstance(hyps, str) else list(hyps)
    if len(refs_l) != len(hyps_l):
        raise ValueError(f"{len(refs_l)} references but {len(hyps_l)} hypotheses")
    per = []
    for ref, hyp in zip(refs_l, hyps_l, strict=True):
        out = align(normalize(ref, language), normalize(hyp, language))
        n_ref = out.hits + out.substitutions + out.deletions
        per.append(ErrorCounts(out.substitutions, out.deletions, out.insertions, n_ref))
    total = ErrorCounts(*(sum(getattr(c, f.name) for c in per) for f in fields(ErrorCounts)))
    return ErrorRates(rate=total.rate, counts=total, per_utterance=tuple(per))
