"""SAE training and evaluation (whisperlens.studies.sae.train / evaluate).

Exact properties on a synthetic activation store (sparse codes over random directions,
written in the store's on-disk format and read by the real `ActivationStore`); one
integration test on tiny.en with a store of a few clips.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_np
from safetensors.torch import save_file

from whisperlens.datasets import AudioDataset, AudioItem
from whisperlens.studies.sae.store import ActivationStore
from whisperlens.studies.sae.train import TrainConfig, TrainError, train_sae

D, M, N_ITEMS, FRAMES_PER_ITEM = 16, 48, 40, 64


# -- a synthetic store in the on-disk format ---------------------------------------------
def synthetic_acts(n: int, seed: int = 0) -> np.ndarray:
    """Frames that are sparse non-negative combinations of M fixed directions plus noise."""
    rng = np.random.default_rng(seed)
    atoms = np.random.default_rng(123).normal(size=(M, D))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((n, M))
    for row in range(n):
        on = rng.choice(M, 3, replace=False)
        codes[row, on] = rng.uniform(1, 3, size=3)
    return (codes @ atoms * 4 + 1.0 + 0.05 * rng.normal(size=(n, D))).astype(np.float32)


def write_store(path: Path, n_items: int = N_ITEMS, frames: int = FRAMES_PER_ITEM,
                per_shard: int = 8) -> ActivationStore:  # fmt: skip
    """A finished extraction run (config, rows, summary, manifest, vocab, shards) holding
    synthetic activations; every 5th item is held out."""
    path.mkdir(parents=True)
    (path / "shards").mkdir()
    items = [AudioItem(id=f"i{i:03d}", audio=np.zeros(1600, np.float32), text=f"clip {i}",
                       language="en") for i in range(n_items)]  # fmt: skip
    AudioDataset(items, name="synthetic").save_manifest(path / "manifest.jsonl")
    vocab = {"language": ["en"], "label": ["speech", "music", "noise", "silence"],
             "word": [], "phoneme": [], "source": [""]}  # fmt: skip
    (path / "vocab.json").write_text(json.dumps(vocab))
    acts = synthetic_acts(n_items * frames)
    split_of = np.array([int(i % 5 == 4) for i in range(n_items)], dtype=np.int8)
    rows = []
    for u, first in enumerate(range(0, n_items, per_shard)):
        idx = np.arange(first, min(first + per_shard, n_items))
        item = np.repeat(idx, frames).astype(np.int32)
        n = len(item)
        tensors = {
            "acts": torch.from_numpy(acts[item * frames + np.tile(np.arange(frames), len(idx))]),
            "item": torch.from_numpy(item),
            "frame": torch.from_numpy(np.tile(np.arange(frames), len(idx)).astype(np.int32)),
            "pos": torch.from_numpy(np.tile(np.arange(frames), len(idx)).astype(np.int32)),
            "language": torch.zeros(n, dtype=torch.int16),
            "label": torch.zeros(n, dtype=torch.int8),
            "word": torch.full((n,), -1, dtype=torch.int32),
            "phoneme": torch.full((n,), -1, dtype=torch.int32),
            "split": torch.from_numpy(split_of[item]),
            "source": torch.zeros(n, dtype=torch.int16),
        }
        save_file(tensors, str(path / "shards" / f"u{u:05d}.safetensors"))
        rows.append({"unit": f"u{u:05d}", "shard": f"shards/u{u:05d}.safetensors",
                     "n_frames": n})  # fmt: skip
    (path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    frame_split = split_of[np.repeat(np.arange(n_items), frames)]
    config = {"model": "synthetic", "site": "encoder.blocks.0.hook_resid_post",
              "dtype": "float32"}  # fmt: skip
    (path / "config.json").write_text(json.dumps({"study": "sae-extract", "config": config}))
    summary = {
        "d_model": D,
        "n_frames": len(acts),
        "frames": {
            "split": {
                "train": int((frame_split == 0).sum()),
                "heldout": int((frame_split == 1).sum()),
            }
        },  # fmt: skip
        "mean": {
            "train": acts[frame_split == 0].mean(0).tolist(),
            "heldout": acts[frame_split == 1].mean(0).tolist(),
            "all": acts.mean(0).tolist(),
        },  # fmt: skip
    }
    (path / "summary.json").write_text(json.dumps(summary))
    return ActivationStore.open(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ActivationStore:
    return write_store(tmp_path_factory.mktemp("sae") / "acts")


FAST = TrainConfig(d_sae=M, k=4, batch_size=64, lr=1e-2, log_every=5, checkpoint_every=10,
                   dead_feature_window=20, n_norm_frames=512, buffer_frames=512)  # fmt: skip


def weights(path: Path) -> dict[str, np.ndarray]:
    return load_np(str(path / "sae" / "sae_weights.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)


# -- training ----------------------------------------------------------------------------
def test_saelens_round_trip_matches_numpy_topk(store, tmp_path):
    from sae_lens import SAE

    torch.set_num_threads(1)
    summary = train_sae(store, TrainConfig(**{**FAST.settings(), "n_frames": 64 * 200}),
                        tmp_path / "run", progress=False)  # fmt: skip
    assert summary["n_steps"] == 200 and summary["d_sae"] == M
    assert summary["epochs"] == pytest.approx(64 * 200 / store.n_split("train"))
    sae = SAE.load_from_disk(tmp_path / "run" / "sae")
    w = weights(tmp_path / "run")
    for key, value in sae.state_dict().items():  # loaded weights are the file's
        np.testing.assert_array_equal(value.numpy(), w[key])
    x, _ = store.load(split="heldout")
    # oracle: the TopK SAE written out in numpy from the saved weights
    pre = (x.numpy() - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    if json.loads((tmp_path / "run" / "sae" / "cfg.json").read_text())[
        "rescale_acts_by_decoder_norm"
    ]:
        pre = pre * np.linalg.norm(w["W_dec"], axis=1)
    top = np.argsort(-pre, axis=1)[:, :4]
    z = np.zeros_like(pre)
    np.put_along_axis(z, top, np.maximum(np.take_along_axis(pre, top, 1), 0), 1)
    with torch.no_grad():
        z_sae = sae.encode(x)
        np.testing.assert_allclose(z_sae.numpy(), z, rtol=1e-4, atol=1e-4)
        x_hat = sae.decode(z_sae).numpy()
    np.testing.assert_allclose(x_hat, z @ w["W_dec"] + w["b_dec"], rtol=1e-4, atol=1e-4)
    # it learned: held-out FVU well below the mean predictor's 1
    xn = x.numpy()
    fvu = ((xn - x_hat) ** 2).sum() / ((xn - xn.mean(0)) ** 2).sum()
    assert fvu < 0.5
    rows = [json.loads(line) for line in (tmp_path / "run" / "rows.jsonl").open()]
    assert [r["step"] for r in rows][:3] == [5, 10, 15]
    assert {"loss", "fvu", "l0", "lr", "mse_loss"} <= rows[0].keys()
    assert rows[-1]["fvu"] < rows[0]["fvu"]
    assert not (tmp_path / "run" / "checkpoint").exists()  # removed once finished


def test_seed_determinism(store, tmp_path):
    torch.set_num_threads(1)
    cfg = TrainConfig(**{**FAST.settings(), "n_frames": 64 * 12})
    train_sae(store, cfg, tmp_path / "a", progress=False)
    train_sae(store, cfg, tmp_path / "b", progress=False)
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    other = TrainConfig(**{**cfg.settings(), "seed": 1})
    train_sae(store, other, tmp_path / "c", progress=False)
    assert not np.array_equal(weights(tmp_path / "a")["W_enc"], weights(tmp_path / "c")["W_enc"])


class FailingStore:
    """The store, but its batch stream raises after ``fail_after`` batches (a crash)."""

    def __init__(self, store: ActivationStore, fail_after: int):
        self._store, self.fail_after = store, fail_after

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def iter_batches(self, *args, **kwargs):
        for n, batch in enumerate(self._store.iter_batches(*args, **kwargs)):
            if n == self.fail_after:
                raise RuntimeError("injected crash")
            yield batch


@pytest.mark.parametrize("architecture", ["topk", "jumprelu"])
def test_resume_after_crash_equals_uninterrupted(store, tmp_path, architecture):
    torch.set_num_threads(1)
    cfg = TrainConfig(**{**FAST.settings(), "architecture": architecture, "n_frames": 64 * 24,
                         "lr_warm_up_steps": 3})  # fmt: skip
    train_sae(store, cfg, tmp_path / "whole", progress=False)
    with pytest.raises(RuntimeError, match="injected crash"):
        train_sae(FailingStore(store, 17), cfg, tmp_path / "crashed", progress=False)
    state = json.loads((tmp_path / "crashed" / "checkpoint" / "state.json").read_text())
    assert state["n_training_steps"] == 10
    summary = train_sae(store, cfg, tmp_path / "crashed", progress=False)
    assert summary["resumed_at_step"] == 10
    assert_same_weights(tmp_path / "whole", tmp_path / "crashed")
    rows_a = (tmp_path / "whole" / "rows.jsonl").read_text().splitlines()
    rows_b = (tmp_path / "crashed" / "rows.jsonl").read_text().splitlines()
    assert rows_a == rows_b
    # a finished run re-run returns its summary without training again
    assert train_sae(store, cfg, tmp_path / "crashed", progress=False) == summary


def test_resume_after_sigkill(store, tmp_path):
    """A real process killed mid-training (SIGKILL), then re-run with the same command."""
    cfg = {**FAST.settings(), "n_frames": 64 * 24, "checkpoint_every": 5}
    script = textwrap.dedent(f"""
        import sys, time, torch
        torch.set_num_threads(1)
        from whisperlens.studies.sae.store import ActivationStore
        from whisperlens.studies.sae.train import TrainConfig, train_sae
        store = ActivationStore.open({str(store.path)!r})
        class Slow:
            def __getattr__(self, name): return getattr(store, name)
            def iter_batches(self, *a, **k):
                for b in store.iter_batches(*a, **k):
                    time.sleep(0.1)
                    yield b
        train_sae(Slow(), TrainConfig(**{cfg!r}), sys.argv[1], progress=False)
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", script, str(tmp_path / "killed")]
    proc = subprocess.Popen(cmd, env=env)
    state = tmp_path / "killed" / "checkpoint" / "state.json"
    deadline = time.time() + 60
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and state.exists()
    assert not (tmp_path / "killed" / "summary.json").exists()
    torch.set_num_threads(1)
    summary = train_sae(store, TrainConfig(**cfg), tmp_path / "killed", progress=False)  # re-run
    assert summary["resumed_at_step"] >= 5
    train_sae(store, TrainConfig(**cfg), tmp_path / "whole", progress=False)
    assert_same_weights(tmp_path / "whole", tmp_path / "killed")


