"""Per-step lines in a run's worker log, written by a flush observer of the run's sink
(workers.sink, `observers=`): each training step once its metrics are stored, in step order, e.g.

    step 3/40 loss=0.6931 reward=0.5000 step_time=1.23s lr=1.00e-05

The trainer (gft_core) stays free of the worker's log; the same lines come for a run trained in
process and for one trained by `accelerate launch` children (their JSONL is tailed into the sink).
"""
from __future__ import annotations

import logging
import math
from typing import Callable

# (metric name, label in the line, format); "loss" marks a training step (a batch may also hold
# steps with other metrics only, e.g. an evaluation or system metrics logged at the same step).
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("loss", "loss", "{:.4f}"), ("reward/mean", "reward", "{:.4f}"), ("time/step", "step_time", "{:.2f}s"),
    ("lr", "lr", "{:.2e}"),
)


def step_line(step: int, total: int | None, scalars: dict[str, float]) -> str:
    """One log line of a training step; a metric that is absent is left out, a NaN says nan."""
    parts = [f"step {step}/{total}" if total else f"step {step}"]
    for name, label, fmt in FIELDS:
        value = scalars.get(name)
        if value is not None:
            parts.append(f"{label}={fmt.format(value) if math.isfinite(value) else value}")
    return " ".join(parts)


class StepLog:
    """A sink flush observer: logs step_line() of each training step of the batch to `logger`
    (the run's logger, whose records go to its worker.log while the attempt runs)."""

    def __init__(self, logger: logging.Logger, total_steps: Callable[[], int | None]):
        self.logger = logger
        self.total_steps = total_steps

    def __call__(self, batch: dict[int, dict[str, float]]) -> None:
        total = self.total_steps()
        for step, scalars in batch.items():
            if "loss" in scalars:
                self.logger.info("%s", step_line(step, total, scalars))
