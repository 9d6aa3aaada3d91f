"""Feature labelling and steering of the SAE study, against hand computations.

Synthetic stores follow the activation-store contract (shards of safetensors with per-frame
metadata, a manifest, a vocab); latents are planted so the right answer is known.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from whisperlens.datasets import AudioDataset, AudioItem
from whisperlens.studies.sae import features as F

VOCAB = {
    "language": ["en", "es"],
    "label": ["speech", "music", "noise", "silence"],
    "word": ["cat", "gato", "dog"],
    "phoneme": ["AE", "IY", "S", "T"],
    "source": ["tts"],
}
N_ITEMS, N_FRAMES, D = 6, 150, 4


@dataclass
class FakeStore:
    """The reader side of the store contract, over shards written by `write_store`."""

    path: Path
    items: list[AudioItem]
    site: str = "encoder.blocks.2.hook_resid_post"
    model: str = "tiny.en"
    vocab: dict[str, list[str]] = field(default_factory=lambda: VOCAB)

    @property
    def d_model(self) -> int:
        return D

    def dataset(self) -> AudioDataset:
        return AudioDataset(self.items)

    def shards(self) -> list[Path]:
        return sorted((self.path / "shards").glob("*.safetensors"))

    def load(self, *, split=None, max_frames=None, seed=0, labels=True):
        from safetensors.torch import load_file

        parts = [load_file(str(s)) for s in self.shards()]
        data = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        acts = data.pop("acts").float()
        return acts, {k: v.numpy() for k, v in data.items()}


def planted_frames(seed: int = 0) -> dict[str, np.ndarray]:
    """Per-frame metadata and activations with planted latents.

    latent 0: fires only on phoneme AE; latent 1: ~constant on every frame; latent 2: fires
    on Spanish items and weakly on a few English frames; latent 3: never fires.
    """
    rng = np.random.default_rng(seed)
    n = N_ITEMS * N_FRAMES
    item = np.repeat(np.arange(N_ITEMS), N_FRAMES).astype(np.int32)
    frame = np.tile(np.arange(N_FRAMES), N_ITEMS).astype(np.int32)
    language = np.where(item >= 4, 1, 0).astype(np.int16)
    phoneme = rng.integers(-1, 4, n).astype(np.int32)
    word = rng.integers(-1, 3, n).astype(np.int32)
    acts = np.zeros((n, D), dtype=np.float32)
    acts[:, 0] = np.where(phoneme == 0, 1.0 + rng.random(n), 0.0)
    acts[:, 1] = 1.0 + 0.01 * rng.random(n)
    acts[:, 2] = np.where(
        language == 1, 2.0 + rng.random(n), np.where(rng.random(n) < 0.02, 0.5 * rng.random(n), 0.0)
    )
    return {
        "acts": acts,
        "item": item,
        "frame": frame,
        "pos": frame.copy(),
        "language": language,
        "label": np.zeros(n, dtype=np.int8),
        "word": word,
        "phoneme": phoneme,
        "split": (item == 5).astype(np.int8),
        "source": np.zeros(n, dtype=np.int16),
    }


def write_store(root: Path, frames: dict[str, np.ndarray]) -> FakeStore:
    from safetensors.torch import save_file

    (root / "shards").mkdir(parents=True)
    for s, rows in enumerate((slice(0, 3 * N_FRAMES), slice(3 * N_FRAMES, None))):
        save_file({k: torch.from_numpy(v[rows].copy()) for k, v in frames.items()},
                  str(root / "shards" / f"u{s:05d}.safetensors"))  # fmt: skip
    (root / "vocab.json").write_text(json.dumps(VOCAB))
    n_samples = N_FRAMES * F.SAMPLES_PER_FRAME
    items = [
        AudioItem(
            id=f"item{i}",
            # a ramp: sample k of item i holds (i + k / n_samples) / 10, so a cut is checkable
            audio=((i + np.arange(n_samples) / n_samples) / 10).astype(np.float32),
            language=VOCAB["language"][int(frames["language"][i * N_FRAMES])],
        )
        for i in range(N_ITEMS)
    ]
    return FakeStore(root, items)


class ReluDictionary:
    """Codes = relu(x) (the identity dictionary on the planted coordinates)."""

    name = "sae"
    d_model = D
    n_latents = D

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().clamp_min(0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @property
    def directions(self) -> torch.Tensor:
        return torch.eye(D)


@pytest.fixture(scope="module")
def planted():
    return planted_frames()


@pytest.fixture(scope="module")
def feat_run(tmp_path_factory, planted):
    root = tmp_path_factory.mktemp("feat")
    store = write_store(root / "acts", planted)
    summary = F.analyse_features(
        store, ReluDictionary(), root / "feat", n_top=3, min_support=5, min_items=2, progress=False
    )
    latents = json.loads((root / "feat" / F.LATENTS_FILE).read_text())
    return store, summary, latents, root / "feat"


def test_planted_phoneme_latent_is_labelled_and_monosemantic(feat_run):
    _, _, latents, _ = feat_run
    ae = latents[0]
    assert ae["label"] == "phoneme:AE"
    assert ae["label_type"] == "phoneme"
    assert ae["purity"] == pytest.approx(1.0)
    assert ae["monosemanticity"] == pytest.approx(1.0)
    assert ae["monosemanticity_lo"] > 0.9  # hundreds of frames: a tight bound
    assert ae["monosemantic"]


def test_uniform_latent_scores_near_zero(feat_run):
    _, _, latents, _ = feat_run
    flat = latents[1]
    assert flat["frequency"] == 1.0
    assert abs(flat["monosemanticity"]) < 0.02
    assert not flat["monosemantic"]


def textbook_kappa(x: np.ndarray, y: np.ndarray) -> float:
    """Cohen's kappa of two boolean raters from the 2x2 table: (po - pe) / (1 - pe)."""
    po = np.mean(x == y)
    pe = x.mean() * y.mean() + (1 - x.mean()) * (1 - y.mean())
    return float((po - pe) / (1 - pe))


