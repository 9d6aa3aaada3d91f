"""SAE training throughput against the matmul-bound time for its FLOPs, in one run.

The question: how close does a SAELens TopK training step come to the time its matrix
products alone would take on this CPU? Per round (conditions interleaved against the
machine's drifts), the run measures

- the fp32 matmul peak: the best GFLOP/s of the step's own GEMM shapes
  ([B, d] @ [d, m], [B, m] @ [m, d], [d, B] @ [B, m]) with the same threads;
- the training step: ``SAETrainer.step`` (SAELens's trainer) on a batch already in memory,
  with SAELens's ``TopKTrainingSAE`` ("stock") and with the subclass that
  `whisperlens.studies.sae.train` uses by default ("sparse-decode": the decoder and the AuxK
  reconstruction read only the active latents; same loss and gradients);
- end to end: `train_sae` on a synthetic activation store on disk (streaming, shuffling,
  curves and checkpoints included), frames per second.

FLOPs per step: the SAE's training FLOPs, 6 x parameters x frames = 12 B d m, which is what
the stock step executes as matrix products (encoder and dense decoder forward, 2 x 2Bdm; their
backward dW_dec, dz, dW_enc and d(sae_in), which b_dec's gradient needs, 4 x 2Bdm; AuxK adds
3 x 2Bdm on steps with dead latents, excluded here). Matmul-bound time = FLOPs / peak. The
sparse-decode step executes only the encoder's three products (6 B d m) plus O(B k d); its
ratio to the bound of those executed FLOPs is reported too. The profile splits a step's time
into matrix products, top-k and the rest (elementwise passes over [B, m] tensors).

    python bench/sae_train.py [--batch-size 4096] [--d-model 384] [--expansion 8] [--k 32]
                              [--steps 5] [--rounds 3] [--threads N]

Human-readable lines go to stderr, the JSON report to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(b: int, d: int, m: int, repeats: int = 3) -> dict[str, float]:
    """GFLOP/s of the step's GEMM shapes (best of ``repeats`` each)."""
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(b, d, generator=gen), torch.randn(d, m, generator=gen)
    z, wd = torch.randn(b, m, generator=gen), torch.randn(m, d, generator=gen)
    flops = 2 * b * d * m
    shapes = {
        "enc [B,d]@[d,m]": lambda: x @ w,
        "dec [B,m]@[m,d]": lambda: z @ wd,
        "wgrad [d,B]@[B,m]": lambda: x.T @ z,
    }
    return {name: flops / best_time(fn, repeats) / 1e9 for name, fn in shapes.items()}


def make_trainer(args: argparse.Namespace, d_sae: int, sparse: bool) -> Any:
    from sae_lens import TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE
    from sae_lens.training.sae_trainer import SAETrainer

    from whisperlens.studies.sae.train import sparse_decode_topk_class

    torch.manual_seed(0)
    cls = sparse_decode_topk_class() if sparse else TopKTrainingSAE
    sae = cls(TopKTrainingSAEConfig(d_in=args.d_model, d_sae=d_sae, k=args.k))
    cfg = SAETrainerConfig(
        total_training_samples=args.batch_size * 10_000,
        train_batch_size_samples=args.batch_size,
        lr=5e-4,
        lr_end=5e-5,
        dead_feature_window=10_000,  # no AuxK in the timed steps (counted apart below)
    )
    return SAETrainer(cfg, sae, iter(()))


