"""whisperlens.stimuli: deterministic cached TTS with timings, carriers, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisperlens.cli import main
from whisperlens.errors import WhisperlensError
from whisperlens.stimuli import carriers, tts
from whisperlens.stimuli.tts import Segment, StimulusError, SynthesisRequest, synthesize

SR = 16_000


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("WHISPERLENS_CACHE", str(root))
    return root


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def _check_segments(segments: list[Segment], duration: float) -> None:
    assert segments, "expected timings"
    for seg in segments:
        assert 0.0 <= seg.start_s < seg.end_s <= duration + 1e-6, seg
    for a, b in zip(segments, segments[1:], strict=False):
        assert a.end_s <= b.start_s + 1e-9, (a, b)  # monotone, non-overlapping


# --- requests and carriers ------------------------------------------------------------


def test_request_validation() -> None:
    with pytest.raises(StimulusError, match="empty"):
        SynthesisRequest("   ")
    with pytest.raises(StimulusError, match="unknown TTS engine"):
        SynthesisRequest("hi", engine="festival")
    with pytest.raises(StimulusError, match="rate"):
        SynthesisRequest("hi", rate=0.0)
    with pytest.raises(StimulusError, match="no parameter"):
        SynthesisRequest("hi", engine="espeak", params={"noise_scale": 0.5})
    with pytest.raises(StimulusError, match="speaks 'en-us', not 'es'"):
        synthesize("hola", engine="piper", language="es")
    request = SynthesisRequest("  two   words ", engine="espeak", rate="slow")
    assert (request.text, request.rate) == ("two words", carriers.RATES["slow"])


def test_carriers_and_rates() -> None:
    phrase = carriers.render("the_word_is", "cat")
    assert phrase.text == "The word is cat."
    assert phrase.text[slice(*phrase.word_span)] == "cat"
    es = carriers.render("es_la_palabra", "perro")
    assert es.text[slice(*es.word_span)] == "perro"
    assert "es_la_palabra" in carriers.carrier_names("es")
    assert "the_word_is" not in carriers.carrier_names("es")
    assert carriers.engine_rate_params("piper", 0.8) == {"length_scale": 1.25}
    assert carriers.engine_rate_params("espeak", 0.8) == {"wpm": 140}
    with pytest.raises(ValueError, match="80-450"):
        carriers.engine_rate_params("espeak", 0.3)
    with pytest.raises(ValueError, match="unknown carrier"):
        carriers.get_carrier("nope")


# --- espeak-ng ------------------------------------------------------------------------


def test_espeak_deterministic_and_cached(_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = synthesize("The quick brown fox.", engine="espeak")
    wav_bytes = first.path.read_bytes()
    assert first.path.parent == _cache / "stimuli" / "espeak"
    assert json.loads(first.path.with_suffix(".json").read_text())["key"] == first.key
    again = synthesize("The quick brown fox.", engine="espeak", use_cache=False)
    assert again.path.read_bytes() == wav_bytes and again.key == first.key
    shutil.rmtree(_cache)
    fresh = synthesize("The quick brown fox.", engine="espeak")
    assert fresh.path.read_bytes() == wav_bytes
    np.testing.assert_array_equal(fresh.audio, first.audio)

    def fail(*args, **kwargs):
        raise AssertionError("cache hit expected, engine was called")

    monkeypatch.setattr(tts.get_engine("espeak"), "synthesize", fail)
    hit = synthesize("The quick brown fox.", engine="espeak")
    assert (hit.key, hit.path, hit.words, hit.phonemes) == (
        first.key, first.path, first.words, first.phonemes,
    )  # fmt: skip
    np.testing.assert_array_equal(hit.audio, first.audio)
    with pytest.raises(AssertionError, match="cache hit expected"):
        synthesize("Another text.", engine="espeak")


def test_espeak_timings_and_carrier_target() -> None:
    phrase = carriers.render("the_word_is", "cat")
    stim = synthesize(phrase.text, engine="espeak", language="en")
    assert stim.sample_rate == SR and stim.audio.dtype == np.float32
    _check_segments(stim.phonemes, stim.duration_s)
    _check_segments(stim.words, stim.duration_s)
    assert [w.label for w in stim.words] == ["The", "word", "is", "cat"]
    start, end = stim.time_span(phrase.word_span)
    assert (start, end) == (stim.words[-1].start_s, stim.words[-1].end_s)
    # oracle 1: the phonemes inside the span are those of the word said on its own
    alone = synthesize("cat", engine="espeak", language="en")
    inside = [p.label for p in stim.phonemes if start <= p.start_s < end]
    assert inside == [p.label for p in alone.phonemes] == ["k", "æ", "t"]
    # oracle 2: the span is speech, and what follows it is near silence
    a, b = round(start * SR), round(end * SR)
    assert _rms(stim.audio[a:b]) > 10 * max(_rms(stim.audio[b + 160 :]), 1e-5)


def test_espeak_spanish_and_rate() -> None:
    phrase = carriers.render("es_la_palabra", "perro")
    stim = synthesize(phrase.text, engine="espeak", language="es")
    assert stim.voice == "es"
    assert [w.label for w in stim.words] == ["La", "palabra", "es", "perro"]
    _check_segments(stim.phonemes, stim.duration_s)
    assert stim.time_span(phrase.word_span) == (stim.words[-1].start_s, stim.words[-1].end_s)
    assert any(p.label == "r" for p in stim.phonemes)  # the trill of "perro"
    slow = synthesize(phrase.text, engine="espeak", language="es", rate=0.7)
    assert slow.key != stim.key
    assert 1.2 < slow.duration_s / stim.duration_s < 1.6


def test_espeak_byte_identical_across_processes(_cache: Path) -> None:
    stim = synthesize("Say banana again.", engine="espeak")
    before = stim.path.read_bytes()
    code = (  # re-synthesize in another process, overwriting the cache entry
        "from whisperlens.stimuli import synthesize;"
        "print(synthesize('Say banana again.', engine='espeak', use_cache=False).path)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == stim.path
    assert stim.path.read_bytes() == before


def test_espeak_numbers_and_hyphens_map_to_written_words() -> None:
    stim = synthesize("Yes 42, forty-two!", engine="espeak")
    assert [w.label for w in stim.words] == ["Yes", "42", "forty-two"]
    assert stim.word_char_spans == [(0, 3), (4, 6), (8, 17)]
    _check_segments(stim.words, stim.duration_s)


def test_espeak_unknown_voice() -> None:
    with pytest.raises(StimulusError, match="no voice 'xx-nope'"):
        synthesize("hello", engine="espeak", voice="xx-nope")


def _count_engine_calls(monkeypatch: pytest.MonkeyPatch, engine: str) -> list[str]:
    calls: list[str] = []
    instance = tts.get_engine(engine)
    real = type(instance).synthesize

    def counted(request: SynthesisRequest, voice: str) -> tts.EngineOutput:
        calls.append(request.text)
        return real(instance, request, voice)

    monkeypatch.setattr(instance, "synthesize", counted)
    return calls


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-400])


def _flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x10  # a sample in the data chunk: the file still reads, same length
    path.write_bytes(bytes(data))


def _strip_hash(path: Path) -> None:  # an entry written before the hash was recorded
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    for key in ("sha256", "n_samples", "cache_format"):
        meta.pop(key, None)
    sidecar.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", [_truncate, _flip_a_bit, _strip_hash])
def test_damaged_cache_entry_is_resynthesized(
    damage, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    first = synthesize("Damaged entries are redone.", engine="espeak")
    good = first.path.read_bytes()
    meta = json.loads(first.path.with_suffix(".json").read_text())
    assert meta["n_samples"] == len(first.audio) and len(meta["sha256"]) == 64
    calls = _count_engine_calls(monkeypatch, "espeak")
    damage(first.path)
    assert sf.read(first.path)[0].size > 0 or damage is _truncate  # still a readable WAV
    with caplog.at_level("WARNING", logger="whisperlens"):
        again = synthesize("Damaged entries are redone.", engine="espeak")
    assert calls == ["Damaged entries are redone."]
    np.testing.assert_array_equal(again.audio, first.audio)
    assert first.path.read_bytes() == good
    notes = [r.getMessage() for r in caplog.records if r.name.startswith("whisperlens")]
    assert len(notes) == 1 and "re-synthesizing" in notes[0] and "\n" not in notes[0]
    synthesize("Damaged entries are redone.", engine="espeak")
    assert len(calls) == 1  # repaired: a hit again


# --- piper ----------------------------------------------------------------------------


def test_piper_speech_timings_and_determinism(_cache: Path) -> None:
    phrase = carriers.render("the_word_is", "cat")
    stim = synthesize(phrase.text, engine="piper")
    assert stim.sample_rate == SR and stim.audio.dtype == np.float32
    assert 0.6 < stim.duration_s < 2.5  # four short words
    assert 0.03 < _rms(stim.audio) < 0.5
    info = sf.info(stim.path)
    assert (info.samplerate, info.channels) == (SR, 1)
    _check_segments(stim.phonemes, stim.duration_s)
    assert [w.label for w in stim.words] == ["The", "word", "is", "cat"]
    start, end = stim.time_span(phrase.word_span)
    assert [p.label for p in stim.phonemes if start <= p.start_s < end] == ["k", "æ", "t"]
    wav_bytes = stim.path.read_bytes()
    shutil.rmtree(_cache)
    assert synthesize(phrase.text, engine="piper").path.read_bytes() == wav_bytes
    slow = synthesize(phrase.text, engine="piper", rate=0.7)
    assert 1.25 < slow.duration_s / stim.duration_s < 1.6
    # "42" is phonemized as two words: word timings would be guesses, so none are given
    number = synthesize("I have 42 cats.", engine="piper")
    assert number.words is None and number.phonemes
    assert number.time_span((7, 9)) is None


def test_piper_unknown_voice_names_the_installed_ones() -> None:
    with pytest.raises(WhisperlensError) as info:
        synthesize("hello", engine="piper", voice="en_US-nobody-medium")
    message = str(info.value)
    assert "'en_US-nobody-medium' is not installed" in message
    assert "installed voices: en_US-joe-medium" in message and "pip install" not in message


# --- CLI ------------------------------------------------------------------------------


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "cat.wav"
    argv = ["stimuli", "synth", "--text", "cat", "--engine", "espeak", "--carrier", "say_again"]
    assert main([*argv, "--rate", "slow", "--out", str(out), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    info = sf.info(out)
    assert (info.samplerate, info.subtype) == (SR, "PCM_16")
    assert meta["text"] == "Say cat again." and meta["rate"] == carriers.RATES["slow"]
    start, end = meta["target"]["time_span"]
    assert 0 < start < end < meta["duration_s"]
    assert main([*argv, "--out", str(out), "--param", "pitch=500"]) == 2
    assert "pitch=500" in capsys.readouterr().err
