"""Greedy Whisper decoding with explicit prompts, and spoken-language identification.

Everything here calls ``model.model`` (the transformers ``WhisperForConditionalGeneration``)
module by module, so hooks that :class:`whisperlens.hooks.HookedWhisper` installs on its
submodules apply. ``model`` is anything with ``.model`` and ``.processor`` (a
``LoadedWhisper`` or a ``HookedWhisper``).

Prompts (decoder input before the first generated token), as openai-whisper builds them:

- multilingual: ``<|startoftranscript|><|LANG|><|TASK|><|notimestamps|>``
  (ids for English transcription on base: 50258, 50259, 50359, 50363)
- English-only (``.en``): ``<|startoftranscript|><|notimestamps|>`` (tiny.en: 50257, 50362)
- with ``timestamps=True`` the trailing ``<|notimestamps|>`` is left out.

Decoding is greedy (argmax), one encoder pass per batch, a key/value cache on the decoder.
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

from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

import torch
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

from whisperlens.errors import WhisperlensError
from whisperlens.features import AudioOrFeatures, as_features
from whisperlens.frames import ENCODER_FRAME_SECONDS
from whisperlens.models.base import MULTILINGUAL_VOCAB_SIZE

Task = Literal["transcribe", "translate"]
TIMESTAMP_SECONDS = ENCODER_FRAME_SECONDS  # one timestamp token step: 0.02 s
MAX_INITIAL_TIMESTAMP_S = 1.0  # openai-whisper's default max_initial_timestamp
NEG_INF = float("-inf")
LANGUAGE_ALIASES = {"iw": "he"}  # older vocabularies (tiny.en) spell Hebrew <|iw|>


class WhisperLike(Protocol):
    """A LoadedWhisper or HookedWhisper: all this module needs."""

    model: Any  # transformers WhisperForConditionalGeneration
    processor: Any  # WhisperProcessor: .tokenizer and .feature_extractor


class DecodingError(WhisperlensError, ValueError):
    """Options that do not fit the model (or each other)."""


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
    """How :func:`transcribe` decodes. Validated on construction; model fit checked at use."""

    language: str | None = None  # Whisper code or name; None = detect (multilingual) / "en"
    task: Task = "transcribe"  # "translate" = into English (multilingual models only)
    max_new_tokens: int = 128  # generated tokens per clip, <|endoftext|> included
    timestamps: bool = False  # predict timestamp tokens and return segments
    batch_size: int = 8  # clips per encoder pass

    def __post_init__(self) -> None:
        if self.language is not None:
            object.__setattr__(self, "language", language_code(self.language))
        if self.task not in get_args(Task):
            raise DecodingError(f"unknown task {self.task!r}", f"use one of {get_args(Task)}")
        if self.max_new_tokens < 1:
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

    text: str  # decoded text tokens, stripped
    language: str  # the language token used (detected or given); "en" for .en models
    tokens: tuple[int, ...]  # generated ids after the prompt, without <|endoftext|>
    avg_logprob: float  # mean log-prob of generated tokens incl. <|endoftext|> (filtered logits)
    segments: tuple[Segment, ...] = ()  # only with timestamps=True


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of Whisper's control tokens for one model's vocabulary."""

    sot: int
    eot: int
    transcribe: int
    translate: int
    notimestamps: int
    sot_prev: int
    sot_lm: int
    nocaptions: int
    timestamp_begin: int  # <|0.00|>; timestamp tokens run to the end of the vocabulary
    vocab_size: int
    multilingual: bool
    languages: dict[str, int]  # language code -> token id, for the languages this vocab has

    def control_ids(self) -> list[int]:
        """Every special token between <|endoftext|> and the timestamps: start, language,
        task, start-of-LM, start-of-prev, no-speech, <|notimestamps|>."""
        return list(range(self.eot + 1, self.timestamp_begin))


def special_tokens(model: WhisperLike) -> SpecialTokens:
    """Control-token ids read from the model's tokenizer (checked against its vocabulary)."""
    tok = model.processor.tokenizer
    vocab_size = int(model.model.config.vocab_size)

    def tid(token: str) -> int:
        i = tok.convert_tokens_to_ids(token)
        if i is None or tok.convert_ids_to_tokens(int(i)) != token:
            raise DecodingError(f"the tokenizer has no {token} token", "load a Whisper tokenizer")
        return int(i)

    sot, translate = tid("<|startoftranscript|>"), tid("<|translate|>")
    languages = {}  # the language tokens sit between <|startoftranscript|> and <|translate|>
    for i, token in enumerate(tok.convert_ids_to_tokens(list(range(sot + 1, translate)))):
        code = token.removeprefix("<|").removesuffix("|>")
        languages[LANGUAGE_ALIASES.get(code, code)] = sot + 1 + i
    notimestamps = tid("<|notimestamps|>")
    return SpecialTokens(
        sot=sot,
        eot=tid("<|endoftext|>"),
        transcribe=tid("<|transcribe|>"),
        translate=translate,
        notimestamps=notimestamps,
        sot_prev=tid("<|startofprev|>"),
        sot_lm=tid("<|startoflm|>"),
        nocaptions=tid("<|nocaptions|>"),
        timestamp_begin=notimestamps + 1,
        vocab_size=vocab_size,
        multilingual=vocab_size >= MULTILINGUAL_VOCAB_SIZE,
        languages=languages,
    )


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


class _View:
    """What :func:`whisperlens.features.as_features` needs, read off ``.model``/``.processor``."""

    def __init__(self, model: WhisperLike):
        self._m = model.model
        self.feature_extractor = model.processor.feature_extractor

    n_mels = property(lambda self: int(self._m.config.num_mel_bins))
    device = property(lambda self: next(self._m.parameters()).device)
    dtype = property(lambda self: next(self._m.parameters()).dtype)


