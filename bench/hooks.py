"""Overhead of whisperlens hooks on the encoder, measured as ratios in one run.

Targets (issue #2): caching every encoder residual site <= 1.05x a plain encoder
forward; an active patch hook <= 1.02x. "Plain" is an uninstrumented deep copy of
the same transformers model, so instrumentation overhead is included in the ratios.
Conditions are interleaved round-robin and summarised by their medians, which makes
the ratios robust to the machine's slow drifts. HookedWhisper tunes glibc's allocator
for the whole process (whisperlens._perf); run with WHISPERLENS_NO_MALLOC_TUNING=1 to
measure without it.

    python bench/hooks.py [--model tiny.en] [--repeats 15]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch

from whisperlens.hooks import HookedWhisper


def _load(name: str):
    if name == "random":
        from whisperlens.testing import tiny_random_whisper

        return tiny_random_whisper(d_model=384, n_heads=6, n_layers=4)
    from whisperlens.models.whisper import load_whisper

    return load_whisper(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = _load(args.model)
    plain = copy.deepcopy(loaded.model)  # never instrumented
    hooked = HookedWhisper(loaded)
    torch.manual_seed(0)
    feats = torch.randn(1, loaded.n_mels, 3000)
    resid_sites = [s.name for s in hooked.sites("encoder.*") if s.spec.residual]
    patch_site = f"encoder.blocks.{loaded.n_layers // 2}.hook_resid_post"
    patch_value = torch.zeros(11, loaded.d_model)

    def run_plain():
        plain.model.encoder(feats)

    def run_instrumented():
        hooked.model.model.encoder(feats)

    def run_cache_all():
        hooked.run_with_cache(feats, names=resid_sites)

    def run_patch():
        with hooked.patch(patch_site, patch_value, frames=slice(10, 21)):
            hooked.model.model.encoder(feats)

    conditions = {
        "plain": run_plain,
        "instrumented_no_hooks": run_instrumented,
        "cache_all_encoder_residual_sites": run_cache_all,
        "patch_one_site": run_patch,
    }
    times: dict[str, list[float]] = {k: [] for k in conditions}
    with torch.no_grad():
        for fn in conditions.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in conditions.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    report = {
        "model": loaded.name,
        "n_cached_sites": len(resid_sites),
        # process-wide, so "plain" runs under the same allocator (see whisperlens._perf)
        "malloc_tuned": not os.environ.get("WHISPERLENS_NO_MALLOC_TUNING"),
        "repeats": args.repeats,
        "median_ms": {k: round(v * 1000, 2) for k, v in med.items()},
        "ratio_vs_plain": {k: round(v / med["plain"], 4) for k, v in med.items()},
        "targets": {"cache_all_encoder_residual_sites": 1.05, "patch_one_site": 1.02},
    }
    report["pass"] = {k: report["ratio_vs_plain"][k] <= t for k, t in report["targets"].items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