def test_purity_and_kappa_against_hand_computation(feat_run, planted):
    _, _, latents, _ = feat_run
    z = planted["acts"][:, 2]
    es = planted["language"] == 1
    purity = z[es].sum() / z.sum()
    lang = latents[2]["purity_by_type"]["language"]
    assert lang["label"] == "es"
    assert lang["purity"] == pytest.approx(purity, rel=1e-6)
    assert lang["purity_lift"] == pytest.approx((purity - es.mean()) / (1 - es.mean()), rel=1e-6)
    assert lang["kappa"] == pytest.approx(textbook_kappa(z > 0, es), rel=1e-6)
    assert 0.8 < lang["kappa"] < 1.0  # fires on all Spanish and ~2 % of English frames
    assert latents[2]["label"] == "language:es"
    assert latents[2]["monosemanticity"] == pytest.approx(lang["kappa"])
    # frequency and mean activation when active
    fires = z > 0
    assert latents[2]["frequency"] == pytest.approx(fires.mean())
    assert latents[2]["mean_activation"] == pytest.approx(z[fires].mean(), rel=1e-6)
    assert latents[2]["max_activation"] == pytest.approx(z.max())


def test_kappa_ignores_majority_class_purity():
    """All mass on speech (90 % of frames) but fires on a random tenth of it: pure, kappa ~0."""
    rng = np.random.default_rng(0)
    speech = rng.random(10_000) < 0.9
    fires = speech & (rng.random(10_000) < 0.1)
    k = F.kappa(
        np.array((fires & speech).sum()), np.array(fires.sum()), np.array(speech.sum()), 10_000
    )
    assert float(k) == pytest.approx(textbook_kappa(fires, speech))
    assert abs(float(k)) < 0.05


def test_dead_latent_is_not_labelled(feat_run):
    _, summary, latents, _ = feat_run
    assert latents[3]["frequency"] == 0.0 and latents[3]["label"] is None
    assert latents[3]["top"] == []
    assert summary["dictionaries"]["sae"]["n_alive"] == 3


