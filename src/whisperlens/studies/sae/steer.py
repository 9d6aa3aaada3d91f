"""Does a labelled latent *do* what its label says? Ablation and steering on held-out audio.

`steer_features` reads a features run (``latents.json``) and writes a run directory (study
``sae-steer``) with one row per (part, latent or control, strength, clip) and a summary:

1. **Ablation selectivity** (the SAE's own model). Held-out clips are Piper words from the
   minimal-pair lists (words in the store's vocabulary are left out), plus a few clips of each
   tested word latent's word. For a latent labelled ``phoneme:P`` the clips *with* it are the
   words whose TTS phoneme timings contain ``P``; for ``word:W``, the clips of ``W``. The
   latent is zeroed in the spliced code on the word's frames with the reconstruction error
   kept (``splice(edit=zero_latents([j]), keep_error=True)``: nothing else changes), and the
   forced choice between the word and its minimal-pair partner is scored
   (:func:`whisperlens.scoring.score_encoded`). ``drop = clean - ablated`` (log-prob margin,
   and accuracy); **selectivity** ``= mean drop(with) - mean drop(without)``. Controls:
   ``n_controls`` random alive latents of the nearest firing frequency, ablated on the same
   clips; ``excess`` is the selectivity of ``drop_latent - mean drop_controls`` per clip.
   CIs: percentile bootstrap over clips (with and without resampled apart).
2. **Steering transcripts.** On held-out clips of the store (items of its heldout split), add
   ``strength x max_activation`` times the latent's decoder row on every audio frame, or clamp
   the latent to that value in the spliced code; WER of the transcript against the clean one.
3. **Cross-lingual** (multilingual ``lang_model``, default ``base``). The SAE is trained on
   one model's site; without a SAE on the multilingual model, the language direction is the
   difference of mean activations (target language minus the other) at the same site of
   ``lang_model`` over training-split Asterisk clips (split by the store's hash rule). It is
   added, at ``lang_strengths`` multiples of its norm, to held-out Asterisk clips of the
   other language; the shift in P(target language)
   (:func:`whisperlens.decoding.detect_language`) and the language the transcript is decoded
   in (auto-detected) are recorded. With a SAE on the multilingual model (``lang_sae``), its
   ``language:<code>`` latents' decoder directions are steered instead.

Every steering effect has the same controls at the same strengths: a random direction of
equal norm, the top PCA direction of the site's activations, uniform scaling of the
activation by the factor the steering changes its norm by, and the sign flip.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from whisperlens.frames import frames_for_span, n_audio_frames
from whisperlens.runs import RunDir
from whisperlens.stats import bootstrap_ci, wilson_interval
from whisperlens.studies.sae.dictionaries import (
    Dictionary,
    PCADictionary,
    set_latents,
    splice,
    zero_latents,
)
from whisperlens.studies.sae.features import LATENTS_FILE, difference_ci

STUDY = "sae-steer"
FORMAT_VERSION = 1
STEER_KINDS = ("latent", "sign_flip", "random", "pca", "scale", "clamp")
LANG_KINDS = ("direction", "sign_flip", "random", "pca", "scale")
_BLOCK_SITE = re.compile(r"^encoder\.blocks\.(\d+)\.")


@dataclass(frozen=True)
class SteerOptions:
    """Sizes of the steering study (the run's config); defaults run in minutes on 2 cores."""

    n_latents: int = 2  # labelled latents tested per label type (phoneme, word)
    n_pairs: int = 12  # minimal pairs: 2 held-out word clips each
    n_word_clips: int = 3  # clips of each tested word latent's word (speaking rates)
    n_controls: int = 2  # random latents of similar frequency per tested latent
    n_steer: int = 2  # latents whose steering effect on transcripts is measured
    n_clips: int = 3  # held-out store clips per steering condition
    strengths: tuple[float, ...] = (2.0, 8.0)  # multiples of the latent's max activation
    crosslingual: bool = True  # run part 3 on lang_model
    lang_model: str = "base"  # multilingual model of the cross-lingual part
    lang_site: str | None = None  # site there (None: the store's site)
    languages: tuple[str, str] = ("en", "es")  # steered both ways
    lang_strengths: tuple[float, ...] = (4.0, 8.0)  # multiples of the mean-difference norm
    n_lang_clips: int = 2  # held-out clips per language in the cross-lingual part
    n_direction_clips: int = 8  # training clips per language for the mean-difference direction
    max_new_tokens: int = 32
    seed: int = 0
    n_bootstrap: int = 1000

    def __post_init__(self) -> None:
        for name in ("n_pairs", "n_clips", "n_lang_clips", "n_bootstrap", "n_direction_clips",
                     "max_new_tokens"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.strengths:
            raise ValueError("strengths must not be empty")
        for name in ("strengths", "lang_strengths"):
            object.__setattr__(self, name, tuple(float(s) for s in getattr(self, name)))
        object.__setattr__(self, "languages", tuple(self.languages))


@dataclass
class Clip:
    """One held-out clip and what it contains."""

    id: str
    audio: np.ndarray = field(repr=False)
    text: str  # what is said (the forced-choice target for word clips)
    language: str = "en"
    competitor: str | None = None  # the forced-choice alternative
    phonemes: frozenset[str] = frozenset()
    word: str | None = None
    span: tuple[int, int] | None = None  # encoder frames of the word (None: all audio)

    @property
    def frames(self) -> range:
        n = n_audio_frames(len(self.audio))
        return range(*self.span) if self.span else range(0, max(n, 1))


# -- running the model from the site ---------------------------------------------------------
class SiteRunner:
    """Encodes clips with interventions at ``site``; for a block site the blocks before it
    run once per clip (the input of block L is cached, then ``encode_from(L)`` per run)."""

    def __init__(self, model: Any, site: str):
        self.model, self.site = model, site
        model.sites(site)  # validates the name
        match = _BLOCK_SITE.match(site)
        self.layer = int(match.group(1)) if match else None

    def prepare(self, audio: np.ndarray) -> torch.Tensor:
        feats = self.model.features(audio)
        if self.layer is None:
            return feats
        name = f"encoder.blocks.{self.layer}.hook_resid_pre"
        return self.model.run_with_cache(feats, names=name)[name]

    def encode(
        self, state: torch.Tensor, ctx: AbstractContextManager[Any] | None = None
    ) -> torch.Tensor:
        from whisperlens import decoding

        with ctx if ctx is not None else nullcontext():
            if self.layer is None:
                return decoding.encode(self.model, state)
            return self.model.encode_from(self.layer, state)

    def site_acts(self, state: torch.Tensor, frames: range) -> torch.Tensor:
        """The activation at the site on ``frames`` [n, d] (unmodified run)."""
        store: dict[str, torch.Tensor] = {}

        def grab(rows: torch.Tensor, _site: Any) -> torch.Tensor:
            store["x"] = rows[0].detach().clone()
            return rows

        self.encode(state, self.model.edit(self.site, grab, frames))
        return store["x"].float()


def direction_gain(dictionary: Dictionary, j: int) -> float:
    """Norm of what one unit of latent ``j`` adds to the reconstruction."""
    m = dictionary.n_latents
    z = torch.zeros(2, m)
    z[1, j] = 1.0
    x = dictionary.decode(z)
    return float((x[1] - x[0]).norm())


def steer_context(
    model: Any, site: str, kind: str, vector: torch.Tensor, frames: range
) -> AbstractContextManager[Any]:
    """Add ``vector`` [d] on ``frames``; or, for ``scale``, multiply each frame's activation
    by ``|x + vector| / |x|`` (the same norm change, no direction)."""
    if kind != "scale":
        return model.steer(site, vector, 1.0, frames)

    def scale(rows: torch.Tensor, _site: Any) -> torch.Tensor:
        x = rows.float()
        factor = (x + vector.to(x)).norm(dim=-1, keepdim=True) / x.norm(dim=-1, keepdim=True)
        return (x * factor).to(rows.dtype)

    return model.edit(site, scale, frames)


def unit_random(d: int, seed: int) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


# -- choosing latents ------------------------------------------------------------------------
def tested_latents(latents: list[dict[str, Any]], n_per_type: int) -> list[dict[str, Any]]:
    """The most monosemantic phoneme and word latents (counted ones first)."""
    out = []
    for t in ("phoneme", "word"):
        cands = [r for r in latents if r.get("label_type") == t and r["frequency"] > 0]
        cands.sort(key=lambda r: (not r.get("monosemantic", False), -r["monosemanticity_lo"]))
        out += cands[:n_per_type]
    return out


def control_latents(
    latents: list[dict[str, Any]], target: dict[str, Any], exclude: set[int], n: int, seed: int
) -> list[int]:
    """``n`` alive latents whose firing frequency is nearest the target's (log scale), drawn
    at random among the ``4 n`` nearest."""
    alive = [r for r in latents if r["frequency"] > 0 and int(r["latent"]) not in exclude]
    f0 = math.log(max(target["frequency"], 1e-9))
    alive.sort(key=lambda r: abs(math.log(r["frequency"]) - f0))
    pool = [int(r["latent"]) for r in alive[: 4 * n]]
    rng = np.random.default_rng(seed + int(target["latent"]))
    return sorted(rng.choice(pool, size=min(n, len(pool)), replace=False).tolist())


# -- held-out clips ----------------------------------------------------------------------------
def word_clip(word: str, competitor: str | None, rate: float = 1.0, tag: str = "") -> Clip:
    """A Piper clip of ``word`` with its phonemes and the word's encoder frames."""
    from whisperlens.stimuli.tts import synthesize

    stim = synthesize(word, engine="piper", language="en", rate=rate)
    phonemes = frozenset(p.label for p in stim.phonemes or [])
    span = None
    if stim.words:
        sl = frames_for_span(stim.words[0].start_s, stim.words[-1].end_s)
        span = (sl.start, sl.stop)
    return Clip(f"word:{word}{tag}", stim.audio, word, "en", competitor, phonemes, word, span)


def minimal_pair_clips(n_pairs: int, exclude: set[str], seed: int) -> list[Clip]:
    """Both sides of ``n_pairs`` minimal pairs (vowel + consonant lists) not in ``exclude``."""
    from whisperlens.stimuli.wordlists import load_pairs

    pairs = load_pairs("vowel") + load_pairs("consonant")
    order = np.random.default_rng(seed).permutation(len(pairs))
    chosen = [pairs[i] for i in order if not ({pairs[i].a, pairs[i].b} & exclude)][:n_pairs]
    return [c for p in chosen for c in (word_clip(p.a, p.b), word_clip(p.b, p.a))]


def heldout_store_clips(store: Any, n: int, language: str | None, seed: int) -> list[Clip]:
    """Speech items of the store's heldout split with a transcript (seeded choice)."""
    from whisperlens.studies.sae.store import item_split

    items = [
        it
        for it in store.dataset()
        if it.label == "speech" and it.text and item_split(it.id) == 1
        and (language is None or it.language in (None, language))
        and (it.duration_s or 0.0) <= 30.0  # one window: the clip is steered whole
    ]  # fmt: skip
    rng = np.random.default_rng(seed)
    picked = [items[i] for i in sorted(rng.permutation(len(items))[:n].tolist())]
    return [Clip(it.id, it.load(), it.text or "", it.language or "en") for it in picked]


def asterisk_clips(language: str, split: int, n: int, seed: int) -> list[Clip]:
    """Asterisk clips of ``language`` in ``split`` (0 train, 1 heldout by the store's rule)."""
    from whisperlens.datasets import asterisk
    from whisperlens.studies.sae.store import item_split

    every = asterisk(language)  # type: ignore[arg-type]
    items = [it for it in every if item_split(it.id) == split and it.text]
    rng = np.random.default_rng(seed)
    picked = [items[i] for i in sorted(rng.permutation(len(items))[:n].tolist())]
    return [Clip(it.id, it.load(), it.text or "", language) for it in picked]


# -- part 1: ablation selectivity ------------------------------------------------------------
def _score_language(model: Any) -> str | None:
    from whisperlens.decoding import special_tokens

    return "en" if special_tokens(model).multilingual else None


def forced_margin(model: Any, enc: torch.Tensor, clip: Clip, language: str | None) -> float:
    """log P(word) - log P(competitor) given the encoder output."""
    from whisperlens.scoring import score_encoded

    lp = score_encoded(model, enc, [clip.text, clip.competitor or ""], language=language)[0]
    return float(lp[0] - lp[1])


def run_ablations(
    run: RunDir,
    runner: SiteRunner,
    dictionary: Dictionary,
    clips: Sequence[Clip],
    latents: Sequence[int],
    bar: Any,
) -> None:
    """Rows ``ablate|clean|clip`` and ``ablate|L<j>|clip``: the forced-choice margin."""
    language = _score_language(runner.model)
    for clip in clips:
        todo = [j for j in latents if f"ablate|L{j}|{clip.id}" not in run.done]
        clean_id = f"ablate|clean|{clip.id}"
        if not todo and clean_id in run.done:
            continue
        state = runner.prepare(clip.audio)
        if clean_id not in run.done:
            margin = forced_margin(runner.model, runner.encode(state), clip, language)
            run.append({"id": clean_id, "part": "ablate", "clip": clip.id, "margin": margin,
                        "phonemes": sorted(clip.phonemes), "word": clip.word})  # fmt: skip
            bar.update(1)
        for j in todo:
            ctx = splice(runner.model, dictionary, runner.site, clip.frames,
                         edit=zero_latents([j]), keep_error=True)  # fmt: skip
            margin = forced_margin(runner.model, runner.encode(state, ctx), clip, language)
            run.append({"id": f"ablate|L{j}|{clip.id}", "part": "ablate", "latent": j,
                        "clip": clip.id, "margin": margin})  # fmt: skip
            bar.update(1)


def contains(label: str, clean_row: dict[str, Any]) -> bool:
    """Whether the clip of ``clean_row`` contains the latent label ``type:value``."""
    kind, _, value = label.partition(":")
    if kind == "phoneme":
        return value in clean_row["phonemes"]
    return kind == "word" and clean_row.get("word") == value


def selectivity(
    drop: np.ndarray, with_mask: np.ndarray, n_resamples: int, seed: int
) -> dict[str, Any]:
    """mean drop over clips with the label minus mean over clips without, bootstrap CI."""
    out = difference_ci(drop[with_mask], drop[~with_mask], n_resamples, seed)
    return {
        "value": None if out is None else out[0],
        "ci": None if out is None else out[1],
        "mean_drop_with": float(drop[with_mask].mean()) if with_mask.any() else None,
        "mean_drop_without": float(drop[~with_mask].mean()) if (~with_mask).any() else None,
    }


def summarize_ablation(
    rows: dict[str, dict[str, Any]], plan: list[dict[str, Any]], options: SteerOptions
) -> list[dict[str, Any]]:
    """Per tested latent: selectivity of the margin and accuracy drops, controls, excess."""
    clean = {r["clip"]: r for r in rows.values() if r["id"].startswith("ablate|clean|")}
    clip_ids = sorted(clean)
    out = []
    for entry in plan:
        j, label = entry["latent"], entry["label"]
        with_mask = np.array([contains(label, clean[c]) for c in clip_ids])

        def drops(latent: int) -> tuple[np.ndarray, np.ndarray]:
            m0 = np.array([clean[c]["margin"] for c in clip_ids])
            m1 = np.array([rows[f"ablate|L{latent}|{c}"]["margin"] for c in clip_ids])
            return m0 - m1, (m0 > 0).astype(float) - (m1 > 0).astype(float)

        margin_drop, acc_drop = drops(j)
        ctrl = [drops(c) for c in entry["controls"]]
        args = (options.n_bootstrap, options.seed)
        result = {
            "latent": j,
            "label": label,
            "frequency": entry["frequency"],
            "n_with": int(with_mask.sum()),
            "n_without": int((~with_mask).sum()),
            "margin": selectivity(margin_drop, with_mask, *args),
            "accuracy": selectivity(acc_drop, with_mask, *args),
            "controls": entry["controls"],
            "control_margin": [selectivity(c[0], with_mask, *args)["value"] for c in ctrl],
        }
        if ctrl:
            excess = margin_drop - np.mean([c[0] for c in ctrl], axis=0)
            result["excess_margin"] = selectivity(excess, with_mask, *args)
        out.append(result)
    return out


# -- part 2: steering transcripts ---------------------------------------------------------
def transcribe_encoded(model: Any, enc: torch.Tensor, language: str | None, max_new: int) -> Any:
    import warnings

    from whisperlens.decoding import DecodeOptions, TruncationWarning, decode

    with warnings.catch_warnings():  # steered text often babbles to the limit: recorded instead
        warnings.simplefilter("ignore", TruncationWarning)
        return decode(model, enc, DecodeOptions(language=language, max_new_tokens=max_new))[0]


def steer_conditions(
    dictionary: Dictionary, record: dict[str, Any], pc1: torch.Tensor, options: SteerOptions
) -> Iterator[tuple[str, float, str, torch.Tensor, Any]]:
    """(kind, strength, condition id, vector, code edit or None) for one latent."""
    j = int(record["latent"])
    unit = dictionary.directions[j].float()
    rand = unit_random(unit.shape[0], options.seed + j)
    base = float(record["max_activation"]) * direction_gain(dictionary, j)
    for alpha in options.strengths:
        s = alpha * base
        vectors = {"latent": s * unit, "sign_flip": -s * unit, "random": s * rand,
                   "pca": s * pc1, "scale": s * unit}  # fmt: skip
        for kind in STEER_KINDS:
            edit = (
                set_latents([j], alpha * float(record["max_activation"]))
                if kind == "clamp"
                else None
            )
            vec = vectors.get(kind, s * unit)
            yield kind, alpha, f"steer|L{j}|{kind}|{alpha:g}", vec, edit


def run_steering(
    run: RunDir,
    runner: SiteRunner,
    dictionary: Dictionary,
    records: Sequence[dict[str, Any]],
    clips: Sequence[Clip],
    pc1: torch.Tensor,
    options: SteerOptions,
    bar: Any,
) -> None:
    from whisperlens.metrics import wer

    model, multilingual = runner.model, _score_language(runner.model) is not None
    for clip in clips:
        language = clip.language if multilingual else None
        state = runner.prepare(clip.audio)
        clean_id = f"steer|clean|{clip.id}"
        if clean_id not in run.done:
            text = transcribe_encoded(
                model, runner.encode(state), language, options.max_new_tokens
            ).text
            run.append({"id": clean_id, "part": "steer", "clip": clip.id, "text": text,
                        "reference": clip.text,
                        "wer_reference": wer(clip.text, text, clip.language).rate})  # fmt: skip
            bar.update(1)
        clean_text = run.done[clean_id]["text"]
        for record in records:
            for kind, alpha, cond, vec, edit in steer_conditions(dictionary, record, pc1, options):
                row_id = f"{cond}|{clip.id}"
                if row_id in run.done:
                    continue
                ctx: AbstractContextManager[Any]
                if edit is not None:
                    ctx = splice(
                        model, dictionary, runner.site, clip.frames, edit=edit, keep_error=True
                    )
                else:
                    ctx = steer_context(model, runner.site, kind, vec, clip.frames)
                tr = transcribe_encoded(
                    model, runner.encode(state, ctx), language, options.max_new_tokens
                )
                text = tr.text
                run.append({"id": row_id, "part": "steer", "latent": int(record["latent"]),
                            "label": record["label"], "kind": kind, "strength": alpha,
                            "clip": clip.id, "text": text, "clean_text": clean_text,
                            "wer_clean": _wer_or_changed(clean_text, text),
                            "changed": text.strip() != clean_text.strip(),
                            "truncated": tr.truncated})  # fmt: skip
                bar.update(1)


def _wer_or_changed(ref: str, hyp: str) -> float:
    """WER of ``hyp`` against ``ref``; an empty reference gives 0 if hyp is empty too, else 1."""
    from whisperlens.metrics import normalize, wer

    if not normalize(ref):
        return 0.0 if not normalize(hyp) else 1.0
    return wer(ref, hyp).rate


# -- part 3: cross-lingual -----------------------------------------------------------------
def mean_site_activation(runner: SiteRunner, clips: Sequence[Clip]) -> torch.Tensor:
    acts = [runner.site_acts(runner.prepare(c.audio), c.frames) for c in clips]
    return torch.stack([a.mean(0) for a in acts]).mean(0)


def language_directions(
    runner: SiteRunner, options: SteerOptions
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per language, the mean-difference direction toward it (mean_T - mean_other) and the
    top principal direction of the same clips' activations (the PCA control)."""
    a, b = options.languages
    train = {
        lang: asterisk_clips(lang, 0, options.n_direction_clips, options.seed) for lang in (a, b)
    }
    means = {lang: mean_site_activation(runner, cl) for lang, cl in train.items()}
    acts = torch.cat(
        [
            runner.site_acts(runner.prepare(c.audio), c.frames)
            for cl in train.values()
            for c in cl[:3]
        ]
    )
    pc1 = PCADictionary.fit(acts, 1).components[0]
    return {a: means[a] - means[b], b: means[b] - means[a]}, pc1


def latent_language_directions(
    dictionary: Dictionary, latents: Sequence[dict[str, Any]], languages: Sequence[str]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Per language with a ``language:<code>`` latent (the highest ``monosemanticity_lo``),
    its decoder direction scaled to its max activation's contribution."""
    out, info = {}, {}
    for lang in languages:
        cands = [r for r in latents if r.get("label") == f"language:{lang}" and r["frequency"] > 0]
        if not cands:
            continue
        best = max(cands, key=lambda r: (bool(r.get("monosemantic")), r["monosemanticity_lo"]))
        j = int(best["latent"])
        norm = float(best["max_activation"]) * direction_gain(dictionary, j)
        out[lang] = dictionary.directions[j].float() * norm
        info[lang] = {"kind": "sae-latent", "latent": j, "norm": norm,
                      "monosemanticity": best["monosemanticity"],
                      "monosemantic": bool(best.get("monosemantic"))}  # fmt: skip
    return out, info


def run_crosslingual(
    run: RunDir,
    runner: SiteRunner,
    options: SteerOptions,
    bar: Any,
    lang_sae: tuple[Dictionary, Sequence[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Part 3; ``lang_sae`` = (a dictionary on ``runner``'s model and site, its features'
    latents): its language latents replace the mean-difference direction where present."""
    from whisperlens.decoding import detect_language

    model = runner.model
    directions, pc1 = language_directions(runner, options)
    info: dict[str, Any] = {
        lang: {"kind": "mean-difference", "norm": float(v.norm())} for lang, v in directions.items()
    }
    if lang_sae is not None:
        found, found_info = latent_language_directions(*lang_sae, options.languages)
        directions |= found
        info |= found_info
    for source in options.languages:
        target = next(lang for lang in options.languages if lang != source)
        direction = directions[target]
        unit, norm = direction / direction.norm(), float(direction.norm())
        rand = unit_random(unit.shape[0], options.seed + 7)
        for clip in asterisk_clips(source, 1, options.n_lang_clips, options.seed):
            state = runner.prepare(clip.audio)
            conds: list[tuple[str, float, AbstractContextManager[Any] | None]] = [
                ("clean", 0.0, None)
            ]
            for alpha in options.lang_strengths:
                s = alpha * norm
                vecs = {"direction": s * unit, "sign_flip": -s * unit, "random": s * rand,
                        "pca": s * pc1, "scale": s * unit}  # fmt: skip
                conds += [(k, alpha, steer_context(model, runner.site, k, vecs[k], clip.frames))
                          for k in LANG_KINDS]  # fmt: skip
            for kind, alpha, ctx in conds:
                row_id = f"lang|{source}>{target}|{kind}|{alpha:g}|{clip.id}"
                if row_id in run.done:
                    continue
                enc = runner.encode(state, ctx)
                probs = detect_language(model, enc)[0]
                tr = transcribe_encoded(model, enc, None, options.max_new_tokens)
                run.append({"id": row_id, "part": "lang", "source": source, "target": target,
                            "kind": kind, "strength": alpha, "clip": clip.id,
                            "p_target": probs.get(target, 0.0), "p_source": probs.get(source, 0.0),
                            "language": tr.language, "text": tr.text,
                            "truncated": tr.truncated})  # fmt: skip
                bar.update(1)
    return info


# -- summaries -------------------------------------------------------------------------------
def _mean_ci(values: Sequence[float], options: SteerOptions) -> dict[str, Any]:
    arr = np.asarray(values, dtype=float)
    if not len(arr):
        return {"mean": None, "ci": None, "n": 0}
    ci = bootstrap_ci(arr, n_resamples=options.n_bootstrap, seed=options.seed)
    return {"mean": float(arr.mean()), "ci": list(ci), "n": int(len(arr))}


def _proportion(flags: Sequence[bool]) -> dict[str, Any]:
    k, n = int(sum(flags)), len(flags)
    return {"fraction": k / n if n else None, "ci": list(wilson_interval(k, n)), "n": n}


def summarize_steering(
    rows: Sequence[dict[str, Any]], options: SteerOptions
) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["part"] == "steer" and "kind" in r:
            groups[(r["latent"], r["label"], r["kind"], r["strength"])].append(r)
    out = []
    for (j, label, kind, alpha), rs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][3], STEER_KINDS.index(kv[0][2]))
    ):
        out.append({
            "latent": j, "label": label, "kind": kind, "strength": alpha,
            "wer_clean": _mean_ci([r["wer_clean"] for r in rs], options),
            "changed": _proportion([r["changed"] for r in rs]),
            "examples": [{"clip": r["clip"], "clean": r["clean_text"], "steered": r["text"]}
                         for r in rs[:2]],
        })  # fmt: skip
    return out


def summarize_crosslingual(
    rows: Sequence[dict[str, Any]], options: SteerOptions
) -> list[dict[str, Any]]:
    lang = [r for r in rows if r["part"] == "lang"]
    clean = {(r["source"], r["clip"]): r for r in lang if r["kind"] == "clean"}
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in lang:
        if r["kind"] != "clean":
            groups[(r["source"], r["target"], r["kind"], r["strength"])].append(r)
    out = []
    for (src, tgt, kind, alpha), rs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][3], LANG_KINDS.index(kv[0][2]))
    ):
        base = [clean[(src, r["clip"])] for r in rs]
        pairs = list(zip(rs, base, strict=True))
        out.append({
            "source": src, "target": tgt, "kind": kind, "strength": alpha,
            "delta_p_target": _mean_ci([r["p_target"] - b["p_target"] for r, b in pairs], options),
            "delta_p_source": _mean_ci([r["p_source"] - b["p_source"] for r, b in pairs], options),
            "p_target_clean": _mean_ci([b["p_target"] for b in base], options),
            "output_in_target": _proportion([r["language"] == tgt for r in rs]),
            "output_in_target_clean": _proportion([b["language"] == tgt for b in base]),
            "examples": [{"clip": r["clip"], "clean": b["text"], "steered": r["text"],
                          "language": r["language"]} for r, b in pairs[:2]],
        })  # fmt: skip
    return out


# -- driver ----------------------------------------------------------------------------------
def ablation_plan(latents: list[dict[str, Any]], options: SteerOptions) -> list[dict[str, Any]]:
    """The tested latents with their frequency-matched random controls."""
    tested = tested_latents(latents, options.n_latents)
    exclude = {int(r["latent"]) for r in tested}
    return [
        {"latent": int(r["latent"]), "label": r["label"], "frequency": r["frequency"],
         "monosemanticity_lo": r["monosemanticity_lo"],
         "controls": control_latents(latents, r, exclude, options.n_controls, options.seed)}
        for r in tested
    ]  # fmt: skip


def ablation_clips(
    plan: list[dict[str, Any]], store_words: set[str], options: SteerOptions
) -> list[Clip]:
    """Minimal-pair words not in the store's vocabulary, plus clips of each word latent's word."""
    clips = minimal_pair_clips(options.n_pairs, store_words, options.seed)
    pool = [c.text for c in clips]
    rng = np.random.default_rng(options.seed)
    for entry in plan:
        kind, _, word = entry["label"].partition(":")
        if kind != "word":
            continue
        others = [w for w in pool if w != word] or ["the"]
        for k in range(options.n_word_clips):
            rate = 1.0 + 0.1 * (k - (options.n_word_clips - 1) / 2)
            comp = others[int(rng.integers(len(others)))]
            clips.append(word_clip(word, comp, rate, tag=f"@{rate:g}"))
    return clips


def steer_features(
    store: Any,
    dictionary: Dictionary,
    features: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    options: SteerOptions | None = None,
    model: Any = None,
    lang_model: Any = None,
    lang_sae: tuple[Dictionary, Sequence[dict[str, Any]]] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Ablate and steer the labelled latents of a features run (``features``) on held-out
    audio and write the steering run ``out`` (see the module docstring); returns the summary.
    ``model`` / ``lang_model`` are loaded HookedWhisper models (default: the store's model and
    ``options.lang_model``); ``lang_sae`` = (a dictionary trained on ``lang_model`` at the
    cross-lingual site, the latents of its features run) supplies SAE language latents for
    part 3 (default: the mean-difference direction)."""
    from whisperlens.hooks import HookedWhisper
    from whisperlens.studies.sae.features import dictionary_fingerprint

    options = options or SteerOptions()
    latents_file = Path(features) / LATENTS_FILE
    latents = json.loads(latents_file.read_text(encoding="utf-8"))
    config = {"store": str(Path(store.path).resolve()), "site": store.site, "model": store.model,
              "dictionary": {"name": dictionary.name, "n_latents": dictionary.n_latents,
                             "fingerprint": dictionary_fingerprint(dictionary)},
              "options": asdict(options)}  # fmt: skip
    with RunDir.open(out, study=STUDY, config=config, format_version=FORMAT_VERSION,
                     inputs={"latents": latents_file}, overwrite=overwrite) as run:  # fmt: skip
        t0 = time.perf_counter()
        runner = SiteRunner(model or HookedWhisper.from_pretrained(store.model), store.site)
        plan = ablation_plan(latents, options)
        clips = ablation_clips(plan, set(store.vocab.get("word", [])), options)
        ablated = sorted({e["latent"] for e in plan} | {c for e in plan for c in e["controls"]})
        steer_recs = sorted((r for r in latents if int(r["latent"]) in {e["latent"] for e in plan}),
                            key=lambda r: -r["monosemanticity_lo"])[: options.n_steer]  # fmt: skip
        english_only = _score_language(runner.model) is None
        steer_clips = heldout_store_clips(store, options.n_clips, "en" if english_only else None,
                                          options.seed) or clips[: options.n_clips]  # fmt: skip
        n_lang = 2 * options.n_lang_clips * (1 + len(LANG_KINDS) * len(options.lang_strengths))
        total = (len(clips) * (1 + len(ablated)) + len(steer_clips)
                 * (1 + len(steer_recs) * len(STEER_KINDS) * len(options.strengths))
                 + (n_lang if options.crosslingual else 0))  # fmt: skip
        bar = run.progress(total, "sae steer", progress)
        run_ablations(run, runner, dictionary, clips, ablated, bar)
        if steer_recs:
            pc1 = _top_pc(store, options.seed)
            run_steering(run, runner, dictionary, steer_recs, steer_clips, pc1, options, bar)
        lang_info = None
        if options.crosslingual:
            lm = lang_model or HookedWhisper.from_pretrained(options.lang_model)
            lang_runner = SiteRunner(lm, options.lang_site or store.site)
            lang_info = run_crosslingual(run, lang_runner, options, bar, lang_sae)
        bar.close()
        rows = run.done
        summary = {
            "study": STUDY,
            "model": store.model,
            "site": store.site,
            "n_ablation_clips": len(clips),
            "n_store_words_excluded": len(set(store.vocab.get("word", []))),
            "ablation": summarize_ablation(rows, plan, options),
            "steering": summarize_steering(list(rows.values()), options),
            "crosslingual": summarize_crosslingual(list(rows.values()), options),
            "language_directions": lang_info,
            "wall_s": round(time.perf_counter() - t0, 2),
        }
        run.write_summary(summary)
    return summary


def _top_pc(store: Any, seed: int) -> torch.Tensor:
    """The top principal direction of the store's training activations (a sample)."""
    acts, _ = store.load(split=None, max_frames=20_000, seed=seed, labels=False)
    return PCADictionary.fit(acts, 1).components[0]


def read_latents(features: str | os.PathLike[str]) -> list[dict[str, Any]]:
    return json.loads((Path(features) / LATENTS_FILE).read_text(encoding="utf-8"))


__all__ = [
    "Clip",
    "SiteRunner",
    "SteerOptions",
    "ablation_plan",
    "selectivity",
    "steer_features",
]
