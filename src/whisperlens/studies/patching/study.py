"""The patching study (seed 001): configuration, pairs, work units, rows and the run.

Experiment A patches one English word's encoder states into another's (869 pairs drawn
seeded and stratified by kind from the consonant, vowel and semantic lists, both
directions) on tiny.en; experiment B patches an English word's states into its Spanish
counterpart (162 pairs from the English-Spanish list, English source only) on base.

A row is one pair direction x (source layer S, target layer L) x mode. Its metrics:

- ``override``: the source word is present (:func:`whisperlens.metrics.word_present`) in the
  patched greedy continuation after the forced carrier prefix. ``target_present`` is
  recorded too: "both" counts as an override, "neither" does not; summaries report the
  shares of source-only, target-only, both and neither. In B this is the seed's "transfer".
- ``margin``: log p(carrier with source word) - log p(carrier with target word) under the
  patched run (teacher forced, each word the logsumexp over its case/period spellings);
  None when the two words are spelled alike ("hospital"/"hospital").
- ``clean_source_*`` / ``clean_target_*``: the same quantities on the unpatched source and
  target clips; the summary's normalised effect is (margin - clean target margin) /
  (clean source margin - clean target margin).

Modes (see :mod:`whisperlens.studies.patching.engine`): ``seed`` (the seed's whole-block
replacement, every (S, L)), ``span`` (the target word's frames only, every (S, L)),
``component`` (attention output, MLP output or resid_mid of block L in the word's frames,
S = L), ``interpolate`` (block L's word frames blended with weight alpha, S = L) and
``decoder`` (one decoder block's cross-attention output from the source audio, same
tokens; layers are decoder blocks). In
``seed`` mode the patched encoder output depends only on (source word, S, L): a unit is one
source word with all its targets, and its diagonal rows are its clean run. In the other
modes a unit is one target word with its sources.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

from whisperlens.decoding import DecodingError, check_language_task, special_tokens
from whisperlens.errors import WhisperlensError
from whisperlens.frames import N_ENCODER_FRAMES, frames_for_span
from whisperlens.interventions import Intervention, Span
from whisperlens.metrics import word_present
from whisperlens.stimuli.carriers import CARRIERS, carrier_for, carrier_split
from whisperlens.stimuli.tts import (
    SynthesisRequest,
    cache_paths,
    get_engine,
    request_key,
    synthesize_request,
)
from whisperlens.stimuli.wordlists import WordPair, load_pairs
from whisperlens.studies.patching import engine
from whisperlens.studies.patching.engine import CellScores

STUDY = "patching"
FORMAT_VERSION = 1
Experiment = Literal["a", "b"]
Mode = Literal["seed", "span", "component", "interpolate", "decoder"]
MODES: tuple[Mode, ...] = get_args(Mode)
DECODER_SITE = "cross_attn_out"  # decoder mode patches this point of one decoder block
PatchCell = tuple[int, int, str]  # (source layer S, target layer L, component or alpha; "")
CLEAN_POINTS = ("hook_resid_pre", *(f"hook_{c}" for c in engine.COMPONENTS))
Stimuli = Literal["carrier", "isolated"]
# The seed's pair counts and models; A's kinds are drawn in proportion to the lists.
SEED_N_PAIRS: dict[str, int] = {"a": 869, "b": 162}
DEFAULT_WORDS: dict[str, str] = {"a": "english", "b": "en-es"}
DEFAULT_MODEL: dict[str, str] = {"a": "tiny.en", "b": "base"}
# Measured default stimuli (docs/baseline.md): Piper for English, espeak-ng for Spanish.
ENGINE_BY_LANGUAGE, RATE_BY_LANGUAGE = {"en": "piper", "es": "espeak"}, {"en": 0.85, "es": 1.0}


class PatchingError(WhisperlensError, ValueError):
    """A patching configuration that cannot run."""


@dataclass(frozen=True)
class PatchConfig:
    """One patching run. The CLI parses argv into this; :func:`run_patching` takes it."""

    experiment: Experiment  # "a": English -> English (tiny.en); "b": English -> Spanish (base)
    out: Path  # run directory
    mode: Mode = "seed"  # seed: whole block output; span/component/interpolate: word frames
    model: str | None = None  # None: tiny.en for A, base for B
    words: str | None = None  # word list; None: "english" (A) or "en-es" (B)
    n_pairs: int | None = None  # seeded subset stratified by kind; None: the seed's 869 / 162
    stimuli: Stimuli = "carrier"  # carrier: "The word is {word}."; isolated: the bare word
    seed: int = 0  # seed of the pair draw
    span_margin: int = 2  # span mode: frames patched either side of the word
    max_new_tokens: int = 6  # greedy tokens after the carrier prefix
    n_bootstrap: int = 1000  # bootstrap resamples per matrix cell

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.experiment not in get_args(Experiment):
            raise PatchingError(f"unknown experiment {self.experiment!r}", "use a or b")
        if self.mode not in MODES:
            raise PatchingError(f"unknown mode {self.mode!r}", f"use one of {', '.join(MODES)}")
        if self.stimuli not in get_args(Stimuli):
            raise PatchingError(f"unknown stimuli {self.stimuli!r}", "use carrier or isolated")
        object.__setattr__(self, "model", self.model or DEFAULT_MODEL[self.experiment])
        object.__setattr__(self, "words", self.words or DEFAULT_WORDS[self.experiment])
        if self.experiment == "b" and str(self.model).endswith(".en"):
            raise PatchingError(
                f"experiment B decodes Spanish, and {self.model!r} is an English-only model",
                "use --model base (multilingual), or another multilingual Whisper",
            )
        for name in ("n_pairs", "max_new_tokens", "n_bootstrap"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise PatchingError(f"{name} must be >= 1, got {value}")
        if self.span_margin < 0:
            raise PatchingError(f"span_margin must be >= 0, got {self.span_margin}")

    def settings(self) -> dict[str, Any]:
        """Everything but the output directory (the run's config)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "out"}


# --- pairs and words --------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    """A word as spoken: its text, language, and the stimulus setting."""

    text: str
    language: str
    stimuli: Stimuli

    @property
    def carrier(self) -> str:
        return (
            carrier_for("the_word_is", self.language).name if self.stimuli == "carrier" else "bare"
        )


@dataclass(frozen=True)
class Direction:
    """One direction of a pair: the source word's states go into the target word's run."""

    pair_id: str
    kind: str  # consonant | vowel | semantic | cognate | non-cognate | custom
    source: Word
    target: Word
    feature: str | None  # phonetic feature of a consonant contrast (voicing+place, ...)
    position: str | None  # where the contrast sits: onset | nucleus | coda

    @property
    def name(self) -> str:
        s, t = self.source, self.target
        return f"{self.pair_id}:{s.language}:{s.text}>{t.language}:{t.text}"


def allocate(counts: dict[str, int], n: int) -> dict[str, int]:
    """``n`` split over kinds in proportion to ``counts`` (largest remainder, ties by name)."""
    total = sum(counts.values())
    exact = {k: n * c / total for k, c in counts.items()}
    out = {k: int(v) for k, v in exact.items()}
    by_remainder = sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))
    for k in by_remainder[: n - sum(out.values())]:
        out[k] += 1
    return out


