"""evaluate: WER summary against hand-computed values, resume after a crash, clear errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from whisperlens.datasets import AudioDataset, AudioItem
from whisperlens.errors import WhisperlensError
from whisperlens.studies import evaluate as ev

REFS = {"a": "the cat sat", "b": "hello world", "c": "red green blue yellow"}
HYPS = {"a": "the cat sat down", "b": "hello word", "c": "red green blue yellow"}
# hand count: a 1 insertion / 3, b 1 substitution / 2, c 0 / 4  -> corpus WER 2/9


@pytest.fixture
def manifest(tmp_path):
    items = [
        AudioItem(
            id=k, audio=np.full(1600, 0.01 * (i + 1), np.float32), text=REFS[k], language="en"
        )
        for i, k in enumerate(REFS)
    ]
    return AudioDataset(items).save_manifest(tmp_path / "set.jsonl")


@pytest.fixture
def fake_model(monkeypatch):
    calls = []

    def transcribe(model, clips, options):
        out = []
        for clip in clips:
            key = "abc"[round(float(clip[0]) * 100) - 1]
            calls.append(key)
            out.append(SimpleNamespace(text=HYPS[key], language="en"))
        return out

    monkeypatch.setattr("whisperlens.decoding.transcribe", transcribe)
    monkeypatch.setattr(ev, "load_model", lambda name: SimpleNamespace(multilingual=False))
    return calls


def test_summary_matches_hand_computed_wer(manifest, tmp_path, fake_model):
    config = ev.EvalConfig(dataset=str(manifest), model="fake", out=str(tmp_path / "run"))
    summary = ev.run_evaluation(config, progress=False)
    assert summary["n_items"] == 3
    assert summary["n_ref_words"] == 9
    assert summary["wer"] == pytest.approx(2 / 9)
    assert summary["exact_match"] == pytest.approx(1 / 3)
    lo, hi = summary["wer_ci95"]
    assert 0.0 <= lo <= 2 / 9 <= hi <= 0.5  # no resample is worse than all-"b" (1/2)
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary


def test_resume_recomputes_only_missing_rows(manifest, tmp_path, fake_model):
    out = tmp_path / "run"
    config = ev.EvalConfig(dataset=str(manifest), model="fake", out=str(out), batch_size=1)
    ev.run_evaluation(config, progress=False)
    rows = (out / "rows.jsonl").read_text().splitlines()
    (out / "rows.jsonl").write_text(rows[0] + "\n" + rows[1][:10])  # crash mid-line
    fake_model.clear()
    summary = ev.run_evaluation(config, progress=False)
    assert sorted(fake_model) == ["b", "c"]
    assert summary["wer"] == pytest.approx(2 / 9)
    assert len((out / "rows.jsonl").read_text().splitlines()) == 3


def test_different_config_in_same_dir_is_refused(manifest, tmp_path, fake_model):
    out = str(tmp_path / "run")
    ev.run_evaluation(ev.EvalConfig(str(manifest), "fake", out), progress=False)
    with pytest.raises(WhisperlensError, match="different config"):
        ev.run_evaluation(ev.EvalConfig(str(manifest), "other", out), progress=False)


def test_an_unreadable_item_is_an_error_row_and_its_batch_goes_on(tmp_path, fake_model):
    items = [
        AudioItem(id=k, audio=np.full(1600, 0.01 * (i + 1), np.float32), text=REFS[k])
        for i, k in enumerate(REFS)
    ]
    bad = AudioItem(id="broken", path=tmp_path / "missing.wav", text="gone")
    manifest = AudioDataset([items[0], bad, *items[1:]]).save_manifest(tmp_path / "m.jsonl")
    config = ev.EvalConfig(dataset=str(manifest), model="fake", out=str(tmp_path / "run"))
    summary = ev.run_evaluation(config, progress=False)
    assert sorted(fake_model) == ["a", "b", "c"]  # the good items of the batch
    assert summary["n_items"] == 3 and summary["n_unreadable"] == 1
    assert summary["wer"] == pytest.approx(2 / 9)
    rows = [json.loads(line) for line in (tmp_path / "run" / "rows.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "broken", "b", "c"]
    assert "missing.wav" in rows[1]["error"]


def test_batches_never_mix_languages():
    items = [SimpleNamespace(language=lang) for lang in ["en", "en", "es", "es", "es", "en"]]
    sizes = [[i.language for i in b] for b in ev.batches(items, 2)]
    assert sizes == [["en", "en"], ["es", "es"], ["es"], ["en"]]


def test_unknown_dataset_names_the_choices():
    with pytest.raises(WhisperlensError, match="asterisk-en"):
        ev.load_dataset("librispeech")
