"""Executors: the same results in-process, in a spawn process pool and on Ray.

Each process-pool test starts a fresh pool (a few seconds: spawned workers import torch);
the Ray tests share one local Ray session (``ray.init(num_cpus=2)``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from whisperlens import executors
from whisperlens._toy_task import ToyResult, ToyTask
from whisperlens.errors import WhisperlensError
from whisperlens.executors import (
    Executor,
    InlineExecutor,
    ProcessExecutor,
    RayExecutor,
    WorkerError,
    add_executor_arguments,
    default_workers,
    executor_from_args,
    parse_executor,
)

N_UNITS = 12


def _sorted_results(executor: Executor, task: ToyTask, units: Iterable[int]) -> list[ToyResult]:
    pairs = list(executor.map(task, units))
    assert all(unit == result.unit for unit, result in pairs)
    return [result for _, result in sorted(pairs, key=lambda pair: pair[0])]


def _values(results: list[ToyResult]) -> list[tuple[int, float]]:
    return [(r.unit, r.value) for r in results]


def _assert_one_setup_per_worker(results: list[ToyResult], max_workers: int) -> None:
    setups = {(r.pid, r.setup_id) for r in results}
    pids = {pid for pid, _ in setups}
    assert len(setups) == len(pids) <= max_workers  # one setup per worker, not per unit
    assert os.getpid() not in pids


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_until_gone(pids: Iterable[int], timeout_s: float = 10.0) -> set[int]:
    deadline = time.monotonic() + timeout_s
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _alive(pid)}
        time.sleep(0.05)
    return alive


@pytest.fixture(scope="module")
def reference() -> list[ToyResult]:
    return _sorted_results(InlineExecutor(), ToyTask(), range(N_UNITS))


def test_inline_sets_up_once_and_runs_in_order() -> None:
    pairs = list(InlineExecutor().map(ToyTask(), iter(range(5))))
    assert [unit for unit, _ in pairs] == list(range(5))
    assert {r.setup_id for _, r in pairs} == {pairs[0][1].setup_id}
    assert {r.pid for _, r in pairs} == {os.getpid()}
    assert len({r.value for _, r in pairs}) == 5  # units give different values


def test_process_pool_matches_inline_and_draws_units_lazily(reference: list[ToyResult]) -> None:
    drawn = 0

    def units() -> Iterator[int]:
        nonlocal drawn
        for unit in range(N_UNITS):
            drawn += 1
            yield unit

    limit = 2 * 2  # workers x in_flight_per_worker
    executor = ProcessExecutor(workers=2, in_flight_per_worker=2)
    pairs = []
    for pair in executor.map(ToyTask(sleep_s=0.01), units()):  # slow enough for both workers
        pairs.append(pair)
        # <= limit pending, plus the rest of the finished batch (refilled before yielding)
        assert drawn <= min(N_UNITS, len(pairs) + 2 * limit - 1)
    results = [result for _, result in sorted(pairs, key=lambda pair: pair[0])]
    assert _values(results) == _values(reference)
    _assert_one_setup_per_worker(results, max_workers=2)


@pytest.mark.parametrize("executor", [InlineExecutor(), ProcessExecutor(workers=2)], ids=str)
def test_failing_unit_is_named(executor: Executor) -> None:
    with pytest.raises(
        WorkerError, match=r"unit 5 failed .*ValueError: toy failure on unit 5"
    ) as info:
        list(executor.map(ToyTask(fail_unit=5), range(N_UNITS)))
    assert info.value.unit == 5
    assert ("--executor inline" in str(info.value)) == (executor.name != "inline")  # the fix


def test_failing_setup_is_reported() -> None:
    with pytest.raises(WorkerError, match=r"task setup failed .*RuntimeError: toy setup failure"):
        list(InlineExecutor().map(ToyTask(fail_setup=True), range(3)))


@pytest.mark.parametrize(
    "executor",
    [
        ProcessExecutor(workers=2),
        pytest.param(RayExecutor(workers=2), marks=pytest.mark.integration),
    ],
    ids=str,
)
def test_no_units_start_no_workers(executor: Executor, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("started workers for no units")

    monkeypatch.setattr(executors, "ProcessPoolExecutor", refuse)  # no pool
    monkeypatch.setattr(RayExecutor, "_connect", refuse)  # no Ray session
    assert list(executor.map(ToyTask(fail_setup=True), [])) == []
    assert list(executor.map(ToyTask(fail_setup=True), iter([]))) == []


def test_keyboard_interrupt_kills_busy_workers_promptly() -> None:
    # unit 0 returns at once; units 1.. sleep 60 s each, so the workers are busy when
    # SIGINT reaches the driver, blocked waiting for results
    stream = ProcessExecutor(workers=2).map(ToyTask(sleep_s=60.0), range(4))
    _, first = next(stream)
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    interrupt = threading.Timer(0.5, signal.pthread_kill, (main_thread, signal.SIGINT))
    start = time.monotonic()
    interrupt.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            next(stream)
    finally:
        interrupt.cancel()
    assert time.monotonic() - start < 15.0
    assert not _wait_until_gone({first.pid})


_DRIVER = """
from whisperlens._toy_task import ToyTask
from whisperlens.executors import ProcessExecutor