def step_time(trainer: Any, batch: torch.Tensor, steps: int) -> float:
    """Median seconds of ``trainer.step`` over ``steps`` steps (after one warm-up)."""
    trainer.step(batch)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.step(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile_step(trainer: Any, batch: torch.Tensor) -> dict[str, float]:
    """Share of a step's self CPU time by kind of operator."""
    with torch.profiler.profile() as prof:
        for _ in range(2):
            trainer.step(batch)
    kinds = {"matmul": ("aten::mm", "aten::addmm", "aten::bmm"), "topk": ("aten::topk",)}
    totals: dict[str, float] = {"matmul": 0.0, "topk": 0.0, "other": 0.0}
    for event in prof.key_averages():
        kind = next((k for k, names in kinds.items() if event.key in names), "other")
        totals[kind] += event.self_cpu_time_total
    total = sum(totals.values())
    return {k: v / total for k, v in totals.items()}


def synthetic_store(path: Path, n_frames: int, d: int, seed: int = 0) -> Any:
    """A finished activation store of random activations (the on-disk format of `extract`)."""
    from safetensors.torch import save_file

    from whisperlens.datasets import AudioDataset, AudioItem
    from whisperlens.studies.sae.store import ActivationStore

    (path / "shards").mkdir(parents=True)
    per_shard = 32 * 1500
    rng = np.random.default_rng(seed)
    n_items = -(-n_frames // 1500)
    items = [AudioItem(id=f"i{i}", audio=np.zeros(16, np.float32)) for i in range(n_items)]
    AudioDataset(items).save_manifest(path / "manifest.jsonl")
    vocab = {"language": [], "label": ["speech"], "word": [], "phoneme": [], "source": [""]}
    (path / "vocab.json").write_text(json.dumps(vocab))
    rows, total = [], np.zeros(d)
    for u, start in enumerate(range(0, n_frames, per_shard)):
        n = min(per_shard, n_frames - start)
        acts = rng.normal(size=(n, d)).astype(np.float32) + 1.0
        total += acts.sum(0)
        item = (np.arange(start, start + n) // 1500).astype(np.int32)
        meta = {k: torch.zeros(n, dtype=dt) for k, dt in (("frame", torch.int32),
                ("pos", torch.int32), ("language", torch.int16), ("label", torch.int8),
                ("word", torch.int32), ("phoneme", torch.int32), ("split", torch.int8),
                ("source", torch.int16))}  # fmt: skip
        tensors = {"acts": torch.from_numpy(acts).half(), "item": torch.from_numpy(item), **meta}
        save_file(tensors, str(path / "shards" / f"u{u:05d}.safetensors"))
        rows.append({"unit": f"u{u:05d}", "shard": f"shards/u{u:05d}.safetensors", "n_frames": n})
    (path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"model": "synthetic", "site": "encoder.blocks.2.hook_resid_post",
              "dtype": "float16"}  # fmt: skip
    (path / "config.json").write_text(json.dumps({"study": "sae-extract", "config": config}))
    mean = (total / n_frames).tolist()
    summary = {"d_model": d, "n_frames": n_frames,
               "frames": {"split": {"train": n_frames, "heldout": 0}},
               "mean": {"train": mean, "heldout": mean, "all": mean}}  # fmt: skip
    (path / "summary.json").write_text(json.dumps(summary))
    return ActivationStore.open(path)


def end_to_end(store: Any, args: argparse.Namespace, out: Path) -> float:
    """Frames per second of `train_sae`'s training loop on the store (streaming, prefetch,
    curves and checkpoints included; set-up, the normalisation sample and saving excluded)."""
    from whisperlens.studies.sae.train import TrainConfig, train_sae

    cfg = TrainConfig(expansion=args.expansion, k=args.k, batch_size=args.batch_size,
                      n_frames=args.batch_size * args.steps * 2, log_every=args.steps,
                      checkpoint_every=args.steps, n_norm_frames=8192,
                      buffer_frames=args.batch_size * 4)  # fmt: skip
    summary = train_sae(store, cfg, out, progress=False, overwrite=True)
    return float(summary["loop_frames_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--d-model", type=int, default=384)  # tiny.en
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    b, d, m = args.batch_size, args.d_model, args.expansion * args.d_model
    flops = 12 * b * d * m
    trainers = {"stock": make_trainer(args, m, False), "sparse": make_trainer(args, m, True)}
    batch = torch.randn(b, d, generator=torch.Generator().manual_seed(1)) + 1.0
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    peaks: list[float] = []
    steps: dict[str, list[float]] = {name: [] for name in trainers}
    e2e: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(Path(tmp) / "acts", b * args.steps * 2 + 8192, d)
        for r in range(args.rounds):
            peaks.append(max(matmul_peak(b, d, m).values()))
            for name, trainer in trainers.items():
                steps[name].append(step_time(trainer, batch, args.steps))
            e2e.append(end_to_end(store, args, Path(tmp) / "run"))
            bound = flops / peaks[-1] / 1e9
            log(f"round {r}: peak {peaks[-1]:.1f} GFLOP/s, bound {bound:.3f} s; step stock "
                f"{steps['stock'][-1]:.3f} s ({steps['stock'][-1] / bound:.2f}x), sparse-decode "
                f"{steps['sparse'][-1]:.3f} s ({steps['sparse'][-1] / bound:.2f}x); "
                f"train_sae {e2e[-1]:.0f} frames/s")  # fmt: skip
    peak = statistics.median(peaks)
    bound = flops / (peak * 1e9)
    step = {name: statistics.median(values) for name, values in steps.items()}
    report = {
        "threads": torch.get_num_threads(),
        "batch_size": b,
        "d_model": d,
        "d_sae": m,
        "k": args.k,
        "matmul_peak_gflops": peak,
        "flops_per_step": flops,
        "matmul_bound_s": bound,
        "step_s": step,
        "ratio_to_bound": {name: t / bound for name, t in step.items()},
        "sparse_ratio_to_executed_flops_bound": step["sparse"] / (bound / 2),
        "step_frames_per_s": {name: b / t for name, t in step.items()},
        "train_sae_frames_per_s": statistics.median(e2e),
        "train_sae_vs_sparse_step": statistics.median(e2e) / (b / step["sparse"]),
        "profile_share": {name: profile_step(t, batch) for name, t in trainers.items()},
        "rounds": {"peak_gflops": peaks, "step_s": steps, "train_sae_frames_per_s": e2e},
    }
    log(f"median: bound {bound:.3f} s at {peak:.1f} GFLOP/s; stock {step['stock']:.3f} s = "
        f"{step['stock'] / bound:.2f}x, sparse-decode {step['sparse']:.3f} s = "
        f"{step['sparse'] / bound:.2f}x; train_sae {report['train_sae_frames_per_s']:.0f} "
        f"frames/s = {report['train_sae_vs_sparse_step']:.2f}x the bare step")  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
