"""Throughput of Whisper encoder forwards under each executor layout, in one run.

The question: on a small CPU, is it faster to run W workers with 1 torch thread each
or 1 worker with W threads? Each unit is one encoder forward of Whisper tiny.en on a
fixed random log-mel ``[1, 80, 3000]`` (30 s). Worker start-up and model loading are
excluded: after setup and one warm-up forward, each worker waits at a file barrier
until all workers are ready, and throughput is measured from the moment the last
worker was ready to the last result, crediting each unit with the fraction of its run
inside that window.
Conditions are interleaved over rounds (order rotated) against the machine's drifts;
the summary is each condition's median over rounds.

    python bench/executors.py [--model tiny.en] [--units 24] [--rounds 2]

Human-readable lines go to stderr, the JSON report to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from whisperlens.executors import InlineExecutor, ProcessExecutor


@dataclass(frozen=True)
class EncoderState:
    encoder: torch.nn.Module  # the model's encoder, eval mode
    feats: torch.Tensor  # [1, n_mels, 3000], seeded
    ready: float  # time.monotonic() when setup and warm-up ended (system-wide clock on Linux)


@dataclass(frozen=True)
class EncoderTask:
    """One encoder forward per unit; the unit is only an index."""

    model: str = "tiny.en"  # a name load_whisper knows
    barrier: str = ""  # a fresh directory where workers meet after setup ("": no barrier)
    n_workers: int = 1  # workers that must reach the barrier

    def setup(self) -> EncoderState:
        from whisperlens.models.whisper import load_whisper

        loaded = load_whisper(self.model)
        generator = torch.Generator().manual_seed(0)
        feats = torch.randn(1, loaded.n_mels, 3000, generator=generator)
        encoder = loaded.model.model.encoder
        with torch.no_grad():
            encoder(feats)  # warm-up
        self._wait_for_all_workers()
        return EncoderState(encoder=encoder, feats=feats, ready=time.monotonic())

    def _wait_for_all_workers(self, timeout_s: float = 600.0) -> None:
        if not self.barrier:
            return
        barrier = Path(self.barrier)
        (barrier / str(os.getpid())).touch()
        deadline = time.monotonic() + timeout_s
        while len(list(barrier.iterdir())) < self.n_workers:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not all {self.n_workers} workers reached {barrier}")
            time.sleep(0.01)

    def run(self, state: EncoderState, unit: int) -> dict[str, Any]:
        start = time.monotonic()
        with torch.no_grad():
            out = state.encoder(state.feats).last_hidden_state
        end = time.monotonic()
        return {
            "pid": os.getpid(),
            "ready": state.ready,
            "start": start,
            "end": end,
            "checksum": float(out.double().abs().sum()),  # the same in every layout
        }


def throughput(timings: list[dict[str, Any]]) -> float:
    """Units/s from the last worker's readiness to the last result (partial units credited)."""
    t0 = max(t["ready"] for t in timings)
    t1 = max(t["end"] for t in timings)
    credited = sum(
        max(0.0, min(t["end"], t1) - max(t["start"], t0)) / (t["end"] - t["start"]) for t in timings
    )
    return credited / (t1 - t0)


def median_unit_ms(timings: list[dict[str, Any]]) -> float:
    return 1000 * statistics.median(t["end"] - t["start"] for t in timings)


def inline_one_thread(task: EncoderTask, n_units: int) -> list[dict[str, Any]]:
    """InlineExecutor in this process with torch limited to one thread."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [result for _, result in InlineExecutor().map(task, range(n_units))]
    finally:
        torch.set_num_threads(saved)


def run_process(
    workers: int, threads: int, task: EncoderTask, n_units: int
) -> list[dict[str, Any]]:
    """ProcessExecutor(workers, threads); the workers start units together (a barrier)."""
    with tempfile.TemporaryDirectory() as barrier:
        task = dataclasses.replace(task, barrier=barrier, n_workers=workers)
        executor = ProcessExecutor(workers=workers, threads_per_worker=threads)
        return [result for _, result in executor.map(task, range(n_units))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--units", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    task = EncoderTask(args.model)
    conditions: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "process_2x1": lambda: run_process(2, 1, task, args.units),
        "process_1x2": lambda: run_process(1, 2, task, args.units),
        "inline_1_thread": lambda: inline_one_thread(task, args.units),
    }
    rates: dict[str, list[float]] = {name: [] for name in conditions}
    unit_ms: dict[str, list[float]] = {name: [] for name in conditions}
    checksums: set[float] = set()
    for round_index in range(args.rounds):
        names = list(conditions)
        names = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in names:
            timings = conditions[name]()
            rates[name].append(throughput(timings))
            unit_ms[name].append(median_unit_ms(timings))
            checksums.update(round(t["checksum"], 1) for t in timings)
            n_workers = len({t["pid"] for t in timings})
            print(
                f"round {round_index} {name}: {rates[name][-1]:.2f} units/s, "
                f"{unit_ms[name][-1]:.0f} ms/unit ({n_workers} worker(s))",
                file=sys.stderr,
            )
    median = {name: statistics.median(values) for name, values in rates.items()}
    report = {
        "model": args.model,
        "units": args.units,
        "rounds": args.rounds,
        "cpus": len(os.sched_getaffinity(0)),
        "units_per_s": {name: [round(v, 3) for v in values] for name, values in rates.items()},
        "median_units_per_s": {name: round(v, 3) for name, v in median.items()},
        "median_ms_per_unit": {n: round(statistics.median(v), 1) for n, v in unit_ms.items()},
        "ratio_2x1_over_1x2": round(median["process_2x1"] / median["process_1x2"], 3),
        "checksums_agree": len(checksums) == 1,  # to 0.1 of a sum over 576k activations
    }
    print(
        f"2 workers x 1 thread / 1 worker x 2 threads: {report['ratio_2x1_over_1x2']}x",
        file=sys.stderr,
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
