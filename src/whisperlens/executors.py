"""One interface for running a study's independent work units: in-process, in a process pool, or on Ray.

A study is a picklable :class:`Task` (a frozen dataclass saying what to compute) and a
list of units (a pair, a clip, a shard). ``task.setup()`` runs once per worker (load the
model); ``task.run(state, unit)`` computes one unit and must not depend on the driver.
Every executor streams ``(unit, result)`` back as units complete, in any order; the
driver alone writes results, re-sorted by unit, so output is the same whichever
executor ran it.

>>> executor = parse_executor("process", workers=2)
>>> for unit, result in executor.map(task, units):
...     rows[unit] = result

- :class:`InlineExecutor`: setup once, units in order, in this process (debugging).
- :class:`ProcessExecutor`: a ``spawn`` process pool (fork is unsafe once torch has
  started threads), one torch thread per worker by default: on small CPUs, N workers x
  1 thread beat 1 worker x N threads (``bench/executors.py``).
- :class:`RayExecutor`: one Ray actor per worker, locally or on a cluster
  (``pip install whisperlens[ray]``).

Units are drawn from the iterable lazily, a bounded number in flight per worker, so a
generator of 100k units is never materialised as 100k futures.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import multiprocessing
import os
import pickle
import signal
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Sized
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Protocol, TypeVar

from whisperlens.errors import WhisperlensError

State = TypeVar("State")
Unit = TypeVar("Unit")
Result = TypeVar("Result")
Unit_contra = TypeVar("Unit_contra", contravariant=True)
Result_co = TypeVar("Result_co", covariant=True)

EXECUTOR_FORMS = "inline, process (alias local), ray, ray:ADDRESS"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_DEBUG_FIX = "rerun with --executor inline (InlineExecutor) to debug it in one process"
_REPR_LIMIT = 200  # characters of a unit's repr in error messages
_END: Any = object()  # end-of-units sentinel
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Task(Protocol[State, Unit_contra, Result_co]):
    """A study's work: picklable (a frozen dataclass), set up once per worker."""

    def setup(self) -> State:
        """Build the per-worker state (load the model); called once per worker."""
        ...

    def run(self, state: State, unit: Unit_contra) -> Result_co:
        """Compute one unit; a pure function of the task, the state and the unit."""
        ...


class Executor(Protocol):
    """Runs a task over units, yielding ``(unit, result)`` as each completes (any order).

    ``map`` is a generator: closing it (or an exception in the driver, Ctrl-C included)
    cancels the units not yet run and stops the workers.
    """

    @property
    def name(self) -> str: ...

    def map(
        self, task: Task[Any, Unit, Result], units: Iterable[Unit]
    ) -> Generator[tuple[Unit, Result], None, None]: ...


class WorkerError(WhisperlensError):
    """A unit (or the task's setup) failed in a worker; the original error is chained."""

    def __init__(self, cause: str, fix: str | None = _DEBUG_FIX, unit: Any = None):
        super().__init__(cause, fix)
        self.unit = unit  # the unit being run when it failed (None: unknown)


class _SetupFailed(RuntimeError):
    """Raised in a worker for each unit when the task's setup() failed there."""


def _short_repr(unit: Any) -> str:
    text = repr(unit)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def _unit_error(
    unit: Any, exc: BaseException, where: str, fix: str | None = _DEBUG_FIX
) -> WorkerError:
    """The driver-side error for a unit that raised ``exc`` in a worker."""
    if isinstance(exc, _SetupFailed):
        cause = f"task setup failed {where} (while starting unit {_short_repr(unit)}): {exc}"
    else:
        cause = f"unit {_short_repr(unit)} failed {where}: {type(exc).__name__}: {exc}"
    return WorkerError(cause, fix=fix, unit=unit)


