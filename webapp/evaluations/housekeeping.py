"""Housekeeping of evaluations (called by the workers' housekeeping task with the runs' one):
an evaluation whose worker died (no heartbeat for RUN_HEARTBEAT_TIMEOUT_S) fails, and a queued one
whose task message vanished from the broker is sent again."""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from webapp.runs.housekeeping import QUEUED_GRACE_S, broker_task_ids

from . import services
from .models import EvalStatus, Evaluation

log = logging.getLogger(__name__)


def fail_stale_evaluations(timeout_s: float | None = None) -> list[int]:
    timeout_s = settings.RUN_HEARTBEAT_TIMEOUT_S if timeout_s is None else timeout_s
    failed = []
    for ev in Evaluation.objects.stale(timeout_s):
        silent = int(ev.heartbeat_age.total_seconds())
        reason = (f"No heartbeat from worker {ev.worker or '?'} for {silent} s (limit {int(timeout_s)} s): the worker "
                  "process was killed or its machine is gone. Resume continues with the benchmarks not scored yet.")
        try:
            services.transition(ev.pk, EvalStatus.FAILED, attempt=ev.attempt, error=reason)
        except services.TransitionError:
            continue
        failed.append(ev.pk)
        log.warning("evaluation %s failed: %s", ev.pk, reason)
    return failed


def redispatch_lost_evaluations() -> list[int]:
    cutoff = timezone.now() - timedelta(seconds=QUEUED_GRACE_S)
    candidates = list(Evaluation.objects.filter(status=EvalStatus.QUEUED, queued_at__lt=cutoff))
    if not candidates:
        return []
    try:
        known = broker_task_ids({settings.TRAINING_QUEUES[0]})
    except Exception as exc:  # noqa: BLE001 - broker unreachable: decide later
        log.warning("housekeeping cannot read the broker: %s", exc)
        return []
    sent = []
    for ev in candidates:
        if ev.celery_task_id not in known:
            services.send_eval_task(ev)
            sent.append(ev.pk)
    return sent


def housekeeping() -> dict[str, list[int]]:
    """Both sweeps, for the housekeeping task."""
    return {"evaluations_failed": fail_stale_evaluations(), "evaluations_redispatched": redispatch_lost_evaluations()}
