"""The stimulus-usability baseline: config and CLI parsing, items, resume, statistics, and a
small real run on tiny.en checked against decoding.transcribe / scoring.candidate_logprobs."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import binomtest

from whisperlens.cli import build_parser
from whisperlens.commands.baseline import config_from_args
from whisperlens.errors import WhisperlensError
from whisperlens.runs import CONFIG_FILE, ROWS_FILE, SUMMARY_FILE
from whisperlens.stimuli.carriers import CARRIERS, carrier_for, carrier_split
from whisperlens.studies import baseline
from whisperlens.studies.baseline import (
    BaselineConfig,
    BaselineError,
    Item,
    build_items,
    run_baseline,
)

# --- config and CLI -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"engine": "festival"},
        {"carrier": "no_such_carrier"},
        {"rate": 0.1},
        {"rate": "sluggish"},
        {"engine": "espeak", "rate": 0.3},  # 52 words/min: below espeak-ng's 80
        {"n_pairs": 0},
        {"sides": "c"},
        {"language": "klingon"},
        {"max_new_tokens": 0},
        {"words": " "},
    ],
)
def test_config_rejects_bad_values(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    args = {"words": "minimal", "out": tmp_path, **kwargs}
    with pytest.raises(WhisperlensError):
        BaselineConfig(**args)


def test_config_normalises_rate_language_and_out(tmp_path: Path) -> None:
    config = BaselineConfig("minimal", str(tmp_path), rate="slow", language="Spanish")  # type: ignore[arg-type]
    assert config.rate == 0.85 and config.language == "es" and config.out == tmp_path
    assert "out" not in config.settings()


def test_cli_parses_into_the_dataclass(tmp_path: Path) -> None:
    argv = ["baseline", "--words", "en-es", "--out", str(tmp_path / "r"), "--engine", "espeak"]
    argv += ["--model", "base", "--carrier", "say_again", "--rate", "slower", "--sides", "b"]
    argv += ["--n-pairs", "7", "--seed", "3", "--language", "es", "--max-new-tokens", "9"]
    args = build_parser().parse_args(argv)
    expected = BaselineConfig(
        "en-es", tmp_path / "r", "espeak", "base", "say_again", 0.7, None, "es", "b", 7, 3, 9
    )
    assert config_from_args(args) == expected
    assert args.func is baseline_command_run()


def baseline_command_run() -> Any:
    from whisperlens.commands import baseline as command

    return command.run


def test_cli_defaults_are_the_library_defaults(tmp_path: Path) -> None:
    args = build_parser().parse_args(["baseline", "--words", "minimal", "--out", str(tmp_path)])
    assert config_from_args(args) == BaselineConfig("minimal", tmp_path)


# --- items and carriers ---------------------------------------------------------------------


def test_items_pair_each_word_with_its_partner(tmp_path: Path) -> None:
    items = build_items(BaselineConfig("consonant", tmp_path, n_pairs=2, seed=1))
    assert len(items) == 4
    a, b = items[0], items[1]
    assert (a.side, b.side) == ("a", "b") and a.pair_id == b.pair_id
    assert (a.target, a.foil) == (b.foil, b.target)


def test_subset_is_seeded_and_in_list_order(tmp_path: Path) -> None:
    def ids(seed: int) -> list[str]:
        config = BaselineConfig("vowel", tmp_path, n_pairs=10, seed=seed, sides="a")
        return [i.pair_id for i in build_items(config)]

    assert ids(5) == ids(5) and ids(5) != ids(6)
    assert ids(5) == sorted(ids(5)) and len(set(ids(5))) == 10


def test_en_es_sides_get_their_own_language_and_carrier(tmp_path: Path) -> None:
    items = build_items(BaselineConfig("en-es", tmp_path, carrier="say_again", n_pairs=3))
    by_side = {i.side: i for i in items}
    assert (by_side["a"].language, by_side["a"].carrier) == ("en", "say_again")
    assert (by_side["b"].language, by_side["b"].carrier) == ("es", "es_diga")
    assert carrier_for("es_la_palabra", "en").name == "the_word_is"
    assert carrier_for("bare", "es").name == "bare"
    with pytest.raises(ValueError, match="counterpart"):
        carrier_for("i_said", "es")
    with pytest.raises(BaselineError, match="counterpart"):
        build_items(BaselineConfig("en-es", tmp_path, carrier="i_said", n_pairs=1))


@pytest.mark.parametrize(
    ("carrier", "expected"),
    [
        ("bare", ("", "cat")),
        ("bare_period", ("", "cat.")),
        ("the_word_is", ("The word is", "cat.")),
        ("say_again", ("Say", "cat again.")),
        ("es_diga", ("Diga", "cat otra vez.")),
    ],
)
def test_carrier_split(carrier: str, expected: tuple[str, str]) -> None:
    prefix, scored = carrier_split(CARRIERS[carrier], "cat")
    assert prefix == expected[0] and scored == expected[1]
    assert " ".join(p for p in (prefix, scored) if p) == CARRIERS[carrier].render("cat").text


# --- resume and statistics (model and scoring faked) ----------------------------------------


def fake_row(item: Item) -> dict[str, Any]:
    rng = random.Random(item.item_id)
    margin = rng.uniform(-3, 6)
    return {
        "key": item.key,
        "audio": "",
        "text": item.target,
        "transcript": item.target,
        "item_id": item.item_id,
        "target": item.target,
        "foil": item.foil,
        "kind": item.kind,
        "language": item.language,
        "side": item.side,
        "correct": margin > 0,
        "exact_match": rng.random() < 0.4,
        "target_present": rng.random() < 0.6,
        "margin": margin,
        "p_target": 1 / (1 + math.exp(-margin)),
    }


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace model loading and per-item scoring; returns the list of scored item ids."""
    calls: list[str] = []

    def score(model: Any, config: BaselineConfig, items: Any) -> list[dict[str, Any]]:
        calls.extend(item.item_id for item in items)
        return [fake_row(item) for item in items]

    monkeypatch.setattr(baseline, "load_model", lambda name: object())
    monkeypatch.setattr(baseline, "check_model", lambda config, items, model: None)
    monkeypatch.setattr(baseline, "score_clip", score)
    return calls


