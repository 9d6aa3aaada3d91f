"""whisperlens: mechanistic interpretability for speech recognition models."""

from __future__ import annotations

__version__ = "0.1.0"
