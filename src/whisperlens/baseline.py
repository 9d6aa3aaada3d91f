"""Stimulus-usability baseline: how well does Whisper hear the synthetic words we patch?

Every word pair contributes two items: word ``a`` (target ``a``, foil ``b``) and word ``b``
(target ``b``, foil ``a``). Each target word is put in a carrier phrase, synthesized offline,
and scored two ways on one encoder pass:

- greedy transcript: *exact match* when the normalised transcript equals the normalised
  carrier text (for bare words: the word); ``target_present`` when the word occurs in it;
- forced choice: the log-probability of the target word against its pair partner, teacher
  forced after the carrier's words (``scoring.scoring_prefix``) and summed over the word,
  the carrier's remaining text and ``<|endoftext|>``, each candidate as the logsumexp over
  its spellings (``scoring.case_and_period``). Correct when the target scores higher.

Each side of a pair is synthesized and decoded in its own language (en-es: English words in
an English carrier, Spanish words in the Spanish counterpart of that carrier on a
multilingual model). A run is a directory: ``config.json`` (written first), ``rows.jsonl``
(one row per item, appended and flushed, so a restarted run skips finished items) and
``summary.json`` (written atomically at the end).

>>> summary = run_baseline(BaselineConfig("minimal", Path("out"), n_pairs=40))  # doctest: +SKIP
>>> summary["overall"]["forced_choice"]["accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from tqdm import tqdm

from whisperlens._io import atomic_write_json, prepare_run_dir, read_jsonl_rows
from whisperlens.decoding import (
    DecodingError,
    check_language_task,
    encode,
    features_of,
    greedy_decode,
    language_code,
    prompt_ids,
    special_tokens,
)
from whisperlens.errors import WhisperlensError
from whisperlens.scoring import (
    case_and_period,
    normalize,
    scoring_prefix,
    sequence_logprobs,
    word_present,
)
from whisperlens.stimuli.carriers import CARRIERS, SLOT, Carrier, engine_rate_params, parse_rate
from whisperlens.stimuli.tts import ENGINES, Stimulus, get_engine, synthesize
from whisperlens.stimuli.wordlists import WordPair, load_pairs

CONFIG_FILE, ROWS_FILE, SUMMARY_FILE = "config.json", "rows.jsonl", "summary.json"
FORMAT_VERSION = 1  # bump when rows change meaning: old run directories are then refused
Side = Literal["a", "b"]
Sides = Literal["both", "a", "b"]
# The measured best setup on tiny.en (docs/baseline.md); BaselineConfig's defaults.
DEFAULT_ENGINE, DEFAULT_CARRIER, DEFAULT_RATE = "piper", "the_word_is", 0.85
# Carriers that say the same thing in different languages: a pair side whose language
# differs from the chosen carrier's gets the counterpart in its own language.
CARRIER_COUNTERPARTS: tuple[dict[str, str], ...] = (
    {"en": "the_word_is", "es": "es_la_palabra"},
    {"en": "say_again", "es": "es_diga"},
)


class BaselineError(WhisperlensError, ValueError):
    """A baseline configuration or run directory that cannot be used."""


@dataclass(frozen=True)
class BaselineConfig:
    """One baseline run. The CLI parses argv into this; :func:`run_baseline` takes it."""

    words: str  # word-list name (see wordlists.list_wordlists) or a .jsonl/.csv/.tsv path
    out: Path  # run directory: config.json, rows.jsonl, summary.json
    engine: str = DEFAULT_ENGINE  # TTS engine, a key of stimuli.tts.ENGINES
    model: str = "tiny.en"  # load_whisper name, path or hub id
    carrier: str = DEFAULT_CARRIER  # carrier name; other-language sides use its counterpart
    rate: float = DEFAULT_RATE  # speaking-rate multiplier (or a name in carriers.RATES)
    voice: str | None = None  # TTS voice for every item; None: the engine's default per language
    language: str | None = None  # decode/score language; None: each word's own (its pair side)
    sides: Sides = "both"  # which words of each pair are targets
    n_pairs: int | None = None  # a seeded random subset of this many pairs; None: all
    seed: int = 0  # seed of the subset
    max_new_tokens: int = 32  # greedy decoding limit per clip

    def __post_init__(self) -> None:
        if not str(self.words).strip():
            raise BaselineError("no word list given", "pass --words minimal (or a file)")
        object.__setattr__(self, "out", Path(self.out))
        if self.engine not in ENGINES:
            raise BaselineError(f"unknown TTS engine {self.engine!r}", f"use one of {[*ENGINES]}")
        if self.carrier not in CARRIERS:
            raise BaselineError(f"unknown carrier {self.carrier!r}", f"use one of {[*CARRIERS]}")
        try:
            rate = parse_rate(self.rate)
            engine_rate_params(self.engine, rate)
        except (TypeError, ValueError) as exc:
            raise BaselineError(str(exc), "pass a rate such as 0.85 or 'slow'") from None
        object.__setattr__(self, "rate", rate)
        if self.language is not None:
            object.__setattr__(self, "language", language_code(self.language))
        if self.sides not in get_args(Sides):
            raise BaselineError(f"unknown sides {self.sides!r}", f"use one of {get_args(Sides)}")
        if self.n_pairs is not None and self.n_pairs < 1:
            raise BaselineError(f"n_pairs must be >= 1, got {self.n_pairs}", "or leave it unset")
        if self.max_new_tokens < 1:
            raise BaselineError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same (everything but the output directory)."""
        ident = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "out"}
        return {"format_version": FORMAT_VERSION, **ident}


