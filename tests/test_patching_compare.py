"""Patching: triangles of the summary and ``patch compare`` (runs of different sizes by
relative depth), on hand-made rows and summaries with hand-computed answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from whisperlens.cli import main
from whisperlens.studies.patching.compare import depth_bin, relative_depth
from whisperlens.studies.patching.summary import triangles


def _stat(value: float, lo: float, hi: float, n: int) -> dict:
    return {"value": value, "ci95": [lo, hi], "n": n}


def _summary(n_layers: int, values: list[list[float]], counts: list[list[int]], model: str,
             mode: str = "seed") -> dict:  # fmt: skip
    """A patching summary.json with the same hand-made matrix for every metric; the CIs
    are value - 0.1 and value + 0.1."""
    matrix = {"values": values, "n": counts,
              "ci95_low": [[v - 0.1 for v in row] for row in values],
              "ci95_high": [[v + 0.1 for v in row] for row in values],
              "rows": [str(i) for i in range(n_layers)], "columns": list(range(n_layers)),
              "row_name": "source layer"}  # fmt: skip
    part = {m: _stat(0.5, 0.4, 0.6, 10) for m in ("override", "margin", "effect")}
    return {
        "study": "patching",
        "config": {"experiment": "a", "mode": mode, "model": model},
        "n_layers": n_layers,
        "n_pairs": 5,
        "matrices": {m: matrix for m in ("override", "margin", "effect")},
        "triangles": {"diagonal": part, "below": part, "above": part},
    }


def _write(tmp_path: Path, name: str, summary: dict) -> Path:
    run = tmp_path / name
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_relative_depth_convention_and_bins():
    assert [relative_depth(i, 4) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert relative_depth(0, 6) == pytest.approx(1 / 6) and relative_depth(5, 6) == 1.0
    # 6 blocks on 4 bins (0, .25], (.25, .5], (.5, .75], (.75, 1]: 1/6 | 2/6, 3/6 | 4/6 | 5/6, 1
    assert [depth_bin(i, 6, 4) for i in range(6)] == [0, 1, 1, 2, 3, 3]
    assert [depth_bin(i, 4, 4) for i in range(4)] == [0, 1, 2, 3]
    assert [depth_bin(i, 12, 4) for i in range(12)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def _row(pair: str, s: int, t: int, override: bool, margin: float) -> dict:
    return {"pair_id": pair, "source_word": "bat", "target_word": "pat", "source_layer": s,
            "target_layer": t, "override": override, "target_present": False, "margin": margin,
            "clean_source_margin": 4.0, "clean_target_margin": -4.0}  # fmt: skip


def test_triangles_split_the_matrix_at_the_diagonal():
    rows = [
        _row("p", 0, 0, True, 4.0), _row("p", 1, 1, True, 2.0), _row("p", 2, 2, False, 0.0),
        _row("p", 1, 0, True, 3.0), _row("p", 2, 0, False, 1.0), _row("p", 2, 1, True, 2.0),
        _row("p", 0, 1, False, -2.0), _row("p", 0, 2, False, -4.0), _row("p", 1, 2, False, 0.0),
    ]  # fmt: skip
    got = triangles(rows, 100)
    assert got["diagonal"]["override"]["value"] == pytest.approx(2 / 3)
    assert got["below"]["override"]["value"] == pytest.approx(2 / 3)  # S > L: 1, 0, 1
    assert got["above"]["override"]["value"] == 0.0
    assert got["below"]["margin"]["value"] == pytest.approx(2.0)
    assert got["above"]["margin"]["value"] == pytest.approx(-2.0)
    # effect: (mean margin - clean target) / (clean source - clean target) = (-2 + 4) / 8
    assert got["above"]["effect"]["value"] == pytest.approx(0.25)
    assert got["diagonal"]["override"]["n"] == 3 and set(got) == {"diagonal", "below", "above"}


def test_compare_a_4_block_and_a_6_block_run_by_relative_depth(tmp_path, capsys):
    small = [[float(10 * s + t) for t in range(4)] for s in range(4)]
    big = [[float(10 * s + t) for t in range(6)] for s in range(6)]
    big_n = [[2] * 6 for _ in range(6)]
    big_n[2][5] = 6  # weights the bin (1, 3) toward this cell
    run4 = _write(tmp_path, "tiny", _summary(4, small, [[3] * 4] * 4, "tiny.en"))
    run6 = _write(tmp_path, "base", _summary(6, big, big_n, "base", mode="span"))
    out = tmp_path / "cmp"
    assert main(["patch", "compare", str(run4), str(run6), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    cmp = json.loads((out / "summary.json").read_text())
    assert printed == cmp and cmp["n_bins"] == 4 and cmp["bin_edges"] == [0, 0.25, 0.5, 0.75, 1]
    tiny, base = cmp["runs"]
    assert tiny["relative_depths"] == [0.25, 0.5, 0.75, 1.0] and base["mode"] == "span"
    assert base["relative_depths"] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
    # curves: the diagonal cells 0, 11, 22, ... with their CIs, at (l + 1) / n
    curve = base["curves"]["override"]
    assert [p["value"] for p in curve] == [0.0, 11.0, 22.0, 33.0, 44.0, 55.0]
    assert curve[2]["ci95"] == pytest.approx([21.9, 22.1]) and curve[2]["n"] == 2
    assert curve[3]["relative_depth"] == pytest.approx(4 / 6)
    # the 4-block run keeps its own matrix; the 6-block one is averaged into the 4 x 4 bins
    assert tiny["binned"]["margin"] == small
    binned = base["binned"]["override"]
    assert binned[0][0] == 0.0  # block 0 alone
    assert binned[0][1] == pytest.approx((1 + 2) / 2)  # S = 0, L in {1, 2}
    assert binned[1][1] == pytest.approx((11 + 12 + 21 + 22) / 4)
    assert binned[2][3] == pytest.approx((34 + 35) / 2)
    assert binned[1][3] == pytest.approx((14 * 2 + 15 * 2 + 24 * 2 + 25 * 6) / 12)
    assert binned[3][3] == pytest.approx((44 + 45 + 54 + 55) / 4)
    assert base["triangles"]["below"]["override"]["value"] == 0.5
    assert (out / "report.html").stat().st_size > 10_000
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {
        "diagonal-against-relative-depth.png",
        "binned-override-by-relative-depth.png",
    } <= figures


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "has no summary.json"),
        ("component", "component mode run"),
        ("old", "has no 'triangles'.*rerun its `whisperlens patch` command"),
    ],
)
def test_compare_refuses_runs_it_cannot_read_and_writes_nothing(tmp_path, capsys, case, message):
    good = _write(tmp_path, "good", _summary(4, [[0.0] * 4] * 4, [[1] * 4] * 4, "tiny.en"))
    bad = tmp_path / "bad"
    if case == "missing":
        bad.mkdir()
    elif case == "component":
        _write(tmp_path, "bad", _summary(4, [[0.0] * 4] * 3, [[1] * 4] * 3, "tiny.en", "component"))
    else:
        old = _summary(4, [[0.0] * 4] * 4, [[1] * 4] * 4, "tiny.en")
        del old["triangles"]
        _write(tmp_path, "bad", old)
    out = tmp_path / "cmp"
    assert main(["patch", "compare", str(good), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("whisperlens: error:") and str(bad) in err
    assert re.search(message, err), err
    assert not out.exists()
