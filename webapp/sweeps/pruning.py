"""Pruning from live metrics: the intermediate target values of a trial run are reported to its
study as steps are stored, and a run the pruner gives up on is cancelled ("pruned at step N").

Where the check runs: the worker's metric sink calls the hook after each flush commits
(`hook_for(run_id)` is one of the sink's flush observers, workers.sink.run_observers; workers may
import webapp, not the other way round). That is within one flush (milliseconds) of the step and on the
sink's flusher thread, so the trainer's step never waits on Optuna; the 15 s housekeeping beat
would let short trials end before their pruning was even looked at, and would read back from
Postgres what the sink has in hand.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import optuna

from . import search, services
from .models import SweepTrial

log = logging.getLogger(__name__)
StepScalars = dict[int, dict[str, float]]


def hook_for(run_id: int) -> Callable[[StepScalars], None] | None:
    """The sink hook of a trial run of a sweep with a pruner; None for any other run."""
    trial = SweepTrial.objects.select_related("sweep").filter(run_id=run_id, state=SweepTrial.State.RUNNING).first()
    if trial is None or not trial.sweep.pruner or trial.sweep.target.startswith("eval:"):
        return None
    return Reporter(trial)


class Reporter:
    """Reports the target of each stored step (the running best for target_mode "best") and asks
    the pruner once per flush; cancels the run the first time it says prune."""

    def __init__(self, trial: SweepTrial):
        self.trial_pk, self.trial_id, self.sweep = trial.pk, trial.trial_id, trial.sweep
        self.pick = max if self.sweep.direction == "max" else min
        self.best: float | None = None
        self.pruned = False

    def __call__(self, steps: StepScalars) -> None:
        if self.pruned:
            return
        key = self.sweep.target
        values = [(s, float(sc[key])) for s, sc in sorted(steps.items())
                  if sc.get(key) is not None and math.isfinite(sc[key])]
        if not values:
            return
        try:
            trial = optuna.trial.Trial(search.load(self.sweep), self.trial_id)
            for step, value in values:
                if self.sweep.target_mode == "best":
                    value = self.best = value if self.best is None else self.pick(self.best, value)
                trial.report(value, step)
            if trial.should_prune():
                self.pruned = True
                services.prune(self.trial_pk, values[-1][0])
        except Exception:  # noqa: BLE001 - pruning is advice: training must go on without it
            log.exception("sweep %s trial %s: pruning check failed", self.sweep.pk, self.trial_id)
