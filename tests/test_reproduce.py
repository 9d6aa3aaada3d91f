"""``whisperlens reproduce``: configuration, claims and verdict rules, and a real tiny run
whose report opens in headless Chromium with every figure and audio element loaded."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from whisperlens.commands import reproduce as command
from whisperlens.runs import read_rows
from whisperlens.studies.patching.summary import summarize as patching_summary
from whisperlens.studies.reproduce import (
    STUDIES,
    VERDICTS,
    Measure,
    PartResult,
    ReproduceConfig,
    ReproduceError,
    run_reproduce,
)
from whisperlens.studies.reproduce import patching as rp
from whisperlens.studies.reproduce import steering as rs
from whisperlens.studies.reproduce.claims import above, contains

# --- configuration and the command line -------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["reproduce", *argv])


def test_cli_parses_into_the_config(tmp_path: Path) -> None:
    args = parse(["--out", str(tmp_path / "r"), "--scale", "full", "--workers", "2"])
    config = command.config_from_args(args)
    assert config == ReproduceConfig(tmp_path / "r", scale="full", studies=tuple(STUDIES))
    assert args.workers == 2 and args.executor == "process" and not args.overwrite
    args = parse(["--out", "x", "--study", "steering", "--study", "patching", "--no-progress"])
    assert command.config_from_args(args).studies == ("patching", "steering")  # one order
    assert args.no_progress
    with pytest.raises(SystemExit):
        parse(["--out", "x", "--scale", "huge"])


def test_bad_config_is_refused() -> None:
    with pytest.raises(ReproduceError, match="unknown scale"):
        ReproduceConfig(Path("x"), scale="huge")  # type: ignore[arg-type]
    with pytest.raises(ReproduceError, match="unknown or no studies"):
        ReproduceConfig(Path("x"), studies=("patching", "probing"))
    with pytest.raises(ReproduceError, match="unknown or no studies"):
        ReproduceConfig(Path("x"), studies=())


def test_an_unwired_study_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the SAE slot until the lead wires it; a slot marked unwired in any case
    monkeypatch.setitem(STUDIES, "sae", dataclasses.replace(STUDIES["sae"], wired=False))
    out = tmp_path / "r"
    with pytest.raises(ReproduceError, match="studies/reproduce/sae.py"):
        run_reproduce(ReproduceConfig(out, scale="tiny"))
    assert not out.exists()


def test_measure_text_and_ci_orderings() -> None:
    m = Measure("diagonal override", 0.8391, (0.821, 0.856), 1738)
    assert m.text() == "diagonal override 0.839 [0.821, 0.856] (n=1738)"
    assert Measure("x", None).text() == "x n/a"
    assert above(m, Measure("y", 0.3, (0.2, 0.83), 5)) is False
    assert above(m, Measure("y", 0.3, (0.2, 0.8), 5)) is True
    assert contains(m, 0.85) and not contains(m, 0.951)
    assert not above(m, Measure("no CI", 0.1))


def test_quick_and_full_sizes() -> None:
    quick = {p.name: p.settings for p in rp.parts("quick")}
    full = {p.name: p.settings for p in rp.parts("full")}
    assert quick["patching-a"]["n_pairs"] == 20 and quick["patching-b"]["model"] == "base"
    assert all(s["n_pairs"] is None for s in full.values())  # the seed's 869 / 162
    steering = {p.name: p.settings for p in rs.parts("full")}
    assert list(steering) == ["steering-anger_calm", "steering-love_hate"]
    assert len(steering["steering-love_hate"]["strengths"]) == 21
    for scale in ("tiny", "quick", "full"):  # the claims need moderate strength and 2 reducers
        s = rs.SIZES[scale]
        assert rs.MODERATE in s["strengths"] and -rs.MODERATE in s["strengths"]
        assert "pca" in s["reducers"] and len(s["reducers"]) >= 2


# --- patching claims on synthetic rows (verdicts known by construction) ------------------


def patch_rows(n_dir: int, n_layers: int, hit: Any, seed: int = 0) -> list[dict[str, Any]]:
    """Seed-mode rows of ``n_dir`` directions; ``hit(S, L, rng)`` decides the override."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(n_dir):
        src, tgt = f"s{d}", f"t{d}"
        for s in range(n_layers):
            for t in range(n_layers):
                ok = bool(hit(s, t, rng))
                rows.append({
                    "key": f"{d}:{s}:{t}", "pair_id": f"p{d}", "kind": "consonant",
                    "feature": None, "position": None, "source_word": src, "target_word": tgt,
                    "target_language": "en", "source_layer": s, "target_layer": t,
                    "override": ok, "target_present": not ok, "margin": 2.0 if ok else -2.0,
                    "transcript": src if ok else tgt, "clean_source_transcript": src,
                    "clean_target_transcript": tgt, "clean_source_margin": 2.0,
                    "clean_target_margin": -2.0,
                })  # fmt: skip
    return rows