@pytest.mark.parametrize("rescale", [True, False])
def test_sparse_decode_topk_equals_saelens_topk(rescale):
    """Same loss terms, codes, reconstruction and gradients as SAELens's TopKTrainingSAE
    (with and without dead latents, i.e. with the AuxK loss), the oracle."""
    from sae_lens import TopKTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE

    from whisperlens.studies.sae.train import sparse_decode_topk_class

    torch.manual_seed(0)
    cfg = dict(d_in=D, d_sae=M, k=4, rescale_acts_by_decoder_norm=rescale)
    ref = TopKTrainingSAE(TopKTrainingSAEConfig(**cfg))
    ref.W_dec.data *= torch.rand(M, 1) + 0.5  # decoder rows of unequal norms
    fast = sparse_decode_topk_class()(TopKTrainingSAEConfig(**cfg))
    fast.load_state_dict(ref.state_dict())
    x = torch.from_numpy(synthetic_acts(256, seed=5))
    for dead in (None, torch.arange(M) % 3 == 0):
        outs = []
        for sae in (ref, fast):
            sae.zero_grad()
            out = sae.training_forward_pass(TrainStepInput(x, {}, dead, 0, False))
            out.loss.backward()
            outs.append((out, {n: p.grad.clone() for n, p in sae.named_parameters()}))
        (a, ga), (b, gb) = outs
        assert torch.equal(a.feature_acts != 0, b.feature_acts != 0)
        torch.testing.assert_close(b.feature_acts, a.feature_acts, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b.sae_out, a.sae_out, rtol=1e-5, atol=1e-5)
        assert a.losses.keys() == b.losses.keys()
        for name in a.losses:
            torch.testing.assert_close(b.losses[name], a.losses[name], rtol=1e-5, atol=1e-6)
        if dead is not None:
            assert a.losses["auxiliary_reconstruction_loss"].item() > 0
        for name in ga:
            torch.testing.assert_close(gb[name], ga[name], rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # codes that did not come from its own encode: the dense path
        z = ref.encode(x)
        torch.testing.assert_close(fast.decode(z), ref.decode(z))


@pytest.mark.parametrize("architecture", ["standard", "batchtopk", "jumprelu"])
def test_other_architectures_train_and_load(store, tmp_path, architecture):
    from sae_lens import SAE

    torch.set_num_threads(1)
    cfg = TrainConfig(**{**FAST.settings(), "architecture": architecture, "n_frames": 64 * 20,
                         "l1_coefficient": 0.5, "l0_coefficient": 0.05})  # fmt: skip
    summary = train_sae(store, cfg, tmp_path / "run", progress=False)
    sae = SAE.load_from_disk(tmp_path / "run" / "sae")
    expected = {"standard": "standard", "batchtopk": "jumprelu", "jumprelu": "jumprelu"}
    assert sae.cfg.architecture() == expected[architecture]
    x, _ = store.load(split="heldout")
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(x))
    assert torch.isfinite(x_hat).all()
    assert math.isfinite(summary["final"]["fvu"])