@dataclass(frozen=True)
class Item:
    """One target word scored against its pair partner."""

    item_id: str  # "<pair id>:a" or "<pair id>:b"
    pair_id: str
    side: Side
    kind: str  # the pair's kind: consonant, vowel, semantic, cognate, non-cognate, custom
    language: str  # the target word's language (synthesis, decoding and scoring)
    target: str
    foil: str
    carrier: str  # carrier name used for this item


def carrier_for(name: str, language: str) -> Carrier:
    """Carrier ``name`` if it suits ``language``, else its counterpart in that language."""
    carrier = CARRIERS[name]
    if carrier.language in ("any", language):
        return carrier
    for group in CARRIER_COUNTERPARTS:
        if group.get(carrier.language) == name and language in group:
            return CARRIERS[group[language]]
    raise BaselineError(
        f"carrier {name!r} is {carrier.language!r} and has no {language!r} counterpart",
        f"use a carrier with one ({', '.join(g[carrier.language] for g in CARRIER_COUNTERPARTS)})"
        " or 'bare', or score one side with --sides",
    )


def select_pairs(pairs: Sequence[WordPair], n_pairs: int | None, seed: int) -> list[WordPair]:
    """All pairs, or a seeded random subset of ``n_pairs`` kept in list order."""
    if n_pairs is None or n_pairs >= len(pairs):
        return list(pairs)
    keep = sorted(random.Random(seed).sample(range(len(pairs)), n_pairs))
    return [pairs[i] for i in keep]


def build_items(config: BaselineConfig) -> list[Item]:
    """The run's items, in list order (pair by pair, side a before side b)."""
    pairs = select_pairs(load_pairs(config.words), config.n_pairs, config.seed)
    sides: tuple[Side, ...] = ("a", "b") if config.sides == "both" else (config.sides,)
    items = []
    for pair in pairs:
        for side in sides:
            target, foil = (pair.a, pair.b) if side == "a" else (pair.b, pair.a)
            lang = language_code(pair.language_a if side == "a" else pair.language_b)
            carrier = carrier_for(config.carrier, lang).name
            item = Item(f"{pair.id}:{side}", pair.id, side, pair.kind, lang, target, foil, carrier)
            items.append(item)
    if not items:
        raise BaselineError(f"word list {config.words!r} has no pairs", "pass a non-empty list")
    return items


def check_voices(config: BaselineConfig, items: Sequence[Item]) -> None:
    """Refuse, before any work, a TTS voice that cannot speak every item's language."""
    languages = sorted({i.language for i in items})
    if config.voice is not None and len(languages) > 1:
        raise BaselineError(
            f"--voice {config.voice!r} would speak all of {languages}",
            "leave the voice unset, or score one side with --sides a|b",
        )
    engine = get_engine(config.engine)
    for lang in languages:
        engine.resolve_voice(lang, config.voice)


def check_model(config: BaselineConfig, items: Sequence[Item], model: Any) -> None:
    """Refuse a model that cannot decode every item's language (.en models: English only)."""
    st = special_tokens(model)
    for lang in sorted({config.language or i.language for i in items}):
        try:
            check_language_task(st, lang, "transcribe")
        except DecodingError as exc:
            raise BaselineError(f"model {config.model!r}: {exc.cause}", exc.fix) from None


