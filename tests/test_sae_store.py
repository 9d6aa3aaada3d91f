"""The SAE activation store and training corpus: shards against independent computations."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from whisperlens.datasets import AudioDataset, AudioItem
from whisperlens.executors import InlineExecutor
from whisperlens.frames import n_audio_frames
from whisperlens.studies.sae import store as st
from whisperlens.studies.sae.corpus import build_corpus, corpus_mix, generated_noise

SITE = "encoder.blocks.1.hook_resid_post"
SR = 16_000


# -- planning and labels (no model) -------------------------------------------------------------
def test_plan_windows_packs_in_order_splits_long_items_and_keeps_gaps() -> None:
    windows = st.plan_windows([100, 200, 1400, 3200, 10], pack=True, gap_frames=25)
    slots = [s for w in windows for s in w]
    assert [(s.item, s.start, s.n_frames) for s in slots] == [
        (0, 0, 100), (1, 0, 200), (2, 0, 1400), (3, 0, 1500), (3, 1500, 1500),
        (3, 3000, 200), (4, 0, 10),
    ]  # fmt: skip
    for window in windows:
        ends = [s.offset + s.n_frames for s in window]
        assert ends[-1] <= 1500
        for a, b in zip(window, window[1:], strict=False):
            assert b.offset == a.offset + a.n_frames + 25
    assert [[s.item for s in w] for w in windows] == [[0, 1], [2], [3], [3], [3, 4]]
    alone = st.plan_windows([100, 200], pack=False)
    assert [[(s.item, s.offset) for s in w] for w in alone] == [[(0, 0)], [(1, 0)]]


def test_item_split_is_a_hash_of_the_id_with_about_ten_percent_heldout() -> None:
    ids = [f"clip-{i}" for i in range(4000)]
    expected = [int(int(hashlib.sha256(i.encode()).hexdigest()[:8], 16) % 1000 < 100) for i in ids]
    got = [st.item_split(i) for i in ids]
    assert got == expected
    assert 0.08 < np.mean(got) < 0.12


def test_frame_labels_take_the_segment_holding_each_frame_centre() -> None:
    item = AudioItem(
        id="x",
        audio=np.zeros(SR),
        meta={"words": [["Hello,", 0.0, 0.05], ["World!", 0.05, 0.11]]},
    )
    ids = {"hello": 0, "world": 1}
    # frame centres: 0.01, 0.03, 0.05, 0.07, 0.09, 0.11, 0.13
    assert st.frame_labels(item, 7, ids, "words").tolist() == [0, 0, 1, 1, 1, -1, -1]
    assert st.build_vocab([item])["word"] == ["hello", "world"]


# -- the corpus ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_corpus() -> AudioDataset:
    return build_corpus("tiny", progress=False)


def test_tiny_corpus_has_every_kind_of_audio_and_records_its_mix(tiny_corpus) -> None:
    mix = tiny_corpus.info["mix"]
    assert set(mix["label"]) == {"speech", "music", "noise", "silence"}
    speech_langs = {it.language for it in tiny_corpus if it.label == "speech"}
    assert {"en", "es", "fr", "de", "it", "pt"} <= speech_langs
    sources = set(mix["source"])
    assert {"tts-espeak", "tts-piper", "asterisk-core-sounds-en", "asterisk-moh-opsound"} <= sources
    assert 2_000 <= mix["total"]["frames"] <= 10_000
    assert mix["total"] == corpus_mix(tiny_corpus)["total"]
    repo = Path(__file__).resolve().parents[1]
    for item in tiny_corpus:
        assert item.path is not None and not item.path.resolve().is_relative_to(repo)
        if item.source.startswith("tts-"):  # timings inside the clip, in order
            for key in ("words", "phonemes"):
                segs = item.meta[key]
                assert segs and all(0 <= a < b <= item.duration_s + 1e-3 for _, a, b in segs)


def test_generated_noise_is_deterministic_and_labelled(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WHISPERLENS_CACHE", str(tmp_path))
    first = generated_noise(20.0, seed=3, clip_s=(1.0, 2.0))
    audio = [it.load() for it in first]
    for item in first:
        assert item.path is not None
        item.path.unlink()  # written again from (kind, index, seed) alone
    again = generated_noise(20.0, seed=3, clip_s=(1.0, 2.0))
    assert [it.id for it in again] == [it.id for it in first]
    assert all(np.array_equal(a, it.load()) for a, it in zip(audio, again, strict=True))
    assert {it.label for it in first} == {"noise", "silence"}
    assert all(not it.load().any() for it in first if it.label == "silence")
    assert {it.meta["kind"] for it in first} == set(st_kinds())


def st_kinds() -> Iterable[str]:
    from whisperlens.studies.sae.corpus import GENERATED_KINDS

    return GENERATED_KINDS


# -- extraction (real tiny.en) ------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tiny_corpus) -> AudioDataset:
    """Five short clips: two TTS voices with timings, natural speech, noise, silence."""
    picks = [
        next(it for it in tiny_corpus if it.source == "tts-espeak" and it.language == "es"),
        next(it for it in tiny_corpus if it.source == "tts-piper"),
        min((it for it in tiny_corpus if it.source == "asterisk-core-sounds-en"),
            key=lambda it: it.duration_s or 0),
        next(it for it in tiny_corpus if it.source == "generated-pink"),
        next(it for it in tiny_corpus if it.source == "generated-silence"),
    ]  # fmt: skip
    return AudioDataset(picks, name="clips")


class _Crash(Exception):
    pass


class _CrashAfter:
    """An executor that runs inline and dies after ``n`` units (a simulated kill)."""

    name = "crash"

    def __init__(self, n: int):
        self.n = n

    def map(self, task: Any, units: Iterable[Any]):
        for i, pair in enumerate(InlineExecutor(threads=None).map(task, units)):
            if i == self.n:
                raise _Crash
            yield pair


@pytest.fixture(scope="module")
def alone(clips, tmp_path_factory) -> st.ActivationStore:
    """One clip per window, one window per shard, extracted through a crash and a resume."""
    out = tmp_path_factory.mktemp("alone") / "acts"
    kwargs: dict[str, Any] = dict(site=SITE, pack=False, windows_per_shard=1, progress=False)
    with pytest.raises(_Crash):
        st.extract(clips, out, executor=_CrashAfter(2), **kwargs)
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    # the crash left unit 2's shard on disk without a row, and a torn temporary file
    (out / "shards" / ".u00003.safetensors.abc.tmp").write_bytes(b"torn")
    with pytest.raises(st.StoreError, match="unfinished"):
        st.ActivationStore.open(out)
    return st.extract(clips, out, **kwargs)


@pytest.mark.integration
def test_resume_after_a_crash_gives_every_frame_exactly_once(alone, clips) -> None:
    rows = [json.loads(line) for line in (alone.path / "rows.jsonl").read_text().splitlines()]
    assert [r["unit"] for r in rows] == [f"u{i:05d}" for i in range(len(clips))]
    assert sorted(p.name for p in (alone.path / "shards").iterdir()) == [
        f"u{i:05d}.safetensors" for i in range(len(clips))
    ]
    seen: Counter[tuple[int, int]] = Counter()
    for shard in alone.shards():
        t = load_file(str(shard))
        seen.update(zip(t["item"].tolist(), t["frame"].tolist(), strict=True))
    expected = Counter(
        (i, f) for i, it in enumerate(clips) for f in range(n_audio_frames(len(it.load())))
    )
    assert seen == expected
    assert alone.n_frames == sum(expected.values())


@pytest.mark.integration
def test_shard_rows_equal_run_with_cache_on_each_clip_alone(alone, clips) -> None:
    from whisperlens.hooks import HookedWhisper

    model = HookedWhisper.from_pretrained("tiny.en")
    acts, meta = alone.load()
    for i, item in enumerate(clips):
        audio = item.load()
        ref = model.run_with_cache(audio, names=[SITE])[SITE][0]
        mine = meta["item"] == i
        frames = meta["frame"][mine]
        n = n_audio_frames(len(audio))
        assert sorted(frames.tolist()) == list(range(n))
        assert (meta["pos"][mine] == frames).all()
        expected = ref[torch.from_numpy(frames.astype(np.int64))]
        torch.testing.assert_close(acts[torch.from_numpy(mine)], expected, rtol=2e-3, atol=2e-2)
        assert (meta["split"][mine] == st.item_split(item.id)).all()
        assert (meta["label"][mine] == alone.vocab["label"].index(item.label)).all()


@pytest.mark.integration
def test_word_and_phoneme_ids_line_up_with_the_tts_timings(alone, clips) -> None:
    from whisperlens.stimuli.tts import synthesize

    _, meta = alone.load()
    for i, item in enumerate(clips):
        if not item.source.startswith("tts-"):
            mine = meta["item"] == i
            assert (meta["word"][mine] == -1).all() and (meta["phoneme"][mine] == -1).all()
            continue
        params = {"pitch": item.meta["pitch"]} if "pitch" in item.meta else {}
        stim = synthesize(item.text, engine=item.meta["engine"], language=item.language,
                          rate=item.meta["rate"], **params)  # fmt: skip
        mine = meta["item"] == i
        for key, segs in (("word", stim.words or []), ("phoneme", stim.phonemes or [])):
            for frame, got in zip(meta["frame"][mine], meta[key][mine], strict=True):
                t = frame * 0.02 + 0.01
                hit = [s.label for s in segs if s.start_s <= t < s.end_s]
                label = alone.vocab[key][got] if got >= 0 else None
                want = hit[-1].strip() if hit else None
                if key == "word" and want is not None:
                    want = want.casefold().strip(".,;:!?¡¿\"'")
                assert label == (want or None), (item.id, key, frame)
        assert (meta[key][mine] >= 0).mean() > 0.5


@pytest.mark.integration
def test_packed_rows_equal_run_with_cache_on_a_hand_packed_window(clips, tmp_path) -> None:
    from whisperlens.hooks import HookedWhisper

    pair = AudioDataset([clips[0], clips[2]], name="pair")
    store = st.extract(pair, tmp_path / "packed", site=SITE, pack=True, gap_s=0.3, progress=False)
    assert store.summary["n_windows"] == 1
    a, b = (it.load() for it in pair)
    n_a = n_audio_frames(len(a))
    offset = n_a + 15  # 0.3 s gap, clip b starts on a frame boundary
    wave = np.zeros(offset * 320 + len(b), dtype=np.float32)
    wave[: len(a)], wave[offset * 320 :] = a, b
    ref = HookedWhisper.from_pretrained("tiny.en").run_with_cache(wave, names=[SITE])[SITE][0]
    acts, meta = store.load()
    second = meta["item"] == 1
    assert meta["pos"][second].tolist() == [offset + f for f in meta["frame"][second]]
    pos = torch.from_numpy(meta["pos"].astype(np.int64))
    torch.testing.assert_close(acts, ref[pos], rtol=2e-3, atol=2e-2)


@pytest.mark.integration
def test_keeping_padding_keeps_the_whole_window_with_label_minus_one(clips, tmp_path) -> None:
    one = AudioDataset([clips[1]], name="one")
    store = st.extract(one, tmp_path / "pad", site=SITE, speech_only=False, progress=False)
    _, meta = store.load()
    n = n_audio_frames(len(clips[1].load()))
    assert meta["pos"].tolist() == list(range(1500))
    assert (meta["label"][:n] == 0).all() and (meta["label"][n:] == -1).all()


@pytest.mark.integration
def test_iter_batches_streams_every_train_frame_once_per_epoch(alone, monkeypatch) -> None:
    train, _ = alone.load(split="train", labels=False)
    reads: list[int] = []
    original = st.ActivationStore._read

    def counting(self, shard, split, keys=("acts",)):
        reads.append(1)
        return original(self, shard, split, keys)

    monkeypatch.setattr(st.ActivationStore, "_read", counting)
    stream = alone.iter_batches(32, split="train", buffer_frames=200, epochs=2, seed=1)
    first = next(stream)
    assert len(reads) < len(alone.shards())  # streaming: the first batch comes early
    batches = [first, *stream]
    assert max(len(b) for b in batches) == 32 and all(b.dtype == torch.float32 for b in batches)
    got = torch.cat(batches)
    n = len(train)
    assert len(got) == 2 * n

    def rows(x: torch.Tensor) -> Counter:
        return Counter(bytes(r.numpy().tobytes()) for r in x)

    assert rows(got[:n]) == rows(train) and rows(got[n:]) == rows(train)
    assert not torch.equal(got[:n], train)  # shuffled
    plain = torch.cat(list(alone.iter_batches(50, split="train", shuffle=False)))
    assert torch.equal(plain, train)


@pytest.mark.integration
def test_load_subsamples_reproducibly_and_mean_matches_the_frames(alone) -> None:
    full, meta = alone.load(split="train")
    sub, sub_meta = alone.load(split="train", max_frames=100, seed=4)
    again, _ = alone.load(split="train", max_frames=100, seed=4)
    assert sub.shape == (100, alone.d_model) and torch.equal(sub, again)
    keys = set(zip(meta["item"].tolist(), meta["frame"].tolist(), strict=True))
    assert set(zip(sub_meta["item"].tolist(), sub_meta["frame"].tolist(), strict=True)) <= keys
    torch.testing.assert_close(alone.mean("train"), full.double().mean(0).float())
    assert set(np.unique(meta["split"]).tolist()) == {0}


@pytest.mark.integration
def test_extract_refuses_another_corpus_in_the_same_directory(alone, clips) -> None:
    from whisperlens.runs import RunError

    with pytest.raises(RunError, match="different config"):
        st.extract(clips[:2], alone.path, site=SITE, pack=False, windows_per_shard=1)
    with pytest.raises(st.StoreError, match="encoder site"):
        st.extract(clips, alone.path / "x", site="decoder.blocks.0.hook_resid_post")


def test_corpus_languages_restrict_the_speech_but_keep_the_non_speech() -> None:
    corpus = build_corpus("tiny", languages=["es"], progress=False)
    speech = [it for it in corpus if it.label == "speech"]
    assert speech and {it.language for it in speech} == {"es"}
    assert {"tts-espeak", "asterisk-core-sounds-es"} <= {it.source for it in speech}
    assert {"music", "noise", "silence"} <= {it.label for it in corpus}


def test_resolve_corpus_reads_folders_and_manifests(tmp_path, tiny_corpus) -> None:
    import soundfile as sf

    from whisperlens.studies.sae.corpus import resolve_corpus

    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("a", "b"):
        sf.write(folder / f"{name}.wav", np.zeros(SR // 2, dtype=np.float32), SR)
    (folder / "a.txt").write_text("hello")
    from_folder = resolve_corpus(str(folder))
    assert from_folder.ids == ["a", "b"] and from_folder[0].text == "hello"
    manifest = tiny_corpus.save_manifest(tmp_path / "m.jsonl")
    again = resolve_corpus(str(manifest), n_items=5)
    assert again.ids == tiny_corpus.ids[:5]
    with pytest.raises(Exception, match="neither a scale"):
        resolve_corpus(str(tmp_path / "missing"))


@pytest.mark.integration
def test_an_item_over_30_s_is_cut_into_windows_with_frames_counting_on(tmp_path) -> None:
    from whisperlens.hooks import HookedWhisper

    rng = np.random.default_rng(3)
    audio = (0.05 * rng.standard_normal(int(31.5 * SR))).astype(np.float32)
    with pytest.raises(Exception, match="30 s"):
        AudioItem(id="long", audio=audio).load()  # one window is all load() gives
    item = AudioItem(id="long", audio=audio, label="noise", language=None)
    store = st.extract(AudioDataset([item]), tmp_path / "acts", site=SITE, progress=False)
    acts, meta = store.load()
    order = np.argsort(meta["frame"])
    assert meta["frame"][order].tolist() == list(range(len(audio) // 320))  # 1575 frames
    model = HookedWhisper.from_pretrained("tiny.en")
    second = audio[30 * SR :]  # the second window holds the last 1.5 s, alone
    ref = model.run_with_cache(second, names=[SITE])[SITE][0, : n_audio_frames(len(second))]
    tail = torch.from_numpy(order[1500:])
    torch.testing.assert_close(acts[tail], ref, rtol=2e-3, atol=2e-2)
    assert (meta["pos"][order[1500:]] == np.arange(75)).all()
