"""Peak memory of ``whisperlens patch`` across its processes (the parent and each worker).

Runs a seeded subset of experiment A (seed mode by default) as a subprocess for each
``--n-pairs`` size, polls its process tree from ``/proc`` and reports per process the peak
resident set (``VmHWM``, exact: the kernel keeps it) and the peak proportional set size
(PSS: shared library pages split between the processes that map them, sampled), then the
sums. The baseline is one process that only imports torch and transformers and loads the
model. The total is bounded by the largest sum of peak RSS over the processes alive
together (the stimuli workers exit before the patching workers start). Two subset sizes
show whether memory grows with the number of pairs; the projection for full A (869 pairs,
27,808 rows) extrapolates the parent's growth per row linearly (the workers do not grow).

    python bench/patching_memory.py --n-pairs 10 40 --workers 2
    python bench/patching_memory.py --n-pairs 20 --workers 1 --cold-stimuli

Linux only (``/proc``). ``--cold-stimuli`` synthesizes the stimuli afresh into a temporary
cache (the converted models are shared), so the workers also load the TTS engine, as in a
first run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

FULL_A_ROWS = 869 * 2 * 16  # pairs x directions x (S, L) cells on tiny.en
POLL_S = 0.25
BASELINE = (
    "import sys, torch, transformers\n"
    "from whisperlens.hooks import HookedWhisper\n"
    "HookedWhisper.from_pretrained(sys.argv[1])\n"
    "print(open('/proc/self/status').read())\n"
)


@dataclass
class Proc:
    """What one process of the tree reached."""

    pid: int
    role: str  # parent | worker | helper
    hwm_mb: float = 0.0  # peak resident set (VmHWM)
    pss_mb: float = 0.0  # largest sampled proportional set size


@dataclass
class Tree:
    """Peaks of a process tree, per process and summed over the processes alive together."""

    procs: dict[int, Proc] = field(default_factory=dict)
    alive: set[frozenset[int]] = field(default_factory=set)  # the processes seen together
    total_rss_mb: float = 0.0  # largest sum of VmRSS at one sample
    total_pss_mb: float = 0.0  # largest sum of PSS at one sample

    def bound_mb(self) -> float:
        """The largest sum of peak RSS over processes alive together: an upper bound of
        the memory in use at once (sampling may miss a short spike; VmHWM does not)."""
        return max((sum(self.procs[p].hwm_mb for p in group) for group in self.alive),
                   default=0.0)  # fmt: skip


def _status_kb(pid: int, key: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    return 0.0


def _pss_kb(pid: int) -> float:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return float(line.split()[1])
    return 0.0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "parent"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "helper"
    return "worker" if "spawn_main" in cmd else "helper"


def poll(tree: Tree, root: int) -> None:
    """One sample of every process under ``root`` (a process that exits meanwhile is skipped)."""
    todo, rss, pss, seen = [root], 0.0, 0.0, set()
    while todo:
        pid = todo.pop()
        todo += _children(pid)
        try:
            hwm, now, p = _status_kb(pid, "VmHWM"), _status_kb(pid, "VmRSS"), _pss_kb(pid)
        except OSError:
            continue
        proc = tree.procs.setdefault(pid, Proc(pid, _role(pid, root)))
        proc.hwm_mb = max(proc.hwm_mb, hwm / 1024)
        proc.pss_mb = max(proc.pss_mb, p / 1024)
        rss, pss = rss + now / 1024, pss + p / 1024
        seen.add(pid)
    tree.alive.add(frozenset(seen))
    tree.total_rss_mb = max(tree.total_rss_mb, rss)
    tree.total_pss_mb = max(tree.total_pss_mb, pss)


def measure(argv: list[str], env: dict[str, str]) -> tuple[Tree, float]:
    """Run ``argv``, sampling its process tree until it exits; (peaks, wall seconds)."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    tree = Tree()
    while child.poll() is None:
        poll(tree, child.pid)
        time.sleep(POLL_S)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with exit status {child.returncode}")
    return tree, time.perf_counter() - start


