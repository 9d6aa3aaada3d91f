"""Greedy Whisper decoding with explicit prompts, and spoken-language identification.

Everything here calls ``model.model`` (the transformers ``WhisperForConditionalGeneration``)
module by module, so hooks that :class:`whisperlens.hooks.HookedWhisper` installs on its
submodules apply. ``model`` is anything with ``.model`` and ``.processor`` (a
``LoadedWhisper`` or a ``HookedWhisper``).

The seam between audio and text: :func:`encode` is the one entry to the encoder (audio or
log-mel features -> encoder output [batch, 1500, d_model], after the final LayerNorm);
:func:`decode` and :func:`detect_language` (and
:func:`whisperlens.scoring.score_encoded`) take that encoder output -- a tensor, or an
:class:`~whisperlens.cache.ActivationCache` holding ``encoder.hook_ln_post`` -- so a clip
is encoded once and then decoded, scored or patched. :func:`transcribe` is ``encode`` then
``decode`` per batch; :func:`language_probs` is ``encode`` then ``detect_language``.

Prompts (decoder input before the first generated token), as openai-whisper builds them:

- multilingual: ``<|startoftranscript|><|LANG|><|TASK|><|notimestamps|>``
  (ids for English transcription on base: 50258, 50259, 50359, 50363)
- English-only (``.en``): ``<|startoftranscript|><|notimestamps|>`` (tiny.en: 50257, 50362)
- with ``timestamps=True`` the trailing ``<|notimestamps|>`` is left out.

Decoding is greedy (argmax), one encoder pass per batch, a key/value cache on the decoder.
It runs to ``<|endoftext|>``, or to ``DecodeOptions.max_new_tokens`` when that is set; by
default the only limit is the decoder's context (448 tokens, ``max_target_positions``,
less the prompt). A transcript that stops at a limit before ``<|endoftext|>`` has
``truncated=True``, and each call that truncates warns once (:class:`TruncationWarning`).
Before the argmax these logit filters apply, in this order (the log-probabilities that
``avg_logprob`` averages are taken after them, as openai-whisper does):

1. ``generation_config.suppress_tokens`` if the model has it, plus always the control
   tokens (start-of-transcript, start-of-prev, start-of-LM, no-speech, task, language and
   ``<|notimestamps|>``) and, without timestamps, every timestamp token;
2. on the first generated token only, ``generation_config.begin_suppress_tokens``, or when
   the model has no such list (None) the blank " " and ``<|endoftext|>`` (openai-whisper's ``suppress_blank``);
3. with timestamps, openai-whisper's timestamp rules: the first token is a timestamp of at
   most 1 s; timestamps come in pairs and never decrease; when the timestamp tokens together
   are more probable than the best text token, a timestamp is forced.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

from whisperlens.cache import ActivationCache
from whisperlens.errors import ShapeError, WhisperlensError
from whisperlens.features import AudioOrFeatures, WhisperLike, as_features
from whisperlens.frames import ENCODER_FRAME_SECONDS, N_ENCODER_FRAMES
from whisperlens.tokens import SpecialTokens, TokenizerError, read_special_tokens, text_ids

Task = Literal["transcribe", "translate"]
Encoded = torch.Tensor | ActivationCache  # encoder output [batch, 1500, d] / [1500, d], or a cache
TIMESTAMP_SECONDS = ENCODER_FRAME_SECONDS  # one timestamp token step: 0.02 s
MAX_INITIAL_TIMESTAMP_S = 1.0  # openai-whisper's default max_initial_timestamp
NEG_INF = float("-inf")
ENCODER_OUTPUT_SITE = "encoder.hook_ln_post"  # what an ActivationCache holds for the decoder


class DecodingError(WhisperlensError, ValueError):
    """Options that do not fit the model (or each other)."""


class TruncationWarning(UserWarning):
    """Decoding stopped at a token limit before ``<|endoftext|>``: the text is cut short."""


def language_code(language: str) -> str:
    """A Whisper language code ("en") from a code or an English name ("English", "spanish")."""
    key = language.strip().lower()
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    raise DecodingError(
        f"unknown language {language!r}",
        "use a Whisper language code such as 'en', 'es', 'de' (see "
        "transformers.models.whisper.tokenization_whisper.LANGUAGES)",
    )


@dataclass(frozen=True)
class DecodeOptions:
    """How :func:`transcribe` and :func:`decode` decode. Validated on construction; model fit
    checked at use."""

    language: str | None = None  # Whisper code or name; None = detect (multilingual) / "en"
    task: Task = "transcribe"  # "translate" = into English (multilingual models only)
    max_new_tokens: int | None = None  # limit per clip incl. <|endoftext|>; None: the context
    timestamps: bool = False  # predict timestamp tokens and return segments
    batch_size: int = 8  # clips per encoder pass

    def __post_init__(self) -> None:
        if self.language is not None:
            object.__setattr__(self, "language", language_code(self.language))
        if self.task not in get_args(Task):
            raise DecodingError(f"unknown task {self.task!r}", f"use one of {get_args(Task)}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise DecodingError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise DecodingError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class Segment:
    """A stretch of text between two timestamp tokens (times in seconds from clip start)."""

    start: float
    end: float | None  # None when decoding stopped before the closing timestamp
    text: str
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class Transcript:
    """One clip's greedy transcript."""

    text: str  # decoded text tokens, stripped (after decode(prefix=...): the continuation)
    language: str  # the language token used (detected or given); "en" for .en models
    tokens: tuple[int, ...]  # generated ids after the prompt (and prefix), no <|endoftext|>
    avg_logprob: float  # mean log-prob of generated tokens incl. <|endoftext|> (filtered logits)
    segments: tuple[Segment, ...] = ()  # only with timestamps=True
    truncated: bool = False  # stopped at the token limit before <|endoftext|>: text cut short


