"""Natural speech and music that install from Debian main: the Asterisk prompt sounds.

`asterisk(language)` reads one voice actor's telephone prompts (8 kHz WAV, resampled to 16 kHz
by `load_audio`) with the transcripts shipped by the meta package (``core-sounds-<lang>.txt.gz``,
lines ``name: text``, names like ``digits/1`` for files in sub-directories). Transcript filter,
applied in this order (counts per reason land in ``dataset.info["excluded"]``):

* ``no_transcript`` -- a WAV with no transcript line (names are matched exactly, then ignoring
  case); a name listed twice keeps its first line (``es`` lists ``digits/0`` twice).
* ``non_speech`` -- the whole text is a description in brackets: ``[sound of monkeys
  screaming]``, ``<beep ascending>``, ``(1 second of silence)``.
* ``annotated`` -- an annotation with letters inside the text, where it is unclear what is
  spoken: ``IAX (note: does not say "2")``, ``Sus saludos [temporales] ...``. Annotations without
  letters (``at [@]``, ``space [ ]``) are only removed from the text.
* ``empty`` -- no letter or digit left.
* ``too_short`` -- shorter than `MIN_DURATION_S` (none in 1.6.1; shortest word: it "tre" 0.22 s).
* ``too_long`` -- longer than `MAX_DURATION_S` (Whisper's 30 s window); with ``long="mark"``
  such clips are kept and carry ``meta["over_30s"] = True``.

Roots default to the Debian install locations and can be overridden: ``$WHISPERLENS_ASTERISK_ROOT``
(default ``/usr/share/asterisk``, holding ``sounds/`` and ``moh/``) and
``$WHISPERLENS_DEBIAN_DOC_ROOT`` (default ``/usr/share/doc``, holding the transcripts).
"""

from __future__ import annotations

import gzip
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Literal, get_args

from whisperlens.datasets.base import AudioDataset, AudioItem, DatasetError

AsteriskLanguage = Literal["en", "es", "fr", "it", "ru"]
ASTERISK_LANGUAGES: tuple[str, ...] = get_args(AsteriskLanguage)
ASTERISK_ROOT_ENV = "WHISPERLENS_ASTERISK_ROOT"
DOC_ROOT_ENV = "WHISPERLENS_DEBIAN_DOC_ROOT"
DEFAULT_ASTERISK_ROOT = "/usr/share/asterisk"  # Debian install root of asterisk sounds
DEFAULT_DOC_ROOT = "/usr/share/doc"  # Debian install root of package documentation
MIN_DURATION_S = 0.15  # shorter clips hold no word (shortest real words: it "tre" 0.22 s)
MAX_DURATION_S = 30.0  # Whisper's input window
MUSIC_PACKAGE = "asterisk-moh-opsound-wav"
MUSIC_MIN_S, MUSIC_MAX_S = 10.0, 30.0  # bounds on music segment length

_WHOLE_ANNOTATION = re.compile(r"^\s*(\[[^\]]*\]|\([^)]*\)|<[^>]*>)\s*$")
_GLYPH_ANNOTATION = re.compile(r"\[[^\]\w]*\]")  # brackets around no letter/digit: "[@]", "[ ]"
_BRACKETS = re.compile(r"[\[\]()<>]")


def _roots(root: str | os.PathLike[str] | None, doc_root: str | os.PathLike[str] | None):
    asterisk = Path(root or os.environ.get(ASTERISK_ROOT_ENV) or DEFAULT_ASTERISK_ROOT)
    docs = Path(doc_root or os.environ.get(DOC_ROOT_ENV) or DEFAULT_DOC_ROOT)
    return asterisk, docs


def _missing(packages: str, what: str) -> DatasetError:
    return DatasetError(
        f"{what} not found (Debian package {packages.split()[-1]} is not installed)",
        f"install as root in ONE command: apt-get install -y {packages} "
        f"(`make demo` / scripts/setup.sh installs it), or point ${ASTERISK_ROOT_ENV} "
        f"and ${DOC_ROOT_ENV} at a copy",
    )


def clean_transcript(raw: str) -> tuple[str | None, str]:
    """``(text, "ok")`` for a spoken transcript, else ``(None, reason)`` (see module doc)."""
    if _WHOLE_ANNOTATION.match(raw):
        return None, "non_speech"
    text = _GLYPH_ANNOTATION.sub(" ", raw)
    if _BRACKETS.search(text):
        return None, "annotated"
    text = " ".join(text.split())
    if not any(ch.isalnum() for ch in text):
        return None, "empty"
    return text, "ok"


