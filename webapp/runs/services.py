"""Run lifecycle. Every status change goes through `transition`; nothing else writes Run.status."""
from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from .models import Run, RunEvent, RunStatus

log = logging.getLogger(__name__)

ALLOWED: dict[str, set[str]] = {
    RunStatus.QUEUED: {RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED},
    # queued: a worker stopping on SIGTERM queues its run again
    RunStatus.RUNNING: {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.QUEUED},
    RunStatus.FAILED: {RunStatus.QUEUED},  # resume
    RunStatus.CANCELLED: {RunStatus.QUEUED},  # resume
    RunStatus.SUCCEEDED: set(),
}


class TransitionError(Exception):
    """A status change the state machine does not allow."""


def transition(run: Run | int, to: str, *, message: str = "", **fields) -> Run:
    """Move a run to status `to`, atomically, with a RunEvent; extra `fields` are saved with it.

    The row is locked, so two processes (a worker finishing, housekeeping failing it) cannot both
    win: the loser gets TransitionError and must re-read the run.
    """
    run_id = run if isinstance(run, int) else run.pk
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run_id)
        current = locked.status
        if to not in ALLOWED[current]:
            raise TransitionError(f"Run {run_id} cannot go from {current} to {to}.")
        now = timezone.now()
        locked.status = to
        if to == RunStatus.QUEUED:
            locked.queued_at, locked.finished_at, locked.cancel_requested = now, None, False
            locked.error = ""
        elif to == RunStatus.RUNNING:
            locked.started_at, locked.heartbeat_at = now, now
            locked.attempt += 1
        else:
            locked.finished_at = now
        for name, value in fields.items():
            setattr(locked, name, value)
        locked.save()
        kind = "resume" if current in (RunStatus.FAILED, RunStatus.CANCELLED) and to == RunStatus.QUEUED else "status"
        RunEvent.objects.create(run=locked, kind=kind, from_status=current, to_status=to, message=message)
        transaction.on_commit(lambda: _announce(locked.pk, to, locked.step, message))
        transaction.on_commit(lambda: _signal(locked.pk, to, current, message))
    if not isinstance(run, int):
        run.refresh_from_db()
        return run
    return locked


def request_cancel(run: Run, *, by: str = "") -> Run:
    """Ask a run to stop. A queued run is cancelled now; a running one stops at its next step."""
    from . import live

    if run.status == RunStatus.QUEUED:
        return transition(run, RunStatus.CANCELLED, message=f"Cancelled before start{by and ' by ' + by}.")
    if run.status != RunStatus.RUNNING:
        raise TransitionError(f"Run {run.pk} is {run.status}; only queued or running runs can be cancelled.")
    with transaction.atomic():
        Run.objects.filter(pk=run.pk).update(cancel_requested=True)
        RunEvent.objects.create(run=run, kind="cancel_requested", message=f"Cancel requested{by and ' by ' + by}.")
    live.client().set(live.cancel_key(run.pk), "1", ex=7 * 24 * 3600)
    run.refresh_from_db()
    return run


def _signal(run_id: int, status: str, previous: str, message: str) -> None:
    from .signals import run_status_changed

    for receiver, result in run_status_changed.send_robust(Run, run_id=run_id, status=status, previous=previous,
                                                            message=message):
        if isinstance(result, Exception):
            log.error("run %s -> %s: receiver %s failed: %r", run_id, status, receiver, result)


def _announce(run_id: int, status: str, step: int, message: str) -> None:
    from . import live

    try:
        live.publish_event(run_id, {"status": status, "step": step, "message": message})
    except Exception as exc:  # live viewers fall back to polling; the database is the truth
        log.warning("could not publish status of run %s to Redis: %s", run_id, exc)
