"""Patching with models other than the offline names: a hub id offline (a clear error, no
half run) and a local transformers directory (a tiny random Whisper, end to end)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from whisperlens.cli import main
from whisperlens.testing import tiny_random_whisper

WEIGHTS_AND_CONFIG = ("config.json", "generation_config.json", "model.safetensors", "manifest.json")


def _words(tmp_path: Path) -> str:
    words = tmp_path / "words.csv"
    words.write_text("a,b\nbat,pat\nbat,cat\n")
    return str(words)


def test_hub_id_offline_and_not_cached_fails_fast_and_writes_no_run(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    out = tmp_path / "run"
    start = time.perf_counter()
    argv = ["patch", "a", "--model", "openai/whisper-tiny", "--words", _words(tmp_path),
            "--out", str(out), "--workers", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    assert time.perf_counter() - start < 20  # no download retries, no worker pool started
    err = capsys.readouterr().err
    assert err.startswith("whisperlens: error:") and len(err.strip().splitlines()) == 1
    assert "'openai/whisper-tiny'" in err and "offline" in err and "not in the local cache" in err
    assert "tiny.en" in err and "local path" in err  # the fix
    assert not out.exists()


@pytest.mark.integration
def test_local_transformers_directory_runs_end_to_end(tmp_path, tiny_en):
    """A 3-block random Whisper saved with save_pretrained, plus tiny.en's tokenizer and
    feature-extractor files: rows form a 3 x 3 matrix (its blocks, not tiny.en's 4)."""
    model_dir = tmp_path / "tiny-random"
    tiny_random_whisper(seed=5, n_layers=3).model.save_pretrained(model_dir)
    for f in Path(tiny_en.info["cache"]).iterdir():  # the offline conversion's processor files
        if f.is_file() and f.name not in WEIGHTS_AND_CONFIG:
            shutil.copy(f, model_dir / f.name)
    out = tmp_path / "run"
    argv = ["patch", "a", "--model", str(model_dir), "--words", _words(tmp_path), "--n-pairs",
            "2", "--out", str(out), "--workers", "1", "--n-bootstrap", "20", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * 9  # 2 pairs x 2 directions x (3 x 3) cells
    cells = {(r["source_layer"], r["target_layer"]) for r in rows}
    assert cells == {(s, t) for s in range(3) for t in range(3)}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_layers"] == 3 and summary["config"]["model"] == str(model_dir)
    assert [len(row) for row in summary["matrices"]["override"]["n"]] == [3, 3, 3]
    assert summary["matrices"]["override"]["n"] == [[4] * 3] * 3