def select_pairs(pairs: Sequence[WordPair], n: int, seed: int) -> list[WordPair]:
    """A seeded draw of ``n`` pairs, stratified by kind, kept in list order."""
    by_kind: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        by_kind.setdefault(pair.kind, []).append(i)
    share = allocate({k: len(v) for k, v in by_kind.items()}, n)
    rng = random.Random(seed)
    keep = sorted(i for k in sorted(by_kind) for i in rng.sample(by_kind[k], share[k]))
    return [pairs[i] for i in keep]


def build_pairs(config: PatchConfig) -> list[WordPair]:
    """The run's pairs; refuses a count larger than the list and a B list without Spanish."""
    assert config.words is not None
    pairs = load_pairs(config.words)
    if config.experiment == "b":
        spanish = [p for p in pairs if p.language_a == "en" and p.language_b == "es"]
        if not spanish:
            raise PatchingError(
                f"word list {config.words!r} has no English-Spanish pairs for experiment B",
                "use --words en-es, or a list with language_a=en and language_b=es",
            )
        pairs = spanish
    n = config.n_pairs
    if n is not None and n > len(pairs):
        raise PatchingError(
            f"--n-pairs {n} is more than the {len(pairs)} pairs of {config.words!r}",
            f"pass --n-pairs {len(pairs)} or fewer",
        )
    return select_pairs(pairs, min(n or SEED_N_PAIRS[config.experiment], len(pairs)), config.seed)