def special_tokens(model: WhisperLike) -> SpecialTokens:
    """Control-token ids read from the model's tokenizer (checked against its vocabulary)."""
    try:
        return read_special_tokens(model.processor.tokenizer, int(model.model.config.vocab_size))
    except TokenizerError as exc:
        raise DecodingError(exc.cause, exc.fix) from None


def check_language_task(st: SpecialTokens, language: str | None, task: Task) -> None:
    """Refuse a language or task the model cannot take (.en models: English transcription)."""
    if not st.multilingual:
        if language not in (None, "en"):
            raise DecodingError(
                f"this English-only (.en) model cannot take language {language!r}",
                "leave language unset (or 'en'), or load a multilingual model such as 'base'",
            )
        if task != "transcribe":
            raise DecodingError(
                f"this English-only (.en) model cannot {task}",
                "use task='transcribe', or load a multilingual model such as 'base'",
            )
    elif language is not None and language not in st.languages:
        raise DecodingError(f"this model's vocabulary has no <|{language}|> token")


def prompt_ids(
    st: SpecialTokens, language: str | None, task: Task = "transcribe", timestamps: bool = False
) -> list[int]:
    """Decoder prompt: ``sot [lang task] [notimestamps]`` (see the module docstring)."""
    language = None if language is None else language_code(language)
    check_language_task(st, language, task)
    ids = [st.sot]
    if st.multilingual:
        if language is None:
            raise DecodingError("a multilingual prompt needs a language", "pass e.g. 'en'")
        ids += [st.languages[language], st.transcribe if task == "transcribe" else st.translate]
    if not timestamps:
        ids.append(st.notimestamps)
    return ids


def encode(model: WhisperLike, audio_or_features: AudioOrFeatures) -> torch.Tensor:
    """Encoder output [batch, 1500, d_model] (after the final LayerNorm) of 16 kHz audio (one
    1-D clip or a list) or log-mel features, checked by :func:`whisperlens.features.as_features`."""
    features_BMT = as_features(model, audio_or_features)
    with torch.no_grad():
        return model.model.get_encoder()(input_features=features_BMT).last_hidden_state


