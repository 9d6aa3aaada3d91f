"""Time the steering study's per-output cost and project the issue's full sweep.

    OMP_NUM_THREADS=2 python bench/steering.py --clips 1 --strengths 5

Steers ``--clips`` evaluation clips of anger_calm with 5 mappings (pca/ae/gaussian/sparse
frames + pca direction) at ``--strengths`` strengths plus ``--n-random`` random controls,
through :func:`whisperlens.studies.steering.study.steer_clip` (unsteered states reused up to
the first steered block, batched encoder continuation, greedy decoding), scores included.
CAA differences are random here (no text model forward), so only steering is timed.

The full sweep of the issue is 10 clips x 5 mappings x 21 strengths (+ controls); the
script prints the measured seconds per output and the projected sweep time. Steering all
four blocks needs the whole encoder per output (about 36 GFLOP on tiny.en at 1500 frames),
which bounds the sweep from below on CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from whisperlens.studies.steering.study import (
    Clip,
    SteerConfig,
    build_vectors,
    load_whisper,
    steer_clip,
    variants,
)
from whisperlens.studies.steering.textscore import NullScorer

SWEEP_CLIPS, SWEEP_MAPPINGS, SWEEP_STRENGTHS = 10, 5, 21
ENCODER_GFLOP_TINY = 36.0  # 4 blocks x (projections + MLP + attention) at 1500 frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=1)
    parser.add_argument("--strengths", type=int, default=5, help="points in [-8, 8]")
    parser.add_argument("--n-random", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    strengths = tuple(float(s) for s in np.linspace(-8, 8, args.strengths))
    model = load_whisper("tiny.en")
    texts = [
        "I saw the movie and felt bad.", "He was calm when the train was late.",
        "The meeting made me a little upset.", "She spoke quietly to the waiter.",
    ][: args.clips]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        diffs = torch.randn(400, 576, generator=torch.Generator().manual_seed(0))
        caa = {"differences": diffs, "mean": diffs.mean(0)}
        n_outputs, elapsed = 0, 0.0
        for reducers, layouts in ((("pca", "ae", "gaussian", "sparse"), ("frames",)),
                                  (("pca",), ("direction",))):  # fmt: skip
            config = SteerConfig("anger_calm", out / "_".join(layouts), reducers=reducers,
                                 layouts=layouts, strengths=strengths, n_random=args.n_random,
                                 batch_size=args.batch_size)  # fmt: skip
            build_vectors(config, config.out, caa, int(model.d_model))  # type: ignore[arg-type]
            start = time.perf_counter()
            for i, text in enumerate(texts):
                steer_clip(model, NullScorer(), config, config.out, Clip(i, text))  # type: ignore[arg-type]
            elapsed += time.perf_counter() - start
            n_outputs += len(variants(config)) * len(texts)
    per = elapsed / n_outputs
    full = SWEEP_CLIPS * SWEEP_MAPPINGS * SWEEP_STRENGTHS * (1 + args.n_random)
    print(f"{n_outputs} outputs in {elapsed:.1f} s: {per:.3f} s/output, "
          f"{ENCODER_GFLOP_TINY / per:.0f} GFLOP/s on the encoder alone")  # fmt: skip
    print(f"projected full sweep ({full} outputs, {args.n_random} random controls): "
          f"{full * per / 60:.1f} min (target 10 min)")  # fmt: skip


if __name__ == "__main__":
    main()
