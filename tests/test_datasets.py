"""AudioDataset, manifests, folder/HF/stimulus sources, and the Debian Asterisk sets."""

from __future__ import annotations

import json
import sys
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from whisperlens import datasets as D
from whisperlens.datasets import AudioDataset, AudioItem, DatasetError

SR = 16_000


def _wav(path: Path, n_samples: int, sr: int = SR, seed: int = 0) -> np.ndarray:
    data = (np.random.default_rng(seed).standard_normal(n_samples) * 0.1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, "FLOAT" if path.suffix == ".wav" else None)
    return data


def _full_items(tmp_path: Path) -> list[AudioItem]:
    _wav(tmp_path / "clips" / "a.wav", 8000)
    _wav(tmp_path / "elsewhere.wav", 4000)
    return [
        AudioItem(
            id="a",
            path=tmp_path / "clips" / "a.wav",
            text="hello there",
            language="en",
            speaker="s1",
            source="unit",
            duration_s=0.25,
            label="speech",
            start_s=0.125,
            end_s=0.375,
            meta={"word": "hello", "span": [0, 5], "nested": {"x": 1.5}, "flag": True},
        ),
        AudioItem(
            id="b",
            path=tmp_path / "elsewhere.wav",
            text=None,
            language=None,
            label="music",
            duration_s=0.25,
        ),
        AudioItem(id="c", path=tmp_path / "clips" / "a.wav", label=None, meta={"ñ": "ü"}),
    ]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_manifest_round_trip_preserves_every_field(tmp_path: Path, suffix: str) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    items = _full_items(tmp_path)
    path = AudioDataset(items, name="x").save_manifest(tmp_path / f"m{suffix}")
    back = AudioDataset.from_manifest(path)
    assert list(back) == items  # dataclass equality over every field
    assert [it.path.resolve() for it in back] == [it.path.resolve() for it in items]
    assert back.name == "m"


def test_manifest_writes_relative_paths_and_in_memory_audio(tmp_path: Path) -> None:
    items = _full_items(tmp_path)
    samples = np.linspace(-0.5, 0.5, 800, dtype=np.float32)
    mem = AudioItem(id="mem", audio=samples, sample_rate=8000, text="x", duration_s=0.1)
    manifest = AudioDataset([*items, mem]).save_manifest(tmp_path / "m.jsonl")
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["path"] for r in records[:2]] == ["clips/a.wav", "elsewhere.wav"]
    assert records[3]["path"] == "m.audio/000003.wav" and records[3]["sample_rate"] is None
    written, rate = sf.read(str(tmp_path / records[3]["path"]), dtype="float32")
    assert rate == 8000 and np.array_equal(written, samples)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_manifest_relative_paths_resolve_against_manifest_dir(tmp_path: Path, monkeypatch) -> None:
    data_dir = tmp_path / "data"
    _wav(data_dir / "clips" / "a.wav", 1600)
    outside = tmp_path / "outside.wav"
    _wav(outside, 1600)
    lines = [{"id": "a", "path": "clips/a.wav", "text": "hi"}, {"id": "b", "path": str(outside)}]
    manifest = data_dir / "m.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines) + "\n")
    monkeypatch.chdir(tmp_path)  # not the manifest's directory
    ds = AudioDataset.from_manifest("data/m.jsonl")
    assert ds[0].path.resolve() == (data_dir / "clips" / "a.wav").resolve()
    assert ds[0].path.is_file() and ds[1].path == outside
    assert ds[0].text == "hi" and ds[0].label == "speech" and ds[1].text is None


def test_bad_manifests_raise(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "path": "x.wav", "colour": "red"}\n')
    with pytest.raises(DatasetError, match="bad manifest record"):
        AudioDataset.from_manifest(bad)
    with pytest.raises(DatasetError, match="does not exist"):
        AudioDataset.from_manifest(tmp_path / "none.jsonl")
    with pytest.raises(DatasetError, match="unknown manifest type"):
        AudioDataset([]).save_manifest(tmp_path / "m.csv")


def test_item_and_dataset_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        AudioItem(id="a")
    with pytest.raises(ValueError, match="label"):
        AudioItem(id="a", path=tmp_path / "a.wav", label="noize")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="segment"):
        AudioItem(id="a", path=tmp_path / "a.wav", start_s=2.0, end_s=1.0)
    item = AudioItem(id="a", path=tmp_path / "a.wav")
    with pytest.raises(DatasetError, match="duplicate item ids"):
        AudioDataset([item, item])


def _numbered(n: int) -> AudioDataset:
    items = [
        AudioItem(
            id=f"i{k:03d}",
            path=Path(f"/x/{k}.wav"),
            duration_s=float(k),
            language="en" if k % 2 else "es",
            text=None if k % 3 == 0 else "t",
        )
        for k in range(n)
    ]
    return AudioDataset(items, name="n")