def test_rare_latent_is_not_called_monosemantic(planted):
    """A latent firing exactly on the 3 frames of a rare word: kappa 1, but too little support."""
    frames = {k: v.copy() for k, v in planted.items()}
    frames["word"][:] = -1
    frames["word"][[5, 6, 7]] = 2  # "dog"
    frames["acts"][:, 3] = 0.0
    frames["acts"][[5, 6, 7], 3] = 1.0
    meta = {k: v for k, v in frames.items() if k != "acts"}
    labels = F.frame_labels(meta, VOCAB)
    stats = F.accumulate(
        ReluDictionary(), torch.from_numpy(frames["acts"]), labels, meta["item"], 1, 4096
    )
    options = F.FeatureOptions(min_support=20)
    rec = F.latent_records(stats, ["0", "1", "2", "3"], options)[3]
    assert rec["label"] == "word:dog" and rec["monosemanticity"] == pytest.approx(1.0)
    assert rec["purity_by_type"]["word"]["support"] == 3
    assert not rec["monosemantic"]
    assert F.latent_records(
        stats, ["0", "1", "2", "3"], F.FeatureOptions(min_support=3, min_items=1)
    )[3]["monosemantic"]


def test_latent_seen_in_few_items_is_not_counted(planted):
    """The Spanish latent fires in 2 items only: counted with min_items=2, not with 3."""
    meta = {k: v for k, v in planted.items() if k != "acts"}
    labels = F.frame_labels(meta, VOCAB)
    acts = torch.from_numpy(planted["acts"])
    stats = F.accumulate(ReluDictionary(), acts, labels, meta["item"], 1, 100)
    names = ["0", "1", "2", "3"]
    rec = F.latent_records(stats, names, F.FeatureOptions(min_support=5, min_items=3))[2]
    assert rec["purity_by_type"]["language"]["items"] == 2
    assert rec["label"] == "language:es" and not rec["monosemantic"]
    assert F.latent_records(stats, names, F.FeatureOptions(min_support=5, min_items=2))[2][
        "monosemantic"
    ]
    assert (
        F.latent_records(stats, names, F.FeatureOptions())[0]["purity_by_type"]["phoneme"]["items"]
        == 6
    )


def test_top_frames_match_argsort(feat_run, planted):
    _, _, latents, _ = feat_run
    for j in range(3):
        z = planted["acts"][:, j]
        peak_rows = [
            int(np.flatnonzero(planted["item"] == i)[np.argmax(z[planted["item"] == i])])
            for i in range(N_ITEMS)
        ]
        peak_rows = [r for r in peak_rows if z[r] > 0]
        order = sorted(peak_rows, key=lambda r: -z[r])[:3]
        got = [(t["item"], t["time_s"], t["activation"]) for t in latents[j]["top"]]
        want = [
            (f"item{planted['item'][r]}", round(planted["frame"][r] * 0.02, 4), z[r]) for r in order
        ]
        assert [g[:2] for g in got] == [w[:2] for w in want]
        assert [g[2] for g in got] == pytest.approx([w[2] for w in want])


def test_top_frames_do_not_depend_on_chunking(planted):
    """Items split across chunks keep one entry, their best peak (exact streaming top-k)."""
    meta = {k: v for k, v in planted.items() if k != "acts"}
    labels = F.frame_labels(meta, VOCAB)
    acts = torch.from_numpy(planted["acts"])
    one = F.accumulate(ReluDictionary(), acts, labels, meta["item"], 4, 10_000)
    many = F.accumulate(ReluDictionary(), acts, labels, meta["item"], 4, 37)
    assert F.top_frames(one) == F.top_frames(many)
    assert torch.allclose(one.mass["phoneme"], many.mass["phoneme"])


def test_snippet_peak_lines_up_with_frame_time(feat_run, planted):
    import soundfile as sf

    store, _, latents, out = feat_run
    for top in latents[0]["top"]:
        trace = np.array(top["trace"])
        peak_t = top["snippet_start_s"] + int(np.argmax(trace)) * 0.02
        assert peak_t == pytest.approx(top["time_s"])
        assert trace.max() == pytest.approx(top["activation"], abs=1e-4)  # rounded to 4 places
        audio, sr = sf.read(out / top["audio"], dtype="float32")
        assert sr == 16_000 and len(audio) == len(trace) * 320
        i = int(top["item"][4:])
        start = round(top["snippet_start_s"] * 16_000)
        want = store.items[i].audio[start : start + len(audio)]
        np.testing.assert_allclose(audio, want, atol=1 / 32768)