def default_workers() -> int:
    """The number of CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _nonempty(units: Iterable[Unit]) -> Iterator[Unit] | None:
    """The units as an iterator, or None if there are none (draws one unit to know)."""
    iterator = iter(units)
    first = next(iterator, _END)
    return None if first is _END else itertools.chain([first], iterator)


def _useful_workers(units: Iterable[Any], workers: int) -> int:
    """``workers``, but at most one per unit when the number of units is known."""
    return max(1, min(workers, len(units))) if isinstance(units, Sized) else workers


def _check_counts(config: Any) -> None:
    """Every int field of a frozen dataclass (workers, threads, ...) is None or >= 1."""
    for name, value in ((f.name, getattr(config, f.name)) for f in fields(config)):
        if isinstance(value, int) and value < 1:
            raise WhisperlensError(
                f"{name} must be >= 1, got {value}", fix=f"pass {name}=1 or more"
            )


# ---- in-process ----------------------------------------------------------------------


@dataclass(frozen=True)
class InlineExecutor:
    """Set up once and run the units in order, in this process (the reference executor).

    Units run with ``threads`` torch threads (restored afterwards), as each process or Ray
    worker does, so every executor computes with the same kernels and gives the same
    numbers; ``threads=None`` leaves torch's setting alone.
    """

    threads: int | None = 1

    name: ClassVar[str] = "inline"

    def map(
        self, task: Task[Any, Unit, Result], units: Iterable[Unit]
    ) -> Generator[tuple[Unit, Result], None, None]:
        import torch

        state = None
        before = torch.get_num_threads()
        try:
            for i, unit in enumerate(units):
                if self.threads is not None:
                    torch.set_num_threads(self.threads)
                if i == 0:
                    try:
                        state = task.setup()
                    except Exception as exc:
                        failed = _SetupFailed(f"{type(exc).__name__}: {exc}")
                        raise _unit_error(unit, failed, "inline", fix=None) from exc
                try:
                    result = task.run(state, unit)
                except Exception as exc:
                    raise _unit_error(unit, exc, "inline", fix=None) from exc
                torch.set_num_threads(before)  # the driver's own setting between units
                yield unit, result
        finally:
            torch.set_num_threads(before)


# ---- worker-side setup, shared by process and Ray workers -----------------------------


def limit_threads(threads: int) -> None:
    """Limit this process to ``threads`` torch/OpenMP/MKL threads and one inter-op thread."""
    os.environ.update(dict.fromkeys(THREAD_ENV_VARS, str(threads)))
    import torch

    torch.set_num_threads(threads)
    with suppress(RuntimeError):  # already set, or inter-op work has already started
        torch.set_num_interop_threads(1)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (children spawned inside inherit them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _setup_state(task: Task[Any, Any, Any]) -> Any:
    """``task.setup()``, or a _SetupFailed that every later unit raises."""
    try:
        return task.setup()
    except Exception as exc:
        failed = _SetupFailed(f"{type(exc).__name__}: {exc}")
        failed.__cause__ = exc
        return failed


def _run_with_state(task: Task[Any, Any, Any], state: Any, unit: Any) -> Any:
    if isinstance(state, _SetupFailed):
        raise state
    return task.run(state, unit)


# ---- process pool --------------------------------------------------------------------

_WORKER_TASKS: dict[str, tuple[Any, Any]] = {}  # in a worker: task key -> (task, state)


def _die_with_parent(parent_pid: int) -> None:
    """Have Linux terminate this worker when the driver dies (even by SIGKILL)."""
    with suppress(OSError, AttributeError):  # not Linux/glibc: no parent-death signal
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the driver died before prctl took effect
        os._exit(1)


def _process_init(key: str, task_bytes: bytes, threads: int, parent_pid: int) -> None:
    """Pool initializer: ignore Ctrl-C (the driver handles it), limit threads, set up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    limit_threads(threads)
    try:  # after limit_threads: the task's module may import torch
        task = pickle.loads(task_bytes)
    except Exception as exc:  # e.g. its module is not importable here
        failed = _SetupFailed(f"cannot unpickle the task: {type(exc).__name__}: {exc}")
        _WORKER_TASKS[key] = (None, failed)
        return
    _WORKER_TASKS[key] = (task, _setup_state(task))


def _process_run(key: str, unit: Any) -> Any:
    task, state = _WORKER_TASKS[key]
    return _run_with_state(task, state, unit)


def _process_ping() -> None:
    """A no-op whose submission makes the pool spawn a worker."""


