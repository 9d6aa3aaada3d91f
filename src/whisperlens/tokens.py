"""Whisper's control tokens: their ids in one model's vocabulary, read from its tokenizer.

Whisper's vocabulary is GPT-2's byte-level BPE followed by ``<|endoftext|>``,
``<|startoftranscript|>``, one token per language (multilingual vocabularies only), the
task tokens, ``<|startoflm|>``, ``<|startofprev|>``, ``<|nocaptions|>``,
``<|notimestamps|>`` and then the timestamps ``<|0.00|>`` ... ``<|30.00|>``. English-only
(``.en``) vocabularies have 51864 entries and multilingual ones 51865 or more, which is how
:attr:`SpecialTokens.multilingual` is decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from whisperlens.errors import WhisperlensError
from whisperlens.models.base import MULTILINGUAL_VOCAB_SIZE

LANGUAGE_ALIASES = {"iw": "he"}  # older vocabularies (tiny.en) spell Hebrew <|iw|>


class TokenizerError(WhisperlensError, ValueError):
    """A tokenizer that lacks Whisper's control tokens."""


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of Whisper's control tokens for one model's vocabulary."""

    sot: int  # <|startoftranscript|>: decoder start
    eot: int  # <|endoftext|>: also bos, eos and pad
    transcribe: int
    translate: int
    notimestamps: int  # <|notimestamps|>; timestamps start right after it
    sot_prev: int  # <|startofprev|>: precedes prompt text
    sot_lm: int
    nocaptions: int
    timestamp_begin: int  # <|0.00|>; timestamp tokens run to the end of the vocabulary
    vocab_size: int
    multilingual: bool  # decided by vocabulary size (>= 51865)
    languages: dict[str, int]  # language code -> token id, for the languages this vocab has

    def control_ids(self) -> list[int]:
        """Every special token between <|endoftext|> and the timestamps: start, language,
        task, start-of-LM, start-of-prev, no-speech, <|notimestamps|>."""
        return list(range(self.eot + 1, self.timestamp_begin))


def read_special_tokens(tokenizer: Any, vocab_size: int) -> SpecialTokens:
    """Control-token ids read from ``tokenizer``; raises TokenizerError for a missing token."""

    def tid(token: str) -> int:
        i = tokenizer.convert_tokens_to_ids(token)
        if i is None or tokenizer.convert_ids_to_tokens(int(i)) != token:
            raise TokenizerError(f"the tokenizer has no {token} token", "load a Whisper tokenizer")
        return int(i)

    sot, translate = tid("<|startoftranscript|>"), tid("<|translate|>")
    languages = {}  # the language tokens sit between <|startoftranscript|> and <|translate|>
    for i, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(sot + 1, translate)))):
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
        vocab_size=int(vocab_size),
        multilingual=int(vocab_size) >= MULTILINGUAL_VOCAB_SIZE,
        languages=languages,
    )


def text_ids(tokenizer: Any, text: str | None) -> list[int]:
    """Token ids of ``text`` with exactly one leading space, as Whisper's decoder emits a first
    word (" Apple." is [4196, 13] on tiny.en); empty or None text gives []."""
    if not text or not text.strip():
        return []
    return list(tokenizer.encode(" " + text.strip(), add_special_tokens=False))