def test_subset_is_deterministic_and_keeps_order() -> None:
    ds = _numbered(100)
    first, again, other = ds.subset(10, seed=3), ds.subset(10, seed=3), ds.subset(10, seed=4)
    assert first.ids == again.ids and first.ids != other.ids
    assert len(first) == 10 and len(set(first.ids)) == 10
    assert first.ids == sorted(first.ids)  # original order
    assert ds.subset(500).ids == ds.ids and len(ds.subset(0)) == 0


def test_filter_slice_and_concat() -> None:
    ds = _numbered(12)
    got = ds.filter(language="en", min_duration_s=3, max_duration_s=9, has_text=True)
    assert got.ids == ["i005", "i007"]
    assert ds.filter(lambda it: it.id.endswith("1")).ids == ["i001", "i011"]
    assert isinstance(ds[2:4], AudioDataset) and ds[2:4].ids == ["i002", "i003"]
    assert ds.total_s == sum(range(12))
    with pytest.raises(DatasetError):
        ds + ds  # noqa: B018


def test_from_folder_sidecars(tmp_path: Path) -> None:
    _wav(tmp_path / "one.wav", 16000)
    (tmp_path / "one.txt").write_text("the first clip\n")
    _wav(tmp_path / "sub" / "two.flac", 8000, sr=8000)
    (tmp_path / "sub" / "two.txt").write_text("second")
    _wav(tmp_path / "three.wav", 3200)  # no sidecar
    (tmp_path / "notes.txt").write_text("not audio")
    ds = D.from_folder(tmp_path, language="en")
    assert ds.ids == ["one", "sub/two", "three"]  # sorted by path
    by_id = {it.id: it for it in ds}
    assert set(by_id) == {"one", "sub/two", "three"}
    assert by_id["one"].text == "the first clip" and by_id["sub/two"].text == "second"
    assert by_id["three"].text is None
    assert by_id["one"].duration_s == pytest.approx(1.0) and by_id["sub/two"].duration_s == 1.0
    assert all(it.language == "en" and it.path.is_file() for it in ds)


@pytest.mark.parametrize("kind", ["tsv", "jsonl"])
def test_from_folder_transcript_tables(tmp_path: Path, kind: str) -> None:
    _wav(tmp_path / "a.wav", 1600)
    _wav(tmp_path / "b" / "c.wav", 1600)
    rows = [("a.wav", "alpha"), ("b/c", "gamma words")]
    if kind == "tsv":
        (tmp_path / "transcripts.tsv").write_text("".join(f"{p}\t{t}\n" for p, t in rows))
    else:
        lines = [json.dumps({"path": p, "text": t}) for p, t in rows]
        (tmp_path / "transcripts.jsonl").write_text("\n".join(lines) + "\n")
    ds = D.from_folder(tmp_path, transcripts=kind)
    assert {it.id: it.text for it in ds} == {"a": "alpha", "b/c": "gamma words"}


def test_from_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no audio files"):
        D.from_folder(tmp_path)
    _wav(tmp_path / "a.wav", 160)
    with pytest.raises(DatasetError, match="transcripts.tsv"):
        D.from_folder(tmp_path, transcripts="tsv")


def test_from_hf_in_memory_dataset() -> None:
    datasets = pytest.importorskip("datasets")
    import io

    blobs, arrays = [], []
    for k, n in enumerate((8000, 4000)):
        buf, data = io.BytesIO(), np.full(n, 0.1 * (k + 1), dtype=np.float32)
        sf.write(buf, data, 8000, "FLOAT", format="WAV")
        blobs.append({"bytes": buf.getvalue(), "path": f"clip{k}.wav"})
        arrays.append(data)
    ds = datasets.Dataset.from_dict(
        {"audio": blobs, "sentence": ["one", "two"], "uid": ["u0", "u1"]}
    )
    ds = ds.cast_column("audio", datasets.Audio())  # decoding it would need torchcodec
    got = D.from_hf(
        datasets.DatasetDict({"test": ds}),
        "test",
        text_column="sentence",
        id_column="uid",
        language="en",
    )
    assert got.ids == ["u0", "u1"] and [it.text for it in got] == ["one", "two"]
    assert [it.sample_rate for it in got] == [8000, 8000]
    assert all(np.array_equal(it.audio, a) for it, a in zip(got, arrays, strict=True))
    assert [it.duration_s for it in got] == [1.0, 0.5] and got[0].language == "en"
    assert len(D.from_hf(ds, n_items=1, text_column="sentence")) == 1


