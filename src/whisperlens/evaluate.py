"""Word error rate of a model on an audio dataset: resumable, atomic, with a bootstrap CI."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from whisperlens._io import atomic_write_json, prepare_run_dir, read_jsonl_rows
from whisperlens.errors import WhisperlensError

CONFIG_FILE, ROWS_FILE, SUMMARY_FILE = "config.json", "rows.jsonl", "summary.json"


@dataclass(frozen=True)
class EvalConfig:
    dataset: str  # "asterisk-en", "asterisk-es", ... or a manifest path (.jsonl/.parquet)
    model: str  # offline name, hub id or path
    out: str  # output directory
    language: str | None = None  # decoding language; None: the dataset's (or detect)
    n_items: int | None = None  # evaluate a seeded subset of this size
    seed: int = 0
    batch_size: int = 8
    n_bootstrap: int = 1000  # resamples for the WER confidence interval

    def __post_init__(self) -> None:
        if self.n_items is not None and self.n_items < 1:
            raise WhisperlensError(f"n_items must be >= 1, got {self.n_items}")
        if self.batch_size < 1:
            raise WhisperlensError(f"batch_size must be >= 1, got {self.batch_size}")


def load_dataset(spec: str):
    """A dataset by builder name (``asterisk-en``, ``music``) or manifest path."""
    from whisperlens import datasets

    if spec.startswith("asterisk-"):
        return datasets.asterisk(spec.split("-", 1)[1])  # type: ignore[arg-type]
    if spec == "music":
        return datasets.music()
    if Path(spec).suffix in {".jsonl", ".parquet"}:
        return datasets.AudioDataset.from_manifest(spec)
    raise WhisperlensError(
        f"unknown dataset {spec!r}",
        "use asterisk-en, asterisk-es, asterisk-fr, asterisk-it, asterisk-ru or a manifest path",
    )


def run_evaluation(config: EvalConfig, progress: bool = True) -> dict:
    """Transcribe every item with a transcript and write rows + summary under ``config.out``."""
    from whisperlens.models.whisper import load_whisper

    out = Path(config.out)
    done = _start(out, config)
    ds = load_dataset(config.dataset).filter(has_text=True)
    if config.n_items is not None:
        ds = ds.subset(config.n_items, seed=config.seed)
    todo = [item for item in ds if item.id not in done]
    if todo:
        _transcribe_into(out / ROWS_FILE, todo, load_whisper(config.model), config, progress)
    summary = summarize(out / ROWS_FILE, config)
    atomic_write_json(out / SUMMARY_FILE, summary)
    return summary


def _start(out: Path, config: EvalConfig) -> set[str]:
    """Create or check the run directory; return the ids already done."""
    prepare_run_dir(
        out, asdict(config), what="evaluate", outputs=(ROWS_FILE, SUMMARY_FILE),
        config_file=CONFIG_FILE,
    )  # fmt: skip
    return {row["id"] for row in read_jsonl_rows(out / ROWS_FILE)}


def _transcribe_into(rows_path: Path, items, loaded, config: EvalConfig, progress: bool) -> None:
    from tqdm import tqdm

    from whisperlens.decoding import DecodeOptions, transcribe
    from whisperlens.scoring import normalize, wer

    bar = tqdm(total=len(items), disable=not progress, desc=f"{config.model} {config.dataset}")
    with open(rows_path, "a", encoding="utf-8") as f:
        for i in range(0, len(items), config.batch_size):
            batch = items[i : i + config.batch_size]
            language = config.language or batch[0].language
            if not loaded.multilingual:
                language = None
            opts = DecodeOptions(language=language, batch_size=config.batch_size)
            hyps = transcribe(loaded, [it.load() for it in batch], opts)
            for item, hyp in zip(batch, hyps, strict=True):
                lang = item.language or "en"
                counts = wer(item.text, hyp.text, lang).counts
                row = {
                    "id": item.id,
                    "ref": item.text,
                    "hyp": hyp.text,
                    "language": hyp.language,
                    "ref_norm": normalize(item.text, lang),
                    "hyp_norm": normalize(hyp.text, lang),
                    "n_errors": counts.n_errors,
                    "n_ref": counts.n_ref,
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            bar.update(len(batch))
    bar.close()


def summarize(rows_path: Path, config: EvalConfig) -> dict:
    rows = read_jsonl_rows(rows_path)
    if not rows:
        raise WhisperlensError("no rows to summarize", "check that the dataset has transcripts")
    errors = np.array([r["n_errors"] for r in rows], dtype=float)
    refs = np.array([r["n_ref"] for r in rows], dtype=float)
    rng = np.random.default_rng(config.seed)
    idx = rng.integers(0, len(rows), size=(config.n_bootstrap, len(rows)))
    boot = errors[idx].sum(1) / np.maximum(refs[idx].sum(1), 1)
    return {
        "dataset": config.dataset,
        "model": config.model,
        "n_items": len(rows),
        "n_ref_words": int(refs.sum()),
        "wer": float(errors.sum() / max(refs.sum(), 1)),
        "wer_ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
        "exact_match": float(np.mean([r["ref_norm"] == r["hyp_norm"] for r in rows])),
    }