def patch_result(tmp_path: Path, name: str, experiment: str, rows: list[dict[str, Any]],
                 n_layers: int) -> PartResult:  # fmt: skip
    path = tmp_path / name
    path.mkdir()
    (path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = {"experiment": experiment, "mode": "seed", "model": "m", "n_bootstrap": 200}
    return PartResult(name, path, patching_summary(settings, rows, n_layers), 1.0)


def test_patching_claims_follow_their_rules(tmp_path: Path) -> None:
    # A: the word is heard on and below the diagonal, never above it; clean runs always heard
    a = patch_result(tmp_path, "patching-a", "a", patch_rows(30, 4, lambda s, t, _: s >= t), 4)
    span = patch_result(tmp_path, "patching-a-span", "a", patch_rows(30, 4, lambda *_: True), 4)
    # B: transfer at about the seed's 0.666 everywhere (a Bernoulli draw per row)
    b = patch_result(tmp_path, "patching-b", "b",
                     patch_rows(40, 4, lambda s, t, rng: rng.random() < 0.666, seed=1), 4)  # fmt: skip
    results = {r.name: r for r in (a, span, b)}
    claims = {c.id: c for c in rp.claims(results)}
    assert claims["001-layer-specific"].verdict == "reproduced, explained otherwise"
    assert claims["001-layer-specific"].measures[0].value == 1.0  # the diagonal = clean run
    assert claims["001-asymmetric"].verdict == "reproduced"
    below, upper = claims["001-asymmetric"].measures
    assert below.value == 1.0 and upper.value == 0.0
    assert claims["001-cross-lingual"].verdict == "reproduced, explained otherwise"
    assert claims["001-early-layers"].verdict == "not reproduced"  # no triangle difference
    assert {c.evidence for c in claims.values()} <= set(results)
    # a diagonal that is no better than the rest, and B far from 0.666
    flat = patch_result(tmp_path, "flat", "a", patch_rows(30, 4, lambda s, t, _: s < t), 4)
    b_low = patch_result(tmp_path, "b-low", "b", patch_rows(30, 4, lambda *_: False), 4)
    results = {**results, "patching-a": flat, "patching-b": b_low}
    claims = {c.id: c for c in rp.claims(results)}
    assert claims["001-layer-specific"].verdict == "not reproduced"
    assert claims["001-asymmetric"].verdict == "not reproduced"
    assert claims["001-cross-lingual"].verdict == "not reproduced"


# --- steering claims on synthetic rows and summaries -------------------------------------


def steer_result(tmp_path: Path, concept: str, broken: Any, changed: Any, moved: list[float],
                 cos: float, inside: float) -> PartResult:  # fmt: skip
    """A steering part with 5 clips, pca and gaussian (direction layout), 1 random control."""
    strengths = [-8.0, -2.0, 0.0, 2.0, 8.0]
    rows = []
    for clip in range(5):
        for red in ("pca", "gaussian"):
            for control in ("vector", "random0"):
                for s in strengths:
                    if control != "vector" and s == 0:
                        continue
                    rows.append({"key": f"{clip}:{red}:direction:{control}:{s:g}", "clip": clip,
                                 "reducer": red, "layout": "direction", "control": control,
                                 "strength": s, "broken": broken(red, control, abs(s)),
                                 "changed": changed(control, abs(s))})  # fmt: skip
    path = tmp_path / f"steering-{concept}"
    path.mkdir()
    (path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    answer = {"lexicon_delta": {"and_coherent_at": moved}, "projection_delta":
              {"and_coherent_at": []}, "broken_at": [-8.0, 8.0]}  # fmt: skip
    summary = {
        "config": {"strengths": strengths, "reducers": ["pca", "gaussian"],
                   "layouts": ["direction"]},
        "mappings": {f"{r}-direction": {"answer": answer} for r in ("pca", "gaussian")},
        "geometry": {"direction": {"cosine": [[1.0, cos], [cos, 1.0]], "null_abs_q95": 0.1},
                     "whisper_concept": {"cosine": [[inside, 0.01]] * 4, "null_abs_q95": 0.1}},
    }  # fmt: skip
    return PartResult(path.name, path, summary, 1.0)


def test_steering_claims_follow_their_rules(tmp_path: Path) -> None:
    def broken(red: str, control: str, s: float) -> bool:
        return s == 8 or (s == 2 and red == "gaussian" and control == "vector")

    def changed(control: str, s: float) -> bool:
        return s > 0

    parts = [steer_result(tmp_path, c, broken, changed, [], 0.01, 0.02) for c in rs.CONCEPTS]
    claims = {c.id: c for c in rs.claims({p.name: p for p in parts})}
    assert claims["000-transfer"].verdict == "reproduced, explained otherwise"
    tests = claims["000-transfer"].measures[0]
    assert tests.value == 0.0 and tests.n == 2 * 2 * 2 * 2  # concepts x mappings x |s|=2 x scores
    assert claims["000-pca-stable"].verdict == "reproduced"
    pca, gaussian = claims["000-pca-stable"].measures[:2]
    assert (pca.value, gaussian.value) == (0.0, 1.0)
    assert claims["000-aligned"].verdict == "not reproduced"
    assert claims["000-not-orthogonal"].verdict == "not reproduced"
    assert claims["000-degenerate"].verdict == "reproduced"
    assert claims["000-degenerate"].measures[0].value == 1.0
    # the seed's reading holds: concept scores move, reductions align, cosines beyond chance
    (tmp_path / "b").mkdir()
    parts = [steer_result(tmp_path / "b", c, lambda *_: False, changed, [2.0, -2.0], 0.9, 0.5)
             for c in rs.CONCEPTS]  # fmt: skip
    claims = {c.id: c for c in rs.claims({p.name: p for p in parts})}
    assert claims["000-transfer"].verdict == "reproduced"
    assert claims["000-aligned"].verdict == "reproduced"
    assert claims["000-not-orthogonal"].verdict == "reproduced"  # half of the cosines at 0.5
    assert claims["000-degenerate"].verdict == "not reproduced"
    assert all(c.verdict in VERDICTS for c in claims.values())


# --- a real tiny run, resumed, and its report in Chromium ---------------------------------

TINY_STUDIES = ("patching", "steering", "sae")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], float]:
    out = tmp_path_factory.mktemp("reproduce") / "run"
    start = time.perf_counter()
    summary = run_reproduce(ReproduceConfig(out, scale="tiny", studies=TINY_STUDIES),
                            progress=False)  # fmt: skip
    return out, summary, time.perf_counter() - start


