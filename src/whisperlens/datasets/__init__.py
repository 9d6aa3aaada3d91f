"""Audio data sets: `AudioItem`, `AudioDataset`, manifests, and the offline builders.

>>> from whisperlens import datasets
>>> en = datasets.asterisk("en")            # natural English speech from Debian
>>> en.subset(50, seed=0).save_manifest("eval/en.jsonl")
>>> again = datasets.AudioDataset.from_manifest("eval/en.jsonl")
"""

from whisperlens.datasets.asterisk import (
    ASTERISK_LANGUAGES,
    MAX_DURATION_S,
    MIN_DURATION_S,
    asterisk,
    clean_transcript,
    music,
    parse_transcripts,
)
from whisperlens.datasets.base import LABELS, AudioDataset, AudioItem, DatasetError, Label
from whisperlens.datasets.sources import from_folder, from_hf, from_stimuli

load_manifest = AudioDataset.from_manifest

__all__ = [
    "ASTERISK_LANGUAGES",
    "LABELS",
    "MAX_DURATION_S",
    "MIN_DURATION_S",
    "AudioDataset",
    "AudioItem",
    "DatasetError",
    "Label",
    "asterisk",
    "clean_transcript",
    "from_folder",
    "from_hf",
    "from_stimuli",
    "load_manifest",
    "music",
    "parse_transcripts",
]
