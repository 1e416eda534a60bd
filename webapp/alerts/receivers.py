"""Reactions to run status changes (webapp.runs.signals.run_status_changed)."""
from __future__ import annotations

import logging
import re

from .models import AlertRule, Condition

log = logging.getLogger(__name__)

# gft_core.trainer._fail: "step N: loss is nan, training stopped..." (the trainer stops before the
# sink sees a non-finite loss, so the non-finite loss rule also fires from the failure message).
_NONFINITE_LOSS = re.compile(r"loss is (nan|inf|-inf)", re.IGNORECASE)


def on_run_status_changed(sender, run_id: int, status: str, previous: str, message: str, **_) -> None:
    from webapp.runs.models import Run, RunStatus

    from . import services
    from .builtin import ensure_builtin_rules

    if status == RunStatus.RUNNING:  # resumed: the failure and stall of the last attempt are over
        services.clear_where(run_id, (Condition.FAILED, Condition.STALLED))
        return
    if status in (RunStatus.SUCCEEDED, RunStatus.CANCELLED, RunStatus.FAILED):
        services.clear_where(run_id, (Condition.STALLED,))
    if status != RunStatus.FAILED:
        return
    run = Run.objects.select_related("team").filter(pk=run_id).first()
    if run is None:
        return
    ensure_builtin_rules(run.team)
    rules = list(AlertRule.objects.filter(team_id=run.team_id, enabled=True, muted=False, condition=Condition.FAILED))
    if _NONFINITE_LOSS.search(message or run.error or ""):
        rules += AlertRule.objects.filter(team_id=run.team_id, enabled=True, muted=False,
                                          condition=Condition.NONFINITE, metric="loss")
    for rule in rules:
        services.fire(rule, run, run.step, {"detail": (message or run.error or "")[:500]})