def as_encoded(model: WhisperLike, encoded: Encoded) -> torch.Tensor:
    """Encoder output [batch, 1500, d_model] on the model's device and dtype, from a tensor
    [batch, 1500, d] or [1500, d] (as :func:`encode` returns) or an ActivationCache that
    recorded ``encoder.hook_ln_post`` on all 1500 frames."""
    d_model = int(model.model.config.d_model)
    if isinstance(encoded, ActivationCache):
        index = encoded.frame_index
        full = index is None or torch.equal(index, torch.arange(N_ENCODER_FRAMES))
        if ENCODER_OUTPUT_SITE not in encoded or not full:
            raise ShapeError(
                f"the activation cache holds no full {ENCODER_OUTPUT_SITE} (all "
                f"{N_ENCODER_FRAMES} frames), the encoder output the decoder reads",
                f"record it with run_with_cache(audio, names='{ENCODER_OUTPUT_SITE}') and "
                "no frames=, or pass whisperlens.decoding.encode(model, audio)",
            )
        encoded = encoded[ENCODER_OUTPUT_SITE]
    if not isinstance(encoded, torch.Tensor) or encoded.ndim not in (2, 3):
        what = tuple(encoded.shape) if isinstance(encoded, torch.Tensor) else type(encoded)
        raise ShapeError(
            f"encoded must be a tensor [batch, {N_ENCODER_FRAMES}, d_model], got {what}",
            "pass whisperlens.decoding.encode(model, audio) or an ActivationCache",
        )
    enc_BFD = encoded if encoded.ndim == 3 else encoded.unsqueeze(0)
    if tuple(enc_BFD.shape[1:]) != (N_ENCODER_FRAMES, d_model):
        raise ShapeError(
            f"encoded has shape {tuple(encoded.shape)}; this model's encoder output is "
            f"[batch, {N_ENCODER_FRAMES}, {d_model}]",
            "pass whisperlens.decoding.encode(model, audio) for this model, on all frames",
        )
    param = next(model.model.parameters())
    return enc_BFD.to(device=param.device, dtype=param.dtype)


def decoder_step(
    model: WhisperLike, enc_BFD: torch.Tensor, ids_BT: torch.Tensor, cache: Any = None
) -> tuple[torch.Tensor, Any]:
    """Decoder logits [batch, T, vocab] for ``ids_BT`` after the cached tokens; new cache."""
    with torch.no_grad():
        out = model.model(
            encoder_outputs=BaseModelOutput(last_hidden_state=enc_BFD),
            decoder_input_ids=ids_BT.to(enc_BFD.device),
            past_key_values=cache,
            use_cache=True,
        )
    return out.logits, out.past_key_values


def require_multilingual(st: SpecialTokens) -> None:
    if not st.multilingual:
        raise DecodingError(
            "language identification needs a multilingual model; this one is English-only (.en)",
            "load a multilingual model such as 'base'",
        )


def _language_logprobs(
    model: WhisperLike, enc_BFD: torch.Tensor, st: SpecialTokens
) -> torch.Tensor:
    """Log-softmax [batch, n_languages] over the language tokens after <|startoftranscript|>."""
    require_multilingual(st)
    sot_B1 = torch.full((enc_BFD.shape[0], 1), st.sot, dtype=torch.long)
    logits_BTV, _ = decoder_step(model, enc_BFD, sot_B1)
    lang_ids = torch.tensor(list(st.languages.values()), device=logits_BTV.device)
    return logits_BTV[:, -1, lang_ids].float().log_softmax(-1)


def detect_language(model: WhisperLike, encoded: Encoded) -> list[dict[str, float]]:
    """Per clip, P(language) = softmax over the language tokens' logits at the first decoder
    step (decoder input ``<|startoftranscript|>`` only), keyed by code, most probable first.

    ``encoded`` is an encoder output (see :func:`as_encoded`); multilingual models only.
    """
    st = special_tokens(model)
    require_multilingual(st)
    probs_BL = _language_logprobs(model, as_encoded(model, encoded), st).exp()
    codes = list(st.languages)
    return [
        dict(sorted(zip(codes, row.tolist(), strict=True), key=lambda kv: -kv[1]))
        for row in probs_BL
    ]


def language_probs(
    model: WhisperLike, audio_or_features: AudioOrFeatures
) -> list[dict[str, float]]:
    """:func:`detect_language` of ``encode(model, audio_or_features)``."""
    require_multilingual(special_tokens(model))
    return detect_language(model, encode(model, audio_or_features))


