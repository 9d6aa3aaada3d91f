"""The whole SAE study in one run directory: corpus -> activations -> SAE -> evaluation ->
features -> ablation and steering -> dashboard and report.

Each step is its own run directory under ``out`` (``acts/``, ``train/``, ``evaluate/``,
``features/``, ``steer/``, ``dashboard/``) and resumes on its own; the study's run records
one row per finished step, so re-running the same command skips finished steps and resumes
the interrupted one. The cross-lingual steering needs a multilingual model: it extracts and
trains a second, smaller SAE on ``language_model`` (``base``) under ``lang/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from whisperlens.errors import WhisperlensError
from whisperlens.runs import RunDir

STUDY, FORMAT_VERSION = "sae", 1
Scale = Literal["tiny", "quick", "default", "full"]
SCALES: tuple[str, ...] = get_args(Scale)
STEPS = ("extract", "train", "evaluate", "features", "steer", "dashboard")
LANGUAGES = ("en", "es")  # the cross-lingual steering's pair (SteerOptions.languages)
ARTIFACTS = ("acts", "train", "evaluate", "features", "steer", "lang", "dashboard", "figures")


class SAEStudyError(WhisperlensError, ValueError):
    """A SAE study that cannot run as configured."""


@dataclass(frozen=True)
class ScaleSizes:
    """What a scale runs: corpus, evaluation and analysis sizes."""

    corpus: str  # corpus scale (`whisperlens.studies.sae.corpus.SCALE_SPECS`)
    lang_corpus: str  # corpus scale of the multilingual SAE for language steering
    eval_items: int  # held-out clips spliced
    eval_frames: int  # held-out frames for FVU / L0 / dead / dense
    feature_frames: int  # frames analysed for labels
    n_top: int  # top examples per latent (with audio)
    example_latents: int  # latents given top examples (and dashboard figures)
    steer_items: int  # held-out minimal pairs for the ablations
    steer_clips: int  # held-out clips per steering condition (and per language)
    epochs: int  # passes over the training frames
    lang_epochs: int  # the same for the multilingual SAE
    lang_pack: bool  # pack the multilingual SAE's windows (speed; language survives packing)


SIZES: dict[str, ScaleSizes] = {
    "tiny": ScaleSizes("tiny", "tiny", 4, 5_000, 5_000, 2, 16, 4, 1, 1, 1, True),
    "quick": ScaleSizes("quick", "quick", 16, 50_000, 40_000, 4, 96, 6, 2, 3, 1, True),
    "default": ScaleSizes("default", "quick", 48, 200_000, 200_000, 5, 256, 12, 3, 2, 4, True),
    "full": ScaleSizes("default", "default", 200, 400_000, 400_000, 8, 512, 24, 6, 4, 2, False),
}


@dataclass(frozen=True)
class SAEStudyConfig:
    """One SAE study (``whisperlens sae run``); everything but ``out`` is its identity."""

    out: Path
    scale: Scale = "default"
    model: str = "tiny.en"
    site: str | None = None  # default: the store's middle-layer residual site
    architecture: str = "topk"
    expansion: int = 8
    k: int = 32
    seed: int = 0
    language_model: str | None = "base"  # multilingual model for language steering (None: skip)
    lang_site: str | None = "encoder.blocks.3.hook_resid_post"  # its site (middle of 6 blocks)
    train_options: dict[str, Any] = field(default_factory=dict)  # extra TrainConfig fields

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise SAEStudyError(f"unknown scale {self.scale!r}", f"use one of {', '.join(SCALES)}")
        object.__setattr__(self, "out", Path(self.out))

    @property
    def sizes(self) -> ScaleSizes:
        return SIZES[self.scale]

    def settings(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("out")
        return out

    def train_config(self, store: Any, epochs: int) -> Any:
        """The SAE's TrainConfig: ``epochs`` passes over ``store``'s training frames."""
        from whisperlens.studies.sae.train import TrainConfig

        options = {"n_frames": epochs * store.n_split("train"), **self.train_options}
        return TrainConfig(architecture=self.architecture, expansion=self.expansion,  # type: ignore[arg-type]
                           k=self.k, seed=self.seed, **options)  # fmt: skip


def open_run(config: SAEStudyConfig, overwrite: bool = False) -> RunDir:
    try:
        return RunDir.open(config.out, study=STUDY, config=config.settings(),
                           format_version=FORMAT_VERSION, key="step", artifacts=ARTIFACTS,
                           overwrite=overwrite)  # fmt: skip
    except WhisperlensError as exc:
        raise SAEStudyError(exc.cause, exc.fix) from None


def run_sae_study(
    config: SAEStudyConfig, *, executor: Any = None, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run (or resume) every step of the study; write ``summary.json`` and ``report.html``."""
    from whisperlens.studies.sae import steer as steer_mod
    from whisperlens.studies.sae.corpus import build_corpus
    from whisperlens.studies.sae.dashboard import render_dashboard
    from whisperlens.studies.sae.dictionaries import load_sae
    from whisperlens.studies.sae.evaluate import evaluate_sae
    from whisperlens.studies.sae.features import analyse_features
    from whisperlens.studies.sae.report import write_report
    from whisperlens.studies.sae.store import DEFAULT_SITE, ActivationStore, extract
    from whisperlens.studies.sae.train import train_sae

    sizes, out = config.sizes, config.out
    site = config.site or DEFAULT_SITE
    with open_run(config, overwrite) as run:
        run.start()
        results: dict[str, Any] = {k: v.get("summary") for k, v in run.done.items()}

        def step(name: str, fn: Callable[[], Any]) -> Any:
            if name in run.done:
                return results[name]
            t0 = time.perf_counter()
            summary = fn()
            run.append({"step": name, "seconds": round(time.perf_counter() - t0, 1),
                        "summary": summary})  # fmt: skip
            results[name] = summary
            return summary

        def build_store() -> dict[str, Any]:
            corpus = build_corpus(sizes.corpus, seed=config.seed, progress=progress)  # type: ignore[arg-type]
            return extract(corpus, out / "acts", model=config.model, site=site,
                           executor=executor, progress=progress).summary  # fmt: skip

        step("extract", build_store)
        acts = ActivationStore.open(out / "acts")
        step("train", lambda: train_sae(acts, config.train_config(acts, sizes.epochs), out / "train",
                                        progress=progress))  # fmt: skip
        sae = load_sae(out / "train" / "sae")
        step("evaluate", lambda: evaluate_sae(acts, sae, out / "evaluate",
                                              n_items=sizes.eval_items,
                                              max_frames=sizes.eval_frames, seed=config.seed,
                                              executor=executor, progress=progress))  # fmt: skip
        step("features", lambda: analyse_features(acts, sae, out / "features",
                                                  max_frames=sizes.feature_frames,
                                                  n_top=sizes.n_top, seed=config.seed,
                                                  example_latents=sizes.example_latents,
                                                  progress=progress))  # fmt: skip
        lang_sae = None
        if config.language_model is not None:
            lang_sae = _language_sae(config, step, executor, progress)
        options = steer_mod.SteerOptions(
            n_pairs=sizes.steer_items, n_clips=sizes.steer_clips,
            n_lang_clips=sizes.steer_clips, crosslingual=config.language_model is not None,
            lang_model=config.language_model or "base", lang_site=config.lang_site,
            languages=LANGUAGES,
            seed=config.seed)  # fmt: skip
        step("steer", lambda: steer_mod.steer_features(acts, sae, out / "features", out / "steer",
                                                       options=options, lang_sae=lang_sae,
                                                       progress=progress))  # fmt: skip
        step("dashboard", lambda: {"index": str(render_dashboard(
            out / "features", out / "dashboard", title=f"SAE features: {config.model} {site}",
            summaries={k: results[k] for k in ("train", "evaluate", "steer") if results.get(k)},
            executor=executor, only_examples=True, progress=progress).relative_to(out))})  # fmt: skip
        summary = {"config": config.settings(), "site": site,
                   **{name: results.get(name) for name in STEPS},
                   "seconds": {k: v.get("seconds") for k, v in run.done.items()}}  # fmt: skip
        run.write_summary(summary)
        write_report(run, summary)
    return summary