def test_from_hf_without_datasets_names_the_fix(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(DatasetError, match="pip install datasets"):
        D.from_hf("some/name", "test")


def test_from_stimuli_crosses_words_engines_and_carriers(tmp_path: Path, monkeypatch) -> None:
    from whisperlens.stimuli import tts
    from whisperlens.stimuli.wordlists import WordPair

    calls = []

    def fake_synthesize(text, *, engine, language, voice, rate):
        calls.append((text, engine, language, voice, rate))
        path = tmp_path / f"{len(calls)}.wav"
        audio = _wav(path, 1600 * len(calls))
        return SimpleNamespace(
            audio=audio,
            sample_rate=SR,
            path=path,
            voice=voice or "dflt",
            key=f"k{len(calls)}",
            text=text,
        )

    monkeypatch.setattr(tts, "synthesize", fake_synthesize)
    pair = WordPair(id="p1", a="ship", b="sheep", kind="vowel")
    ds = D.from_stimuli(["cat", pair], engine="espeak", carrier=["{word}", "Say {word} now."])
    assert len(ds) == 3 * 2 and len(calls) == 6
    texts = [it.text for it in ds]
    assert texts == ["cat", "Say cat now.", "ship", "Say ship now.", "sheep", "Say sheep now."]
    assert [c[0] for c in calls] == texts
    sheep = ds[5]
    assert sheep.meta["pair_id"] == "p1" and sheep.meta["side"] == "b"
    assert sheep.meta["word"] == "sheep" and sheep.meta["carrier"] == "Say {word} now."
    assert sheep.text[slice(*sheep.meta["word_span"])] == "sheep"
    assert sheep.id == "p1.b|espeak|dflt|Say {word} now.|1" and sheep.source == "tts:espeak"
    assert sheep.duration_s == pytest.approx(0.6)


# --- Debian sets (installed by scripts/setup.sh) -------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("[sound of monkeys screaming]", (None, "non_speech")),
        ("<beep ascending>", (None, "non_speech")),
        ("(1 second of silence)", (None, "non_speech")),
        ("[ tono de error ]", (None, "non_speech")),
        ("at [@]", ("at", "ok")),
        ("[!] punto esclamativo", ("punto esclamativo", "ok")),
        ('IAX (note: does not say "2")', (None, "annotated")),
        ("Sus saludos [temporales] estan actualmente en uso", (None, "annotated")),
        ("", (None, "empty")),
        ("...", (None, "empty")),
        ("Agent Logged off.  Please  wait", ("Agent Logged off. Please wait", "ok")),
    ],
)
def test_clean_transcript(raw: str, expected: tuple[str | None, str]) -> None:
    assert D.clean_transcript(raw) == expected


def test_parse_transcripts_format(tmp_path: Path) -> None:
    path = tmp_path / "core-sounds-xx.txt"
    text = "\ufeff; comment line\n\ndigits/1: one\nopts: Press 1:now\ndigits/1: dup\nbare\nempty:\n"
    path.write_text(text, encoding="utf-8")
    entries, repeated = D.parse_transcripts(path)
    assert entries == {"digits/1": "one", "opts": "Press 1:now", "empty": ""}
    assert repeated == ["digits/1"]


@pytest.mark.parametrize("language", ["en", "es"])
def test_asterisk_sets(language: str) -> None:
    ds = D.asterisk(language)
    assert len(ds) >= 400 and ds.name == f"asterisk-{language}"
    assert all(it.text and it.text.strip() for it in ds)
    assert not any(ch in it.text for it in ds for ch in "[]()<>")
    assert all(it.path.is_file() and it.language == language for it in ds)
    assert all(D.MIN_DURATION_S <= it.duration_s <= D.MAX_DURATION_S for it in ds)
    assert sum(ds.info["excluded"].values()) + len(ds) == ds.info["n_wav"]
    assert "asterisk-en/digits/1" in ds.ids or language != "en"
    for item in ds.subset(4, seed=1):
        audio = item.load()
        frames = sf.info(str(item.path)).frames
        assert sf.info(str(item.path)).samplerate == 8000
        assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) == 2 * frames


def test_asterisk_long_clips_dropped_or_marked() -> None:
    dropped, marked = D.asterisk("en"), D.asterisk("en", long="mark")
    over = [it for it in marked if it.meta.get("over_30s")]
    assert over and all(it.duration_s > 30 for it in over)
    assert len(marked) == len(dropped) + len(over)


def test_music_segments() -> None:
    ds = D.music()
    assert len(ds) >= 20
    assert all(it.text is None and it.label == "music" and it.language is None for it in ds)
    assert all(10.0 <= it.duration_s <= 30.0 for it in ds)
    first = [it for it in ds if it.meta["segment"] == 0][0]
    track = [it for it in ds if it.path == first.path]
    assert track[-1].end_s == pytest.approx(sf.info(str(first.path)).duration)
    assert all(a.end_s == pytest.approx(b.start_s) for a, b in pairwise(track))
    expected, _ = sf.read(str(first.path), stop=round(first.end_s * 8000), dtype="float32")
    assert len(first.load()) == 2 * len(expected)


def test_missing_packages_name_the_install_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WHISPERLENS_ASTERISK_ROOT", str(tmp_path))
    monkeypatch.setenv("WHISPERLENS_DEBIAN_DOC_ROOT", str(tmp_path))
    cmd = "apt-get install -y asterisk-core-sounds-en asterisk-core-sounds-en-wav"
    with pytest.raises(DatasetError, match=cmd):
        D.asterisk("en")
    with pytest.raises(DatasetError, match="apt-get install -y asterisk-moh-opsound-wav"):
        D.music()
    with pytest.raises(DatasetError, match="choose from"):
        D.asterisk("de")  # type: ignore[arg-type]