# --- per item -------------------------------------------------------------------------


def carrier_split(carrier: Carrier, word: str) -> tuple[str, str]:
    """(forced prefix text, scored candidate text) for ``word`` in ``carrier``.

    "The word is {word}." -> ("The word is", "cat."); "Say {word} again." -> ("Say",
    "cat again."); "{word}" -> ("", "cat").
    """
    before, after = carrier.template.split(SLOT)
    return before.strip(), f"{word}{after}".strip()


def synthesize_item(config: BaselineConfig, item: Item) -> tuple[Stimulus, str, tuple[int, int]]:
    """The item's speech, the text spoken and the target word's character span in it."""
    phrase = CARRIERS[item.carrier].render(item.target)
    stim = synthesize(
        phrase.text,
        engine=config.engine,
        language=item.language,
        voice=config.voice,
        rate=config.rate,
    )
    return stim, phrase.text, phrase.word_span


def greedy_text(model: Any, enc_1FD: torch.Tensor, language: str, max_new_tokens: int) -> str:
    """Greedy transcript of one encoded clip (as ``decoding.transcribe`` produces it)."""
    st = special_tokens(model)
    [(tokens, _)] = greedy_decode(model, enc_1FD, [prompt_ids(st, language)], max_new_tokens)
    return str(model.processor.tokenizer.decode(tokens)).strip()


def pair_logprobs(
    model: Any, enc_1FD: torch.Tensor, language: str, carrier: Carrier, words: Sequence[str]
) -> list[float]:
    """Log-prob of each word in ``carrier`` (spellings summed), as ``candidate_logprobs``
    with ``carrier=`` prefix and ``variants=case_and_period`` scores it, on a given encoding."""
    st = special_tokens(model)
    tok = model.processor.tokenizer
    prefix_text = carrier_split(carrier, words[0])[0]
    prefix = scoring_prefix(model, language, carrier=prefix_text or None)
    seqs, owner = [], []
    for i, word in enumerate(words):
        for text in case_and_period(carrier_split(carrier, word)[1]):
            seqs.append([*tok.encode(" " + text, add_special_tokens=False), st.eot])
            owner.append(i)
    lp_S = sequence_logprobs(model, enc_1FD, prefix, seqs)
    owner_S = torch.tensor(owner)
    return [float(lp_S[owner_S == i].logsumexp(0)) for i in range(len(words))]


class ClipCache:
    """The last clip's encoder output and transcript: items sharing a target word (the same
    audio) reuse them, so run items sorted by word."""

    def __init__(self) -> None:
        self.key: tuple[str, str] | None = None
        self.value: tuple[torch.Tensor, str] | None = None

    def get(self, model: Any, stim: Stimulus, language: str, max_new: int) -> tuple[Any, str]:
        key = (stim.key, language)
        if self.key != key or self.value is None:
            enc_1FD = encode(model, features_of(model, stim.audio))
            self.key, self.value = key, (enc_1FD, greedy_text(model, enc_1FD, language, max_new))
        return self.value


def evaluate_item(model: Any, config: BaselineConfig, item: Item, clips: ClipCache) -> dict:
    """One row of ``rows.jsonl``: transcript, forced choice and synthesis metadata."""
    start = time.perf_counter()
    stim, text, span = synthesize_item(config, item)
    lang = config.language or item.language
    enc_1FD, transcript = clips.get(model, stim, lang, config.max_new_tokens)
    carrier = CARRIERS[item.carrier]
    lp_target, lp_foil = pair_logprobs(model, enc_1FD, lang, carrier, [item.target, item.foil])
    margin = lp_target - lp_foil
    defined = forced_choice_defined(asdict(item))
    return {
        **asdict(item),
        "text": text,
        "transcript": transcript,
        "exact_match": normalize(transcript, lang) == normalize(text, lang),
        "target_present": word_present(item.target, transcript, lang),
        "foil_present": word_present(item.foil, transcript, lang),
        "logprob_target": lp_target,
        "logprob_foil": lp_foil,
        "margin": margin,
        "p_target": 0.5 * (1.0 + math.tanh(margin / 2)),  # sigmoid(margin), overflow-free
        "correct": margin > 0 if defined else None,  # None: target and foil spelled alike
        "synth": {
            "engine": stim.engine,
            "voice": stim.voice,
            "rate": stim.rate,
            "key": stim.key,
            "duration_s": round(stim.duration_s, 4),
            "target_time_span": stim.time_span(span),
        },
        "seconds": round(time.perf_counter() - start, 4),
    }


