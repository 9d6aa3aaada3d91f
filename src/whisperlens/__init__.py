"""whisperlens: mechanistic interpretability for speech recognition models.

>>> import whisperlens as wl
>>> model = wl.HookedWhisper.from_pretrained("tiny.en")
>>> cache = model.run_with_cache(audio, names="encoder.blocks.*.hook_resid_post")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module; imported on first use so `import whisperlens` stays light
_EXPORTS = {
    "HookedWhisper": "whisperlens.hooks",
    "ActivationCache": "whisperlens.cache",
    "Site": "whisperlens.sites",
    "load_whisper": "whisperlens.models.whisper",
    "load_text_model": "whisperlens.models.text",
    "LoadedWhisper": "whisperlens.models.base",
    "load_audio": "whisperlens.audio",
    "log_mel": "whisperlens.features",
    "synthesize": "whisperlens.stimuli.tts",
    "encode": "whisperlens.decoding",
    "decode": "whisperlens.decoding",
    "transcribe": "whisperlens.decoding",
    "DecodeOptions": "whisperlens.decoding",
    "score_encoded": "whisperlens.scoring",
    "candidate_logprobs": "whisperlens.scoring",
    "forced_choice": "whisperlens.scoring",
    "wer": "whisperlens.metrics",
    "load_pairs": "whisperlens.stimuli.wordlists",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'whisperlens' has no attribute {name!r}")
