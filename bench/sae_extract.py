"""SAE activation extraction throughput vs the plain encoder forward, on the same windows.

    .venv/bin/python bench/sae_extract.py [--model tiny.en] [--site ...] [--windows 24]

Both sides run on the same packed windows of a seeded sample of the quick corpus, with the
same torch threads, interleaved rep by rep (so machine load hits both alike):

- plain: the full encoder (``model.model.model.encoder``) on precomputed log-mel features
  of the windows, batch of 4, nothing kept;
- extract: :func:`whisperlens.studies.sae.store.extract` into a fresh directory: audio
  loading, log-mel, the encoder up to the site, frame gathering and metadata, fp16
  conversion and the safetensors shards. ``steady`` uses the workers' own time per unit
  (rows' ``seconds``); ``end_to_end`` the whole call (model load and manifest included,
  which a large corpus amortises).

Throughput is real-audio frames per second; the issue's target is extract >= 0.9x plain.
Ratios are given from the median rep and from the best rep of each side (on a shared
machine the best rep is the least disturbed by other load).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--site", default="encoder.blocks.2.hook_resid_post")
    parser.add_argument("--windows", type=int, default=24, help="encoder windows per rep")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the result JSON here")
    args = parser.parse_args(argv)

    import torch

    from whisperlens.executors import InlineExecutor
    from whisperlens.hooks import HookedWhisper
    from whisperlens.studies.sae import store as st
    from whisperlens.studies.sae.corpus import build_corpus

    torch.set_num_threads(args.threads)
    corpus = build_corpus("quick", progress=False)
    dataset = _sample_windows(corpus, args.windows, st)
    windows = st.plan_windows([st.item_frames(it) for it in dataset], pack=st.PACK_DEFAULT)
    model = HookedWhisper.from_pretrained(args.model)
    runner = st.WindowRunner(model, dataset, args.site)
    batches = [windows[i : i + 4] for i in range(0, len(windows), 4)]
    feats = [runner.features(b)[0] for b in batches]
    encoder = model.model.model.encoder
    plain_s, steady_s, e2e_s, n_frames = [], [], [], 0
    for _rep in range(args.reps):
        with torch.inference_mode():
            start = time.perf_counter()
            for f in feats:
                encoder(f)
            plain_s.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            store = st.extract(
                dataset,
                Path(tmp) / "acts",
                model=args.model,
                site=args.site,
                executor=InlineExecutor(threads=args.threads),
                progress=False,
            )
            e2e_s.append(time.perf_counter() - start)
            steady_s.append(store.summary["worker_seconds"])
            n_frames = store.n_frames
    plain = n_frames / statistics.median(plain_s)
    steady = n_frames / statistics.median(steady_s)
    e2e = n_frames / statistics.median(e2e_s)
    result = {
        "model": args.model,
        "site": args.site,
        "threads": args.threads,
        "n_windows": len(windows),
        "n_frames": n_frames,
        "plain_forward_fps": round(plain, 1),
        "extract_steady_fps": round(steady, 1),
        "extract_end_to_end_fps": round(e2e, 1),
        "ratio_steady": round(steady / plain, 3),
        "ratio_end_to_end": round(e2e / plain, 3),
        # best of the reps: the least disturbed by other load on a shared machine
        "ratio_steady_best": round(min(plain_s) / min(steady_s), 3),
        "ratio_end_to_end_best": round(min(plain_s) / min(e2e_s), 3),
        "seconds": {"plain": plain_s, "extract_steady": steady_s, "extract_end_to_end": e2e_s},
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _sample_windows(corpus, n_windows: int, st):
    """Items of a seeded shuffle (kept in corpus order) that fill ``n_windows`` windows."""
    import numpy as np

    from whisperlens.datasets import AudioDataset

    order = np.random.default_rng(0).permutation(len(corpus)).tolist()
    keep: list[int] = []
    frames: list[int] = []
    for i in order:
        planned = st.plan_windows([*frames, st.item_frames(corpus[i])], pack=st.PACK_DEFAULT)
        if len(planned) > n_windows:
            break
        keep.append(i)
        frames.append(st.item_frames(corpus[i]))
    return AudioDataset([corpus[i] for i in sorted(keep)], name="bench")


if __name__ == "__main__":
    main()