@pytest.mark.integration
def test_tiny_run_writes_every_part_claims_and_report(tiny_run: Any) -> None:
    out, summary, _ = tiny_run
    names = [p.name for s in TINY_STUDIES for p in STUDIES[s].parts("tiny")]
    for name in names:
        sub = json.loads((out / name / "summary.json").read_text())
        assert sub == summary["parts"][name]["summary"]
        assert (out / name / "report.html").is_file()  # each study's own report too
    assert [r["part"] for r in read_rows(out / "rows.jsonl")] == names
    assert json.loads((out / "summary.json").read_text()) == summary
    ids = [c["id"] for c in summary["claims"]]
    assert len(ids) == 12 and len(set(ids)) == 12  # patching 4, steering 5, SAE 3
    assert all(c["verdict"] in VERDICTS for c in summary["claims"])
    html = (out / "report.html").read_text()
    assert re.findall(r'<section id="([^"]+)"', html)[0] == "claims"  # the report opens with them
    section_ids = set(re.findall(r'<section id="([^"]+)"', html))
    links = set(re.findall(r'<a href="#([^"]+)"', html))
    assert {c["evidence"] for c in summary["claims"]} <= links <= section_ids | {"claims"}
    assert "http://" not in html and "https://" not in html  # nothing from the network


@pytest.mark.integration
def test_rerun_resumes_and_a_lost_summary_is_rebuilt_from_rows(tiny_run: Any) -> None:
    out, summary, first_s = tiny_run
    rows = {p.name: (p / "rows.jsonl").read_text() for p in out.iterdir() if p.is_dir()}
    start = time.perf_counter()
    again = run_reproduce(ReproduceConfig(out, scale="tiny", studies=TINY_STUDIES),
                          progress=False)  # fmt: skip
    assert again == summary
    assert time.perf_counter() - start < first_s / 2  # nothing recomputed
    # a kill after the part's rows but before its summary (and before reproduce's row)
    part = list(summary["parts"])[-1]  # the last part (the SAE study)
    kept = [r for r in read_rows(out / "rows.jsonl") if r["part"] != part]
    (out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    (out / part / "summary.json").unlink()
    again = run_reproduce(ReproduceConfig(out, scale="tiny", studies=TINY_STUDIES),
                          progress=False)  # fmt: skip
    assert again["claims"] == summary["claims"]
    assert again["parts"][part] == summary["parts"][part]
    assert {p.name: (p / "rows.jsonl").read_text() for p in out.iterdir() if p.is_dir()} == rows
    with pytest.raises(ReproduceError, match="different config"):
        run_reproduce(ReproduceConfig(out, scale="quick", studies=TINY_STUDIES))


@pytest.mark.integration
def test_tiny_report_loads_in_chromium(tiny_run: Any) -> None:
    from whisperlens.report.browser import CHROMIUM, check_report_in_browser

    if importlib.util.find_spec("playwright") is None or not CHROMIUM.exists():
        pytest.fail("playwright or Debian chromium is missing; run scripts/setup.sh as root")
    out, _, _ = tiny_run
    shot = out / "report.png"
    check = check_report_in_browser(out / "report.html", screenshot=shot, timeout_s=60)
    assert check.ok, check
    html = (out / "report.html").read_text()
    assert check.n_images == html.count("<img ") > 10
    assert check.n_audio == html.count("<audio ") > 5
    assert all(d > 0.3 for d in check.audio_durations)  # spoken words and sentences
    assert shot.read_bytes().startswith(b"\x89PNG")