def resolve_languages(model: WhisperLike, encoded: Encoded, language: str | None) -> list[str]:
    """The language each clip is decoded in: ``language`` if given, "en" on English-only
    models, else the clip's most probable language token (as :func:`detect_language`)."""
    st = special_tokens(model)
    enc_BFD = as_encoded(model, encoded)
    if language is not None or not st.multilingual:
        return [language_code(language or "en")] * enc_BFD.shape[0]
    codes = list(st.languages)
    return [codes[i] for i in _language_logprobs(model, enc_BFD, st).argmax(-1).tolist()]


def suppress_mask(model: WhisperLike, st: SpecialTokens, timestamps: bool) -> torch.Tensor:
    """Boolean [vocab]: tokens never generated (filter 1 of the module docstring)."""
    mask_V = torch.zeros(st.vocab_size, dtype=torch.bool)
    gen = getattr(model.model, "generation_config", None)
    listed = [t for t in (getattr(gen, "suppress_tokens", None) or []) if 0 <= t < st.vocab_size]
    mask_V[listed] = True
    mask_V[st.control_ids()] = True
    if not timestamps:
        mask_V[st.timestamp_begin :] = True
    return mask_V


def begin_suppress_ids(model: WhisperLike, st: SpecialTokens) -> list[int]:
    """Tokens refused as the first generated token (filter 2 of the module docstring)."""
    gen = getattr(model.model, "generation_config", None)
    listed = getattr(gen, "begin_suppress_tokens", None)
    if listed is not None:  # the model's own list, even when empty
        return [int(t) for t in listed]
    blank = model.processor.tokenizer.encode(" ", add_special_tokens=False)
    return [*blank, st.eot]


def apply_timestamp_rules(logits_V: torch.Tensor, generated: list[int], st: SpecialTokens) -> None:
    """openai-whisper's timestamp rules on one row of logits, in place (filter 3)."""
    ts0 = st.timestamp_begin
    if not generated:  # the first token is a timestamp <= MAX_INITIAL_TIMESTAMP_S
        logits_V[:ts0] = NEG_INF
        logits_V[ts0 + round(MAX_INITIAL_TIMESTAMP_S / TIMESTAMP_SECONDS) + 1 :] = NEG_INF
        return
    last_ts = generated[-1] >= ts0
    penultimate_ts = len(generated) < 2 or generated[-2] >= ts0
    if last_ts and penultimate_ts:  # a pair is complete: text or end next
        logits_V[ts0:] = NEG_INF
    elif last_ts:  # a segment is open: close it with a timestamp (or end)
        logits_V[: st.eot] = NEG_INF
    stamps = [t for t in generated if t >= ts0]
    if stamps:  # never decrease; a new segment has nonzero length
        floor = stamps[-1] if last_ts and not penultimate_ts else stamps[-1] + 1
        logits_V[ts0:floor] = NEG_INF
    logprobs_V = logits_V.log_softmax(-1)
    if logprobs_V[ts0:].logsumexp(-1) > logprobs_V[:ts0].max():
        logits_V[:ts0] = NEG_INF


def greedy_decode(
    model: WhisperLike,
    enc_BFD: torch.Tensor,
    prompts: list[list[int]],
    max_new_tokens: int | None = None,
    timestamps: bool = False,
) -> list[tuple[list[int], float]]:
    """Greedy continuation of equal-length ``prompts`` (one per row of ``enc_BFD``).

    Generates at most ``max_new_tokens`` tokens (<|endoftext|> included); None means as many
    as the decoder's context leaves after the prompt (:func:`token_limit`). Returns per row
    the generated ids (without <|endoftext|>) and the summed log-prob of the generated
    tokens including <|endoftext|> when it was reached. A row that stopped at the limit
    before <|endoftext|> holds exactly ``token_limit(...)`` ids.
    """
    if len({len(p) for p in prompts}) != 1:
        raise DecodingError("greedy_decode needs prompts of one length")
    limit = token_limit(model, len(prompts[0]), max_new_tokens)
    logits_BTV, cache = decoder_step(model, enc_BFD, torch.tensor(prompts, dtype=torch.long))
    return greedy_continue(model, enc_BFD, logits_BTV[:, -1], cache, limit, timestamps)