def build_directions(config: PatchConfig, pairs: Sequence[WordPair]) -> list[Direction]:
    """A: both directions of each pair; B: English source into Spanish target."""
    out = []
    for p in pairs:
        a = Word(p.a, p.language_a, config.stimuli)
        b = Word(p.b, p.language_b, config.stimuli)
        ends = [(a, b)] if config.experiment == "b" else [(a, b), (b, a)]
        for source, target in ends:
            feature, position = p.meta.get("feature"), p.meta.get("position")
            out.append(Direction(p.id, p.kind, source, target, feature, position))
    return out


@dataclass(frozen=True)
class Unit:
    """Work for one worker call: in seed mode one source word and the directions from it;
    in span mode one target word and the directions into it."""

    mode: Mode
    word: Word  # the source (seed) or target (span) word
    directions: tuple[Direction, ...]
    clean_targets: bool  # seed mode: score the targets' clean runs here (no reverse rows)


def build_units(config: PatchConfig, directions: Sequence[Direction]) -> list[Unit]:
    groups: dict[Word, list[Direction]] = {}
    for d in directions:
        groups.setdefault(d.source if config.mode == "seed" else d.target, []).append(d)
    sources = {d.source for d in directions}
    units = []
    for word, group in groups.items():
        needs_clean = any(d.target not in sources for d in group)
        units.append(Unit(config.mode, word, tuple(group), needs_clean))
    return units


def mode_cells(mode: str, n_layers: int) -> list[PatchCell]:
    """seed, span: every (S, L); component: (L, L, component); interpolate: (L, L, alpha)."""
    layers = range(n_layers)
    if mode == "component":
        return [(t, t, c) for t in layers for c in engine.COMPONENTS]
    if mode == "interpolate":
        return [(t, t, f"{a:g}") for t in layers for a in engine.ALPHAS]
    if mode == "decoder":  # n_layers: decoder blocks
        return [(k, k, DECODER_SITE) for k in layers]
    return [(s, t, "") for s in layers for t in layers]


def row_key(mode: str, direction: Direction, cell: PatchCell) -> str:
    variant = f":{cell[2]}" if cell[2] else ""
    return f"{mode}:{direction.name}:{cell[0]}:{cell[1]}{variant}"


def unit_keys(unit: Unit, n_layers: int) -> list[str]:
    cells = mode_cells(unit.mode, n_layers)
    return [row_key(unit.mode, d, c) for d in unit.directions for c in cells]


# --- stimuli ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """A synthesized word: audio, its WAV path and the word's encoder-frame span."""

    audio: Any
    path: str
    span: tuple[int, int]  # encoder frames [start, stop) of the word


