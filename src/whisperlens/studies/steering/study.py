"""Cross-modal steering: text-model CAA vectors added to Whisper's encoder, with controls.

The seed (``shared/seeds/000``) built love - hate and anger - calm vectors in GPT-2 XL,
reduced them to Whisper tiny's width (PCA, an autoencoder, a Gaussian random projection),
added ``factor * vec`` to the output of all four encoder blocks and read the transcripts.
This study does the same as data and with controls:

1. concept samples (:mod:`.concepts`) -> CAA differences at the measured layer
   (:mod:`.vectors`), saved as ``text/caa.safetensors`` (``differences`` [N, d_text],
   ``mean`` [d_text]) with the layer scan in ``text/layers.json``;
2. each reducer and layout (:mod:`.mapping`) -> ``vectors/<reducer>-<layout>.safetensors``
   (tensor ``vector``), plus random vectors of equal per-frame norm
   (``vectors/<reducer>-<layout>-random<k>.safetensors``); the sign flip is the negative
   strength of the same vector;
3. every row is one :class:`~whisperlens.interventions.Intervention` (``steer`` at
   ``encoder.blocks.<b>.hook_resid_post`` for the chosen blocks, so additions compound as
   in the seed's hook), recorded in the row. Rows of one clip are computed in batches: the
   unsteered states at the first steered block's input are computed once, and the encoder
   continues from there (:meth:`HookedWhisper.encode_from`) with a per-row payload
   ``strength * vector``, which adds exactly what the row's intervention adds;
4. scores (:mod:`.textscore`) and a summary that compares each vector with its random
   controls and its sign flip, clip-paired, with bootstrap CIs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_args

import torch

from whisperlens._io import atomic_write_json, cache_dir, sha256_files, stable_hash
from whisperlens.decoding import DecodeOptions, TruncationWarning, decode, special_tokens
from whisperlens.errors import WhisperlensError
from whisperlens.frames import N_ENCODER_FRAMES
from whisperlens.interventions import Intervention, Span, load_payloads, save_payloads
from whisperlens.metrics import wer
from whisperlens.runs import FIGURES_DIR, RunDir
from whisperlens.studies.steering import mapping
from whisperlens.studies.steering.concepts import (
    Concept,
    concept_file,
    contrastive_samples,
    list_concepts,
    load_concept,
    templates_file,
)
from whisperlens.studies.steering.textscore import (
    TextScorer,
    compression_ratio,
    incoherent,
    nonword_rate,
    repeat_fraction,
)
from whisperlens.studies.steering.vectors import Position, caa_vectors

STUDY = "steer"
FORMAT_VERSION = 1
CAA_FILE, LAYERS_FILE, VECTOR_DIR = "text/caa.safetensors", "text/layers.json", "vectors"
WHISPER_DIRECTIONS = "whisper/concept_directions.safetensors"
LANGUAGE_DIRECTIONS = "whisper/language_directions.safetensors"
LANGUAGE_CLIPS = "whisper/language_clips.json"
ALIGN_FILE, ALIGN_JSON = "text/alignment.safetensors", "text/alignment.json"
DEFAULT_REDUCERS = ("pca", "ae", "gaussian", "sparse")  # "aligned" costs a first build
MIN_ALIGN_WORDS = 16
DEFAULT_STRENGTHS = (-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0)
FRAME_SECONDS = 0.02
CONTENT_LOST_WER = 0.5  # "broken": incoherent, or over half the unsteered words lost


class SteerError(WhisperlensError, ValueError):
    """A steering configuration that cannot run."""


@dataclass(frozen=True)
class SteerConfig:
    """One steering run (one concept). The CLI parses argv into this."""

    concept: str  # a shipped concept (concepts.list_concepts())
    out: Path  # run directory
    model: str = "tiny.en"  # Whisper model
    text_model: str = "smollm2-135m"  # load_text_model name, path or hub id
    layer: int | None = None  # text-model layer; None: the best held-out layer (vectors.py)
    position: Position = "mean"  # token pooling of the CAA activations
    reducers: tuple[str, ...] = DEFAULT_REDUCERS
    layouts: tuple[str, ...] = ("frames", "direction")
    blocks: tuple[int, ...] | None = None  # encoder blocks steered; None: all (the seed)
    strengths: tuple[float, ...] = DEFAULT_STRENGTHS  # the sign flip is the negative strength
    scale: mapping.Scale = "unit"  # "unit": mapped vectors rescaled to norm 1 per frame
    speech_only: bool = True  # direction layout: add on the clip's speech frames only
    n_random: int = 2  # random controls (seeds) per vector
    seed: int = 0  # seed of the reducers and controls
    engine: str = "piper"  # TTS engine of the evaluation sentences
    max_new_tokens: int = 48  # greedy decoding limit per output
    batch_size: int = 16  # outputs per encoder/decoder batch
    n_align_words: int = 300  # words the aligned reducer's map is fit on (alignment.py)
    n_language_clips: int = 30  # Asterisk clips per language for the language directions

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.concept not in list_concepts():
            raise SteerError(f"unknown concept {self.concept!r}", f"use one of {list_concepts()}")
        for name, values, allowed in (
            ("reducer", self.reducers, mapping.REDUCERS),
            ("layout", self.layouts, mapping.LAYOUTS),
        ):
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise SteerError(f"unknown or no {name}s {bad}", f"use some of {allowed}")
        object.__setattr__(self, "reducers", tuple(self.reducers))
        object.__setattr__(self, "layouts", tuple(self.layouts))
        object.__setattr__(self, "strengths", tuple(float(s) for s in self.strengths))
        if not self.strengths or not all(math.isfinite(s) for s in self.strengths):
            raise SteerError(f"strengths {self.strengths} must be finite and non-empty")
        if self.blocks is not None:
            object.__setattr__(self, "blocks", tuple(sorted({int(b) for b in self.blocks})))
        if self.scale not in mapping.SCALES:
            raise SteerError(f"unknown scale {self.scale!r}", f"use one of {mapping.SCALES}")
        if self.position not in get_args(Position):
            raise SteerError(f"unknown position {self.position!r}", "use 'mean' or 'last'")
        if self.n_random < 0 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise SteerError("n_random must be >= 0, max_new_tokens and batch_size >= 1")
        if self.n_align_words < MIN_ALIGN_WORDS or self.n_language_clips < 1:
            raise SteerError(
                f"n_align_words {self.n_align_words}, n_language_clips {self.n_language_clips}",
                f"use n_align_words >= {MIN_ALIGN_WORDS} and n_language_clips >= 1",
            )

    def settings(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "out"}


@dataclass(frozen=True)
class Variant:
    """One steered output per clip: a mapped vector (or its control) at one strength."""

    reducer: str
    layout: str
    control: str  # "vector" or "random<k>"
    strength: float

    @property
    def vector_file(self) -> str:
        tail = "" if self.control == "vector" else f"-{self.control}"
        return f"{VECTOR_DIR}/{self.reducer}-{self.layout}{tail}.safetensors"


def variants(config: SteerConfig) -> list[Variant]:
    """Every output per clip; random controls skip strength 0 (identical to unsteered)."""
    controls = ["vector", *(f"random{k}" for k in range(config.n_random))]
    return [
        Variant(r, lay, c, s)
        for r in config.reducers
        for lay in config.layouts
        for c in controls
        for s in config.strengths
        if c == "vector" or s != 0
    ]


# --- vectors: CAA in the text model, mapped into Whisper --------------------------------


@functools.lru_cache(maxsize=2)
def load_text(name: str) -> Any:
    from whisperlens.models.text import load_text_model

    return load_text_model(name)


@functools.lru_cache(maxsize=2)
def load_whisper(name: str) -> Any:
    from whisperlens.hooks import HookedWhisper

    return HookedWhisper.from_pretrained(name)


def caa_cache_path(config: SteerConfig) -> Path:
    """Where CAA vectors of this text model, concept data, position and layer are cached."""
    key = stable_hash({
        "text_model": config.text_model, "info": dict(load_text(config.text_model).info),
        "data": sha256_files(_input_files(config)), "position": config.position,
        "layer": config.layer, "format": 1,
    })  # fmt: skip
    return cache_dir("steering") / f"{config.concept}-{key}"


def _input_files(config: SteerConfig) -> list[Path]:
    return [Path(str(concept_file(config.concept))), Path(str(templates_file()))]


def build_caa(config: SteerConfig, run: RunDir) -> dict[str, Any]:
    """``text/caa.safetensors`` and ``text/layers.json`` in the run (cached across runs)."""
    cached = caa_cache_path(config)
    if not (cached / "caa.safetensors").is_file():
        concept = load_concept(config.concept)
        caa = caa_vectors(
            load_text(config.text_model), contrastive_samples(concept), config.layer,
            config.position,
        )  # fmt: skip
        cached.mkdir(parents=True, exist_ok=True)
        info = {"layer": caa.layer, "chosen_by": "given" if caa.scan is None else "held-out",
                "scan": None if caa.scan is None else caa.scan.to_dict(),
                "n_samples": int(caa.differences.shape[0])}  # fmt: skip
        atomic_write_json(cached / "layers.json", info)
        save_payloads(
            cached / "caa.safetensors", {"differences": caa.differences, "mean": caa.mean}
        )
    tensors = load_payloads(cached / "caa.safetensors")
    run.file(CAA_FILE).parent.mkdir(parents=True, exist_ok=True)
    save_payloads(run.file(CAA_FILE), tensors)
    info = json.loads((cached / "layers.json").read_text(encoding="utf-8"))
    atomic_write_json(run.file(LAYERS_FILE), info)
    return {**info, "differences": tensors["differences"], "mean": tensors["mean"]}


def build_vectors(config: SteerConfig, out: Path, caa: dict[str, Any], d_model: int) -> None:
    """Every mapped vector and its random controls as safetensors files in ``out/vectors/``
    (kept when present, so a resumed run steers with the vectors its rows used)."""
    (out / VECTOR_DIR).mkdir(parents=True, exist_ok=True)
    for reducer in config.reducers:
        if all((out / Variant(reducer, lay, "vector", 1.0).vector_file).is_file()
               for lay in config.layouts):  # fmt: skip
            continue
        align = build_alignment(config, out, caa) if reducer == "aligned" else None
        samples, mean = mapping.reduce(
            reducer, caa["differences"], caa["mean"], d_model, config.seed, alignment=align
        )
        for layout in config.layouts:
            vector = mapping.scaled(mapping.layout_vector(layout, samples, mean), config.scale)
            base = Variant(reducer, layout, "vector", 1.0)
            save_payloads(out / base.vector_file, {"vector": vector})
            for k in range(config.n_random):
                control = Variant(reducer, layout, f"random{k}", 1.0)
                rand = mapping.random_like(vector, config.seed * 1000 + k)
                save_payloads(out / control.vector_file, {"vector": rand})


def build_alignment(config: SteerConfig, out: Path, caa: dict[str, Any]) -> torch.Tensor:
    """The ``aligned`` reducer's map ``W`` [d_whisper, d_text] (:mod:`.alignment`), fit once
    per run into ``text/alignment.safetensors`` (``weight``, ``x_mean``, ``y_mean``) with its
    held-out report ``text/alignment.json``; the paired activations are cached across runs."""
    from whisperlens.studies.steering.alignment import align

    path = out / ALIGN_FILE
    if not path.is_file():
        if caa.get("layer") is None:
            raise SteerError("the CAA vectors carry no text-model layer",
                             "build them with build_caa, which records the layer")  # fmt: skip
        whisper = load_whisper(config.model)
        fit = align(whisper, load_text(config.text_model), block_ids(config, whisper.n_layers),
                    int(caa["layer"]), config.position, config.n_align_words, config.seed)  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / ALIGN_JSON, fit.report)
        save_payloads(path, {"weight": fit.map.weight.float(), "x_mean": fit.map.x_mean.float(),
                             "y_mean": fit.map.y_mean.float()})  # fmt: skip
    return load_payloads(path)["weight"]


def build_whisper_directions(config: SteerConfig, run: RunDir, whisper: Any) -> None:
    """``whisper/concept_directions.safetensors``: the concept measured inside Whisper, and
    ``whisper/language_directions.safetensors``: English minus French and minus Spanish
    natural speech (see :mod:`.whisper_geometry`), once per run."""
    from whisperlens.studies.steering.whisper_geometry import (
        concept_directions,
        language_directions,
    )

    path = run.file(WHISPER_DIRECTIONS)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        directions = concept_directions(whisper, load_concept(config.concept), config.engine)
        save_payloads(path, {"directions": directions})
    if not run.file(LANGUAGE_DIRECTIONS).is_file():
        langs, clips_used = language_directions(whisper, config.n_language_clips, config.seed)
        atomic_write_json(run.file(LANGUAGE_CLIPS), clips_used)
        save_payloads(run.file(LANGUAGE_DIRECTIONS), langs)


# --- one clip: the work unit -------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    index: int
    text: str


def block_ids(config: SteerConfig, n_layers: int) -> list[int]:
    blocks = list(range(n_layers)) if config.blocks is None else list(config.blocks)
    if not blocks or blocks[-1] >= n_layers or blocks[0] < 0:
        raise SteerError(f"blocks {config.blocks} do not exist", f"use 0..{n_layers - 1}")
    return blocks


def intervention(
    config: SteerConfig, v: Variant, blocks: Sequence[int], n_speech: int
) -> list[Intervention]:
    """What the row adds, as data: ``strength * vector`` at each chosen block's output."""
    frames = Span(0, n_speech) if v.layout == "direction" and config.speech_only else None
    return [
        Intervention("steer", f"encoder.blocks.{b}.hook_resid_post", frames,
                     f"{v.vector_file}#vector", v.strength)
        for b in blocks
    ]  # fmt: skip