def parse_transcripts(path: Path) -> tuple[dict[str, str], list[str]]:
    """``name -> raw text`` from a ``name: text`` file (.txt or .gz); and the repeated names."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig") as f:
        lines = f.read().splitlines()
    entries: dict[str, str] = {}
    repeated: list[str] = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith(";") or ":" not in line:
            continue
        name, text = (part.strip() for part in line.split(":", 1))
        if name in entries:
            repeated.append(name)
        else:
            entries[name] = text
    return entries, repeated


def _voice_dir(sounds: Path, language: str) -> Path:
    """The voice directory for ``language``, e.g. ``sounds/en_US_f_Allison`` (not a symlink)."""
    candidates = [
        d for d in sorted(sounds.glob(f"{language}_*")) if d.is_dir() and not d.is_symlink()
    ]
    candidates = [d for d in candidates if next(d.rglob("*.wav"), None) is not None]
    if not candidates:
        pkgs = f"asterisk-core-sounds-{language} asterisk-core-sounds-{language}-wav"
        raise _missing(pkgs, f"Asterisk {language} WAV prompts under {sounds}/{language}_*")
    return candidates[0]


def _transcript_file(docs: Path, language: str) -> Path:
    base = docs / f"asterisk-core-sounds-{language}" / f"core-sounds-{language}.txt"
    for path in (base.with_suffix(".txt.gz"), base):
        if path.is_file():
            return path
    pkgs = f"asterisk-core-sounds-{language}-wav asterisk-core-sounds-{language}"
    raise _missing(pkgs, f"Asterisk {language} transcripts {base}(.gz)")


def _wav_duration(path: Path) -> float:
    import soundfile as sf

    return float(sf.info(str(path)).duration)


def asterisk(
    language: AsteriskLanguage = "en",
    *,
    long: Literal["drop", "mark"] = "drop",
    root: str | os.PathLike[str] | None = None,
    doc_root: str | os.PathLike[str] | None = None,
) -> AudioDataset:
    """The transcribed Asterisk prompts of one language (one voice actor), filtered as above."""
    if language not in ASTERISK_LANGUAGES:
        raise DatasetError(f"no Asterisk set for {language!r}", f"choose from {ASTERISK_LANGUAGES}")
    asterisk_root, docs = _roots(root, doc_root)
    voice = _voice_dir(asterisk_root / "sounds", language)
    transcripts, repeated = parse_transcripts(_transcript_file(docs, language))
    folded = {name.casefold(): text for name, text in reversed(transcripts.items())}
    excluded: Counter[str] = Counter()
    items = []
    for wav in sorted(voice.rglob("*.wav")):
        name = wav.relative_to(voice).with_suffix("").as_posix()
        raw = transcripts.get(name, folded.get(name.casefold()))
        text, reason = clean_transcript(raw) if raw is not None else (None, "no_transcript")
        duration = _wav_duration(wav) if text else 0.0
        if text and duration < MIN_DURATION_S:
            reason = "too_short"
        elif text and duration > MAX_DURATION_S and long == "drop":
            reason = "too_long"
        if reason != "ok":
            excluded[reason] += 1
            continue
        items.append(_prompt_item(language, voice, name, wav, text or "", duration))
    info = {"voice_dir": str(voice), "n_wav": len(items) + sum(excluded.values())}
    info |= {"excluded": dict(excluded), "repeated_names": repeated}
    return AudioDataset(items, name=f"asterisk-{language}", info=info)


def _prompt_item(
    language: str, voice: Path, name: str, wav: Path, text: str, duration: float
) -> AudioItem:
    lang, region, gender, speaker = (voice.name.split("_", 3) + ["", "", ""])[:4]
    meta: dict[str, object] = {"name": name, "locale": f"{lang}-{region}", "gender": gender}
    if duration > MAX_DURATION_S:
        meta["over_30s"] = True
    return AudioItem(
        id=f"asterisk-{language}/{name}",
        path=wav,
        text=text,
        language=language,
        speaker=speaker or voice.name,
        source=f"asterisk-core-sounds-{language}",
        duration_s=duration,
        label="speech",
        meta=meta,
    )


def music(segment_s: float = 20.0, *, root: str | os.PathLike[str] | None = None) -> AudioDataset:
    """Music-on-hold tracks cut into equal segments of about ``segment_s`` (10-30 s), no text.

    Each track of length L is cut into k equal parts, k = round(L / segment_s) clamped so that
    every part lasts 10-30 s; tracks shorter than 10 s are skipped.
    """
    if not MUSIC_MIN_S <= segment_s <= MUSIC_MAX_S:
        raise ValueError(f"segment_s must be in [{MUSIC_MIN_S}, {MUSIC_MAX_S}], got {segment_s}")
    moh = _roots(root, None)[0] / "moh"
    tracks = sorted(moh.glob("*.wav")) if moh.is_dir() else []
    if not tracks:
        raise _missing(MUSIC_PACKAGE, f"music-on-hold WAV files under {moh}")
    items = []
    for track in tracks:
        length = _wav_duration(track)
        if length < MUSIC_MIN_S:
            continue
        k = max(
            math.ceil(length / MUSIC_MAX_S),
            min(math.floor(length / MUSIC_MIN_S), round(length / segment_s)),
        )
        items += [_music_item(track, i, k, length) for i in range(k)]
    return AudioDataset(items, name="asterisk-moh", info={"n_tracks": len(tracks)})


def _music_item(track: Path, index: int, n_segments: int, length: float) -> AudioItem:
    seg = length / n_segments
    artist, _, title = track.stem.partition("-")
    return AudioItem(
        id=f"moh/{track.stem}/{index:03d}",
        path=track,
        text=None,
        language=None,
        source="asterisk-moh-opsound",
        duration_s=seg,
        label="music",
        start_s=index * seg,
        end_s=length if index == n_segments - 1 else (index + 1) * seg,
        meta={"artist": artist, "title": title, "segment": index, "n_segments": n_segments},
    )
