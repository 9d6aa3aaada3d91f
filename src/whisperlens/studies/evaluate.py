"""Word error rate of a model on an audio dataset: resumable, parallel, with a bootstrap CI.

Work units are batches of clips in one language (the decoding language is the batch's); each
runs through an executor (:mod:`whisperlens.executors`) into one run directory
(:mod:`whisperlens.runs`) keyed by item id. A clip that cannot be read becomes an error row
(``{"id", "error"}``) and the rest of its batch is still transcribed; error rows are counted
in the summary and left out of the WER.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whisperlens.errors import WhisperlensError
from whisperlens.runs import RunDir
from whisperlens.stats import bootstrap_ci

STUDY = "evaluate"
FORMAT_VERSION = 2  # rows: id, ref, hyp, language, ref_norm, hyp_norm, n_errors, n_ref | error
BUILDERS = ("asterisk-en", "asterisk-es", "asterisk-fr", "asterisk-it", "asterisk-ru", "music")


@dataclass(frozen=True)
class EvalConfig:
    dataset: str  # "asterisk-en", "asterisk-es", ... or a manifest path (.jsonl/.parquet)
    model: str  # offline name, hub id or path
    out: str  # output directory
    language: str | None = None  # decoding language; None: each item's own (or detect)
    n_items: int | None = None  # evaluate a seeded subset of this size
    seed: int = 0
    batch_size: int = 8
    n_bootstrap: int = 1000  # resamples for the WER confidence interval

    def __post_init__(self) -> None:
        if self.n_items is not None and self.n_items < 1:
            raise WhisperlensError(f"n_items must be >= 1, got {self.n_items}")
        if self.batch_size < 1:
            raise WhisperlensError(f"batch_size must be >= 1, got {self.batch_size}")

    def settings(self) -> dict[str, Any]:
        """Everything but the output directory."""
        return {k: v for k, v in asdict(self).items() if k != "out"}


def load_dataset(spec: str):
    """A dataset by builder name (``asterisk-en``, ``music``) or manifest path."""
    from whisperlens import datasets

    if spec.startswith("asterisk-") and spec in BUILDERS:
        return datasets.asterisk(spec.split("-", 1)[1])  # type: ignore[arg-type]
    if spec == "music":
        return datasets.music()
    if Path(spec).suffix in {".jsonl", ".parquet"}:
        return datasets.AudioDataset.from_manifest(spec)
    raise WhisperlensError(
        f"unknown dataset {spec!r}", f"use one of {', '.join(BUILDERS)} or a manifest path"
    )


@functools.lru_cache(maxsize=1)
def load_model(name: str) -> Any:
    """The Whisper model, loaded once per process."""
    from whisperlens.models.whisper import load_whisper

    return load_whisper(name)


@dataclass(frozen=True)
class EvalTask:
    """Executor task: a unit is a batch of dataset items in one language."""

    config: EvalConfig

    def setup(self) -> Any:
        return load_model(self.config.model)

    def run(self, model: Any, batch: tuple[Any, ...]) -> list[dict[str, Any]]:
        return transcribe_batch(model, self.config, batch)


def transcribe_batch(model: Any, config: EvalConfig, batch: Sequence[Any]) -> list[dict]:
    """Rows for one batch: an error row for each clip that cannot be read, WER for the rest."""
    from whisperlens.decoding import DecodeOptions, transcribe
    from whisperlens.metrics import normalize, wer

    rows: dict[str, dict[str, Any]] = {}
    clips, good = [], []
    for item in batch:
        try:
            clips.append(item.load())
            good.append(item)
        except WhisperlensError as exc:
            rows[item.id] = {"id": item.id, "error": str(exc)}
    if good:
        language = config.language or good[0].language
        opts = DecodeOptions(language=language if model.multilingual else None,
                             batch_size=config.batch_size)  # fmt: skip
        for item, hyp in zip(good, transcribe(model, clips, opts), strict=True):
            lang = item.language or "en"
            counts = wer(item.text, hyp.text, lang).counts
            rows[item.id] = {
                "id": item.id,
                "ref": item.text,
                "hyp": hyp.text,
                "language": hyp.language,
                "ref_norm": normalize(item.text, lang),
                "hyp_norm": normalize(hyp.text, lang),
                "n_errors": counts.n_errors,
                "n_ref": counts.n_ref,
            }
    return [rows[item.id] for item in batch]


def batches(items: Sequence[Any], size: int) -> list[tuple[Any, ...]]:
    """Consecutive batches of at most ``size`` items that share one language."""
    out: list[tuple[Any, ...]] = []
    current: list[Any] = []
    for item in items:
        if current and (len(current) == size or item.language != current[0].language):
            out.append(tuple(current))
            current = []
        current.append(item)
    return out + ([tuple(current)] if current else [])


def run_evaluation(
    config: EvalConfig, progress: bool = True, *, executor: Any = None, overwrite: bool = False
) -> dict:
    """Transcribe every item with a transcript and write rows + summary under ``config.out``."""
    from whisperlens.executors import InlineExecutor

    ds = load_dataset(config.dataset).filter(has_text=True)
    if config.n_items is not None:
        ds = ds.subset(config.n_items, seed=config.seed)
    manifest = config.dataset if Path(config.dataset).suffix in {".jsonl", ".parquet"} else None
    with RunDir.open(
        config.out, study=STUDY, config=config.settings(), format_version=FORMAT_VERSION,
        inputs={"manifest": manifest}, key="id", overwrite=overwrite,
    ) as run:  # fmt: skip
        todo = run.pending(ds, lambda item: item.id)
        if todo:
            load_model(config.model)  # fail here, before any worker starts, on a bad name
            with run.progress(len(ds), f"{config.model} {config.dataset}", progress) as bar:
                units = batches(todo, config.batch_size)
                for _unit, rows in (executor or InlineExecutor()).map(EvalTask(config), units):
                    run.extend(rows)
                    bar.update(len(rows))
        rows = run.rows(ds.ids)
        summary = summarize(rows, config)
        run.write_summary(summary)
        write_report(run, summary, rows, ds)
    return summary


def summarize(rows: Sequence[dict], config: EvalConfig) -> dict:
    """Corpus WER with a seeded bootstrap CI over clips; unreadable clips counted apart."""
    scored = [r for r in rows if "error" not in r]
    if not scored:
        raise WhisperlensError("no rows to summarize", "check that the dataset has transcripts")
    errors_refs = np.array([[r["n_errors"], r["n_ref"]] for r in scored], dtype=float)
    lo, hi = bootstrap_ci(
        errors_refs,
        lambda x: x[..., 0].sum(1) / np.maximum(x[..., 1].sum(1), 1),
        n_resamples=config.n_bootstrap,
        seed=config.seed,
    )
    n_err, n_ref = errors_refs.sum(0)
    return {
        "study": STUDY,
        "dataset": config.dataset,
        "model": config.model,
        "n_items": len(scored),
        "n_unreadable": len(rows) - len(scored),
        "n_ref_words": int(n_ref),
        "wer": float(n_err / max(n_ref, 1)),
        "wer_ci95": [lo, hi],
        "exact_match": float(np.mean([r["ref_norm"] == r["hyp_norm"] for r in scored])),
    }


N_REPORT_EXAMPLES = 8  # worst utterances listed (the first few with audio players)
N_REPORT_AUDIO = 3


def write_report(run: RunDir, summary: dict, rows: Sequence[dict], ds: Any) -> None:
    """The study's report section, rendered on its own into ``report.html``."""
    from whisperlens.report import Report, render_report

    report = Report("whisperlens evaluate", [report_section(summary, rows, ds)], summary)
    render_report(report, run.path)