def stimulus_request(word: Word) -> SynthesisRequest:
    """What to synthesize for ``word``: its carrier phrase, engine, language and rate."""
    phrase = CARRIERS[word.carrier].render(word.text)
    engine_name = ENGINE_BY_LANGUAGE.get(word.language, "espeak")
    rate = RATE_BY_LANGUAGE.get(word.language, 1.0)
    return SynthesisRequest(phrase.text, engine_name, word.language, None, rate, {})


@functools.lru_cache(maxsize=64)
def clip_for(word: Word) -> Clip:
    """Synthesize ``word`` in its carrier (cached on disk by the TTS layer)."""
    phrase = CARRIERS[word.carrier].render(word.text)
    stim = synthesize_request(stimulus_request(word))
    times = stim.time_span(phrase.word_span) or (0.0, stim.duration_s)
    frames = frames_for_span(*times)
    return Clip(stim.audio, str(stim.path), (frames.start, frames.stop))


def is_synthesized(word: Word) -> bool:
    """True when ``word``'s stimulus is in the TTS disk cache (no TTS engine is loaded)."""
    request = stimulus_request(word)
    tts = get_engine(request.engine)
    key = request_key(request, tts.resolve_voice(request.language, None), tts.version())
    return cache_paths(request.engine, key)[1].is_file()


@dataclass(frozen=True)
class StimuliTask:
    """The executor's task that synthesizes the stimuli a run lacks, before the patching
    workers start: a TTS engine then never sits in a patching worker's memory (the Piper
    voice holds about 280 MB per process)."""

    def setup(self) -> None:
        return None

    def run(self, state: None, word: Word) -> tuple[int, int]:
        return clip_for(word).span


def decode_setup(word: Word) -> tuple[str | None, str]:
    """(forced prefix, language) for decoding and scoring a run heard as ``word``'s clip."""
    prefix = carrier_split(CARRIERS[word.carrier], word.text)[0] or None
    return prefix, word.language


def candidate(word: Word, text: str) -> str:
    """The scored text for ``text`` in ``word``'s carrier ("bat." after "The word is")."""
    return carrier_split(CARRIERS[word.carrier], text)[1]


# --- the task -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def load_model(name: str) -> Any:
    from whisperlens.hooks import HookedWhisper

    return HookedWhisper.from_pretrained(name)


@dataclass(frozen=True)
class PatchTask:
    """The executor's view of a run: load the model once per worker, one unit per call."""

    config: PatchConfig

    def setup(self) -> Any:
        assert self.config.model is not None
        return load_model(self.config.model)

    def run(self, model: Any, unit: Unit) -> list[dict[str, Any]]:
        if unit.mode == "seed":
            return seed_unit_rows(model, self.config, unit)
        return target_unit_rows(model, self.config, unit)


def _score(model: Any, config: PatchConfig, encs: Sequence[Any], listener: Word,
           words: Sequence[str]) -> list[CellScores]:  # fmt: skip
    prefix, language = decode_setup(listener)
    texts = [candidate(listener, w) for w in words]
    return engine.score_cells(model, encs, texts, language=language, prefix=prefix,
                              max_new_tokens=config.max_new_tokens)  # fmt: skip