def test_summary_counts_and_baselines(feat_run):
    _, summary, _, out = feat_run
    sae = summary["dictionaries"]["sae"]
    assert sae["counts_by_type"]["phoneme"] == 1
    assert sae["counts_by_type"]["language"] == 1
    assert sae["n_monosemantic"] == 2
    assert set(summary["dictionaries"]) == {"sae", "pca", "random"}
    assert summary["dictionaries"]["pca"]["n_latents"] == 2 * D
    cmp = summary["comparison"]["sae_minus_pca"]
    lo, hi = cmp["fraction_monosemantic_ci"]
    assert lo <= cmp["fraction_monosemantic"] <= hi
    assert (out / "baselines" / "pca.json").is_file()


def test_resume_gives_same_summary(feat_run):
    store, summary, _, out = feat_run
    again = F.analyse_features(
        store, ReluDictionary(), out, n_top=3, min_support=5, min_items=2, progress=False
    )
    again.pop("wall_s")
    assert again == {k: v for k, v in summary.items() if k != "wall_s"}


def test_difference_ci_against_numpy():
    a, b = np.array([1.0, 1.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0, 0.0])
    diff, (lo, hi) = F.difference_ci(a, b, n_resamples=2000, seed=1)
    assert diff == pytest.approx(0.5)
    assert lo < 0.5 < hi and lo >= -1.0 and hi <= 1.0


# -- steering ---------------------------------------------------------------------------------
from whisperlens.studies.sae import steer as S  # noqa: E402
from whisperlens.studies.sae.dictionaries import RandomDictionary, splice, zero_latents  # noqa: E402


def test_selectivity_against_hand_computation():
    drop = np.array([3.0, 1.0, 2.0, 0.0, 0.5, -0.5])
    with_mask = np.array([True, True, True, False, False, False])
    out = S.selectivity(drop, with_mask, n_resamples=500, seed=0)
    assert out["value"] == pytest.approx(2.0 - 0.0)
    assert out["mean_drop_with"] == pytest.approx(2.0)
    assert out["mean_drop_without"] == pytest.approx(0.0)
    lo, hi = out["ci"]
    assert lo <= 2.0 <= hi


def test_summarize_ablation_against_hand_computation():
    clean = {"a": (2.0, ["æ", "t"]), "b": (1.0, ["æ"]), "c": (1.5, ["s"]), "d": (-0.5, ["t"])}
    ablated = {
        7: {"a": 0.0, "b": -1.0, "c": 1.5, "d": -0.5},
        9: {"a": 2.0, "b": 1.0, "c": 1.0, "d": -1.5},
    }
    rows = {f"ablate|clean|{c}": {"id": f"ablate|clean|{c}", "clip": c, "margin": m, "phonemes": p,
                                  "word": None} for c, (m, p) in clean.items()}  # fmt: skip
    for j, per in ablated.items():
        rows |= {
            f"ablate|L{j}|{c}": {"id": f"ablate|L{j}|{c}", "margin": m} for c, m in per.items()
        }
    plan = [{"latent": 7, "label": "phoneme:æ", "frequency": 0.1, "controls": [9]}]
    [res] = S.summarize_ablation(rows, plan, S.SteerOptions(n_bootstrap=200))
    # with æ: a, b drop 2, 2 -> 2; without: c, d drop 0, 0 -> 0
    assert res["margin"]["value"] == pytest.approx(2.0)
    assert res["n_with"] == 2 and res["n_without"] == 2
    # accuracy: a 1->0, b 1->0 (drop 1 each); c 1->1, d 0->0 (0): selectivity 1
    assert res["accuracy"]["value"] == pytest.approx(1.0)
    # control 9: with a 0, b 0 -> 0; without c 0.5, d 1 -> 0.75: selectivity -0.75
    assert res["control_margin"] == [pytest.approx(-0.75)]
    assert res["excess_margin"]["value"] == pytest.approx(2.0 + 0.75)