def test_resume_recomputes_exactly_the_missing_rows(tmp_path: Path, fake_model: list[str]) -> None:
    config = BaselineConfig("consonant", tmp_path / "run", n_pairs=2)
    first = run_baseline(config, progress=False)
    assert len(fake_model) == 4 and first["overall"]["n_items"] == 4
    rows_path = tmp_path / "run" / ROWS_FILE
    lines = rows_path.read_text().splitlines()
    kept = json.loads(lines[0])["item_id"]
    assert (tmp_path / "run" / "report.html").is_file()
    rows_path.write_text(lines[0] + "\n" + lines[1][:10])  # one row and a torn line
    fake_model.clear()
    second = run_baseline(config, progress=False)
    all_ids = {i.item_id for i in build_items(config)}
    assert sorted(fake_model) == sorted(all_ids - {kept})
    assert second == first
    assert len(rows_path.read_text().splitlines()) == 4
    fake_model.clear()
    run_baseline(config, progress=False)
    assert fake_model == []


def test_a_different_config_needs_overwrite(tmp_path: Path, fake_model: list[str]) -> None:
    run_baseline(BaselineConfig("consonant", tmp_path, n_pairs=2), progress=False)
    other = BaselineConfig("consonant", tmp_path, n_pairs=3)
    with pytest.raises(BaselineError, match="n_pairs"):
        run_baseline(other, progress=False)
    fake_model.clear()
    summary = run_baseline(other, overwrite=True, progress=False)
    assert len(fake_model) == 6 and summary["overall"]["n_items"] == 6
    stored = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert stored["config"]["n_pairs"] == 3


