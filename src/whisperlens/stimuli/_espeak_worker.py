"""One espeak-ng synthesis in a fresh process (standard library only; run as a script).

libespeak-ng keeps state between syntheses in one process (``rand()`` jitter and
internal generator state), so the same text gives slightly different audio on every
call. A fresh process always starts from the same state, so each synthesis runs here:
``espeak_engine`` starts this file with the request as JSON on stdin and reads back
JSON: sample rate, library version, base64 int16 samples and the synthesis events.

The library runs in synchronous mode: one callback receives both the audio buffers and
the events. ``espeakEVENT_WORD`` carries the word's 1-based character position and
length in the text; ``espeakEVENT_PHONEME`` (IPA option) the phoneme; every event's
``sample`` field is its exact position in the output audio.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import json
import sys
from typing import Any

EV_END_LIST, EV_PHONEME = 0, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_OPTIONS = 0x0001 | 0x0002 | 0x8000  # phoneme events, IPA phonemes, don't exit
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
PARAMETER_IDS = {"wpm": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}
EXIT_NO_LIBRARY, EXIT_NO_VOICE, EXIT_SYNTH_FAILED = 3, 4, 5


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character position
        ("length", ctypes.c_int),  # characters
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # output sample index
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


def _load() -> tuple[Any, int]:
    lib = ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]  # fmt: skip
    return lib, lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INIT_OPTIONS)


def _event_row(ev: _Event) -> list[Any]:
    """[type, sample, text_position, length, phoneme]."""
    label = ""
    if ev.type == EV_PHONEME:
        label = bytes(ev.id.string).split(b"\0")[0].decode("utf-8", "replace")
    return [ev.type, ev.sample, ev.text_position, ev.length, label]


def synthesize(lib: Any, request: dict[str, Any]) -> tuple[bytes, list[list[Any]]]:
    """int16 little-endian audio bytes and event rows for ``request``."""
    chunks: list[bytes] = []
    events: list[list[Any]] = []

    def on_synth(wav: Any, n_samples: int, evs: Any) -> int:
        if n_samples > 0:
            chunks.append(ctypes.string_at(wav, 2 * n_samples))
        i = 0
        while evs[i].type != EV_END_LIST:
            events.append(_event_row(evs[i]))
            i += 1
        return 0

    callback = _CALLBACK(on_synth)
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(request["voice"].encode()) != 0:
        raise LookupError(request["voice"])
    for name, value in request["settings"].items():
        lib.espeak_SetParameter(PARAMETER_IDS[name], int(value), 0)
    data = request["text"].encode("utf-8")
    rc = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    lib.espeak_Synchronize()
    if rc != 0:
        raise RuntimeError(f"espeak_Synth returned {rc}")
    return b"".join(chunks), events


def main() -> int:
    request = json.loads(sys.stdin.read() or "{}")
    try:
        lib, sample_rate = _load()
    except OSError as exc:
        print(exc, file=sys.stderr)
        return EXIT_NO_LIBRARY
    reply: dict[str, Any] = {"sample_rate": sample_rate, "version": lib.espeak_Info(None).decode()}
    if "text" in request:
        try:
            audio, events = synthesize(lib, request)
        except LookupError:
            return EXIT_NO_VOICE
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return EXIT_SYNTH_FAILED
        reply.update(audio=base64.b64encode(audio).decode("ascii"), events=events)
    json.dump(reply, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