def test_config_errors(store, tmp_path):
    with pytest.raises(TrainError, match="architecture"):
        TrainConfig(architecture="gated")  # type: ignore[arg-type]
    with pytest.raises(TrainError, match="multiple of log_every"):
        TrainConfig(log_every=50, checkpoint_every=120)
    with pytest.raises(TrainError, match="batch"):
        train_sae(store, TrainConfig(batch_size=10**6), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


# -- evaluation: metrics against direct computations -------------------------------------
class ReluDictionary:
    """encode = relu(x @ W), decode = z @ W.T: a linear-ReLU dictionary with known codes."""

    name = "relu"

    def __init__(self, w: torch.Tensor):
        self.w, self.d_model, self.n_latents = w, w.shape[0], w.shape[1]

    def encode(self, x):
        return (x @ self.w).relu()

    def decode(self, z):
        return z @ self.w.T

    def reconstruct(self, x):
        return self.decode(self.encode(x))


def test_frame_metrics_match_numpy():
    from whisperlens.studies.sae.evaluate import frame_metrics

    acts = torch.from_numpy(synthetic_acts(300, seed=3))
    w = torch.randn(D, 40, generator=torch.Generator().manual_seed(0)) * 0.1
    w[:, :4] = 0.0  # never active: dead
    w[:, 4:8] = -torch.from_numpy(synthetic_acts(1, seed=9)).T  # active on almost no frame
    x = acts.numpy().astype(np.float64)
    groups = np.repeat(np.arange(30), 10)
    got = frame_metrics(ReluDictionary(w), acts, groups, chunk=64, n_bootstrap=200)
    wn = w.numpy().astype(np.float64)
    z = np.maximum(x @ wn, 0)
    x_hat = z @ wn.T
    fvu = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    freq = (z != 0).mean(0)
    assert got["fvu"] == pytest.approx(fvu, rel=1e-5)
    assert got["l0"] == pytest.approx((z != 0).sum(1).mean())
    assert got["dead_fraction"] == pytest.approx((freq == 0).mean())
    assert got["dense_fraction"] == pytest.approx((freq > 0.1).mean())
    assert 0 < got["dead_fraction"] < 1 and 0 < got["dense_fraction"] < 1  # both exercised
    assert got["n_dead"] >= 4
    lo, hi = got["fvu_ci95"]
    assert lo < fvu < hi


def test_spliced_summary_matches_hand_computation():
    from whisperlens.studies.sae.evaluate import VARIANTS, ce_loss_recovered, spliced_summary

    rng = np.random.default_rng(0)
    nll = {"clean": 1.0, "sae": 1.5, "pca": 2.0, "random": 3.0, "zero": 6.0, "mean": 4.0}
    rows = []
    for i in range(12):
        n_tok = int(rng.integers(3, 9))
        row = {"id": str(i), "n_tokens": n_tok}
        for v in VARIANTS:
            row[v] = {"nll": nll[v] * n_tok * rng.uniform(0.8, 1.2),
                      "word_errors": int(rng.integers(0, 4)), "n_words": 5,
                      "char_errors": int(rng.integers(0, 9)), "n_chars": 20}  # fmt: skip
        rows.append(row)
    got = spliced_summary(rows, n_bootstrap=200)
    tokens = sum(r["n_tokens"] for r in rows)
    ce = {v: sum(r[v]["nll"] for r in rows) / tokens for v in VARIANTS}
    for v in VARIANTS:
        assert got[v]["ce"] == pytest.approx(ce[v])
        assert got[v]["wer"] == pytest.approx(sum(r[v]["word_errors"] for r in rows) / 60)
        assert got[v]["cer"] == pytest.approx(sum(r[v]["char_errors"] for r in rows) / 240)
    for d in ("sae", "pca", "random"):
        zero = (ce["zero"] - ce[d]) / (ce["zero"] - ce["clean"])
        mean = (ce["mean"] - ce[d]) / (ce["mean"] - ce["clean"])
        assert got[d]["ce_loss_recovered"] == pytest.approx(zero)
        assert got[d]["ce_loss_recovered_mean"] == pytest.approx(mean)
        lo, hi = got[d]["ce_loss_recovered_ci95"]
        assert lo <= zero <= hi
    assert ce_loss_recovered(1.0, 1.5, 6.0) == pytest.approx(0.9)


# -- integration on tiny.en --------------------------------------------------------------
def _ids_with_split(split: int, n: int, prefix: str) -> list[str]:
    from whisperlens.studies.sae.store import item_split

    out: list[str] = []
    i = 0
    while len(out) < n:
        if item_split(f"{prefix}{i}") == split:
            out.append(f"{prefix}{i}")
        i += 1
    return out


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back tomorrow morning.",
    "She sells sea shells by the sea shore.",
    "I would like a cup of coffee.",
    "The weather is nice today.",
    "We are going to the market.",
    "Turn left at the next corner.",
    "My favourite colour is blue.",
]