def greedy_continue(
    model: WhisperLike,
    enc_BFD: torch.Tensor,
    first_BV: torch.Tensor,
    cache: Any,
    limit: int,
    timestamps: bool = False,
    tie: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[tuple[list[int], float]]:
    """The greedy loop of :func:`greedy_decode`, from the prompt's last logits ``first_BV``
    [batch, vocab] and its key/value ``cache`` (extended in place), for at most ``limit``
    tokens. ``tie`` may rewrite each step's chosen ids [batch] (e.g. make rows decode the
    same tokens); the log-probs summed are those of the ids actually fed back.
    """
    st = special_tokens(model)
    mask_V = suppress_mask(model, st, timestamps).to(enc_BFD.device)
    begin = begin_suppress_ids(model, st)
    n_batch = first_BV.shape[0]
    generated: list[list[int]] = [[] for _ in range(n_batch)]
    sum_lp_B = torch.zeros(n_batch, dtype=torch.float64)
    done_B = torch.zeros(n_batch, dtype=torch.bool)
    last_BV = first_BV
    for step in range(limit):
        logits_BV = last_BV.float().masked_fill(mask_V, NEG_INF)
        if step == 0:
            logits_BV[:, begin] = NEG_INF
        if timestamps:
            for row, tokens in enumerate(generated):
                apply_timestamp_rules(logits_BV[row], tokens, st)
        next_B = torch.where(done_B, st.eot, logits_BV.argmax(-1).cpu())
        if tie is not None:
            next_B = tie(next_B)
        lp_B = logits_BV.log_softmax(-1).gather(-1, next_B[:, None].to(logits_BV.device))[:, 0]
        sum_lp_B += torch.where(done_B, 0.0, lp_B.double().cpu())
        for row in torch.nonzero(~done_B & (next_B != st.eot)).flatten().tolist():
            generated[row].append(int(next_B[row]))
        done_B |= next_B == st.eot
        if bool(done_B.all()) or step == limit - 1:
            break
        logits_BTV, cache = decoder_step(model, enc_BFD, next_B[:, None], cache)
        last_BV = logits_BTV[:, -1]
    return list(zip(generated, sum_lp_B.tolist(), strict=True))


def token_limit(model: WhisperLike, n_prompt: int, max_new_tokens: int | None) -> int:
    """Tokens a ``n_prompt``-token prompt may generate: ``max_new_tokens``, or with None all
    the decoder's context leaves (``max_target_positions``, 448 for Whisper, minus the prompt)."""
    n_ctx = int(model.model.config.max_target_positions)
    room = n_ctx - n_prompt
    if max_new_tokens is None and room >= 1:
        return room
    if max_new_tokens is None or max_new_tokens > room:
        raise DecodingError(
            f"the decoder has {n_ctx} positions; a {n_prompt}-token prompt leaves room "
            f"for {room} new tokens, not {max_new_tokens or 'one'}",
            "lower max_new_tokens" if max_new_tokens else "shorten the prefix",
        )
    return max_new_tokens


def split_segments(tokens: list[int], st: SpecialTokens, tokenizer: Any) -> tuple[Segment, ...]:
    """Segments ``<|t0|> text <|t1|>`` from generated ids (text outside pairs is dropped)."""
    segments = []
    start: int | None = None
    text_ids: list[int] = []
    for t in tokens:
        if t < st.timestamp_begin:
            text_ids.append(t)
        elif start is None:
            start, text_ids = t, []
        else:
            segments.append(_segment(start, t, text_ids, st, tokenizer))
            start = None
    if start is not None and text_ids:
        segments.append(_segment(start, None, text_ids, st, tokenizer))
    return tuple(segments)


def _segment(
    start: int, end: int | None, text_ids: list[int], st: SpecialTokens, tokenizer: Any
) -> Segment:
    def sec(t: int) -> float:
        return round((t - st.timestamp_begin) * TIMESTAMP_SECONDS, 2)

    text = tokenizer.decode(text_ids).strip()
    return Segment(sec(start), None if end is None else sec(end), text, tuple(text_ids))


def transcribe(
    model: WhisperLike, audio_or_features: AudioOrFeatures, options: DecodeOptions | None = None
) -> list[Transcript]:
    """Greedy transcripts of 16 kHz clips (one array, a list) or log-mel features.

    Per batch of ``options.batch_size`` clips: :func:`encode`, then :func:`decode` (with
    ``language=None`` on a multilingual model one decoder step picks each clip's most
    probable language token; then greedy decoding from the prompt in the module docstring).
    Warns once (:class:`TruncationWarning`) when any transcript is truncated.
    """
    options = options or DecodeOptions()
    st = special_tokens(model)
    check_language_task(st, options.language, options.task)
    features_BMT = as_features(model, audio_or_features)
    out: list[Transcript] = []
    for i in range(0, features_BMT.shape[0], options.batch_size):
        enc_BFD = encode(model, features_BMT[i : i + options.batch_size])
        out += _decode_batch(model, enc_BFD, options, st, [])
    _warn_truncated(model, out, options)
    return out


def decode(
    model: WhisperLike,
    encoded: Encoded,
    options: DecodeOptions | None = None,
    *,
    prefix: str | None = None,
) -> list[Transcript]:
    """Greedy transcripts of encoder outputs (:func:`encode`'s tensor, [batch, 1500, d] or
    [1500, d], or an ActivationCache holding ``encoder.hook_ln_post``).

    ``decode(model, encode(model, audio), options)`` equals ``transcribe(model, audio,
    options)``. With ``prefix`` (e.g. "The word is") that text is forced after the prompt
    (encoded with one leading space, as :func:`whisperlens.scoring.score_encoded` forces a
    carrier) and only the continuation is decoded: ``Transcript.text`` and ``.tokens`` are
    the continuation alone (" apple." -> "apple."), and the first-token filters of the
    module docstring apply to the first token after the prefix (openai-whisper counts a
    prefix as part of the initial tokens too). ``prefix`` cannot be combined with timestamps.
    """
    options = options or DecodeOptions()
    st = special_tokens(model)
    check_language_task(st, options.language, options.task)
    if prefix and options.timestamps:
        raise DecodingError("a prefix cannot be forced with timestamps=True", "drop one of them")
    enc_BFD = as_encoded(model, encoded)
    forced = text_ids(model.processor.tokenizer, prefix)
    out: list[Transcript] = []
    for i in range(0, enc_BFD.shape[0], options.batch_size):
        out += _decode_batch(model, enc_BFD[i : i + options.batch_size], options, st, forced)
    _warn_truncated(model, out, options)
    return out


def _decode_batch(
    model: WhisperLike,
    enc_BFD: torch.Tensor,
    options: DecodeOptions,
    st: SpecialTokens,
    forced: list[int],
) -> list[Transcript]:
    languages = resolve_languages(model, enc_BFD, options.language)
    prompts = [
        prompt_ids(st, lang, options.task, options.timestamps) + forced for lang in languages
    ]
    limit = token_limit(model, len(prompts[0]), options.max_new_tokens)
    results = greedy_decode(model, enc_BFD, prompts, limit, options.timestamps)
    tokenizer = model.processor.tokenizer
    transcripts = []
    for (tokens, sum_lp), lang in zip(results, languages, strict=True):
        text_only = [t for t in tokens if t < st.timestamp_begin]
        segments = split_segments(tokens, st, tokenizer) if options.timestamps else ()
        transcripts.append(
            Transcript(
                text=tokenizer.decode(text_only).strip(),
                language=lang,
                tokens=tuple(tokens),
                avg_logprob=sum_lp / (len(tokens) + 1),
                segments=segments,
                truncated=len(tokens) == limit,
            )
        )
    return transcripts


def _warn_truncated(model: WhisperLike, out: list[Transcript], options: DecodeOptions) -> None:
    n_cut = sum(t.truncated for t in out)
    if not n_cut:
        return
    if options.max_new_tokens is None:
        n_ctx = int(model.model.config.max_target_positions)
        why = f"filled the decoder's {n_ctx}-token context"
        fix = (
            "the model is probably repeating itself; cap it with DecodeOptions.max_new_tokens, "
            "or split dense speech into shorter windows (whisperlens.audio.split_windows)"
        )
    else:
        why = f"reached max_new_tokens={options.max_new_tokens}"
        fix = (
            "raise DecodeOptions.max_new_tokens (--max-new-tokens), or leave it None to "
            "decode to the end of text"
        )
    warnings.warn(
        f"{n_cut} of {len(out)} transcripts {why} before <|endoftext|> and are cut short "
        f"(Transcript.truncated); {fix}",
        TruncationWarning,
        stacklevel=3,
    )