@dataclass(frozen=True)
class ProcessExecutor:
    """A local ``spawn`` process pool; each worker sets up the task once."""

    workers: int = field(default_factory=default_workers)  # worker processes
    threads_per_worker: int = 1  # torch/OpenMP threads in each worker
    in_flight_per_worker: int = 2  # units submitted but not yet collected, per worker
    name: ClassVar[str] = "process"

    def __post_init__(self) -> None:
        _check_counts(self)

    def map(
        self, task: Task[Any, Unit, Result], units: Iterable[Unit]
    ) -> Generator[tuple[Unit, Result], None, None]:
        unit_iter = _nonempty(units)
        if unit_iter is None:
            return
        n_workers = _useful_workers(units, self.workers)
        key = uuid.uuid4().hex
        pool = ProcessPoolExecutor(
            max_workers=n_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_process_init,
            initargs=(key, pickle.dumps(task), self.threads_per_worker, os.getpid()),
        )
        finished = False
        try:
            # children inherit the thread limits before anything imports torch there
            with _environment(dict.fromkeys(THREAD_ENV_VARS, str(self.threads_per_worker))):
                for _ in range(n_workers):  # spawns every worker now, inside this scope
                    pool.submit(_process_ping)

            def submit(unit: Unit) -> Future[Result]:
                try:
                    return pool.submit(_process_run, key, unit)
                except BrokenProcessPool as exc:
                    raise _broken_pool_error(unit, exc) from exc

            limit = n_workers * self.in_flight_per_worker
            for unit, future in _as_completed(submit, unit_iter, limit):
                yield unit, _process_result(future, unit)
            finished = True
        finally:
            _shutdown(pool, graceful=finished)


def _as_completed(
    submit: Callable[[Unit], Future[Result]], units: Iterator[Unit], limit: int
) -> Iterator[tuple[Unit, Future[Result]]]:
    """Keep at most ``limit`` units submitted; yield (unit, done future) as they finish."""
    pending: dict[Future[Result], Unit] = {}

    def refill() -> None:
        while len(pending) < limit:
            unit = next(units, _END)
            if unit is _END:
                return
            pending[submit(unit)] = unit

    refill()
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        finished = [(pending.pop(future), future) for future in done]
        refill()  # keep the workers busy while the driver handles the results
        yield from finished


def _process_result(future: Future[Result], unit: Any) -> Result:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise _broken_pool_error(unit, exc) from exc
    except Exception as exc:
        raise _unit_error(unit, exc, "in a worker process") from exc


def _broken_pool_error(unit: Any, exc: BrokenProcessPool) -> WorkerError:
    return WorkerError(
        f"a worker process died or failed to start (unit {_short_repr(unit)}): {exc}",
        fix="if memory is short, reduce --workers; if the driver is a script, guard its "
        "entry point with `if __name__ == '__main__':` (spawned workers re-import it); or "
        + _DEBUG_FIX,
        unit=unit,
    )


def _shutdown(pool: ProcessPoolExecutor, *, graceful: bool) -> None:
    """Shut the pool down; unless ``graceful``, cancel pending units and kill the workers."""
    if graceful:
        pool.shutdown(wait=True)
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:  # running units would otherwise finish first
        process.terminate()
    for process in processes:
        process.join(timeout=10)


# ---- Ray -----------------------------------------------------------------------------


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise WhisperlensError(
            "the ray executor needs the 'ray' package, which is not installed",
            fix="pip install 'whisperlens[ray]', or use --executor process",
        ) from exc
    return ray


class _RayWorker:
    """The actor behind each Ray worker: holds the task and its set-up state."""

    def __init__(self, task: Task[Any, Any, Any], threads: int):
        limit_threads(threads)
        self.task = task
        self.state = _setup_state(task)

    def run(self, unit: Any) -> Any:
        return _run_with_state(self.task, self.state, unit)


