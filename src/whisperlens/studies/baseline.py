"""Stimulus-usability baseline: how well does Whisper hear the synthetic words we patch?

Every word pair contributes two items: word ``a`` (target ``a``, foil ``b``) and word ``b``
(target ``b``, foil ``a``). Each target word is put in a carrier phrase, synthesized offline,
encoded once and scored two ways on that encoding (the scoring seam,
:func:`whisperlens.decoding.decode` and :func:`whisperlens.scoring.score_encoded`):

- greedy transcript: *exact match* when the normalised transcript equals the normalised
  carrier text (for bare words: the word); ``target_present`` when the word occurs in it;
- forced choice: the log-probability of the target word against its pair partner, teacher
  forced after the carrier's words and summed over the word, the carrier's remaining text
  and ``<|endoftext|>``, each candidate as the logsumexp over its spellings
  (``scoring.case_and_period``). Correct when the target scores higher.

Each side of a pair is synthesized and decoded in its own language (en-es: English words in
an English carrier, Spanish words in the Spanish counterpart of that carrier on a
multilingual model). The work units are clips (items sharing a target word share its audio
and encoding); they run through an executor (:mod:`whisperlens.executors`) into one run
directory (:mod:`whisperlens.runs`), keyed by content, so a restarted run skips finished
items.

>>> summary = run_baseline(BaselineConfig("minimal", Path("out"), n_pairs=40))  # doctest: +SKIP
>>> summary["overall"]["forced_choice"]["accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import math
import random
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

from whisperlens.decoding import (
    DecodeOptions,
    DecodingError,
    TruncationWarning,
    check_language_task,
    decode,
    encode,
    language_code,
    special_tokens,
)
from whisperlens.errors import WhisperlensError
from whisperlens.metrics import normalize, word_present
from whisperlens.runs import RunDir
from whisperlens.scoring import case_and_period, score_encoded
from whisperlens.stats import mean_or_none, wilson_interval
from whisperlens.stimuli.carriers import (
    CARRIERS,
    carrier_for,
    carrier_split,
    engine_rate_params,
    parse_rate,
)
from whisperlens.stimuli.tts import ENGINES, Stimulus, get_engine, synthesize
from whisperlens.stimuli.wordlists import WordPair, load_pairs, wordlist_files

STUDY = "baseline"
FORMAT_VERSION = 2  # bump when rows change meaning: old run directories are then refused
Side = Literal["a", "b"]
Sides = Literal["both", "a", "b"]
# The measured best setup on tiny.en (docs/baseline.md); BaselineConfig's defaults.
DEFAULT_ENGINE, DEFAULT_CARRIER, DEFAULT_RATE = "piper", "the_word_is", 0.85


class BaselineError(WhisperlensError, ValueError):
    """A baseline configuration or run directory that cannot be used."""


@dataclass(frozen=True)
class BaselineConfig:
    """One baseline run. The CLI parses argv into this; :func:`run_baseline` takes it."""

    words: str  # word-list name (see wordlists.list_wordlists) or a .jsonl/.csv/.tsv path
    out: Path  # run directory: config.json, rows.jsonl, summary.json, report.html
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

    def settings(self) -> dict[str, Any]:
        """Everything but the output directory (the run's config; inputs are hashed apart)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "out"}


@dataclass(frozen=True)
class Item:
    """One target word scored against its pair partner."""

    item_id: str  # "<pair id>:a" or "<pair id>:b" (for display; rows are keyed by ``key``)
    pair_id: str
    side: Side
    kind: str  # the pair's kind: consonant, vowel, semantic, cognate, non-cognate, custom
    language: str  # the target word's language (synthesis, decoding and scoring)
    target: str
    foil: str
    carrier: str  # carrier name used for this item

    @property
    def key(self) -> str:
        """What the item is, not where it sits in the list: resume matches rows by this."""
        return f"{self.language}:{self.target}>{self.foil}:{self.carrier}:{self.side}"


def select_pairs(pairs: Sequence[WordPair], n_pairs: int | None, seed: int) -> list[WordPair]:
    """All pairs, or a seeded random subset of ``n_pairs`` kept in list order."""
    if n_pairs is None or n_pairs >= len(pairs):
        return list(pairs)
    keep = sorted(random.Random(seed).sample(range(len(pairs)), n_pairs))
    return [pairs[i] for i in keep]


def build_items(config: BaselineConfig) -> list[Item]:
    """The run's items, in list order (pair by pair, side a before side b), one per key."""
    pairs = select_pairs(load_pairs(config.words), config.n_pairs, config.seed)
    sides: tuple[Side, ...] = ("a", "b") if config.sides == "both" else (config.sides,)
    items: dict[str, Item] = {}
    for pair in pairs:
        for side in sides:
            target, foil = (pair.a, pair.b) if side == "a" else (pair.b, pair.a)
            lang = language_code(pair.language_a if side == "a" else pair.language_b)
            try:
                carrier = carrier_for(config.carrier, lang).name
            except ValueError as exc:
                raise BaselineError(str(exc), "or score one side with --sides a|b") from None
            item = Item(f"{pair.id}:{side}", pair.id, side, pair.kind, lang, target, foil, carrier)
            items.setdefault(item.key, item)  # a pair listed twice is scored once
    if not items:
        raise BaselineError(f"word list {config.words!r} has no pairs", "pass a non-empty list")
    return list(items.values())


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


# --- one clip: the work unit ---------------------------------------------------------------


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


@functools.lru_cache(maxsize=1)
def load_model(name: str) -> Any:
    """The Whisper model to evaluate, loaded once per process (checks and scoring share it)."""
    from whisperlens.models.whisper import load_whisper

    return load_whisper(name)


@dataclass(frozen=True)
class BaselineTask:
    """The executor's view of a run: load the model once per worker, score one clip per unit.

    A unit is the tuple of items that share a target word (the same audio): the clip is
    synthesized, encoded and greedily decoded once, and each item's pair scored on it.
    """

    config: BaselineConfig

    def setup(self) -> Any:
        return load_model(self.config.model)

    def run(self, model: Any, unit: tuple[Item, ...]) -> list[dict[str, Any]]:
        return score_clip(model, self.config, unit)


def score_clip(model: Any, config: BaselineConfig, items: Sequence[Item]) -> list[dict[str, Any]]:
    """Rows for items that share one target word (and so one clip and one encoding)."""
    stim, text, span = synthesize_item(config, items[0])
    lang = config.language or items[0].language
    enc_1FD = encode(model, stim.audio)
    options = DecodeOptions(language=lang, max_new_tokens=config.max_new_tokens)
    with warnings.catch_warnings():  # recorded per row and counted in the summary instead
        warnings.simplefilter("ignore", TruncationWarning)
        greedy = decode(model, enc_1FD, options)[0]
    transcript = greedy.text
    carrier = CARRIERS[items[0].carrier]
    prefix = carrier_split(carrier, items[0].target)[0] or None
    rows = []
    for item in items:
        texts = [carrier_split(carrier, w)[1] for w in (item.target, item.foil)]
        lp_C = score_encoded(model, enc_1FD, texts, language=lang, carrier=prefix,
                             variants=case_and_period)[0]  # fmt: skip
        lp_target, lp_foil = float(lp_C[0]), float(lp_C[1])
        margin = lp_target - lp_foil
        defined = forced_choice_defined(asdict(item))
        rows.append({
            "key": item.key,
            **asdict(item),
            "text": text,
            "audio": str(stim.path),
            "transcript": transcript,
            "truncated": greedy.truncated,  # decoding hit max_new_tokens
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
        })  # fmt: skip
    return rows


def clip_units(items: Sequence[Item]) -> list[tuple[Item, ...]]:
    """Items grouped by the clip they share (language and target word), in word order."""
    groups: dict[tuple[str, str], list[Item]] = {}
    for item in sorted(items, key=lambda i: (i.language, i.target, i.key)):
        groups.setdefault((item.language, item.target), []).append(item)
    return [tuple(g) for g in groups.values()]


# --- statistics -------------------------------------------------------------------------


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
            "target_present": mean_or_none([float(r["target_present"]) for r in rows]),
            "n_truncated": sum(bool(r.get("truncated")) for r in rows),
        },
        "forced_choice": {
            "n_items": n_fc,  # items whose target and foil differ in spelling
            "accuracy": n_correct / n_fc if n_fc else None,
            "ci95": [lo, hi],
            "n_correct": n_correct,
            "mean_margin": mean_or_none([r["margin"] for r in scored]),
            "mean_p_target": mean_or_none([r["p_target"] for r in scored]),
        },
    }