def batch_payload(vectors: Sequence[torch.Tensor], strengths: Sequence[float], n_speech: int | None
                  ) -> torch.Tensor:  # fmt: skip
    """[B, 1500, d]: row b adds ``strengths[b] * vectors[b]`` where its intervention does."""
    rows = []
    for vec, s in zip(vectors, strengths, strict=True):
        full = torch.zeros(N_ENCODER_FRAMES, vec.shape[-1])
        if vec.ndim == 2:
            full += s * vec
        else:
            full[: n_speech or N_ENCODER_FRAMES] = s * vec
        rows.append(full)
    return torch.stack(rows)


@dataclass(frozen=True)
class SteerTask:
    """Executor task: Whisper + text model per worker; one clip's rows per unit."""

    config: SteerConfig
    run_path: Path
    layer: int

    def setup(self) -> Any:
        concept = load_concept(self.config.concept)
        caa = load_payloads(self.run_path / CAA_FILE)
        scorer = TextScorer(load_text(self.config.text_model), self.layer, caa["mean"],
                            concept.lexicon_sign, concept.nrc)  # fmt: skip
        return load_whisper(self.config.model), scorer

    def run(self, state: Any, clip: Clip) -> list[dict[str, Any]]:
        model, scorer = state
        return steer_clip(model, scorer, self.config, self.run_path, clip)


