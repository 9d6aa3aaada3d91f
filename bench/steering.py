"""Time the issue's full steering sweep: 10 clips x 5 mappings x 21 strengths, plus controls.

    OMP_NUM_THREADS=1 .venv/bin/python bench/steering.py                    # the full sweep
    OMP_NUM_THREADS=1 .venv/bin/python bench/steering.py --layout frames    # the seed's layout
    OMP_NUM_THREADS=1 .venv/bin/python bench/steering.py --strengths 5 --concepts anger_calm

Runs the real study (:func:`whisperlens.studies.steering.study.run_steer`: CAA vectors in
smollm2-135m, the five reducers pca, ae, gaussian, sparse and aligned in one layout, equal-norm
random controls and the sign flip, the Whisper-internal directions, steering on every encoder
block of tiny.en through the process executor, scoring, summary and report) on two concepts
with 5 evaluation clips each, so 10 clips. A first run per concept with one strength warms
the caches a user's second sweep has too (TTS, CAA vectors, the alignment's paired
activations, the language directions); the timed runs start from empty run directories.

Prints per concept the wall time, the rows written and the distinct steered outputs that
were computed (rows that add bit-identical payloads, such as strength 0 or the random
controls of unit directions shared by every reducer, are computed once per clip), then the
total against the 10-minute target.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from whisperlens.executors import ProcessExecutor
from whisperlens.interventions import load_payloads
from whisperlens.studies.steering.concepts import load_concept
from whisperlens.studies.steering.study import SteerConfig, distinct_work, run_steer, variants

TARGET_S = 600.0
REDUCERS = ("pca", "ae", "gaussian", "sparse", "aligned")


def distinct_outputs(config: SteerConfig, n_clips: int) -> int:
    """Steered outputs the run computes: distinct payloads per clip, plus the unsteered one."""
    todo = variants(config)
    vectors = {v.vector_file: load_payloads(config.out / v.vector_file)["vector"] for v in todo}
    keys = {k for k in distinct_work(todo, vectors).values() if k is not None}
    return n_clips * (len(keys) + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concepts", nargs="+", default=["anger_calm", "love_hate"])
    parser.add_argument("--layout", choices=["direction", "frames"], default="direction")
    parser.add_argument("--strengths", type=int, default=21, help="points in [-8, 8]")
    parser.add_argument("--n-random", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs in this directory")
    args = parser.parse_args()
    strengths = tuple(round(float(s), 6) for s in np.linspace(-8, 8, args.strengths))
    total, rows, outputs = 0.0, 0, 0
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        for concept in args.concepts:
            common = dict(model=args.model, reducers=REDUCERS, layouts=(args.layout,),
                          n_random=args.n_random)  # fmt: skip
            warm = SteerConfig(concept, Path(tmp) / f"warm-{concept}", strengths=(1.0,), **common)  # type: ignore[arg-type]
            run_steer(warm, executor=ProcessExecutor(workers=args.workers), progress=False)
            config = SteerConfig(concept, Path(tmp) / concept, strengths=strengths, **common)  # type: ignore[arg-type]
            start = time.perf_counter()
            summary = run_steer(config, executor=ProcessExecutor(workers=args.workers))
            elapsed = time.perf_counter() - start
            n_clips = len(load_concept(concept).eval)
            n_rows = n_clips * len(variants(config))
            n_out = distinct_outputs(config, n_clips)
            total, rows, outputs = total + elapsed, rows + n_rows, outputs + n_out
            print(f"{concept}: {elapsed:.1f} s, {summary['n_clips']} clips, {n_rows} rows, "
                  f"{n_out} distinct outputs ({elapsed / n_out:.3f} s each)")  # fmt: skip
    print(f"sweep: {len(args.concepts)} concepts, {len(REDUCERS)} mappings ({args.layout}), "
          f"{args.strengths} strengths, {args.n_random} random controls, {args.workers} "
          f"workers: {rows} rows, {outputs} outputs, {total:.1f} s = {total / 60:.1f} min "
          f"(target {TARGET_S / 60:.0f} min: {'met' if total <= TARGET_S else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
