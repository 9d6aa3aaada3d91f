"""A tiny picklable Task, a test fixture for :mod:`whisperlens.executors` (not public API).

It lives in the package, not in ``tests/``, because spawned processes and Ray actors
re-import a task's class by module name. ``setup`` builds a seeded linear layer and a
fresh ``setup_id``; each result carries the worker's pid and that id, so tests can see
that setup ran once per worker, not once per unit.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ToyState:
    """One worker's set-up state."""

    weight: torch.Tensor  # [4, 8], seeded
    bias: torch.Tensor  # [4]
    setup_id: str  # unique per setup() call


@dataclass(frozen=True)
class ToyResult:
    """One unit's result."""

    unit: int
    value: float  # tanh(W x_unit + b).sum(): depends only on the seed and the unit
    pid: int  # process that ran the unit
    setup_id: str  # the setup() call whose state it used


@dataclass(frozen=True)
class ToyTask:
    """Maps an integer unit to a deterministic float through a seeded linear layer."""

    seed: int = 0  # seeds the layer's weights
    fail_unit: int | None = None  # run() raises ValueError on this unit
    fail_setup: bool = False  # setup() raises RuntimeError
    sleep_s: float = 0.0  # run() first sleeps sleep_s * unit seconds (unit 0 never waits)

    def setup(self) -> ToyState:
        if self.fail_setup:
            raise RuntimeError("toy setup failure")
        generator = torch.Generator().manual_seed(self.seed)
        weight = torch.randn(4, 8, generator=generator)
        bias = torch.randn(4, generator=generator)
        return ToyState(weight=weight, bias=bias, setup_id=uuid.uuid4().hex)

    def run(self, state: ToyState, unit: int) -> ToyResult:
        if self.sleep_s:
            time.sleep(self.sleep_s * unit)
        if unit == self.fail_unit:
            raise ValueError(f"toy failure on unit {unit}")
        x = torch.arange(8, dtype=torch.float32) * (unit + 1) / 8
        value = torch.tanh(state.weight @ x + state.bias).sum().item()
        return ToyResult(unit=unit, value=value, pid=os.getpid(), setup_id=state.setup_id)