def test_control_latents_match_frequency():
    lat = [{"latent": i, "frequency": f} for i, f in enumerate([0.5, 0.01, 0.011, 0.2, 0.009, 0.0])]
    got = S.control_latents(lat, lat[1], exclude={1}, n=2, seed=0)
    assert set(got) <= {2, 4, 3, 0} and len(got) == 2 and 5 not in got
    near = S.control_latents(lat, lat[1], exclude={1}, n=1, seed=0)
    assert near[0] in {2, 4, 3, 0}


@pytest.fixture(scope="module")
def hooked_en(en_model):
    from whisperlens.hooks import HookedWhisper

    return HookedWhisper(en_model)


def _random_dictionary(model, site: str, audio) -> RandomDictionary:
    x = model.run_with_cache(audio, names=site)[site][0]
    return RandomDictionary.fit(x, n_latents=32, k=4, seed=0)


def test_splice_keep_error_without_edit_equals_clean_run(hooked_en):
    """The fast path (cached block input, encode_from) with an identity splice equals a clean
    full encoder run (oracle: decoding.encode)."""
    from whisperlens import decoding

    site = "encoder.blocks.1.hook_resid_post"
    audio = np.sin(np.arange(16_000) / 7.0).astype(np.float32) * 0.1
    clean = decoding.encode(hooked_en, audio)
    runner = S.SiteRunner(hooked_en, site)
    dictionary = _random_dictionary(hooked_en, site, audio)
    state = runner.prepare(audio)
    out = runner.encode(state, splice(hooked_en, dictionary, site, range(0, 50), keep_error=True))
    torch.testing.assert_close(out, clean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(runner.encode(state), clean, atol=1e-6, rtol=1e-6)


def test_ablating_a_latent_removes_exactly_its_contribution(hooked_en):
    site = "encoder.blocks.1.hook_resid_post"
    audio = np.sin(np.arange(16_000) / 5.0).astype(np.float32) * 0.1
    dictionary = _random_dictionary(hooked_en, site, audio)
    runner = S.SiteRunner(hooked_en, site)
    state = runner.prepare(audio)
    frames = range(0, 50)
    x = runner.site_acts(state, frames)
    z = dictionary.encode(x)
    j = int(z.abs().sum(0).argmax())
    got = {}

    def grab(rows, _site):
        got["x"] = rows[0].clone()
        return rows

    spliced = splice(hooked_en, dictionary, site, frames, edit=zero_latents([j]), keep_error=True)
    with spliced, hooked_en.edit(site, grab, frames):  # grab runs after the splice's hook
        runner.encode(state)
    want = x - dictionary.scale * z[:, j : j + 1] * dictionary.atoms[j]
    torch.testing.assert_close(got["x"].float(), want, atol=1e-5, rtol=1e-5)


def test_scale_control_changes_the_norm_like_the_steering_vector(hooked_en):
    site = "encoder.blocks.1.hook_resid_post"
    audio = np.sin(np.arange(16_000) / 3.0).astype(np.float32) * 0.1
    runner = S.SiteRunner(hooked_en, site)
    state = runner.prepare(audio)
    frames = range(0, 20)
    x = runner.site_acts(state, frames)
    v = torch.randn(x.shape[1], generator=torch.Generator().manual_seed(3))
    got = {}

    def grab(rows, _site):
        got["x"] = rows[0].clone().float()
        return rows

    with S.steer_context(hooked_en, site, "scale", v, frames), hooked_en.edit(site, grab, frames):
        runner.encode(state)
    torch.testing.assert_close(got["x"].norm(dim=-1), (x + v).norm(dim=-1), atol=1e-4, rtol=1e-4)
    cos = torch.nn.functional.cosine_similarity(got["x"], x, dim=-1)
    torch.testing.assert_close(cos, torch.ones_like(cos), atol=1e-5, rtol=1e-5)


# -- integration: a real store on tiny.en ----------------------------------------------------
def _piper_item(text: str, index: int) -> AudioItem:
    from whisperlens.stimuli.tts import synthesize

    stim = synthesize(text, engine="piper", language="en")
    meta = {
        "words": [[w.label, w.start_s, w.end_s] for w in stim.words or []],
        "phonemes": [[p.label, p.start_s, p.end_s] for p in stim.phonemes or []],
    }
    return AudioItem(id=f"say-{index}", path=Path(stim.path), text=text, language="en",
                     source="tts-piper", meta=meta)  # fmt: skip


@pytest.mark.integration
def test_features_and_steering_on_tiny_en(tmp_path):
    from whisperlens.hooks import HookedWhisper
    from whisperlens.scoring import forced_choice
    from whisperlens.studies.sae.store import extract

    texts = ["the cat sat on the mat", "a bad dog ran past", "she said yes", "green trees"]
    data = AudioDataset([_piper_item(t, i) for i, t in enumerate(texts)], name="tiny")
    store = extract(data, tmp_path / "acts", progress=False)
    acts, _ = store.load()
    dictionary = RandomDictionary.fit(acts, n_latents=64, k=8, seed=0)
    summary = F.analyse_features(store, dictionary, tmp_path / "feat", n_top=2, min_support=5,
                                 baselines=False, progress=False)  # fmt: skip
    assert summary["dictionaries"]["sae"]["n_latents"] == 64
    latents = json.loads((tmp_path / "feat" / F.LATENTS_FILE).read_text())
    alive = [r for r in latents if r["frequency"] > 0]
    for rec in alive:
        assert set(rec) >= {
            "latent",
            "frequency",
            "mean_activation",
            "max_activation",
            "label",
            "label_type",
            "purity",
            "monosemanticity",
            "purity_by_type",
            "top",
        }
        for top in rec["top"]:
            assert (tmp_path / "feat" / top["audio"]).is_file()
            peak = top["snippet_start_s"] + 0.02 * int(np.argmax(top["trace"]))
            assert peak == pytest.approx(top["time_s"])
    # steer the two most frequent latents, labelled as phonemes of the first sentence
    alive.sort(key=lambda r: -r["frequency"])
    for rec in latents:
        rec.update(label_type="position")
    for rec, label in zip(alive[:2], ("phoneme:æ", "phoneme:t"), strict=False):
        rec.update(label=label, label_type="phoneme", monosemantic=True)
    (tmp_path / "feat" / F.LATENTS_FILE).write_text(json.dumps(latents))
    model = HookedWhisper.from_pretrained("tiny.en")
    options = S.SteerOptions(n_latents=2, n_pairs=2, n_controls=1, n_steer=1, n_clips=1,
                             strengths=(4.0,), crosslingual=False, n_bootstrap=100,
                             max_new_tokens=12)  # fmt: skip
    out = S.steer_features(store, dictionary, tmp_path / "feat", tmp_path / "steer",
                           options=options, model=model, progress=False)  # fmt: skip
    assert len(out["ablation"]) == 2 and out["n_ablation_clips"] == 4
    rows = [json.loads(line) for line in (tmp_path / "steer" / "rows.jsonl").open()]
    clean = {r["clip"]: r for r in rows if r["id"].startswith("ablate|clean|")}
    # oracle 1: the clean margin is the forced choice of the full, unhooked model
    clips = S.minimal_pair_clips(2, set(store.vocab["word"]), 0)
    for clip in clips:
        fc = forced_choice(model, clip.audio, [clip.text, clip.competitor])
        assert clean[clip.id]["margin"] == pytest.approx(fc.margin, abs=1e-3)
    # oracle 2: ablating a latent that is silent on a clip's word frames changes nothing
    site = store.site
    checked = 0
    for clip in clips:
        x = model.run_with_cache(clip.audio, names=site)[site][
            0, clip.frames.start : clip.frames.stop
        ]
        z = dictionary.encode(x)
        for r in rows:
            if r["id"].startswith("ablate|L") and r["clip"] == clip.id:
                if float(z[:, r["latent"]].abs().max()) == 0.0:
                    assert r["margin"] == pytest.approx(clean[clip.id]["margin"], abs=1e-5)
                else:
                    assert r["margin"] != clean[clip.id]["margin"]
                checked += 1
    assert checked == 4 * 4  # 4 clips x (2 tested + 2 control latents)
    steer_rows = [r for r in rows if r["part"] == "steer" and "kind" in r]
    assert {r["kind"] for r in steer_rows} == set(S.STEER_KINDS)
    assert len(out["steering"]) == len(S.STEER_KINDS)


def test_steering_controls_have_equal_norm():
    dictionary = RandomDictionary.fit(
        torch.randn(200, 8, generator=torch.Generator().manual_seed(0)), 16, 3
    )
    record = {"latent": 5, "max_activation": 2.5, "label": "phoneme:s"}
    pc1 = torch.nn.functional.normalize(torch.randn(8), dim=0)
    options = S.SteerOptions(strengths=(2.0,))
    conds = {
        kind: (vec, edit)
        for kind, _a, _c, vec, edit in S.steer_conditions(dictionary, record, pc1, options)
    }
    assert set(conds) == set(S.STEER_KINDS)
    expected = 2.0 * 2.5 * dictionary.scale  # strength x max activation x |decoder row|
    for kind in ("latent", "sign_flip", "random", "pca", "scale"):
        assert float(conds[kind][0].norm()) == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(conds["sign_flip"][0], -conds["latent"][0])
    z = torch.zeros(2, 16)
    assert conds["clamp"][1](z)[:, 5].tolist() == [5.0, 5.0]


def test_crosslingual_rows_against_direct_language_id(ml_model, tmp_path):
    """On a tiny random multilingual model: the clean rows hold the full model's language
    probabilities (oracle: detect_language on a plain encode), one row per condition."""
    from whisperlens import decoding
    from whisperlens.hooks import HookedWhisper
    from whisperlens.runs import RunDir

    model = HookedWhisper(ml_model)
    runner = S.SiteRunner(model, "encoder.blocks.0.hook_resid_post")
    options = S.SteerOptions(n_lang_clips=1, n_direction_clips=2, lang_strengths=(1.0,),
                             max_new_tokens=3)  # fmt: skip
    with RunDir.open(tmp_path / "run", study="t", config={}) as run:
        info = S.run_crosslingual(run, runner, options, bar=_NullBar())
        rows = run.rows()
    assert info["es"]["kind"] == "mean-difference"
    assert len(rows) == 2 * (1 + len(S.LANG_KINDS))
    for source in ("en", "es"):
        [clip] = S.asterisk_clips(source, 1, 1, 0)
        target = "es" if source == "en" else "en"
        want = decoding.detect_language(model, decoding.encode(model, clip.audio))[0][target]
        [clean] = [r for r in rows if r["kind"] == "clean" and r["source"] == source]
        assert clean["p_target"] == pytest.approx(want, abs=1e-5)
    summary = S.summarize_crosslingual(rows, options)
    assert len(summary) == 2 * len(S.LANG_KINDS)
    assert all(s["delta_p_target"]["n"] == 1 for s in summary)


class _NullBar:
    def update(self, n: int) -> None:
        pass


def test_language_latent_directions_pick_the_best_labelled_latent():
    dictionary = RandomDictionary.fit(
        torch.randn(100, 8, generator=torch.Generator().manual_seed(1)), 6, 2
    )
    recs = [
        {"latent": 1, "label": "language:es", "frequency": 0.1, "monosemanticity_lo": 0.3,
         "monosemanticity": 0.4, "max_activation": 2.0},
        {"latent": 4, "label": "language:es", "frequency": 0.1, "monosemanticity_lo": 0.6,
         "monosemanticity": 0.7, "max_activation": 3.0},
        {"latent": 2, "label": "phoneme:s", "frequency": 0.1, "monosemanticity_lo": 0.9,
         "monosemanticity": 0.9, "max_activation": 1.0},
    ]  # fmt: skip
    vecs, info = S.latent_language_directions(dictionary, recs, ("en", "es"))
    assert set(vecs) == {"es"} and info["es"]["latent"] == 4
    torch.testing.assert_close(vecs["es"], dictionary.atoms[4] * 3.0 * dictionary.scale)