@pytest.mark.integration
def test_train_and_evaluate_tiny_en(tmp_path, tiny_en, piper):
    from sae_lens import SAE

    from whisperlens.decoding import transcribe
    from whisperlens.hooks import HookedWhisper
    from whisperlens.studies.sae.dictionaries import load_sae
    from whisperlens.studies.sae.evaluate import SpliceTask, evaluate_sae
    from whisperlens.studies.sae.store import extract

    torch.set_num_threads(1)
    ids = _ids_with_split(0, 6, "tr") + _ids_with_split(1, 2, "ho")
    items = [AudioItem(id=i, audio=piper(text), text=text, language="en", source="piper")
             for i, text in zip(ids, SENTENCES, strict=True)]  # fmt: skip
    store = extract(AudioDataset(items, name="tiny"), tmp_path / "acts", model="tiny.en",
                    site="encoder.blocks.2.hook_resid_post", dtype="float32",
                    progress=False)  # fmt: skip
    assert store.n_split("heldout") > 0
    cfg = TrainConfig(expansion=2, k=16, batch_size=128, lr=2e-3, n_frames=128 * 40,
                      log_every=10, checkpoint_every=20, n_norm_frames=2048)  # fmt: skip
    train_sae(store, cfg, tmp_path / "train", progress=False)
    sae = SAE.load_from_disk(tmp_path / "train" / "sae")
    assert sae.cfg.d_sae == 2 * 384 and sae.cfg.metadata.hook_name == store.site

    model = HookedWhisper(tiny_en)
    summary = evaluate_sae(store, tmp_path / "train", tmp_path / "eval", model=model,
                           n_items=None, pca_k=384, n_bootstrap=100,
                           progress=False)  # fmt: skip
    for key in ("fvu", "l0", "dead_fraction", "dense_fraction", "ce_loss_recovered",
                "wer_spliced", "wer_clean"):  # fmt: skip
        for entry in (summary, summary["sae"], summary["pca"], summary["random"]):
            assert entry[key] is not None, key
    assert summary["n_clips"] == 2 and summary["l0"] == pytest.approx(16, abs=0.5)
    config = json.loads((tmp_path / "eval" / "config.json").read_text())["config"]
    assert config["shards"] == ["shards/u00000.safetensors"]
    rows = [json.loads(line) for line in (tmp_path / "eval" / "rows.jsonl").open()]
    clean_hyps = [t.text for t in transcribe(model, [it.audio for it in items[6:]])]
    for row, hyp in zip(rows, clean_hyps, strict=True):
        assert row["clean"]["hyp"] == hyp  # continuing from the site changes nothing
        # oracle: PCA with every component reconstructs the activations exactly
        assert row["pca"]["hyp"] == row["clean"]["hyp"]
        assert row["pca"]["nll"] == pytest.approx(row["clean"]["nll"], abs=1e-3)
        assert row["zero"]["nll"] > row["clean"]["nll"] + 1.0  # zero-ablation hurts
    assert summary["pca"]["fvu"] < 1e-6
    assert summary["pca"]["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert summary["ablations"]["zero"]["ce"] > summary["ablations"]["clean"]["ce"]
    again = evaluate_sae(store, tmp_path / "train", tmp_path / "eval", model=model,
                         n_items=None, pca_k=384, n_bootstrap=100, progress=False)  # fmt: skip
    assert again == json.loads(json.dumps(summary))  # resumed: rows reused, same summary
    assert len((tmp_path / "eval" / "rows.jsonl").read_text().splitlines()) == 2
    # the task pickles for process workers (the SAE travels as config + weights)
    task = SpliceTask("tiny.en", store.site, {"sae": load_sae(tmp_path / "train" / "sae")},
                      store.mean(), model=model)  # fmt: skip
    clone = pickle.loads(pickle.dumps(task))
    x, _ = store.load(split="heldout")
    assert clone.model is None
    assert torch.equal(clone.dictionaries["sae"].reconstruct(x),
                       task.dictionaries["sae"].reconstruct(x))  # fmt: skip