def seed_unit_rows(model: Any, config: PatchConfig, unit: Unit) -> list[dict[str, Any]]:
    """Rows of one source word: every (S, L) encoded once, decoded and scored once for all
    its targets (the decoder listens as the targets' carrier and language)."""
    listener = unit.directions[0].target
    if any(decode_setup(d.target) != decode_setup(listener) for d in unit.directions):
        raise PatchingError(f"targets of {unit.word.text!r} differ in carrier or language")
    source = clip_for(unit.word)
    by_cell = engine.seed_encodings(model, engine.clean_run(model, source.audio))
    encs = {(s, t, ""): enc for (s, t), enc in by_cell.items()}
    cells = list(encs)
    words = [unit.word.text, *(d.target.text for d in unit.directions)]
    unique = {id(e): e for e in encs.values()}  # the diagonal cells share the clean run
    by_id = dict(zip(unique, _score(model, config, list(unique.values()), listener, words),
                     strict=True))  # fmt: skip
    scores = {c: by_id[id(encs[c])] for c in cells}
    clean_targets: dict[Word, CellScores] = {}
    if unit.clean_targets:
        for d in unit.directions:
            enc = engine.clean_run(model, clip_for(d.target).audio).enc_1FD
            clean_targets[d.target] = _score(model, config, [enc], d.target,
                                             [d.source.text, d.target.text])[0]  # fmt: skip
    rows = []
    for j, d in enumerate(unit.directions):
        diag = scores[(0, 0, "")]
        clean_s = _Clean(diag.transcript, diag.logprobs[0] - diag.logprobs[1 + j])
        ct = clean_targets.get(d.target)
        clean_t = None if ct is None else _Clean(ct.transcript, ct.logprobs[0] - ct.logprobs[1])
        for cell in cells:
            sc = scores[cell]
            margin = sc.logprobs[0] - sc.logprobs[1 + j]
            rows.append(make_row(config, d, cell, sc, margin, clean_s, clean_t, source,
                                 clip_for(d.target), None))  # fmt: skip
    return rows


def target_cells(
    model: Any, mode: str, target: engine.CleanRun, source: engine.CleanRun, window: engine.Window
) -> dict[PatchCell, Any]:
    """Encoder outputs of every cell of a target-word mode (span, component, interpolate)."""
    if mode == "component":
        comps = engine.component_encodings(model, target, source, window)
        return {(t, t, c): enc for (t, c), enc in comps.items()}
    if mode == "interpolate":
        blends = engine.interpolate_encodings(model, target, source.states, window)
        return {(t, t, f"{a:g}"): enc for (t, a), enc in blends.items()}
    n = len(target.states)
    cells = [(s, t) for s in range(n) for t in range(n)]
    spans = engine.span_encodings(model, target, source.states, window, cells)
    return {(s, t, ""): enc for (s, t), enc in spans.items()}


def pair_scores(
    model: Any,
    config: PatchConfig,
    target: engine.CleanRun,
    source: engine.CleanRun,
    window: engine.Window,
    listener: Word,
    pair_words: Sequence[str],
) -> dict[PatchCell, CellScores]:
    """Decoder readings of every cell of one direction (modes other than seed)."""
    if config.mode == "decoder":
        prefix, language = decode_setup(listener)
        by_block = engine.decoder_scores(
            model, target.enc_1FD, source.enc_1FD, [candidate(listener, w) for w in pair_words],
            language=language, prefix=prefix, max_new_tokens=config.max_new_tokens,
        )  # fmt: skip
        return {(k, k, DECODER_SITE): sc for k, sc in by_block.items()}
    encs = target_cells(model, config.mode, target, source, window)
    cells = list(encs)
    scored = _score(model, config, [encs[c] for c in cells], listener, pair_words)
    return dict(zip(cells, scored, strict=True))


def target_unit_rows(model: Any, config: PatchConfig, unit: Unit) -> list[dict[str, Any]]:
    """Rows of one target word: for each of its sources, every cell of the mode, patching
    the target word's frames (plus a margin) with the source's, aligned at word onset."""
    points = CLEAN_POINTS if config.mode == "component" else ()
    target_clip = clip_for(unit.word)
    target = engine.clean_run(model, target_clip.audio, points)
    words = [unit.word.text, *(d.source.text for d in unit.directions)]
    clean_t_scores = _score(model, config, [target.enc_1FD], unit.word, words)[0]
    rows = []
    for j, d in enumerate(unit.directions):
        source_clip = clip_for(d.source)
        source = engine.clean_run(model, source_clip.audio, points)
        window = engine.align_windows(source_clip.span, target_clip.span, config.span_margin,
                                      N_ENCODER_FRAMES)  # fmt: skip
        pair_words = [d.source.text, d.target.text]
        scores = pair_scores(model, config, target, source, window, unit.word, pair_words)
        cs = _score(model, config, [source.enc_1FD], unit.word, pair_words)[0]
        clean_s = _Clean(cs.transcript, cs.logprobs[0] - cs.logprobs[1])
        lp_t = clean_t_scores.logprobs
        clean_t = _Clean(clean_t_scores.transcript, lp_t[1 + j] - lp_t[0])
        for cell, sc in scores.items():
            rows.append(make_row(config, d, cell, sc, sc.logprobs[0] - sc.logprobs[1], clean_s,
                                 clean_t, source_clip, target_clip, window))  # fmt: skip
    return rows