def decode_options(model: Any, config: SteerConfig) -> DecodeOptions:
    lang = "en" if special_tokens(model).multilingual else None
    return DecodeOptions(language=lang, max_new_tokens=config.max_new_tokens,
                         batch_size=config.batch_size)  # fmt: skip


def distinct_work(
    todo: Sequence[Variant], vectors: dict[str, torch.Tensor]
) -> dict[Variant, tuple[str, float] | None]:
    """Each variant's distinct computation: (digest of its vector, strength), or None when it
    adds nothing (strength 0 or a zero vector: the unsteered output). Variants with equal
    keys add bit-identical payloads (e.g. the random controls of unit-scaled directions,
    shared by every reducer), so each key is steered and decoded once per clip."""
    digests = {
        f: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest() + str(tuple(v.shape))
        for f, v in vectors.items()
    }  # fmt: skip
    return {
        v: None if v.strength == 0 or not bool(vectors[v.vector_file].any())
        else (digests[v.vector_file], v.strength)
        for v in todo
    }  # fmt: skip


def steer_clip(
    model: Any, scorer: TextScorer, config: SteerConfig, run_path: Path, clip: Clip
) -> list[dict[str, Any]]:
    """All variants' rows of one clip (batched encoder continuation + greedy decoding)."""
    from whisperlens.stimuli.tts import synthesize

    stim = synthesize(clip.text, engine=config.engine)
    n_speech = min(N_ENCODER_FRAMES, math.ceil(stim.duration_s / FRAME_SECONDS))
    blocks = block_ids(config, model.n_layers)
    site_in = f"encoder.blocks.{blocks[0]}.hook_resid_pre"
    states_1FD = model.run_with_cache(stim.audio, names=site_in)[site_in]
    options = decode_options(model, config)
    todo = variants(config)
    vectors = {v.vector_file: load_payloads(run_path / v.vector_file)["vector"] for v in todo}
    work = distinct_work(todo, vectors)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        plain = decode(model, model.encode_from(blocks[0], states_1FD), options)[0]
        distinct = sorted({k for k in work.values() if k is not None}, key=str)
        first = {k: next(v for v in todo if work[v] == k) for k in distinct}
        results: dict[Any, Any] = {None: plain}
        for i in range(0, len(distinct), config.batch_size):
            chunk = [first[k] for k in distinct[i : i + config.batch_size]]
            payload = batch_payload([vectors[v.vector_file] for v in chunk],
                                    [v.strength for v in chunk],
                                    n_speech if config.speech_only else None)  # fmt: skip
            ivs = [Intervention("steer", f"encoder.blocks.{b}.hook_resid_post", None, "batch")
                   for b in blocks]  # fmt: skip
            with model.apply(ivs, {"batch": payload}):
                enc = model.encode_from(blocks[0], states_1FD.expand(len(chunk), -1, -1))
            results.update(zip(distinct[i : i + config.batch_size], decode(model, enc, options),
                               strict=True))  # fmt: skip
        outs = [results[work[v]] for v in todo]
    base = {"clip": clip.index, "text": clip.text, "audio": str(stim.path), "blocks": blocks,
            "unsteered": plain.text}  # fmt: skip
    return [
        {"key": f"{clip.index}:{v.reducer}:{v.layout}:{v.control}:{v.strength:g}", **base,
         "reducer": v.reducer, "layout": v.layout, "control": v.control, "strength": v.strength,
         "interventions": [iv.to_dict() for iv in intervention(config, v, blocks, n_speech)],
         **score(scorer, clip.text, plain.text, out.text, out.truncated)}
        for v, out in zip(todo, outs, strict=True)
    ]  # fmt: skip


