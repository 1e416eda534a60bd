"""Stalled runs, checked by the housekeeping beat task (workers/tasks.py, every 15 s): a running
run with no new step for N x its median step time (N = the rule's threshold). The only alert that
reads the database periodically: a stall is, by definition, the absence of new steps to react to."""
from __future__ import annotations

import statistics
import time

from webapp.runs.models import MetricPoint, Run, RunStatus

from . import services
from .models import Alert, AlertRule, Condition

STALL_MIN_S = 60.0  # never call a run stalled sooner: the first steps, evaluations and checkpoints pause it
STEP_SAMPLE = 50  # recent steps whose spacing gives the median step time


def check_stalled(now: float | None = None, min_s: float = STALL_MIN_S) -> list[int]:
    """Fire (or clear) the stalled rules of running runs; returns the ids of runs that fired."""
    now = time.time() if now is None else now
    rules: dict[int, list[AlertRule]] = {}
    for r in AlertRule.objects.filter(condition=Condition.STALLED, enabled=True, muted=False):
        rules.setdefault(r.team_id, []).append(r)
    fired = []
    for run in Run.objects.filter(status=RunStatus.RUNNING, team_id__in=list(rules), step__gt=0):
        times = list(MetricPoint.objects.filter(run_id=run.pk, key__name="time/step").order_by("-step")
                     .values_list("wall_time", flat=True)[:STEP_SAMPLE + 1])
        if len(times) < 3:
            continue
        median = statistics.median(a - b for a, b in zip(times, times[1:]))
        silent = now - times[0]
        for rule in rules[run.team_id]:
            limit = max(min_s, rule.threshold * median)
            firing = Alert.objects.filter(rule=rule, run=run, state=Alert.State.FIRING).exists()
            if silent > limit and not firing:
                if services.fire(rule, run, run.step, {"silent_s": round(silent, 1), "median_step_s": round(median, 3),
                                                       "threshold": round(limit, 1)}):
                    fired.append(run.pk)
            elif silent <= limit and firing:
                services.clear(rule.pk, run.pk, run.step)
    return fired
