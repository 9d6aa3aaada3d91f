"""The studies on the foundation, end to end on the real tiny.en: demo numbers against plain
PyTorch hooks, resume, reports in a real browser, and one study under all three executors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from whisperlens.executors import InlineExecutor, ProcessExecutor, RayExecutor
from whisperlens.interventions import Intervention
from whisperlens.report.browser import check_report_in_browser
from whisperlens.runs import ROWS_FILE, SUMMARY_FILE
from whisperlens.studies.baseline import BaselineConfig, run_baseline
from whisperlens.studies.demo import DemoConfig, run_demo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    config = DemoConfig(strengths=(0.0, 2.0))
    return out, run_demo(config, out, log=lambda _line: None)


def test_demo_patch_equals_a_plain_pytorch_hook(demo_run: tuple[Path, dict]) -> None:
    """Oracle: replace block 1's output frames with the source word's by a torch forward hook
    on the transformers layer (no whisperlens hook points involved) and score again."""
    from whisperlens.models.whisper import load_whisper
    from whisperlens.scoring import candidate_logprobs
    from whisperlens.stimuli.tts import synthesize

    out, summary = demo_run
    config = DemoConfig()
    loaded = load_whisper("tiny.en")
    encoder = loaded.model.model.encoder
    clips = {w: synthesize(config.carrier.format(word=w)).audio for w in ("bat", "pat", "cup")}
    n = min(len(a) for a in clips.values()) // 320 + (min(len(a) for a in clips.values()) % 320 > 0)
    feats = loaded.processor.feature_extractor(
        clips["bat"], sampling_rate=16000, return_tensors="pt"
    )
    with torch.no_grad():
        hidden = encoder(feats.input_features, output_hidden_states=True).hidden_states
    source = hidden[2][0, :n]  # output of block 1 (hidden_states[0] is the embedding)

    def hook(_module, _args, output):
        out_BFD = output[0] if isinstance(output, tuple) else output
        out_BFD = out_BFD.clone()
        out_BFD[:, :n] = source
        return (out_BFD, *output[1:]) if isinstance(output, tuple) else out_BFD

    handle = encoder.layers[1].register_forward_hook(hook)
    try:
        cands = [config.carrier.format(word=w) for w in ("bat", "pat")]
        lp = candidate_logprobs(loaded, clips["pat"], cands)[0]
    finally:
        handle.remove()
    row = summary["patching"][1]
    assert row["site"] == "encoder.blocks.1.hook_resid_post"
    assert row["source"] == pytest.approx(float(lp[0] - lp[1]), abs=1e-3)
    assert row["source"] > 0 > row["clean"] and row["control"] < row["source"]


def test_demo_rows_name_their_interventions_and_resume_is_free(
    demo_run: tuple[Path, dict],
) -> None:
    out, summary = demo_run
    rows = [json.loads(line) for line in (out / ROWS_FILE).read_text().splitlines()]
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        for data in row.get("interventions", []):
            iv = Intervention.from_dict(data)
            assert iv.payload is not None and iv.payload.startswith("payloads.safetensors#")
    zero = summary["steering"][0]
    assert (
        zero["strength"] == 0.0
        and zero["vector"] == zero["random"] == summary["patching"][0]["clean"]
    )
    again = run_demo(DemoConfig(strengths=(0.0, 2.0)), out, log=lambda _line: None)
    assert again == summary
    assert len((out / ROWS_FILE).read_text().splitlines()) == len(rows)  # nothing recomputed


def test_demo_report_loads_in_chromium(demo_run: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = demo_run
    check = check_report_in_browser(out / "report.html", screenshot=tmp_path / "demo.png")
    assert check.ok, check
    assert check.n_images == 2 and check.n_audio == 4
    assert all(d > 0.3 for d in check.audio_durations)


def test_baseline_is_the_same_under_all_three_executors(tmp_path: Path) -> None:
    config = dict(words="consonant", n_pairs=2, seed=4, engine="espeak")
    summaries = {}
    executors = {
        "inline": InlineExecutor(),
        "process": ProcessExecutor(workers=2),
        "ray": RayExecutor(workers=2),
    }
    for name, executor in executors.items():
        out = tmp_path / name
        summaries[name] = run_baseline(
            BaselineConfig(out=out, **config), executor=executor, progress=False
        )
        rows = sorted((out / ROWS_FILE).read_text().splitlines())
        assert len(rows) == 4
    assert summaries["process"] == summaries["inline"] == summaries["ray"]
    check = check_report_in_browser(tmp_path / "inline" / "report.html")
    assert check.ok, check
    assert check.n_images == 2 and check.n_audio == 4
    assert json.loads((tmp_path / "ray" / SUMMARY_FILE).read_text()) == summaries["ray"]
