"""Cache directory and atomic file writes.

Everything whisperlens generates (converted weights, synthesized audio, run outputs)
lives under one user cache directory: ``$WHISPERLENS_CACHE`` if set, otherwise
``$XDG_CACHE_HOME/whisperlens`` (``~/.cache/whisperlens``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def cache_dir(*parts: str) -> Path:
    """The whisperlens cache directory (created), optionally a subdirectory of it."""
    root = os.environ.get("WHISPERLENS_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = Path(xdg) / "whisperlens"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` only on success.

    A crash or exception leaves ``dest`` untouched (old content or absent), never half-written.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(dest, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_write_with(dest: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        writer(tmp)


def sha256_files(paths: list[Path], chunk: int = 1 << 20) -> str:
    """SHA-256 over the bytes of several files, in order (names not included)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any, n: int = 16) -> str:
    """Short hex digest of a JSON-serialisable object (sorted keys): a cache key."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def read_jsonl_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a resumable ``rows.jsonl`` (one JSON object per line, appended and flushed).

    A torn last line (a crash mid-write) is dropped from the file, so the run resumes
    cleanly; a bad line anywhere else is an error, since that is not a crash artefact.
    """
    from whisperlens.errors import WhisperlensError

    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for n, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if n != len(lines) - 1:
                raise WhisperlensError(
                    f"{path} line {n + 1} is not JSON", "delete the run directory or overwrite it"
                ) from None
            atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows


def prepare_run_dir(
    out: Path,
    ident: dict[str, Any],
    *,
    what: str,
    outputs: tuple[str, ...],
    overwrite: bool = False,
    error: type[Exception] | None = None,
    config_file: str = "config.json",
) -> None:
    """Create a resumable run directory, or check that it holds this run's config.

    ``ident`` (JSON-serialisable) is written to ``config_file``; an existing one must equal
    it, or ``overwrite`` discards the run's ``outputs``. A non-empty directory without a
    config is refused, so nothing of the user's is mixed into or deleted by a run.
    """
    from whisperlens.errors import WhisperlensError

    err = error or WhisperlensError
    ident = json.loads(json.dumps(ident, default=str))
    config_path = out / config_file
    if config_path.exists():
        stored = json.loads(config_path.read_text(encoding="utf-8"))
        if stored == ident and not overwrite:
            return
        if not overwrite:
            changed = sorted(k for k in {*stored, *ident} if stored.get(k) != ident.get(k))
            raise err(
                f"{out} holds a run with a different config (differs in {', '.join(changed)})",
                "pass another --out directory, or --overwrite to discard that run",
            )
        for name in outputs:
            (out / name).unlink(missing_ok=True)
    elif out.exists() and any(out.iterdir()):
        raise err(
            f"{out} is not empty and holds no {what} run ({config_file} missing)",
            "pass a new or empty --out directory",
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config_path, ident)