def score(
    scorer: TextScorer, reference: str, unsteered: str, text: str, truncated: bool
) -> dict[str, Any]:
    """A row's scores (see :mod:`.textscore`)."""
    return {
        "transcript": text,
        "truncated": truncated,
        "changed": text != unsteered,
        "edit_distance": wer(unsteered, text).counts.n_errors if unsteered.strip() else None,
        "similarity": scorer.similarity(text, unsteered),
        "wer": wer(reference, text).rate,
        "lexicon": scorer.lexicon(text),
        "lexicon_delta": scorer.lexicon(text) - scorer.lexicon(unsteered),
        "nrc": scorer.nrc(text),
        "nrc_delta": scorer.nrc(text) - scorer.nrc(unsteered),
        "projection_delta": scorer.projection(text) - scorer.projection(unsteered),
        "compression_ratio": compression_ratio(text),
        "repeat_fraction": repeat_fraction(text),
        "nonword_rate": nonword_rate(text),
        "incoherent": incoherent(text, truncated),
        "broken": incoherent(text, truncated) or wer(unsteered, text).rate > CONTENT_LOST_WER,
    }


# --- the run ----------------------------------------------------------------------------


def clips(concept: Concept) -> list[Clip]:
    return [Clip(i, text) for i, text in enumerate(concept.eval)]


