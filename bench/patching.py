"""Patching speed: a straightforward implementation against the study's engine, same subset.

Straightforward (per pair direction and (S, L)): a forward pass of the source clip recording
block S's output, a full forward pass of the target clip with block L's output replaced by
it, and a full greedy decode of the sentence (at most 32 tokens); override = the source word in the transcript.

Engine (``whisperlens.studies.patching``, seed mode, both metrics): per source word one clean
forward, the continuation from block L + 1 for each off-diagonal (S, L), one shared prompt
pass per cell for greedy decoding after the carrier prefix and forced-choice scoring.

    OMP_NUM_THREADS=1 .venv/bin/python bench/patching.py --n-pairs 3
    OMP_NUM_THREADS=1 .venv/bin/python bench/patching.py --sample-sources 6

``--n-pairs`` takes a seeded subset of pairs (few words repeat, so every source word has one
or two directions). Full experiment A has about two directions per source word (1738
directions, about 840 source words), which the engine shares; ``--sample-sources N`` draws
N source words of full A with all their directions, and the full-A speed-up weights the two
costs by full A's counts (directions for the straightforward one, source words for the engine).

Prints seconds per pair direction for both, their ratio, the override agreement, and the
extrapolated time of full experiment A (869 pairs, both directions) on ``--workers`` cores.
"""

from __future__ import annotations

import argparse
import random
import time
import warnings
from pathlib import Path

import torch

from whisperlens.decoding import DecodeOptions, TruncationWarning, decode
from whisperlens.metrics import word_present
from whisperlens.studies.patching.study import (
    PatchConfig,
    build_directions,
    build_pairs,
    build_units,
    clip_for,
    load_model,
    seed_unit_rows,
)

MAX_NEW_TOKENS = 32  # the baseline study's cap; broken cells otherwise repeat to 448 tokens


def straightforward(model, directions) -> dict[tuple[str, int, int], bool]:
    """override per (direction, S, L), the slow way."""
    n = model.n_layers
    options = DecodeOptions(language="en", max_new_tokens=MAX_NEW_TOKENS)
    out = {}
    for d in directions:
        source, target = clip_for(d.source).audio, clip_for(d.target).audio
        for s in range(n):
            for t in range(n):
                site_s = f"encoder.blocks.{s}.hook_resid_post"
                states = model.run_with_cache(source, names=site_s)[site_s]
                with model.patch(f"encoder.blocks.{t}.hook_resid_post", states):
                    enc = model.encode(target)
                text = decode(model, enc, options)[0].text
                out[(d.name, s, t)] = word_present(d.source.text, text, "en")
    return out


def engine_run(model, config, units) -> dict[tuple[str, int, int], bool]:
    out = {}
    for unit in units:
        for row in seed_unit_rows(model, config, unit):
            name = row["key"].split(":", 1)[1].rsplit(":", 2)[0]
            out[(name, row["source_layer"], row["target_layer"])] = row["override"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-pairs", type=int, default=3)
    parser.add_argument("--sample-sources", type=int, default=None,
                        help="instead: N source words of full A with all their directions")  # fmt: skip
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--workers", type=int, default=2, help="cores for the full-A estimate")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", TruncationWarning)
    if args.sample_sources:
        config = PatchConfig("a", Path("unused"), model=args.model)
        every = build_units(config, build_directions(config, build_pairs(config)))
        pick = random.Random(0).sample(range(len(every)), args.sample_sources)
        units = [every[i] for i in sorted(pick)]
        directions = [d for u in units for d in u.directions]
        what = f"{len(units)} source words of full A"
    else:
        config = PatchConfig("a", Path("unused"), model=args.model, n_pairs=args.n_pairs)
        directions = build_directions(config, build_pairs(config))
        units = build_units(config, directions)
        what = f"{args.n_pairs} pairs"
    model = load_model(args.model)
    for d in directions:  # synthesize outside the timings
        clip_for(d.source), clip_for(d.target)
    t0 = time.perf_counter()
    slow = straightforward(model, directions)
    t1 = time.perf_counter()
    fast = engine_run(model, config, units)
    t2 = time.perf_counter()
    n_dir = len(directions)
    agree = sum(slow[k] == fast[k] for k in slow) / len(slow)
    full = PatchConfig("a", Path("unused"), model=args.model)
    full_directions = build_directions(full, build_pairs(full))
    n_sources = len(build_units(full, full_directions))
    per_source = (t2 - t1) / len(units)
    # the straightforward cost grows with directions, the engine's with source words
    full_slow = len(full_directions) * (t1 - t0) / n_dir
    full_fast = n_sources * per_source
    print(f"{what}: {n_dir} directions, {len(units)} source words, {args.model}")
    print(f"straightforward: {(t1 - t0) / n_dir:.2f} s per direction ({t1 - t0:.1f} s)")
    print(f"engine (both metrics): {(t2 - t1) / n_dir:.2f} s per direction ({t2 - t1:.1f} s)")
    print(f"speed-up: {(t1 - t0) / (t2 - t1):.1f}x; override agreement {agree:.3f}")
    print(f"full A: {n_sources} source words x {per_source:.2f} s / {args.workers} workers "
          f"= {full_fast / args.workers / 60:.1f} min")  # fmt: skip
    print(f"full A speed-up ({len(full_directions)} directions, {n_sources} source words): "
          f"{full_slow / full_fast:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
