"""Lifecycle of a GPU job (webapp.resources.models.GpuJob: Evaluation, TeacherJob): the run state
machine (webapp.runs.services.ALLOWED), fenced by the attempt, with a cancel flag in Redis and the
database, and the housekeeping sweeps (stale -> failed, lost queued task -> sent again).

One JobLifecycle per job model (webapp.evaluations.services.jobs, webapp.datasets.teachers.jobs);
the worker side is workers/jobs.py. Every status change goes through `transition`.
"""
from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any, Callable, Generic, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from webapp import dispatch
from webapp.runs import live
from webapp.runs.services import ALLOWED, TransitionError

from .models import GpuJob

log = logging.getLogger(__name__)

J = TypeVar("J", bound=GpuJob)
Status = GpuJob.Status

__all__ = ["ALLOWED", "JobLifecycle", "TransitionError"]


class JobLifecycle(Generic[J]):
    """The writes of one GpuJob model. `label` names a job in messages ("Evaluation"), `key` its
    cancel flag in Redis ("eval" -> eval:<id>:cancel), `task` the dispatch name of its worker task."""

    def __init__(self, model: type[J], *, label: str, key: str, task: str):
        self.model, self.label, self.key, self.task = model, label, key, task

    # ------------------------------------------------------------------------ state machine
    def transition(self, job: J | int, to: str, *, attempt: int | None = None, **fields: Any) -> J:
        """Move a job to `to` (row locked; with `attempt`, only while that attempt runs it)."""
        job_id = job if isinstance(job, int) else job.pk
        with transaction.atomic():
            locked = self.model.objects.select_for_update().get(pk=job_id)
            if to not in ALLOWED[locked.status]:
                raise TransitionError(f"{self.label} {job_id} cannot go from {locked.status} to {to}.")
            if attempt is not None and (locked.attempt != attempt or locked.status != Status.RUNNING):
                raise TransitionError(f"{self.label} {job_id} is no longer running attempt {attempt}.")
            now = timezone.now()
            if to == Status.QUEUED:
                locked.queued_at, locked.finished_at, locked.cancel_requested, locked.error = now, None, False, ""
            elif to == Status.RUNNING:
                locked.started_at, locked.heartbeat_at, locked.attempt = now, now, locked.attempt + 1
            else:
                locked.finished_at = now
            locked.status = to
            for name, value in fields.items():
                setattr(locked, name, value)
            locked.save()
        if isinstance(job, int):
            return locked
        job.refresh_from_db()
        return job

    def submit(self, **fields: Any) -> J:
        """Create a queued job with `fields` and send its task once the transaction commits."""
        with transaction.atomic():
            job = self.model.objects.create(queued_at=timezone.now(), **fields)
            self.send_task(job)
        return job

    def send_task(self, job: J) -> None:
        """Send the job's task (first training queue: it needs the accelerator) with a new task id
        stored on the row, once the transaction commits: the worker starts only the current task id."""
        task_id = str(uuid.uuid4())
        self.model.objects.filter(pk=job.pk).update(celery_task_id=task_id)
        job.celery_task_id = task_id
        job_id = job.pk

        def broker_unreachable(exc: Exception) -> None:
            try:
                self.transition(job_id, Status.FAILED,
                                error=f"Could not queue the {self.label.lower()}: the task broker is unreachable ({exc}).")
            except TransitionError:
                pass

        dispatch.send(self.task, [job_id], queue=settings.TRAINING_QUEUES[0], task_id=task_id,
                      on_error=broker_unreachable)

    # ------------------------------------------------------------------------ the user's actions
    def cancel_key(self, job_id: int) -> str:
        return f"{self.key}:{job_id}:cancel"

    def request_cancel(self, job: J) -> J:
        """A queued job is cancelled now; a running one stops after its current batch."""
        if job.status == Status.QUEUED:
            try:
                return self.transition(job, Status.CANCELLED, error="")
            except TransitionError:
                job.refresh_from_db()  # started meanwhile: ask it to stop below
        if job.status != Status.RUNNING:
            raise TransitionError(f"{self.label} {job.pk} is {job.status}; only queued or running ones can be cancelled.")
        self.model.objects.filter(pk=job.pk).update(cancel_requested=True)
        try:
            live.client().set(self.cancel_key(job.pk), "1", ex=7 * 24 * 3600)
        except Exception as exc:  # noqa: BLE001 - the database flag is read too
            log.warning("%s %s: cancel flag not set in Redis: %s", self.label.lower(), job.pk, exc)
        job.refresh_from_db()
        return job

    def resume(self, job: J) -> J:
        """Queue a failed or cancelled job again (with a new task); what it finished is the app's to keep."""
        with transaction.atomic():
            job = self.transition(job, Status.QUEUED)
            self.send_task(job)
        return job

    def cancel_requested(self, job_id: int) -> bool:
        """The worker's stop check: the Redis flag, else the database flag."""
        try:
            if live.client().exists(self.cancel_key(job_id)):
                return True
        except Exception:  # noqa: BLE001 - Redis down: the database still says it
            pass
        return self.model.objects.filter(pk=job_id, cancel_requested=True).exists()

    # ------------------------------------------------------------------------ what the worker records
    def start(self, job_id: int, task_id: str, hostname: str) -> J | None:
        """Move a queued job whose current task is `task_id` to running (None: nothing to do)."""
        job = self.model.objects.filter(pk=job_id).first()
        if job is None or job.status != Status.QUEUED or (job.celery_task_id and task_id and job.celery_task_id != task_id):
            return None
        try:
            live.client().delete(self.cancel_key(job_id))
        except Exception:  # noqa: BLE001
            pass
        try:
            return self.transition(job, Status.RUNNING, worker=hostname)
        except TransitionError:
            return None

    def heartbeat(self, job: J, **fields: Any) -> bool:
        """heartbeat_at = now() (and `fields`) while this attempt runs the job; False once superseded."""
        return self.model.objects.filter(pk=job.pk, attempt=job.attempt, status=Status.RUNNING).update(
            heartbeat_at=Now(), **fields) == 1

    def finish(self, job: J, status: str, error: str = "", **fields: Any) -> bool:
        """End this attempt (succeeded | cancelled | failed); False when it was superseded meanwhile."""
        try:
            self.transition(job.pk, status, attempt=job.attempt, error=error, cancel_requested=False, **fields)
        except TransitionError as exc:
            log.warning("%s %s: %s", self.label.lower(), job.pk, exc)
            return False
        return True

    def requeue(self, job: J) -> bool:
        """A running attempt stopped by its worker's shutdown (SIGTERM): queue the job again with a new
        task (what it finished is kept, as on resume); False when it was superseded."""
        try:
            with transaction.atomic():
                queued = self.transition(job.pk, Status.QUEUED, attempt=job.attempt)
                self.send_task(queued)  # sent when this transaction commits
        except TransitionError as exc:
            log.warning("%s %s: %s", self.label.lower(), job.pk, exc)
            return False
        log.info("%s %s attempt %s: worker stopping, queued again", self.label.lower(), job.pk, job.attempt)
        return True

    # ------------------------------------------------------------------------ housekeeping
    def fail_stale(self, timeout_s: float | None, reason: Callable[[J, int, int], str]) -> list[int]:
        """Fail running jobs whose worker stopped beating for `timeout_s` (RUN_HEARTBEAT_TIMEOUT_S);
        `reason(job, silent_s, timeout_s)` is the error they get."""
        timeout_s = settings.RUN_HEARTBEAT_TIMEOUT_S if timeout_s is None else timeout_s
        failed = []
        for job in self.model.objects.stale(timeout_s):
            error = reason(job, int(job.heartbeat_age.total_seconds()), int(timeout_s))
            try:
                self.transition(job.pk, Status.FAILED, attempt=job.attempt, error=error)
            except TransitionError:
                continue
            failed.append(job.pk)
            log.warning("%s %s failed: %s", self.label.lower(), job.pk, error)
        return failed

    def redispatch_lost(self) -> list[int]:
        """Send again queued jobs whose task message vanished from the broker (as runs)."""
        from webapp.runs.housekeeping import QUEUED_GRACE_S, broker_task_ids

        cutoff = timezone.now() - timedelta(seconds=QUEUED_GRACE_S)
        candidates = list(self.model.objects.filter(status=Status.QUEUED, queued_at__lt=cutoff))
        if not candidates:
            return []
        try:
            known = broker_task_ids({settings.TRAINING_QUEUES[0]})
        except Exception as exc:  # noqa: BLE001 - broker unreachable: decide later
            log.warning("housekeeping cannot read the broker: %s", exc)
            return []
        sent = []
        for job in candidates:
            if job.celery_task_id not in known:
                self.send_task(job)
                sent.append(job.pk)
        return sent