if __name__ == "__main__":
    stream = ProcessExecutor(workers=2).map(ToyTask(sleep_s=60.0), range(4))
    print(next(stream)[1].pid, flush=True)
    next(stream)
"""


def test_workers_die_with_a_killed_driver(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None
        worker_pid = int(driver.stdout.readline())
        assert _alive(worker_pid)
    finally:
        driver.kill()  # SIGKILL: no finally blocks run in the driver
        driver.wait()
    assert not _wait_until_gone({worker_pid})


def test_parse_executor_forms() -> None:
    assert parse_executor("inline", workers=4) == InlineExecutor()
    assert parse_executor("process", workers=3) == ProcessExecutor(workers=3)
    assert parse_executor("local", workers=2, threads_per_worker=2) == ProcessExecutor(
        workers=2, threads_per_worker=2
    )
    assert parse_executor("process", workers=1) == InlineExecutor()  # no pool for one worker
    assert parse_executor("ray", workers=None) == RayExecutor()
    assert parse_executor("ray:auto", workers=4) == RayExecutor(address="auto", workers=4)
    assert parse_executor("ray:ray://head:10001", None) == RayExecutor(address="ray://head:10001")


@pytest.mark.parametrize("spec", ["threads", "inline:x", "process:4", ""])
def test_unknown_executor_names_the_valid_forms(spec: str) -> None:
    with pytest.raises(
        WhisperlensError,
        match=r"unknown executor .*inline, process \(alias local\), ray, ray:ADDRESS",
    ):
        parse_executor(spec, workers=2)


def test_counts_must_be_positive() -> None:
    with pytest.raises(WhisperlensError, match="workers must be >= 1"):
        ProcessExecutor(workers=0)
    with pytest.raises(WhisperlensError, match="threads_per_worker must be >= 1"):
        RayExecutor(threads_per_worker=0)


def test_executor_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_executor_arguments(parser)
    args = parser.parse_args(
        ["--executor", "ray:auto", "--workers", "3", "--threads-per-worker", "2"]
    )
    assert executor_from_args(args) == RayExecutor(address="auto", workers=3, threads_per_worker=2)
    default = executor_from_args(parser.parse_args([]))
    n = default_workers()
    assert default == (InlineExecutor() if n == 1 else ProcessExecutor(workers=n))


def test_default_workers_is_the_affinity_mask() -> None:
    assert default_workers() == len(os.sched_getaffinity(0))


# ---- Ray -----------------------------------------------------------------------------


@pytest.mark.integration
def test_ray_starts_and_stops_its_own_session() -> None:
    import ray  # CI installs whisperlens[ray]: a missing ray fails these tests

    if ray.is_initialized():  # only when tests were reordered: ray_session goes first
        ray.shutdown()
    with pytest.raises(WorkerError, match=r"unit 5 failed in a Ray worker: ValueError") as info:
        list(RayExecutor(workers=1).map(ToyTask(fail_unit=5), range(N_UNITS)))
    assert info.value.unit == 5
    assert not ray.is_initialized()  # the executor shut down the local Ray it started


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.integration
def test_ray_matches_inline(ray_session: None, reference: list[ToyResult]) -> None:
    import ray

    results = _sorted_results(RayExecutor(workers=2), ToyTask(sleep_s=0.01), range(N_UNITS))
    assert _values(results) == _values(reference)
    _assert_one_setup_per_worker(results, max_workers=2)
    assert not _wait_until_gone({r.pid for r in results})  # the actors were killed
    assert ray.is_initialized()  # a session the executor did not start is left running
    with pytest.raises(WhisperlensError, match="3 Ray workers x 1 thread.* 2 CPUs"):
        list(RayExecutor(workers=3).map(ToyTask(), range(N_UNITS)))  # would hang
