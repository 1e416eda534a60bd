"""Housekeeping of runs, called every few seconds by the workers' housekeeping task (a thin
entry point in workers/tasks.py):
- fail running runs whose heartbeat is older than settings.RUN_HEARTBEAT_TIMEOUT_S;
- send queued runs whose task message vanished from the broker again;
- keep the metric rollups of long running runs up to date (only new complete buckets).
"""
from __future__ import annotations

import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from webapp import dispatch

from . import series, services
from .launch import send_train_task
from .models import Run, RunEvent, RunStatus

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 60  # worker log lines kept on the Run (Run.log_tail) when it ends
QUEUED_GRACE_S = 120  # a queued run's message may be in flight this long before it counts as lost


def fail_stale_runs(timeout_s: float | None = None) -> list[int]:
    """Fail running runs whose worker has not sent a heartbeat for `timeout_s` seconds."""
    timeout_s = settings.RUN_HEARTBEAT_TIMEOUT_S if timeout_s is None else timeout_s
    failed = []
    for run in Run.objects.stale(timeout_s):  # the database's clock, as the workers' heartbeats
        silent = int(run.heartbeat_age.total_seconds())
        reason = (f"No heartbeat from worker {run.worker or '?'} for {silent} s (limit {int(timeout_s)} s): "
                  "the worker process was killed or its machine is gone. Resume continues from the latest checkpoint.")
        try:
            services.transition(run.pk, RunStatus.FAILED, message=reason, error=reason,
                                log_tail=run.read_log_end(LOG_TAIL_LINES))
        except services.TransitionError:
            continue  # it ended meanwhile
        failed.append(run.pk)
        log.warning("run %s failed: %s", run.pk, reason)
    return failed


def redispatch_lost_runs() -> list[int]:
    """Queued runs (older than QUEUED_GRACE_S) whose message is neither waiting in the broker's
    queue nor held by a worker get a new message. Cheap: one LRANGE per queue and one HVALS."""
    cutoff = timezone.now() - timedelta(seconds=QUEUED_GRACE_S)
    candidates = list(Run.objects.filter(status=RunStatus.QUEUED, queued_at__lt=cutoff))
    if not candidates:
        return []
    try:
        known = broker_task_ids({r.queue for r in candidates})
    except Exception as exc:  # noqa: BLE001 - broker unreachable: nothing can be decided now
        log.warning("housekeeping cannot read the broker: %s", exc)
        return []
    sent = []
    for run in candidates:
        if run.celery_task_id and run.celery_task_id in known:
            continue
        with transaction.atomic():
            RunEvent.objects.create(run=run, kind="info", message="Task message lost in the broker; sent again.")
            send_train_task(run)
        sent.append(run.pk)
    return sent


def broker_task_ids(queues: set[str]) -> set[str]:
    """Task ids waiting in the Redis lists of `queues` or delivered but unacknowledged."""
    with dispatch.app().connection_for_write() as conn:
        client = conn.default_channel.client
        ids: set[str] = set()
        for q in queues:
            for raw in client.lrange(q, 0, -1):
                ids.add(json.loads(raw)["headers"]["id"])
        for raw in client.hvals("unacked"):
            ids.add(json.loads(raw)[0]["headers"]["id"])
    return ids


def refresh_running_rollups() -> list[int]:
    """Refresh the rollups of running runs long enough to use them (series.ROLLUP_MIN_STEPS):
    each call rolls up only the buckets completed since the last one, so it stays cheap."""
    ids = list(Run.objects.filter(status=RunStatus.RUNNING, step__gte=series.ROLLUP_MIN_STEPS)
               .values_list("pk", flat=True))
    for run_id in ids:
        refresh_rollups_of(run_id)
    return ids


def refresh_rollups_of(run_id: int) -> None:
    """Bring a run's metric rollups up to date (series.refresh_rollups); a failure here only
    means the first chart view builds them, so it is logged, never raised."""
    try:
        run = Run.objects.get(pk=run_id)  # fresh: an ended run rolls up every complete bucket
        series.refresh_rollups(run)
    except Exception as exc:  # noqa: BLE001
        log.warning("run %s: metric rollups not refreshed: %s", run_id, exc)
        close_old_connections()
