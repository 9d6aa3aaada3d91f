"""Model loading: Whisper (offline packages, hub, local dirs, CTranslate2, openai .pt) and text LMs."""

from __future__ import annotations

from whisperlens.models.base import LoadedWhisper

__all__ = ["LoadedWhisper", "load_text_model", "load_whisper"]


def __getattr__(name: str):
    if name == "load_whisper":
        from whisperlens.models.whisper import load_whisper

        return load_whisper
    if name == "load_text_model":
        from whisperlens.models.text import load_text_model

        return load_text_model
    raise AttributeError(name)
