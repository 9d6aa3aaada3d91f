"""One run directory for every study: identity, resumable rows, atomic summary, a lock.

A run is a directory::

    config.json    what makes the run what it is: study, format version, config, input hashes
    rows.jsonl     one JSON object per finished work unit, appended and flushed
    summary.json   statistics over all rows, written atomically at the end
    report.html    the study's report section, rendered (optional)
    figures/       its figures as PNG files (optional, report.write_figures)
    .lock          held while a process writes the run (a second writer is refused)

plus whatever artifacts the study names (figures, vectors, ...). A killed run re-run with the
same command skips the units whose rows are on disk and finishes with the same summary:

- a torn last line of ``rows.jsonl`` (killed mid-write) is cut off; a bad line elsewhere, or
  two rows for one unit, is refused, since no crash produces them;
- ``config.json`` is written only once the run has really started (its first row or its
  summary), so a command that fails early (a typo in ``--model``) leaves nothing behind that
  would make the corrected command look like a different run;
- inputs (word lists, manifests) are identified by the SHA-256 of their content, not their
  path, so editing a file and re-running into the same directory is a different run.

>>> with RunDir.open("out", study="baseline", config={"words": "minimal"}) as run:  # doctest: +SKIP
...     todo = [u for u in units if key(u) not in run.done]
...     for row in compute(todo):
...         run.append(row)
...     run.write_summary(summarize(run.rows()))
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from whisperlens._io import atomic_write_json, check_output_dir, sha256_files
from whisperlens.errors import WhisperlensError

CONFIG_FILE, ROWS_FILE, SUMMARY_FILE = "config.json", "rows.jsonl", "summary.json"
REPORT_FILE, LOCK_FILE = "report.html", ".lock"
FIGURES_DIR = "figures"  # the report's figures as PNG files; a study lists it in its artifacts
RUN_FORMAT = 1  # of the directory itself; each study versions its rows separately
_OWN_FILES = (CONFIG_FILE, ROWS_FILE, SUMMARY_FILE, REPORT_FILE)


class RunError(WhisperlensError, ValueError):
    """A run directory that cannot be used as asked."""


def _jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, paths strings)."""
    return json.loads(json.dumps(obj, default=str, ensure_ascii=False))


InputFiles = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None


def input_hashes(inputs: Mapping[str, InputFiles]) -> dict[str, str | None]:
    """SHA-256 of each input's content: a file, or several files in order (None stays None)."""
    out: dict[str, str | None] = {}
    for name, files in inputs.items():
        if files is None:
            out[name] = None
        else:
            paths = [files] if isinstance(files, str | os.PathLike) else list(files)
            out[name] = sha256_files([Path(p) for p in paths])
    return out