@dataclass(frozen=True)
class _Clean:
    transcript: str
    margin: float


def intervention(mode: str, cell: PatchCell, window: engine.Window | None) -> Intervention:
    """The edit of one cell, as data. The payload names the source's activation (block S,
    the window's source frames); interpolate is a steer by alpha along source - target."""
    s, t, variant = cell
    if mode == "decoder":
        site = f"decoder.blocks.{t}.hook_{variant}"
        return Intervention("patch", site, None, f"source:{site}(same tokens)")
    frames = None if window is None else Span(window.target, window.target + window.n)
    point = f"hook_{variant}" if mode == "component" else "hook_resid_post"
    payload = f"source:encoder.blocks.{s}.{point}"
    if window is not None:
        payload += f"[{window.source}:{window.source + window.n}]"
    site = f"encoder.blocks.{t}.{point}"
    if mode == "interpolate":
        return Intervention("steer", site, frames, payload + "-target", strength=float(variant))
    return Intervention("patch", site, frames, payload)


def make_row(
    config: PatchConfig,
    d: Direction,
    cell: PatchCell,
    sc: CellScores,
    margin: float,
    clean_s: _Clean,
    clean_t: _Clean | None,
    source_clip: Clip,
    target_clip: Clip,
    window: engine.Window | None,
) -> dict[str, Any]:
    lang = d.target.language  # the decoder listens in the target's language
    defined = d.source.text.casefold() != d.target.text.casefold()
    override = word_present(d.source.text, sc.transcript, lang)
    row: dict[str, Any] = {
        "key": row_key(config.mode, d, cell),
        "pair_id": d.pair_id,
        "kind": d.kind,
        "feature": d.feature,
        "position": d.position,
        "source_word": d.source.text,
        "target_word": d.target.text,
        "source_language": d.source.language,
        "target_language": lang,
        "source_audio": source_clip.path,
        "target_audio": target_clip.path,
        "source_layer": cell[0],
        "target_layer": cell[1],
        "mode": config.mode,
        "component": cell[2] if config.mode in ("component", "decoder") else None,
        "alpha": float(cell[2]) if config.mode == "interpolate" else None,
        "intervention": intervention(config.mode, cell, window).to_dict(),
        "transcript": sc.transcript,
        "truncated": sc.truncated,
        "override": override,
        "target_present": word_present(d.target.text, sc.transcript, lang),
        "margin": margin if defined else None,
        "clean_source_transcript": clean_s.transcript,
        "clean_source_margin": clean_s.margin if defined else None,
        "clean_target_transcript": None if clean_t is None else clean_t.transcript,
        "clean_target_margin": None if clean_t is None or not defined else clean_t.margin,
    }
    return row


# --- checks before any work -------------------------------------------------------------


def check_model(config: PatchConfig, directions: Sequence[Direction], model: Any) -> None:
    """Refuse a model that cannot decode every target language (.en models: English only)."""
    st = special_tokens(model)
    for lang in sorted({d.target.language for d in directions}):
        try:
            check_language_task(st, lang, "transcribe")
        except DecodingError as exc:
            fix = "use --model base (multilingual)" if lang != "en" else exc.fix
            raise PatchingError(f"model {config.model!r}: {exc.cause}", fix) from None