def open_run(config: SteerConfig, overwrite: bool = False) -> RunDir:
    try:
        return RunDir.open(
            config.out, study=STUDY, config=config.settings(), format_version=FORMAT_VERSION,
            inputs={"concept": _input_files(config)}, key="key",
            artifacts=["text", VECTOR_DIR, "whisper", FIGURES_DIR], overwrite=overwrite,
        )  # fmt: skip
    except WhisperlensError as exc:
        raise SteerError(exc.cause, exc.fix) from None


def run_steer(
    config: SteerConfig, *, executor: Any = None, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Build the vectors, steer every clip (resuming), write summary.json and report.html."""
    from whisperlens.executors import InlineExecutor
    from whisperlens.studies.steering.summary import summarize, write_report

    concept = load_concept(config.concept)
    units = clips(concept)
    todo = variants(config)
    with open_run(config, overwrite) as run:
        whisper = load_whisper(config.model)
        block_ids(config, whisper.n_layers)
        run.start()  # artifacts follow: the run has really started
        caa = build_caa(config, run)
        build_vectors(config, run.path, caa, int(whisper.d_model))
        build_whisper_directions(config, run, whisper)
        keys = [f"{c.index}:{v.reducer}:{v.layout}:{v.control}:{v.strength:g}"
                for c in units for v in todo]  # fmt: skip
        missing = {int(k.split(":")[0]) for k in keys if k not in run.done}
        pending = [c for c in units if c.index in missing]
        task = SteerTask(config, run.path, int(caa["layer"]))
        with run.progress(len(keys), f"steer {config.concept}", progress) as bar:
            for _clip, rows in (executor or InlineExecutor()).map(task, pending):
                run.extend(r for r in rows if r["key"] not in run.done)
                bar.update(len(rows))
        rows = run.rows(keys)
        summary = summarize(config, caa, rows, run.path)
        run.write_summary(summary)
        write_report(run, summary, rows)
    return summary