def baseline(model: str, env: dict[str, str]) -> dict[str, float]:
    """Peak RSS and PSS of a process that imports torch + transformers and loads ``model``."""
    out = subprocess.run([sys.executable, "-c", BASELINE, model], env=env, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    fields = {line.split(":")[0]: line.split()[1] for line in out.splitlines()
              if line.startswith("Vm")}  # fmt: skip
    return {"hwm_mb": float(fields["VmHWM"]) / 1024, "rss_mb": float(fields["VmRSS"]) / 1024}


def run_subset(args: argparse.Namespace, n_pairs: int, env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="patch-mem-") as tmp:
        out = (args.keep or Path(tmp)) / f"a-{args.mode}-{n_pairs}"
        argv = [sys.executable, "-m", "whisperlens.cli", "patch", "a", "--mode", args.mode,
                "--model", args.model, "--n-pairs", str(n_pairs), "--workers",
                str(args.workers), "--no-progress", "--out", str(out)]  # fmt: skip
        tree, wall = measure(argv, env)
        n_rows = sum(1 for _ in (out / "rows.jsonl").open())
    procs = sorted(tree.procs.values(), key=lambda p: (p.role != "parent", p.role, p.pid))
    return {
        "n_pairs": n_pairs,
        "n_rows": n_rows,
        "wall_s": round(wall, 1),
        "processes": [vars(p) for p in procs],
        "peak_rss_bound_mb": tree.bound_mb(),
        "peak_total_rss_mb": tree.total_rss_mb,
        "peak_total_pss_mb": tree.total_pss_mb,
    }


def projection(results: list[dict]) -> dict[str, float] | None:
    """Full A from the two largest subsets: the parent grows linearly with rows, workers not."""
    if len(results) < 2:
        return None
    small, big = sorted(results, key=lambda r: r["n_rows"])[-2:]

    def parent(r: dict) -> float:
        return next(p["hwm_mb"] for p in r["processes"] if p["role"] == "parent")

    per_row = max(0.0, (parent(big) - parent(small)) / (big["n_rows"] - small["n_rows"]))
    grow = per_row * (FULL_A_ROWS - big["n_rows"])
    return {
        "parent_mb_per_1000_rows": 1000 * per_row,
        "full_a_peak_rss_bound_mb": big["peak_rss_bound_mb"] + grow,
        "full_a_peak_total_pss_mb": big["peak_total_pss_mb"] + grow,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-pairs", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--mode", default="seed")
    parser.add_argument("--cold-stimuli", action="store_true",
                        help="synthesize the stimuli afresh (a temporary cache)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", type=Path, help="keep the run directories under this one")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="patch-mem-cache-") as cache:
        if args.cold_stimuli:
            from whisperlens._io import cache_dir

            (Path(cache) / "models").symlink_to(cache_dir("models"))
            env["WHISPERLENS_CACHE"] = cache
        base = baseline(args.model, env)
        print(f"baseline (import torch + transformers, load {args.model}): "
              f"peak RSS {base['hwm_mb']:.0f} MB")  # fmt: skip
        results = []
        for n in args.n_pairs:
            r = run_subset(args, n, env)
            results.append(r)
            each = ", ".join(f"{p['role']} {p['hwm_mb']:.0f} (PSS {p['pss_mb']:.0f})"
                             for p in r["processes"])  # fmt: skip
            print(f"A {args.mode} {n} pairs ({r['n_rows']} rows, {r['wall_s']:.0f} s, "
                  f"{args.workers} worker(s)): peak RSS MB {each}; sum of the peaks of "
                  f"processes alive together {r['peak_rss_bound_mb']:.0f}, sampled: total RSS {r['peak_total_rss_mb']:.0f}, "
                  f"total PSS {r['peak_total_pss_mb']:.0f}")  # fmt: skip
    proj = projection(results)
    if proj:
        print(f"projection for full A ({FULL_A_ROWS} rows): parent grows "
              f"{proj['parent_mb_per_1000_rows']:.1f} MB per 1000 rows; peak RSS bound "
              f"{proj['full_a_peak_rss_bound_mb']:.0f} MB, peak total PSS "
              f"{proj['full_a_peak_total_pss_mb']:.0f} MB")  # fmt: skip
    if args.json:
        report = {"args": {k: str(v) for k, v in vars(args).items()}, "baseline": base,
                  "subsets": results, "projection": proj}  # fmt: skip
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
