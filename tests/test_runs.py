"""RunDir: identity, crash recovery, lock, overwrite; and a real run killed mid-way and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from whisperlens.runs import (
    CONFIG_FILE,
    ROWS_FILE,
    SUMMARY_FILE,
    RunDir,
    RunError,
    differing_keys,
    read_rows,
)


def open_run(path: Path, **kw) -> RunDir:
    args = {"study": "toy", "config": {"n": 3, "name": "a"}, "key": "id", **kw}
    return RunDir.open(path, **args)


def test_config_is_written_only_once_the_run_starts(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), open_run(out):
        raise RuntimeError("the model failed to load")
    assert not out.exists()  # nothing half-written, not even the lock
    out.mkdir()
    with open_run(out):
        pass
    assert out.is_dir() and not any(out.iterdir())  # a directory it did not make stays
    with open_run(out, config={"n": 4}) as run:  # the corrected command is not refused
        run.append({"id": "u1", "v": 1})
    stored = json.loads((out / CONFIG_FILE).read_text())
    assert stored["config"] == {"n": 4} and stored["study"] == "toy"
    assert "format_version" in stored and "run_format" in stored


def test_resume_sees_finished_units_and_a_different_config_names_the_keys(tmp_path: Path) -> None:
    with open_run(tmp_path) as run:
        run.extend([{"id": "u1", "v": 1}, {"id": "u2", "v": 2}])
    with open_run(tmp_path) as run:
        assert list(run.done) == ["u1", "u2"]
        assert run.pending(["u1", "u2", "u3"], lambda u: u) == ["u3"]
        with pytest.raises(RunError, match="already"):
            run.append({"id": "u1", "v": 9})
    with pytest.raises(RunError, match=r"differs in config\.n, config\.name"):
        open_run(tmp_path, config={"n": 4, "name": "b"})
    with pytest.raises(RunError, match="format_version"):
        open_run(tmp_path, format_version=2)


def test_overwrite_discards_rows_summary_and_artifacts_only(tmp_path: Path) -> None:
    with open_run(tmp_path) as run:
        run.append({"id": "u1"})
        run.write_summary({"n": 1})
        (tmp_path / "figures").mkdir()
        (tmp_path / "figures" / "a.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("mine")
    with open_run(tmp_path, config={"n": 5}, artifacts=["figures"], overwrite=True) as run:
        assert run.done == {}
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"notes.txt"}  # the new run never started: no config, no lock


def test_a_foreign_directory_is_refused_even_with_overwrite(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(RunError, match="holds no toy run"):
            open_run(tmp_path, overwrite=overwrite)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_torn_tail_is_repaired_and_a_corrupt_middle_refused(tmp_path: Path) -> None:
    rows = tmp_path / ROWS_FILE
    rows.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "v"')
    assert [r["id"] for r in read_rows(rows, "id")] == ["a", "b"]
    assert rows.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    rows.write_text('{"id": "a"}')  # complete row, newline lost: kept, newline restored
    assert read_rows(rows, "id") == [{"id": "a"}] and rows.read_text() == '{"id": "a"}\n'
    rows.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(RunError, match="line 2"):
        read_rows(rows, "id")
    rows.write_text('{"id": "a"}\n{"id": "a"}\n')
    with pytest.raises(RunError, match="repeated"):
        read_rows(rows, "id")


def test_input_content_is_part_of_the_identity(tmp_path: Path) -> None:
    words = tmp_path / "words.tsv"
    words.write_text("a\tb\ncat\tbat\n")
    out = tmp_path / "run"
    with open_run(out, inputs={"words": words}) as run:
        run.append({"id": "u1"})
    words.write_text("a\tb\ncat\tpat\n")  # same path, new content
    with pytest.raises(RunError, match=r"inputs\.words"):
        open_run(out, inputs={"words": words})


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    with open_run(tmp_path), pytest.raises(RunError, match="in use by another"):
        open_run(tmp_path)
    with open_run(tmp_path):  # released on close
        pass


def test_differing_keys_walks_nested_mappings() -> None:
    a = {"x": 1, "c": {"p": 1, "q": 2}, "only_a": 0}
    b = {"x": 1, "c": {"p": 1, "q": 3}}
    assert differing_keys(a, b) == ["c.q", "only_a"]


# --- a real run killed mid-way --------------------------------------------------------------

BASELINE = ["baseline", "--words", "consonant", "--n-pairs", "4", "--seed", "1"]
BASELINE += ["--engine", "espeak", "--model", "tiny.en", "--no-progress", "--workers", "1"]


def whisperlens(out: Path) -> list[str]:
    return [sys.executable, "-m", "whisperlens.cli", *BASELINE, "--out", str(out)]


def n_rows(out: Path) -> int:
    path = out / ROWS_FILE
    return path.read_text().count("\n") if path.exists() else 0


def kill_after_rows(out: Path, sig: int, n: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(whisperlens(out), env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while n_rows(out) < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Traceback" not in err, err
        assert "resume" in err  # says how to resume
    assert not (out / SUMMARY_FILE).exists()


def finish(out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(whisperlens(out), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads((out / SUMMARY_FILE).read_text())


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("clean")
    return out, finish(out)


@pytest.mark.integration
@pytest.mark.parametrize(("sig", "after_rows"), [(signal.SIGKILL, 3), (signal.SIGINT, 1)])
def test_killed_run_resumes_to_the_same_summary(
    tmp_path: Path, clean_run: tuple[Path, dict], sig: int, after_rows: int
) -> None:
    clean_dir, clean = clean_run
    out = tmp_path / "killed"
    kill_after_rows(out, sig, after_rows)
    assert 0 < n_rows(out) < clean["overall"]["n_items"]
    assert finish(out) == clean
    keys = [json.loads(line)["key"] for line in (out / ROWS_FILE).read_text().splitlines()]
    clean_keys = [
        json.loads(line)["key"] for line in (clean_dir / ROWS_FILE).read_text().splitlines()
    ]
    assert sorted(keys) == sorted(clean_keys) and len(set(keys)) == len(keys)


def test_a_resumed_progress_bar_starts_at_the_done_units(tmp_path: Path) -> None:
    with open_run(tmp_path) as run:
        run.extend([{"id": "u1"}, {"id": "u2"}])
    with open_run(tmp_path) as run, run.progress(5, "toy", enabled=True) as bar:
        assert (bar.n, bar.total) == (2, 5)  # 2/5, not 0/3
