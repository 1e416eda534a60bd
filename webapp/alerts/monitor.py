"""RunMonitor: the alert rules of one run, evaluated in the metric sink's process right after each
flush (one of the sink's flush observers: workers.sink.run_observers), so alerts come from the
steps as they arrive, never from polling the database. The rule windows live in memory
(webapp.alerts.engine). The database is read at start and when the team's rules changed (services
bump a Redis counter; checked every CHECK_S, and a full re-read every FULL_RELOAD_S in case an
announcement was lost), and written only when an alert fires or clears.
"""
from __future__ import annotations

import logging
import random
import time

from django.db import connection

from .engine import METRIC_CONDITIONS, RuleSpec, RunRules

log = logging.getLogger(__name__)

CHECK_S = 2.0  # a changed or muted rule takes effect within this (a mute is also checked when firing)
FULL_RELOAD_S = 300.0


class RunMonitor:
    def __init__(self, run_id: int):
        self.run_id = run_id
        self.rules = RunRules(())
        self._team_id: int | None = None
        self._checked_at = -CHECK_S
        self._loaded_at = -FULL_RELOAD_S
        self._version: bytes | None = None

    def observe(self, steps: dict[int, dict[str, float]]) -> None:
        """The sink's flushed steps ({step: scalars}); never raises. Also the monitor's call, so that
        it is a flush observer of workers.sink.PostgresRedisSink."""
        used_db = False
        try:
            now = time.monotonic()
            if now - self._checked_at >= CHECK_S:
                used_db = self._refresh(now)
            verdicts = []
            for step in sorted(steps):
                verdicts += self.rules.observe(step, steps[step])
            if verdicts:
                used_db = True
                self._apply(verdicts)
        except Exception:  # noqa: BLE001 - alerting must never stop training
            log.exception("run %s: alert rules could not be evaluated", self.run_id)
        finally:
            if used_db and not connection.in_atomic_block:
                connection.close()  # the sink's flusher thread must not hold a Django connection

    __call__ = observe

    def _refresh(self, now: float) -> bool:
        """Re-read the rules if they changed; True if the database was used."""
        from webapp.runs import live

        from .services import rules_version_key

        self._checked_at = now
        if self._team_id is None:
            self._load()
            # Spread the later checks of runs that started together over CHECK_S, so that many runs
            # evaluated in one process do not all ask Redis on the same step.
            self._checked_at = now - random.uniform(0, CHECK_S)
            self._loaded_at = now
            return True
        try:
            version = live.client().get(rules_version_key(self._team_id))
        except Exception:  # noqa: BLE001 - Redis down: the periodic full re-read still happens
            version = self._version
        if version == self._version and now - self._loaded_at < FULL_RELOAD_S:
            return False
        self._load()
        self._version, self._loaded_at = version, now
        return True

    def _load(self) -> None:
        from webapp.runs.models import Run

        from .builtin import ensure_builtin_rules
        from .models import Alert, AlertRule

        if self._team_id is None:
            run = Run.objects.select_related("team").filter(pk=self.run_id).first()
            if run is None:  # a sink without a Run row (benchmarks): no rules
                return
            from webapp.runs import live

            from .services import rules_version_key

            try:  # read before the rules: a change made meanwhile is seen at the next check
                self._version = live.client().get(rules_version_key(run.team_id))
            except Exception:  # noqa: BLE001
                pass
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
