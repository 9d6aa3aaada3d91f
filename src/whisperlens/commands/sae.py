"""``whisperlens sae``: sparse autoencoders on Whisper encoder frames (seed 003).

    whisperlens sae run --scale quick --out runs/sae                 # every step below
    whisperlens sae extract --corpus default --out runs/acts          # or --folder / --manifest / --hf
    whisperlens sae train runs/acts --architecture topk --k 32 --out runs/sae-train
    whisperlens sae evaluate runs/acts runs/sae-train --out runs/sae-eval
    whisperlens sae features runs/acts runs/sae-train --out runs/sae-features
    whisperlens sae steer runs/acts runs/sae-train runs/sae-features --out runs/sae-steer
    whisperlens sae dashboard runs/sae-features --evaluate runs/sae-eval --out runs/dashboard

Each step writes ``config.json`` and ``summary.json`` beside its artifacts and resumes when
re-run with the same options (``--overwrite`` discards a different run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from whisperlens.executors import add_executor_arguments, executor_from_args


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sae", help="sparse autoencoders on encoder frames: extract, train, evaluate, label, steer"
    )
    sub = parser.add_subparsers(dest="sae_command", metavar="STEP", required=True)
    _run_parser(sub)
    _extract_parser(sub)
    _train_parser(sub)
    _evaluate_parser(sub)
    _features_parser(sub)
    _steer_parser(sub)
    _dashboard_parser(sub)


def _common(p: argparse.ArgumentParser, executor: bool = True) -> None:
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--overwrite", action="store_true", help="discard a different run")
    p.add_argument("--json", action="store_true", help="print summary.json on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    if executor:
        add_executor_arguments(p)


def _run_parser(sub: Any) -> None:
    from whisperlens.studies.sae.study import SCALES

    p = sub.add_parser("run", help="the whole study: corpus to dashboard and report")
    p.add_argument("--scale", choices=SCALES, default="default",
                   help="tiny (tests), quick (minutes), default (>= 1M frames), full")  # fmt: skip
    p.add_argument("--model", default="tiny.en", help="Whisper: tiny.en, base, hub id or path")
    p.add_argument("--site", default=None, help="default: encoder.blocks.2.hook_resid_post")
    p.add_argument("--architecture", default="topk", help="topk | standard | batchtopk | jumprelu")
    p.add_argument("--expansion", type=int, default=8, help="latents = expansion x d_model")
    p.add_argument("--k", type=int, default=32, help="active latents per frame (TopK)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--language-model", default="base",
                   help="multilingual model for language steering ('none' to skip)")  # fmt: skip
    _common(p)
    p.set_defaults(func=run_study)


def _extract_parser(sub: Any) -> None:
    p = sub.add_parser("extract", help="frame-level activations of a corpus into shards")
    p.add_argument("--corpus", default="default",
                   help="default | quick | tiny (the offline corpus builder), a manifest "
                   "(.jsonl/.parquet), an audio folder, or hf:NAME (streamed with --n-items)")  # fmt: skip
    p.add_argument("--languages", default=None, help="speech languages of the builder, e.g. en,es")
    p.add_argument("--split", default="train", help="split of an hf: data set")
    p.add_argument("--n-items", type=int, default=None, help="take the first N items")
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--site", default=None, help="default: encoder.blocks.2.hook_resid_post")
    p.add_argument("--pack", action="store_true",
                   help="several clips per 30 s window (faster; changes activations, see docs)")  # fmt: skip
    p.add_argument("--gap-s", type=float, default=0.5, help="silence between packed clips")
    p.add_argument("--keep-padding", action="store_true", help="keep padding frames too")
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    p.add_argument("--seed", type=int, default=0, help="seed of the corpus builder")
    _common(p)
    p.set_defaults(func=run_extract)


def _train_parser(sub: Any) -> None:
    from whisperlens.studies.sae.train import ARCHITECTURES

    p = sub.add_parser("train", help="train a SAE on an extraction (SAELens)")
    p.add_argument("acts", type=Path, help="a `sae extract` run directory")
    p.add_argument("--architecture", choices=ARCHITECTURES, default="topk")
    p.add_argument("--expansion", type=int, default=8)
    p.add_argument(
        "--d-sae", type=int, default=None, help="number of latents (overrides expansion)"
    )
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--l1-coefficient", type=float, default=5.0, help="standard (ReLU+L1)")
    p.add_argument("--l0-coefficient", type=float, default=0.5, help="jumprelu")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--n-frames", type=int, default=None, help="default: one epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps (0: never)")
    _common(p, executor=False)
    p.set_defaults(func=run_train)


def _evaluate_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="FVU, L0, dead/dense, spliced WER and CE vs baselines")
    p.add_argument("acts", type=Path, help="a `sae extract` run directory")
    p.add_argument("sae", type=Path, help="a `sae train` run directory (or its sae/ folder)")
    p.add_argument("--n-items", type=int, default=32, help="held-out clips spliced")
    p.add_argument("--max-frames", type=int, default=100_000, help="held-out frames")
    p.add_argument("--pca-k", type=int, default=None, help="default: the SAE's mean L0")
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    p.set_defaults(func=run_evaluate)


def _features_parser(sub: Any) -> None:
    p = sub.add_parser("features", help="label latents: top frames with audio, label purity")
    p.add_argument("acts", type=Path)
    p.add_argument("sae", type=Path)
    p.add_argument("--max-frames", type=int, default=100_000)
    p.add_argument("--n-top", type=int, default=5)
    p.add_argument("--threshold", type=float, default=0.5, help="monosemanticity lower bound")
    p.add_argument("--no-baselines", action="store_true", help="skip PCA and random directions")
    p.add_argument("--seed", type=int, default=0)
    _common(p, executor=False)
    p.set_defaults(func=run_features)


def _steer_parser(sub: Any) -> None:
    p = sub.add_parser("steer", help="ablate and steer labelled latents, with controls")
    p.add_argument("acts", type=Path)
    p.add_argument("sae", type=Path)
    p.add_argument("features", type=Path, help="a `sae features` run directory")
    p.add_argument("--n-pairs", type=int, default=12, help="held-out minimal pairs")
    p.add_argument("--n-clips", type=int, default=3, help="clips per steering condition")
    p.add_argument("--strengths", default="2,8", help="multiples of the latent's max activation")
    p.add_argument("--lang-model", default="base", help="'none' skips the cross-lingual part")
    p.add_argument("--seed", type=int, default=0)
    _common(p, executor=False)
    p.set_defaults(func=run_steer)


def _dashboard_parser(sub: Any) -> None:
    p = sub.add_parser("dashboard", help="static HTML: every latent with audio and spectrograms")
    p.add_argument("features", type=Path, help="a `sae features` run directory")
    p.add_argument("--evaluate", type=Path, default=None, help="a `sae evaluate` run to show")
    p.add_argument("--steer", type=Path, default=None, help="a `sae steer` run to show")
    p.add_argument("--title", default=None)
    p.add_argument("--out", type=Path, default=None, help="default: FEATURES/dashboard")
    p.add_argument("--no-progress", action="store_true")
    add_executor_arguments(p)
    p.set_defaults(func=run_dashboard)


# -- runners ---------------------------------------------------------------------------------
def _sae_path(path: Path) -> Path:
    return path / "sae" if (path / "sae" / "cfg.json").is_file() else path


def _finish(args: argparse.Namespace, summary: Any, line: str) -> int:
    print(line, file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps(summary, ensure_ascii=False))
    return 0


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def run_study(args: argparse.Namespace) -> int:
    from whisperlens.studies.sae.study import SAEStudyConfig, run_sae_study

    lang = None if str(args.language_model).lower() == "none" else args.language_model
    config = SAEStudyConfig(args.out, scale=args.scale, model=args.model, site=args.site,
                            architecture=args.architecture, expansion=args.expansion, k=args.k,
                            seed=args.seed, language_model=lang)  # fmt: skip
    summary = run_sae_study(config, executor=executor_from_args(args), overwrite=args.overwrite,
                            progress=not args.no_progress)  # fmt: skip
    ev = summary.get("evaluate") or {}
    return _finish(args, summary, f"SAE at {summary['site']}: FVU {_fmt(ev.get('fvu'))}, "
                   f"L0 {_fmt(ev.get('l0'), '.1f')}, CE recovered "
                   f"{_fmt(ev.get('ce_loss_recovered'))} -> {args.out}/report.html")  # fmt: skip


def run_extract(args: argparse.Namespace) -> int:
    from whisperlens._io import check_output_dir
    from whisperlens.studies.sae.corpus import resolve_corpus
    from whisperlens.studies.sae.store import DEFAULT_SITE, extract

    check_output_dir(args.out)  # before building a corpus
    languages = None if args.languages is None else args.languages.split(",")
    dataset = resolve_corpus(args.corpus, seed=args.seed, languages=languages, split=args.split,
                             n_items=args.n_items, progress=not args.no_progress)  # fmt: skip
    store = extract(dataset, args.out, model=args.model, site=args.site or DEFAULT_SITE,
                    speech_only=not args.keep_padding, pack=args.pack, gap_s=args.gap_s,
                    dtype=args.dtype, executor=executor_from_args(args),
                    overwrite=args.overwrite, progress=not args.no_progress)  # fmt: skip
    return _finish(args, store.summary, f"{store.n_frames:,} frames of {store.site} "
                   f"({store.model}) -> {args.out}")  # fmt: skip


def run_train(args: argparse.Namespace) -> int:
    from whisperlens.studies.sae.store import ActivationStore
    from whisperlens.studies.sae.train import TrainConfig, train_sae

    config = TrainConfig(architecture=args.architecture, expansion=args.expansion,
                         d_sae=args.d_sae, k=args.k, l1_coefficient=args.l1_coefficient,
                         l0_coefficient=args.l0_coefficient, lr=args.lr,
                         batch_size=args.batch_size, n_frames=args.n_frames, seed=args.seed,
                         checkpoint_every=args.checkpoint_every)  # fmt: skip
    summary = train_sae(ActivationStore.open(args.acts), config, args.out,
                        overwrite=args.overwrite, progress=not args.no_progress)  # fmt: skip
    return _finish(args, summary, f"trained {args.architecture} SAE -> {args.out}/sae")


def run_evaluate(args: argparse.Namespace) -> int:
    from whisperlens.studies.sae.evaluate import evaluate_sae
    from whisperlens.studies.sae.store import ActivationStore

    summary = evaluate_sae(ActivationStore.open(args.acts), _sae_path(args.sae), args.out,
                           n_items=args.n_items, max_frames=args.max_frames, pca_k=args.pca_k,
                           seed=args.seed, executor=executor_from_args(args),
                           overwrite=args.overwrite, progress=not args.no_progress)  # fmt: skip
    return _finish(args, summary, f"FVU {_fmt(summary.get('fvu'))} (PCA "
                   f"{_fmt((summary.get('pca') or {}).get('fvu'))}), L0 "
                   f"{_fmt(summary.get('l0'), '.1f')}, CE recovered "
                   f"{_fmt(summary.get('ce_loss_recovered'))}, WER spliced "
                   f"{_fmt(summary.get('wer_spliced'))} vs clean "
                   f"{_fmt(summary.get('wer_clean'))} -> {args.out}")  # fmt: skip


def run_features(args: argparse.Namespace) -> int:
    from whisperlens.studies.sae.dictionaries import load_sae
    from whisperlens.studies.sae.features import analyse_features
    from whisperlens.studies.sae.store import ActivationStore

    summary = analyse_features(ActivationStore.open(args.acts), load_sae(_sae_path(args.sae)),
                               args.out, max_frames=args.max_frames, n_top=args.n_top,
                               baselines=not args.no_baselines, threshold=args.threshold,
                               seed=args.seed, overwrite=args.overwrite,
                               progress=not args.no_progress)  # fmt: skip
    sae = (summary.get("dictionaries") or {}).get("sae") or {}
    return _finish(args, summary, f"{sae.get('n_monosemantic')} of {sae.get('n_alive')} alive "
                   f"latents monosemantic -> {args.out}")  # fmt: skip


def run_steer(args: argparse.Namespace) -> int:
    from whisperlens.commands.steer import parse_floats
    from whisperlens.studies.sae.dictionaries import load_sae
    from whisperlens.studies.sae.steer import SteerOptions, steer_features
    from whisperlens.studies.sae.store import ActivationStore

    cross = str(args.lang_model).lower() != "none"
    options = SteerOptions(n_pairs=args.n_pairs, n_clips=args.n_clips,
                           strengths=parse_floats(args.strengths), crosslingual=cross,
                           lang_model=args.lang_model if cross else "base", seed=args.seed)  # fmt: skip
    summary = steer_features(ActivationStore.open(args.acts), load_sae(_sae_path(args.sae)),
                             args.features, args.out, options=options, overwrite=args.overwrite,
                             progress=not args.no_progress)  # fmt: skip
    return _finish(args, summary, f"ablation and steering of {len(summary.get('ablation') or [])} "
                   f"latents -> {args.out}")  # fmt: skip


def run_dashboard(args: argparse.Namespace) -> int:
    from whisperlens.errors import WhisperlensError
    from whisperlens.studies.sae.dashboard import render_dashboard

    summaries = {}
    for name in ("evaluate", "steer"):
        path = getattr(args, name)
        if path is None:
            continue
        if not (Path(path) / "summary.json").is_file():
            raise WhisperlensError(f"{path} has no summary.json",
                                   f"pass a finished `whisperlens sae {name}` run directory")  # fmt: skip
        summaries[name] = json.loads((Path(path) / "summary.json").read_text(encoding="utf-8"))
    index = render_dashboard(args.features, args.out, title=args.title, summaries=summaries,
                             executor=executor_from_args(args), progress=not args.no_progress)  # fmt: skip
    from whisperlens._io import atomic_write_json

    config = {"study": "sae-dashboard", "features": str(Path(args.features).resolve()),
              **{k: None if getattr(args, k) is None else str(Path(getattr(args, k)).resolve())
                 for k in ("evaluate", "steer")}, "title": args.title}  # fmt: skip
    atomic_write_json(index.parent / "config.json", config)
    pages = sorted(p.name for p in (index.parent / "latents").glob("*.html"))
    atomic_write_json(index.parent / "summary.json", {"index": index.name, "n_pages": len(pages)})
    print(f"dashboard: {index}", file=sys.stderr)
    return 0