def report_section(summary: dict, rows: Sequence[dict], ds: Any) -> Any:
    """WER with its CI, the per-utterance distribution and the worst utterances."""
    from whisperlens.report import Audio, Block, Figure, Section, Table, histogram

    scored = [r for r in rows if "error" not in r]
    per_utt = [r["n_errors"] / max(r["n_ref"], 1) for r in scored]
    hist = histogram(per_utt, title="Per-utterance WER", xlabel="WER")
    lo, hi = summary["wer_ci95"]
    headline = Table(
        ["dataset", "model", "clips", "unreadable", "reference words", "WER", "95 % CI",
         "exact match"],
        [[summary["dataset"], summary["model"], summary["n_items"], summary["n_unreadable"],
          summary["n_ref_words"], summary["wer"], f"[{lo:.3f}, {hi:.3f}]",
          summary["exact_match"]]],
        "95 % CI: percentile bootstrap over clips (corpus WER of each resample).",
    )  # fmt: skip
    worst = sorted(scored, key=lambda r: -r["n_errors"] / max(r["n_ref"], 1))
    worst = worst[:N_REPORT_EXAMPLES]
    examples = Table(
        ["id", "reference", "hypothesis", "errors", "words"],
        [[r["id"], r["ref"], r["hyp"], r["n_errors"], r["n_ref"]] for r in worst],
        "The utterances with the highest WER.",
    )
    items = {item.id: item for item in ds}
    players = [
        Audio(r["id"], items[r["id"]].path, f"reference: {r['ref']} | hypothesis: {r['hyp']}")
        for r in worst[:N_REPORT_AUDIO]
        if items[r["id"]].path is not None and items[r["id"]].start_s == 0.0
        and items[r["id"]].end_s is None and Path(items[r["id"]].path).suffix == ".wav"
    ]  # fmt: skip
    intro = (
        f"Word error rate of {summary['model']} on {summary['dataset']} "
        f"({summary['n_items']} clips), greedy decoding, text normalised as Whisper's "
        "evaluations do (English: EnglishTextNormalizer; other languages: BasicTextNormalizer)."
    )
    blocks: list[Block] = [
        headline,
        Figure.from_matplotlib("Per-utterance WER", hist),
        examples,
        *players,
    ]
    return Section("evaluate", "Word error rate", intro, blocks)