def summarize(config: BaselineConfig, rows: Sequence[dict]) -> dict[str, Any]:
    """``summary.json``: overall statistics and breakdowns by pair kind, language and side."""

    def by(field: str) -> dict[str, Any]:
        groups: dict[str, list[dict]] = {}
        for row in rows:
            groups.setdefault(str(row[field]), []).append(row)
        return {k: row_stats(v) for k, v in sorted(groups.items())}

    return {
        "study": STUDY,
        "config": config.settings(),
        "overall": row_stats(rows),
        "by_kind": by("kind"),
        "by_language": by("language"),
        "by_side": by("side"),
    }


# --- the run ----------------------------------------------------------------------------


def open_run(config: BaselineConfig, overwrite: bool = False) -> RunDir:
    """The run directory for ``config`` (created, resumed, or restarted with ``overwrite``)."""
    try:
        return RunDir.open(
            config.out,
            study=STUDY,
            config=config.settings(),
            format_version=FORMAT_VERSION,
            inputs={"words": wordlist_files(config.words)},
            key="key",
            overwrite=overwrite,
        )
    except BaselineError:
        raise
    except WhisperlensError as exc:
        raise BaselineError(exc.cause, exc.fix) from None


def run_baseline(
    config: BaselineConfig,
    *,
    executor: Any = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every item of ``config`` (resuming a partial run) and write ``summary.json``.

    ``executor`` runs the clips (:mod:`whisperlens.executors`; default in-process).
    """
    from whisperlens.executors import InlineExecutor

    items = build_items(config)
    with open_run(config, overwrite) as run:
        pending = run.pending(items, lambda i: i.key)
        if pending:
            check_voices(config, items)
            check_model(config, items, load_model(config.model))
            units = clip_units(pending)
            with run.progress(len(items), f"baseline {config.out.name}", progress) as bar:
                for _unit, rows in (executor or InlineExecutor()).map(BaselineTask(config), units):
                    run.extend(rows)
                    bar.update(len(rows))
        rows = run.rows(i.key for i in items)
        summary = summarize(config, rows)
        run.write_summary(summary)
        write_report(run, summary, rows)
    return summary


N_REPORT_CLIPS = 4  # stimuli with audio players in the report


def write_report(run: RunDir, summary: dict[str, Any], rows: Sequence[dict]) -> None:
    """The study's report section, rendered on its own into ``report.html``."""
    from whisperlens.report import Report, render_report

    report = Report("whisperlens baseline", [report_section(summary, rows)], summary["config"])
    render_report(report, run.path)


def report_section(summary: dict[str, Any], rows: Sequence[dict]) -> Any:
    """Accuracy by kind with Wilson CIs, the margin distribution and example stimuli."""
    from whisperlens.report import Audio, Block, Figure, Section, Table, heatmap, histogram

    groups = {"all": summary["overall"], **summary["by_kind"]}
    metrics = (("forced_choice", "accuracy", "ci95"), ("greedy", "exact_match", "exact_match_ci95"))
    cell = [[_nan(g[m][v]) for m, v, _ in metrics] for g in groups.values()]
    low = [[g[m][c][0] for m, _, c in metrics] for g in groups.values()]
    high = [[g[m][c][1] for m, _, c in metrics] for g in groups.values()]
    fig = heatmap(
        cell, row_labels=list(groups), col_labels=["forced choice", "greedy exact match"],
        ci_low=low, ci_high=high, vmin=0.0, vmax=1.0, title="Accuracy with 95 % Wilson CIs",
    )  # fmt: skip
    margins = [r["margin"] for r in rows if forced_choice_defined(r)]
    hist = histogram(margins, title="Forced-choice margins", xlabel="log p(target) - log p(foil)")
    table = Table(
        ["group", "items", "forced choice", "95 % CI", "greedy exact", "mean margin"],
        [[name, g["n_items"], g["forced_choice"]["accuracy"], _ci(g["forced_choice"]["ci95"]),
          g["greedy"]["exact_match"], g["forced_choice"]["mean_margin"]]
         for name, g in {**groups, **summary["by_language"]}.items()],
    )  # fmt: skip
    clips = [
        Audio(f"{r['text']} ({r['language']})", Path(r["audio"]), f"transcript: {r['transcript']}")
        for r in rows[:N_REPORT_CLIPS]
        if Path(r["audio"]).is_file()
    ]
    config = summary["config"]
    intro = (
        f"How well does {config['model']} hear the synthetic stimuli? Each word of "
        f"{summary['overall']['n_items']} items from the {config['words']!r} list is spoken "
        f"by {config['engine']} in the {config['carrier']!r} carrier at rate {config['rate']}, "
        "then scored by greedy decoding (exact match) and by forced choice against its pair "
        "partner (correct when log p(target) > log p(foil), teacher forced after the carrier)."
    )
    blocks: list[Block] = [Figure.from_matplotlib("Accuracy by kind", fig), table,
              Figure.from_matplotlib("Margins", hist), *clips]  # fmt: skip
    return Section("baseline", "Stimulus baseline", intro, blocks)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _ci(bounds: Sequence[float]) -> str:
    return f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"