def test_refuses_a_foreign_nonempty_directory(tmp_path: Path, fake_model: list[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(BaselineError, match="holds no baseline run"):
        run_baseline(BaselineConfig("consonant", tmp_path, n_pairs=1), overwrite=True)
    assert (tmp_path / "notes.txt").exists()


def test_summary_matches_an_independent_computation(tmp_path: Path, fake_model: list[str]) -> None:
    config = BaselineConfig("english", tmp_path, n_pairs=40, seed=2)
    summary = json.loads(
        json.dumps(run_baseline(config, progress=False))
    )  # as stored in summary.json
    assert summary == json.loads((tmp_path / SUMMARY_FILE).read_text())
    rows = [json.loads(line) for line in (tmp_path / ROWS_FILE).read_text().splitlines()]
    assert_stats(summary["overall"], rows)
    kinds = {r["kind"] for r in rows}
    assert set(summary["by_kind"]) == kinds and len(kinds) >= 2
    for kind in kinds:
        assert_stats(summary["by_kind"][kind], [r for r in rows if r["kind"] == kind])
    assert set(summary["by_side"]) == {"a", "b"}


def assert_stats(stats: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    fc_rows = [r for r in rows if r["target"].lower() != r["foil"].lower()]
    n, k = len(fc_rows), sum(r["correct"] for r in fc_rows)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    fc = stats["forced_choice"]
    assert stats["n_items"] == len(rows) and fc["n_items"] == n and fc["n_correct"] == k
    assert fc["accuracy"] == pytest.approx(k / n)
    assert fc["ci95"] == pytest.approx([ci.low, ci.high], abs=1e-6)
    assert fc["mean_margin"] == pytest.approx(np.mean([r["margin"] for r in fc_rows]))
    assert fc["mean_p_target"] == pytest.approx(np.mean([r["p_target"] for r in fc_rows]))
    exact = np.mean([r["exact_match"] for r in rows])
    assert stats["greedy"]["exact_match"] == pytest.approx(exact)
    assert stats["greedy"]["target_present"] == pytest.approx(
        np.mean([r["target_present"] for r in rows])
    )


def test_identically_spelled_pairs_are_left_out_of_forced_choice() -> None:
    rows = [
        {"target": "hospital", "foil": "Hospital", "correct": None, "margin": 0.0},
        {"target": "casa", "foil": "house", "correct": True, "margin": 2.0},
        {"target": "perro", "foil": "dog", "correct": False, "margin": -1.0},
    ]
    rows = [{**r, "exact_match": False, "target_present": True} for r in rows]
    rows = [{**r, "p_target": 1 / (1 + math.exp(-r["margin"]))} for r in rows]
    stats = baseline.row_stats(rows)
    assert stats["n_items"] == 3 and stats["forced_choice"]["n_items"] == 2
    assert stats["forced_choice"]["accuracy"] == 0.5
    assert stats["forced_choice"]["mean_margin"] == pytest.approx(0.5)


def test_unusable_voice_is_refused_before_loading_a_model(
    tmp_path: Path, fake_model: list[str]
) -> None:
    config = BaselineConfig("en-es", tmp_path, engine="piper", n_pairs=1)  # piper: English only
    with pytest.raises(WhisperlensError, match="piper voice"):
        run_baseline(config, progress=False)
    assert fake_model == []


# --- real run -------------------------------------------------------------------------------


@pytest.mark.integration
def test_real_run_on_tiny_en(tmp_path: Path) -> None:
    from whisperlens.decoding import transcribe
    from whisperlens.scoring import candidate_logprobs, case_and_period

    config = BaselineConfig("consonant", tmp_path, engine="espeak", n_pairs=3, seed=0)
    summary = run_baseline(config, progress=False)
    assert {p.name for p in tmp_path.iterdir()} >= {CONFIG_FILE, ROWS_FILE, SUMMARY_FILE}
    rows = [json.loads(line) for line in (tmp_path / ROWS_FILE).read_text().splitlines()]
    assert len(rows) == 6 == summary["overall"]["n_items"]
    for row in rows:
        assert row["text"] == f"The word is {row['target']}." and row["transcript"]
        assert row["margin"] == pytest.approx(row["logprob_target"] - row["logprob_foil"])
        assert 0 <= row["p_target"] <= 1 and row["logprob_target"] < 0
        assert row["correct"] == (row["margin"] > 0)
        assert row["synth"]["engine"] == "espeak" and 0.3 < row["synth"]["duration_s"] < 5
    # oracle: the library's own transcribe / candidate_logprobs on the same audio
    model = baseline.load_model("tiny.en")
    row = rows[0]
    stim, _, _ = baseline.synthesize_item(config, Item(**{f: row[f] for f in ITEM_FIELDS}))
    assert transcribe(model, stim.audio)[0].text == row["transcript"]
    lp = candidate_logprobs(
        model,
        stim.audio,
        [f"{row['target']}.", f"{row['foil']}."],
        carrier="The word is",
        variants=case_and_period,
    )[0]
    assert lp.tolist() == pytest.approx([row["logprob_target"], row["logprob_foil"]], abs=1e-3)
    spanish = BaselineConfig("en-es", tmp_path / "es", engine="espeak", n_pairs=1)
    with pytest.raises(BaselineError, match="English-only"):
        baseline.check_model(spanish, build_items(spanish), model)


ITEM_FIELDS = ("item_id", "pair_id", "side", "kind", "language", "target", "foil", "carrier")
