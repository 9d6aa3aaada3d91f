"""``whisperlens sae`` step by step on the tiny corpus: every step writes config.json and
summary.json beside its artifacts, and the SAE it trains loads with SAELens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from whisperlens.cli import main


@pytest.mark.integration
def test_sae_steps_from_the_command_line(tmp_path: Path, capsys) -> None:
    acts, train, ev = tmp_path / "acts", tmp_path / "train", tmp_path / "eval"
    feat, steer, dash = tmp_path / "feat", tmp_path / "steer", tmp_path / "dash"
    common = ["--no-progress"]
    assert main(["sae", "extract", "--corpus", "tiny", "--workers", "1", "--out", str(acts),
                 *common]) == 0  # fmt: skip
    assert main(["sae", "train", str(acts), "--expansion", "2", "--k", "8", "--batch-size", "256",
                 "--checkpoint-every", "0", "--out", str(train), *common]) == 0  # fmt: skip
    assert main(["sae", "evaluate", str(acts), str(train), "--n-items", "2", "--max-frames",
                 "2000", "--workers", "1", "--out", str(ev), *common]) == 0  # fmt: skip
    assert main(["sae", "features", str(acts), str(train), "--max-frames", "3000", "--n-top", "2",
                 "--out", str(feat), *common]) == 0  # fmt: skip
    assert main(["sae", "steer", str(acts), str(train), str(feat), "--n-pairs", "2",
                 "--n-clips", "1", "--strengths", "2", "--lang-model", "none",
                 "--out", str(steer), *common]) == 0  # fmt: skip
    assert main(["sae", "dashboard", str(feat), "--evaluate", str(ev), "--steer", str(steer),
                 "--workers", "1", "--out", str(dash), "--no-progress"]) == 0  # fmt: skip
    for step in (acts, train, ev, feat, steer, dash):
        assert (step / "config.json").is_file() and (step / "summary.json").is_file(), step
    summary = json.loads((ev / "summary.json").read_text())
    for key in ("fvu", "l0", "dead_fraction", "dense_fraction", "ce_loss_recovered",
                "wer_spliced", "wer_clean"):  # fmt: skip
        assert (
            key in summary
            and key in summary["pca"]
            and key in summary["random"]
            or (key == "wer_clean")
        )
    assert "shards" in json.loads((ev / "config.json").read_text())["config"]
    from sae_lens import SAE

    sae = SAE.load_from_disk(train / "sae")
    assert sae.cfg.d_in == 384 and sae.cfg.d_sae == 768
    assert (dash / "index.html").is_file()
    err = capsys.readouterr().err
    assert "frames of encoder.blocks.2.hook_resid_post" in err and "FVU" in err