# --- statistics -------------------------------------------------------------------------


def wilson_interval(n_success: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % by default); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = n_success / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return sum(vals) / len(vals) if vals else None


def forced_choice_defined(row: dict) -> bool:
    """False when target and foil are spelled alike (en-es "hospital"/"hospital"): the two
    candidates are then one string, and the item is left out of forced-choice statistics."""
    return str(row["target"]).strip().casefold() != str(row["foil"]).strip().casefold()


def row_stats(rows: Sequence[dict]) -> dict[str, Any]:
    """Accuracies and means over ``rows`` (forced choice over the items where it is defined)."""
    n, n_exact = len(rows), sum(bool(r["exact_match"]) for r in rows)
    scored = [r for r in rows if forced_choice_defined(r)]
    n_fc, n_correct = len(scored), sum(bool(r["correct"]) for r in scored)
    lo, hi = wilson_interval(n_correct, n_fc)
    return {
        "n_items": n,
        "greedy": {
            "exact_match": n_exact / n if n else None,
            "exact_match_ci95": list(wilson_interval(n_exact, n)),
            "target_present": _mean(float(r["target_present"]) for r in rows),
        },
        "forced_choice": {
            "n_items": n_fc,  # items whose target and foil differ in spelling
            "accuracy": n_correct / n_fc if n_fc else None,
            "ci95": [lo, hi],
            "n_correct": n_correct,
            "mean_margin": _mean(r["margin"] for r in scored),
            "mean_p_target": _mean(r["p_target"] for r in scored),
        },
        "mean_seconds": _mean(r["seconds"] for r in rows),
    }


def summarize(config: BaselineConfig, rows: Sequence[dict]) -> dict[str, Any]:
    """``summary.json``: overall statistics and breakdowns by pair kind and by language."""

    def by(field: str) -> dict[str, Any]:
        groups: dict[str, list[dict]] = {}
        for row in rows:
            groups.setdefault(str(row[field]), []).append(row)
        return {k: row_stats(v) for k, v in sorted(groups.items())}

    return {
        "config": config.identity(),
        "overall": row_stats(rows),
        "by_kind": by("kind"),
        "by_language": by("language"),
        "by_side": by("side"),
    }


# --- the run directory ------------------------------------------------------------------


def prepare_out_dir(config: BaselineConfig, overwrite: bool = False) -> None:
    """Create the run directory, or check it holds this config (``overwrite`` clears it)."""
    prepare_run_dir(
        config.out,
        config.identity(),
        what="baseline",
        outputs=(ROWS_FILE, SUMMARY_FILE),
        overwrite=overwrite,
        error=BaselineError,
        config_file=CONFIG_FILE,
    )


def read_rows(path: Path) -> list[dict]:
    """Rows of ``rows.jsonl``, resumable after a crash (see :func:`_io.read_jsonl_rows`)."""
    return read_jsonl_rows(path)


def load_model(name: str) -> Any:
    """The Whisper model to evaluate (a seam for tests)."""
    from whisperlens.models.whisper import load_whisper

    return load_whisper(name)


def run_baseline(
    config: BaselineConfig, *, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Score every item of ``config`` (resuming a partial run) and write ``summary.json``."""
    items = build_items(config)
    prepare_out_dir(config, overwrite)
    rows_path = config.out / ROWS_FILE
    done = {r["item_id"]: r for r in read_rows(rows_path)}
    pending = sorted((i for i in items if i.item_id not in done), key=_word_order)
    if pending:
        check_voices(config, items)
        model = load_model(config.model)
        check_model(config, items, model)
        _score_pending(model, config, pending, rows_path, done, progress)
    rows = [done[i.item_id] for i in items]
    summary = summarize(config, rows)
    atomic_write_json(config.out / SUMMARY_FILE, summary)
    return summary


def _word_order(item: Item) -> tuple[str, str, str]:
    return item.language, item.target, item.item_id


def _score_pending(
    model: Any,
    config: BaselineConfig,
    pending: Sequence[Item],
    rows_path: Path,
    done: dict[str, dict],
    progress: bool,
) -> None:
    clips = ClipCache()
    with open(rows_path, "a", encoding="utf-8") as f:
        for item in tqdm(pending, desc=f"baseline {config.out.name}", disable=not progress):
            row = evaluate_item(model, config, item, clips)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            done[item.item_id] = row