def differing_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings (sorted)."""
    out = []
    for k in sorted({*a, *b}):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += differing_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


class RunDir:
    """An open run directory (use :meth:`open`; it is a context manager holding the lock)."""

    def __init__(self, path: Path, identity: dict[str, Any], key: str, lock: TextIO):
        self.path = path
        self.identity = identity  # the content of config.json
        self.key = key  # the row field that names a work unit
        self._lock = lock
        self._rows_file: TextIO | None = None
        self._created = False  # whether open() made the directory (removed if never started)
        self.done: dict[str, dict[str, Any]] = {}  # key -> row, in file order
        for row in read_rows(path / ROWS_FILE, key):
            self.done[str(row[key])] = row

    # -- opening -----------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        study: str,
        config: Mapping[str, Any],
        format_version: int = 1,
        inputs: Mapping[str, InputFiles] | None = None,
        key: str = "id",
        artifacts: Sequence[str] = (),
        overwrite: bool = False,
    ) -> RunDir:
        """Open (create, resume or, with ``overwrite``, restart) the run at ``path``.

        ``config`` is the study's settings without the output path; ``format_version`` is
        the study's row format (bump it when rows change meaning: old runs are then
        refused); ``inputs`` maps names to files whose content is part of the identity;
        ``artifacts`` are the study's other outputs (files or directories under ``path``),
        removed with the rows on ``overwrite``.
        """
        path = Path(path)
        check_output_dir(path)
        identity = _jsonable(
            {
                "study": study,
                "run_format": RUN_FORMAT,
                "format_version": format_version,
                "config": dict(config),
                "inputs": input_hashes(inputs or {}),
            }
        )
        created = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        lock = _acquire_lock(path)
        try:
            _check_identity(path, identity, study, overwrite, (*_OWN_FILES, *artifacts))
            run = cls(path, identity, key, lock)
        except BaseException:
            lock.close()
            _tidy(path, created)
            raise
        run._created = created
        return run

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the run; a run that never started leaves nothing behind."""
        if self._rows_file is not None:
            self._rows_file.close()
            self._rows_file = None
        self._lock.close()  # releases the flock
        _tidy(self.path, self._created)

    # -- writing -----------------------------------------------------------------------
    def file(self, name: str) -> Path:
        """Path of an artifact inside the run."""
        return self.path / name

    def start(self) -> None:
        """Mark the run as really started: write ``config.json`` (idempotent)."""
        config = self.path / CONFIG_FILE
        if not config.exists():
            atomic_write_json(config, self.identity)

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one finished unit's row (flushed, so a kill loses at most this row)."""
        row = dict(_jsonable(row))
        name = str(row[self.key])
        if name in self.done:
            raise RunError(f"a row for {self.key}={name!r} is already in {self.path}")
        self.start()
        if self._rows_file is None:
            self._rows_file = open(self.path / ROWS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._rows_file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._rows_file.flush()
        self.done[name] = row

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.append(row)

    def pending(self, units: Iterable[Any], key_of: Any) -> list[Any]:
        """The units whose key (``key_of(unit)``) has no row yet, in the given order."""
        return [u for u in units if str(key_of(u)) not in self.done]

    def rows(self, order: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Rows in file order, or in the order of the given keys (all must be done)."""
        if order is None:
            return list(self.done.values())
        keys = list(order)
        missing = [k for k in keys if k not in self.done]
        if missing:
            raise RunError(f"{len(missing)} units have no row yet (first: {missing[0]!r})")
        return [self.done[k] for k in keys]

    def write_json(self, name: str, obj: Any) -> Path:
        self.start()
        atomic_write_json(self.path / name, obj)
        return self.path / name

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        return self.write_json(SUMMARY_FILE, summary)

    def progress(self, total: int, desc: str, enabled: bool = True) -> Any:
        """A progress bar on stderr that starts at the units already done (24/120, not 0/96)."""
        from tqdm import tqdm

        done = min(len(self.done), total)
        return tqdm(total=total, initial=done, desc=desc, disable=not enabled, unit="unit")


def _acquire_lock(path: Path) -> TextIO:
    lock = open(path / LOCK_FILE, "a")  # noqa: SIM115 (held open for the run's lifetime)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise RunError(
            f"{path} is in use by another whisperlens process",
            "wait for it to finish, or pass another --out directory",
        ) from None
    return lock


def _tidy(path: Path, created: bool) -> None:
    """Remove the lock of a run that never started, and the directory if open() made it."""
    if (path / CONFIG_FILE).exists():
        return
    (path / LOCK_FILE).unlink(missing_ok=True)
    if created and not any(path.iterdir()):
        path.rmdir()


def _check_identity(
    path: Path, identity: dict[str, Any], study: str, overwrite: bool, outputs: Sequence[str]
) -> None:
    config = path / CONFIG_FILE
    if config.exists():
        try:
            stored = json.loads(config.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            stored = {"config.json": "unreadable"}
        if stored == identity and not overwrite:
            return
        if not overwrite:
            changed = ", ".join(differing_keys(stored, identity))
            raise RunError(
                f"{path} holds a run with a different config (differs in {changed})",
                "pass another --out directory, or --overwrite to discard that run",
            )
        _remove(path, outputs)
        return
    foreign = [p.name for p in path.iterdir() if p.name not in (LOCK_FILE, ROWS_FILE)]
    if foreign:
        raise RunError(
            f"{path} is not empty and holds no {study} run ({CONFIG_FILE} missing)",
            "pass a new or empty --out directory",
        )
    if (path / ROWS_FILE).exists():  # rows without a config: a foreign or broken directory
        if not overwrite:
            raise RunError(
                f"{path} has {ROWS_FILE} but no {CONFIG_FILE}",
                "pass --overwrite to discard it, or another --out directory",
            )
        _remove(path, outputs)


def _remove(path: Path, names: Sequence[str]) -> None:
    for name in names:
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def read_rows(path: str | os.PathLike[str], key: str | None = None) -> list[dict[str, Any]]:
    """Rows of a ``rows.jsonl``, repairing a torn last line (a crash mid-write).

    A bad line anywhere but last, or (with ``key``) two rows for one unit, is refused: no
    crash makes them, so the file was edited or mixed from two runs.
    """
    from whisperlens._io import atomic_write_text

    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(lines):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError
        except ValueError:
            if n != len(lines) - 1:
                raise RunError(
                    f"{path} line {n + 1} is not a JSON row",
                    "the run was edited or mixed; pass --overwrite to start it again",
                ) from None
            atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            break
        rows.append(row)
    else:
        if text and not text.endswith("\n"):  # a complete last row without its newline
            with open(path, "a", encoding="utf-8") as f:
                f.write("\n")
    if key is not None:
        seen: set[str] = set()
        for n, row in enumerate(rows):
            name = str(row.get(key))
            if key not in row or name in seen:
                raise RunError(
                    f"{path} row {n + 1} has a missing or repeated {key} {name!r}",
                    "pass --overwrite to start the run again",
                )
            seen.add(name)
    return rows
