"""Verified cache directories: built once, atomically, and re-checked on every load.

A cache entry is a directory (a transformers checkpoint, say) holding a ``manifest.json``,
written last, with the sha256 of every other file under ``"files"`` and some identifying
keys (the source's hash, the layout format). ``verified_dir`` returns such a directory,
building it when it is missing, when a file no longer matches its hash (corrupt) or when
the manifest's keys differ from what the caller expects (stale). It builds in a temporary
directory next to the target and renames it into place under an inter-process file lock,
so parallel processes build once and readers never see a half-written directory.

The Whisper conversion cache (:mod:`whisperlens.models.whisper`) and the dequantized GGUF
cache (:mod:`whisperlens.models.text`) both use it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from whisperlens._io import atomic_write_json, sha256_files
from whisperlens.errors import CorruptWeightsError

MANIFEST = "manifest.json"

# Writes the cache's files into the given (empty, temporary) directory and returns extra
# manifest keys worth recording (provenance, timings); the file hashes are added for it.
Build = Callable[[Path], Mapping[str, Any]]


def sha256_file(path: Path) -> str:
    """SHA-256 of one file's bytes, as hex."""
    return sha256_files([path])


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file in ``folder`` except the manifest, by file name."""
    return {
        p.name: sha256_file(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }


def is_valid(
    folder: Path,
    expect: Mapping[str, Any],
    *,
    required: tuple[str, ...] = (),
    what: str | None = None,
) -> bool:
    """True when the manifest holds ``expect``'s values and every file matches its sha256.

    A file missing from the manifest or from ``folder`` fails the check, as does a
    ``required`` file the manifest does not list. When ``what`` names the cache, an
    existing folder that fails warns that it is corrupt or stale and will be rebuilt.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        valid = (
            all(manifest.get(key) == value for key, value in expect.items())
            and set(required) <= files.keys()
            and file_hashes(folder) == files
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        valid = False
    if not valid and what is not None and folder.exists():
        warnings.warn(f"{what} cache {folder} is corrupt or stale; rebuilding", stacklevel=3)
    return valid


def verified_dir(
    folder: Path,
    build: Build,
    expect: Mapping[str, Any],
    *,
    what: str,
    required: tuple[str, ...] = (),
) -> Path:
    """``folder``, verified against its manifest; (re)built by ``build`` when it fails.

    ``expect`` holds the manifest keys that identify the content (e.g. the source's sha256
    and the layout format); ``what`` names the cache in the warning and error messages.
    Raises CorruptWeightsError when a freshly built folder fails its own checksums.
    """
    if is_valid(folder, expect, required=required, what=what):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder.parent / f".{folder.name}.lock"):
        if not is_valid(folder, expect, required=required):  # no other process built it
            _build(folder, build, expect)
    if not is_valid(folder, expect, required=required):
        raise CorruptWeightsError(
            f"the freshly built {what} cache {folder} fails its own checksums",
            "check the disk (space, permissions) or set WHISPERLENS_CACHE to another directory",
        )
    return folder


def _build(folder: Path, build: Build, expect: Mapping[str, Any]) -> None:
    """Build into a temporary sibling directory, write the manifest last, rename into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        extra = build(tmp)
        atomic_write_json(tmp / MANIFEST, {**extra, **expect, "files": file_hashes(tmp)})
        _replace_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An inter-process lock (POSIX flock), so parallel loads build a cache only once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; the atomic rename still protects readers
        yield
        return
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _replace_dir(src: Path, dest: Path) -> None:
    """Move directory ``src`` onto ``dest``, replacing a stale one (another process may race)."""
    for attempt in range(3):
        shutil.rmtree(dest, ignore_errors=True)
        try:
            os.replace(src, dest)
            return
        except OSError:
            if attempt == 2:
                raise
