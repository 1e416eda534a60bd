"""RunMonitor: the alert rules of one run, evaluated in the metric sink's process right after each
flush (workers/sink.py), so alerts come from the steps as they arrive, never from polling the
database. The rule windows live in memory (webapp.alerts.engine); the database is read only at
start and every RELOAD_S seconds (rule changes, mutes), and written only when an alert fires or clears.
"""
from __future__ import annotations

import logging
import time

from django.db import connection

from .engine import METRIC_CONDITIONS, RuleSpec, RunRules

log = logging.getLogger(__name__)

RELOAD_S = 10.0  # a changed or muted rule takes effect within this (a mute is also checked when firing)


class RunMonitor:
    def __init__(self, run_id: int):
        self.run_id = run_id
        self.rules = RunRules(())
        self._loaded_at = -RELOAD_S
        self._team_id: int | None = None

    def observe(self, steps: dict[int, list]) -> None:
        """The sink's flushed steps (step -> [wall_time, scalars, histograms]); never raises."""
        try:
            if time.monotonic() - self._loaded_at >= RELOAD_S:
                self._load()
            verdicts = []
            for step in sorted(steps):
                verdicts += self.rules.observe(step, steps[step][1])
            if verdicts:
                self._apply(verdicts)
        except Exception:  # noqa: BLE001 - alerting must never stop training
            log.exception("run %s: alert rules could not be evaluated", self.run_id)
        finally:
            if not connection.in_atomic_block:
                connection.close()  # the sink's flusher thread must not hold a Django connection

    def _load(self) -> None:
        from webapp.runs.models import Run

        from .builtin import ensure_builtin_rules
        from .models import Alert, AlertRule

        self._loaded_at = time.monotonic()
        if self._team_id is None:
            run = Run.objects.select_related("team").filter(pk=self.run_id).first()
            if run is None:  # a sink without a Run row (benchmarks): no rules
                return
            self._team_id = run.team_id
            ensure_builtin_rules(run.team)
            firing = Alert.objects.filter(run_id=self.run_id, state=Alert.State.FIRING).values_list("rule_id", flat=True)
            rules = AlertRule.objects.filter(team_id=self._team_id, enabled=True, muted=False,
                                             condition__in=METRIC_CONDITIONS)
            self.rules = RunRules([RuleSpec.of(r) for r in rules], firing=set(firing))
            return
        rules = AlertRule.objects.filter(team_id=self._team_id, enabled=True, muted=False,
                                         condition__in=METRIC_CONDITIONS)
        self.rules.update([RuleSpec.of(r) for r in rules])

    def _apply(self, verdicts) -> None:
        from . import services

        for v in verdicts:
            if v.fire:
                services.fire(v.rule_id, self.run_id, v.step, v.values)
            else:
                services.clear(v.rule_id, self.run_id, v.step)