def _language_sae(
    config: SAEStudyConfig,
    step: Callable[[str, Callable[[], Any]], Any],
    executor: Any,
    progress: bool,
) -> tuple[Any, list[dict[str, Any]]]:
    """A second SAE on the multilingual model (``lang/``): its language latents are what the
    cross-lingual steering adds. Its windows are packed at the smaller scales (the language
    of a clip survives packing: cosine 0.91 at the middle block, see docs/sae.md)."""
    import json

    from whisperlens.studies.sae.corpus import build_corpus
    from whisperlens.studies.sae.dictionaries import load_sae
    from whisperlens.studies.sae.features import LATENTS_FILE, analyse_features
    from whisperlens.studies.sae.store import ActivationStore, extract
    from whisperlens.studies.sae.train import train_sae

    sizes, lang = config.sizes, config.out / "lang"
    model, site = config.language_model, config.lang_site
    if model is None or site is None:
        raise SAEStudyError("the cross-lingual part needs language_model and lang_site",
                            "set both, or language_model=None to skip it")  # fmt: skip

    def build_store() -> dict[str, Any]:
        # the languages steered (English, Spanish) and the non-speech: what its latents contrast
        corpus = build_corpus(sizes.lang_corpus, seed=config.seed, languages=LANGUAGES,  # type: ignore[arg-type]
                              progress=progress)  # fmt: skip
        return extract(corpus, lang / "acts", model=model, site=site, pack=sizes.lang_pack,
                       executor=executor, progress=progress).summary  # fmt: skip

    step("lang-extract", build_store)
    acts = ActivationStore.open(lang / "acts")
    step("lang-train", lambda: train_sae(acts, config.train_config(acts, sizes.lang_epochs),
                                         lang / "train", progress=progress))  # fmt: skip
    sae = load_sae(lang / "train" / "sae")
    step("lang-features", lambda: analyse_features(acts, sae, lang / "features",
                                                   max_frames=sizes.feature_frames // 2, n_top=2,
                                                   example_latents=32,
                                                   baselines=False, seed=config.seed,
                                                   progress=progress))  # fmt: skip
    latents = json.loads((lang / "features" / LATENTS_FILE).read_text(encoding="utf-8"))
    return sae, latents