def features_of(model: WhisperLike, audio_or_features: AudioOrFeatures) -> torch.Tensor:
    """Log-mel features [batch, n_mels, 3000] from audio (one clip or a list) or features."""
    return as_features(_View(model), audio_or_features)  # type: ignore[arg-type]


def encode(model: WhisperLike, features_BMT: torch.Tensor) -> torch.Tensor:
    """Encoder output [batch, 1500, d_model] (after the final LayerNorm)."""
    with torch.no_grad():
        return model.model.get_encoder()(input_features=features_BMT).last_hidden_state


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


def language_probs(
    model: WhisperLike, audio_or_features: AudioOrFeatures
) -> list[dict[str, float]]:
    """Per clip, P(language) = softmax over the language tokens' logits at the first decoder
    step (decoder input ``<|startoftranscript|>`` only), keyed by code, most probable first."""
    st = special_tokens(model)
    require_multilingual(st)
    enc_BFD = encode(model, features_of(model, audio_or_features))
    probs_BL = _language_logprobs(model, enc_BFD, st).exp()
    codes = list(st.languages)
    return [
        dict(sorted(zip(codes, row.tolist(), strict=True), key=lambda kv: -kv[1]))
        for row in probs_BL
    ]


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
    max_new_tokens: int,
    timestamps: bool = False,
) -> list[tuple[list[int], float]]:
    """Greedy continuation of equal-length ``prompts`` (one per row of ``enc_BFD``).

    Returns per row the generated ids (without <|endoftext|>) and the summed log-prob of
    the generated tokens including <|endoftext|> when it was reached.
    """
    st = special_tokens(model)
    n_ctx = int(model.model.config.max_target_positions)
    if len({len(p) for p in prompts}) != 1:
        raise DecodingError("greedy_decode needs prompts of one length")
    if len(prompts[0]) + max_new_tokens > n_ctx:
        raise DecodingError(
            f"the decoder has {n_ctx} positions; a {len(prompts[0])}-token prompt leaves room "
            f"for {n_ctx - len(prompts[0])} new tokens, not {max_new_tokens}",
            "lower max_new_tokens",
        )
    mask_V = suppress_mask(model, st, timestamps).to(enc_BFD.device)
    begin = begin_suppress_ids(model, st)
    n_batch = len(prompts)
    generated: list[list[int]] = [[] for _ in range(n_batch)]
    sum_lp_B = torch.zeros(n_batch, dtype=torch.float64)
    done_B = torch.zeros(n_batch, dtype=torch.bool)
    logits_BTV, cache = decoder_step(model, enc_BFD, torch.tensor(prompts, dtype=torch.long))
    for step in range(max_new_tokens):
        logits_BV = logits_BTV[:, -1].float().masked_fill(mask_V, NEG_INF)
        if step == 0:
            logits_BV[:, begin] = NEG_INF
        if timestamps:
            for row, tokens in enumerate(generated):
                apply_timestamp_rules(logits_BV[row], tokens, st)
        next_B = logits_BV.argmax(-1).cpu()
        lp_B = logits_BV.log_softmax(-1).gather(-1, next_B[:, None].to(logits_BV.device))[:, 0]
        next_B = torch.where(done_B, st.eot, next_B)
        sum_lp_B += torch.where(done_B, 0.0, lp_B.double().cpu())
        for row in torch.nonzero(~done_B & (next_B != st.eot)).flatten().tolist():
            generated[row].append(int(next_B[row]))
        done_B |= next_B == st.eot
        if bool(done_B.all()) or step == max_new_tokens - 1:
            break
        logits_BTV, cache = decoder_step(model, enc_BFD, next_B[:, None], cache)
    return list(zip(generated, sum_lp_B.tolist(), strict=True))


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

    Per batch of ``options.batch_size`` clips: one encoder pass; with ``language=None`` on a
    multilingual model one decoder step picks each clip's most probable language token
    (:func:`language_probs`); then greedy decoding from the prompt in the module docstring.
    """
    options = options or DecodeOptions()
    st = special_tokens(model)
    check_language_task(st, options.language, options.task)
    features_BMT = features_of(model, audio_or_features)
    out: list[Transcript] = []
    for i in range(0, features_BMT.shape[0], options.batch_size):
        out += _transcribe_batch(model, features_BMT[i : i + options.batch_size], options, st)
    return out


def _transcribe_batch(
    model: WhisperLike, features_BMT: torch.Tensor, options: DecodeOptions, st: SpecialTokens
) -> list[Transcript]:
    enc_BFD = encode(model, features_BMT)
    if options.language is not None or not st.multilingual:
        languages = [options.language or "en"] * enc_BFD.shape[0]
    else:
        codes = list(st.languages)
        best_B = _language_logprobs(model, enc_BFD, st).argmax(-1).tolist()
        languages = [codes[i] for i in best_B]
    prompts = [prompt_ids(st, lang, options.task, options.timestamps) for lang in languages]
    results = greedy_decode(model, enc_BFD, prompts, options.max_new_tokens, options.timestamps)
    tokenizer = model.processor.tokenizer
    transcripts = []
    for (tokens, sum_lp), lang in zip(results, languages, strict=True):
        text_ids = [t for t in tokens if t < st.timestamp_begin]
        segments = split_segments(tokens, st, tokenizer) if options.timestamps else ()
        transcripts.append(
            Transcript(
                text=tokenizer.decode(text_ids).strip(),
                language=lang,
                tokens=tuple(tokens),
                avg_logprob=sum_lp / (len(tokens) + 1),
                segments=segments,
            )
        )
    return transcripts
