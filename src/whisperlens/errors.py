"""Exceptions that name the cause and the fix.

Every user-facing failure in whisperlens raises a subclass of ``WhisperlensError``
whose message says what went wrong and what to do about it.
"""

from __future__ import annotations


class WhisperlensError(Exception):
    """Base class: a message naming the cause, and optionally the fix."""

    def __init__(self, cause: str, fix: str | None = None):
        self.cause = cause
        self.fix = fix
        super().__init__(cause if fix is None else f"{cause}; {fix}")


class ModelNotAvailableError(WhisperlensError):
    """A model name, hub id or path cannot be loaded (unknown, offline, missing package)."""


class CorruptWeightsError(WhisperlensError):
    """Weights on disk fail verification (truncated, wrong hash, unfilled parameters)."""


class AudioError(WhisperlensError):
    """Audio that cannot be used: missing, empty, corrupt, non-finite, too long."""


class SiteError(WhisperlensError, KeyError):
    """An unknown hook-site name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class ShapeError(WhisperlensError, ValueError):
    """A tensor whose shape does not fit where it is used."""
