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
    The file gets the permissions ``open()`` would give it (0666 less the process umask).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~current_umask())  # mkstemp makes 0600; match open()'s files
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def check_output_file(path: str | os.PathLike[str]) -> Path:
    """Check, before any work, that a file can be written at ``path``; return it as a Path.

    Raises WhisperlensError naming the cause and the fix when ``path`` is a directory, lies
    under a file, or its nearest existing directory cannot be written to (tested by creating
    and removing a probe file, so it also holds for root and for /proc). Writes nothing.
    """
    from whisperlens.errors import WhisperlensError

    path = Path(path)
    if path.is_dir():
        raise WhisperlensError(
            f"output {path} is an existing directory, not a file",
            f"pass a file path (e.g. {path / 'out'}{path.suffix})",
        )
    _check_writable_parent(path, what="output file")
    return path


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Check, before any work, that ``path`` is or can become a writable directory.

    Raises WhisperlensError (cause and fix) when ``path`` is an existing file, lies under a
    file, or cannot be created or written to. Writes nothing (a probe file is removed).
    """
    from whisperlens.errors import WhisperlensError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WhisperlensError(
            f"output directory {path} is an existing file",
            "pass a directory path, or move that file away",
        )
    if path.is_dir():
        _probe_write(path, path, what="output directory")
    else:
        _check_writable_parent(path, what="output directory")
    return path


def _check_writable_parent(path: Path, *, what: str) -> None:
    """The nearest existing ancestor of ``path`` must be a directory we can write into."""
    from whisperlens.errors import WhisperlensError

    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise WhisperlensError(
            f"cannot write {what} {path}: {ancestor} is a file, not a directory",
            "choose a path in a directory",
        )
    _probe_write(ancestor, path, what=what)


def _probe_write(folder: Path, path: Path, *, what: str) -> None:
    from whisperlens.errors import WhisperlensError

    try:
        fd, probe = tempfile.mkstemp(prefix=".whisperlens-probe.", dir=folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise WhisperlensError(
            f"cannot write {what} {path}: {folder} is not writable ({reason})",
            "choose a path in a writable directory",
        ) from None
    os.close(fd)
    os.unlink(probe)


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