@dataclass(frozen=True)
class RayExecutor:
    """One Ray actor per worker, on a local Ray or the cluster at ``address``."""

    address: str | None = None  # a cluster's address ("auto", "ray://host:10001"); None: local
    workers: int | None = None  # actors; None: this machine's CPUs (local) or the cluster's
    threads_per_worker: int = 1  # torch threads, and Ray CPUs reserved, per actor
    in_flight_per_worker: int = 2  # units submitted but not yet collected, per actor
    name: ClassVar[str] = "ray"

    def __post_init__(self) -> None:
        _check_counts(self)

    def map(
        self, task: Task[Any, Unit, Result], units: Iterable[Unit]
    ) -> Generator[tuple[Unit, Result], None, None]:
        ray = _import_ray()
        unit_iter = _nonempty(units)
        if unit_iter is None:
            return
        connected_here = self._connect(ray)
        actors: list[Any] = []
        try:
            actor_class = ray.remote(num_cpus=self.threads_per_worker)(_RayWorker)
            n_actors = _useful_workers(units, self._n_actors(ray))
            actors = [actor_class.remote(task, self.threads_per_worker) for _ in range(n_actors)]
            yield from self._stream(ray, actors, unit_iter)
        finally:
            for actor in actors:
                ray.kill(actor)
            if connected_here:
                ray.shutdown()  # stops a local Ray started here; only disconnects from a cluster

    def _connect(self, ray: Any) -> bool:
        """ray.init() unless already initialised; True if this call connected."""
        if ray.is_initialized():
            return False
        local_cpus = (self.workers or default_workers()) * self.threads_per_worker
        ray.init(
            address=self.address or None,
            num_cpus=None if self.address else local_cpus,
            include_dashboard=False,
            log_to_driver=False,
            ignore_reinit_error=True,
        )
        return True

    def _n_actors(self, ray: Any) -> int:
        """``workers``, or as many as the cluster's CPUs hold; checked against a local Ray."""
        cpus = int(ray.cluster_resources().get("CPU", 1))
        fits = max(1, cpus // self.threads_per_worker)
        if self.workers is None:
            return fits
        if self.address is None and self.workers > fits:  # the actors would wait forever
            raise WhisperlensError(
                f"{self.workers} Ray workers x {self.threads_per_worker} thread(s) do not fit "
                f"the local Ray session's {cpus} CPUs",
                fix=f"use at most {fits} workers, or ray.init(num_cpus=...) with more CPUs",
            )
        return self.workers

    def _stream(
        self, ray: Any, actors: list[Any], units: Iterator[Unit]
    ) -> Iterator[tuple[Unit, Any]]:
        """Round-robin units over actors, a bounded number in flight each; yield as done."""
        in_flight: dict[Any, tuple[Unit, int]] = {}  # object ref -> (unit, actor index)

        def submit(actor_index: int) -> None:
            unit = next(units, _END)
            if unit is not _END:
                in_flight[actors[actor_index].run.remote(unit)] = (unit, actor_index)

        for _ in range(self.in_flight_per_worker):
            for actor_index in range(len(actors)):
                submit(actor_index)
        while in_flight:
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            unit, actor_index = in_flight.pop(ref)
            submit(actor_index)  # the actor that finished gets the next unit
            yield unit, _ray_result(ray, ref, unit)


def _ray_result(ray: Any, ref: Any, unit: Any) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
        raise _unit_error(unit, cause, "in a Ray worker") from exc
    except ray.exceptions.RayError as exc:  # the actor died, or the object was lost
        raise WorkerError(
            f"a Ray worker failed while running unit {_short_repr(unit)}: "
            f"{type(exc).__name__}: {exc}",
            unit=unit,
        ) from exc


# ---- CLI -----------------------------------------------------------------------------


def parse_executor(spec: str, workers: int | None = None, threads_per_worker: int = 1) -> Executor:
    """An executor from its CLI form: inline, process (alias local), ray, ray:ADDRESS.

    ``process`` with one worker runs inline (no pool to start); ``workers=None`` means
    :func:`default_workers` locally, or the cluster's CPUs for ``ray:ADDRESS``.
    """
    kind, has_address, address = spec.strip().partition(":")
    if kind == "inline" and not has_address:
        return InlineExecutor(threads_per_worker)
    if kind in ("process", "local") and not has_address:
        n_workers = default_workers() if workers is None else workers
        if n_workers == 1:
            return InlineExecutor(threads_per_worker)
        return ProcessExecutor(workers=n_workers, threads_per_worker=threads_per_worker)
    if kind == "ray":
        return RayExecutor(
            address=address or None, workers=workers, threads_per_worker=threads_per_worker
        )
    raise WhisperlensError(f"unknown executor {spec!r}", fix=f"use one of: {EXECUTOR_FORMS}")


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --executor, --workers and --threads-per-worker to a study's command."""
    group = parser.add_argument_group("execution")
    group.add_argument(
        "--executor",
        default="process",
        metavar="SPEC",
        help=f"where work units run: {EXECUTOR_FORMS} (default: process)",
    )
    group.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help=f"worker processes or Ray actors (default: this machine's {default_workers()} "
        "CPUs; 1 runs inline)",
    )
    group.add_argument(
        "--threads-per-worker",
        type=int,
        default=1,
        metavar="N",
        help="torch threads per worker (default: 1)",
    )


def executor_from_args(args: argparse.Namespace) -> Executor:
    """The executor that :func:`add_executor_arguments`' options describe."""
    return parse_executor(args.executor, args.workers, getattr(args, "threads_per_worker", 1))
