"""One attempt of a GPU job (webapp.resources.models.GpuJob: Evaluation, TeacherJob) inside a worker
process: the shared part of workers/eval_tasks.py and workers/teacher_tasks.py.

A heartbeat thread keeps the job alive (housekeeping fails it when the worker dies) and notices when
the attempt was superseded; `work()` (the subclass's) ends as succeeded, `stopped` (the library's
stop exception) as cancelled, or with REQUEUE_ON_SIGNAL re-queued when the worker shuts down
(SIGTERM, forwarded like a run's: workers/tasks.py), any other exception as failed with its reason.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import traceback
from typing import Any

from django.db import connection

from webapp.resources.jobs import JobLifecycle
from webapp.resources.models import GpuJob

from .tasks import _describe, heartbeat_interval, preemptible

Status = GpuJob.Status


class Superseded(Exception):
    """This attempt no longer owns the job (failed by housekeeping, cancelled, restarted)."""


class JobAttempt:
    """One attempt of one job (fenced by its attempt number). Subclasses set `lifecycle` and
    `stopped` and implement work(); logs name the job by its lifecycle's label, in their module's logger."""

    lifecycle: JobLifecycle
    stopped: type[BaseException] = Exception
    REQUEUE_ON_SIGNAL = False  # True: SIGTERM stops after the batch and queues the job again

    def __init__(self, job: GpuJob):
        self.job = job
        self._stop = threading.Event()
        self._superseded = threading.Event()
        self._preempt = ""  # the signal that asked this worker to stop ("SIGTERM")
        self.name = self.lifecycle.label.lower()
        self.log = logging.getLogger(type(self).__module__)

    @classmethod
    def run_task(cls, task: Any, job_id: int) -> str:
        """The task's body (`task`: the bound Celery task): start the queued job whose current task
        this is, then run it to its end; "skipped" when there is nothing to do."""
        job = cls.lifecycle.start(job_id, task.request.id or "", task.request.hostname or socket.gethostname())
        if job is None:
            logging.getLogger(cls.__module__).info("%s %s is not queued for task %s: nothing to do",
                                                   cls.lifecycle.label.lower(), job_id, task.request.id)
            return "skipped"
        return cls(job).execute()

    def work(self) -> dict[str, Any]:
        """Do the job; what it returns is stored on the row as it succeeds (finish's fields)."""
        raise NotImplementedError

    def execute(self) -> str:
        with preemptible(self._on_signal) if self.REQUEUE_ON_SIGNAL else contextlib.nullcontext():
            return self._execute()

    def _on_signal(self, signum: int) -> None:
        self._preempt = signal.Signals(signum).name  # only a flag: no logging inside a handler

    def _execute(self) -> str:
        beat = threading.Thread(target=self._heartbeat, name=f"heartbeat-{self.lifecycle.key}-{self.job.pk}", daemon=True)
        beat.start()
        status, error, fields = Status.FAILED, "", {}
        try:
            fields = self.work() or {}
            status = Status.SUCCEEDED
        except self.stopped as exc:
            status = Status.CANCELLED
            self.log.info("%s %s stopped: %s", self.name, self.job.pk, exc)
            if self._preempt and not self._superseded.is_set():
                self._stop.set()
                self.lifecycle.requeue(self.job)
                return "requeued"
        except Superseded as exc:
            self.log.warning("%s %s attempt %s: %s", self.name, self.job.pk, self.job.attempt, exc)
            return "superseded"
        except Exception as exc:  # noqa: BLE001 - every failure ends as a failed job, with the reason
            error = _describe(exc)
            self.log.error("%s %s failed: %s\n%s", self.name, self.job.pk, error, traceback.format_exc())
        finally:
            self._stop.set()
            beat.join(timeout=heartbeat_interval() * 2 + 10)
        if self._superseded.is_set():
            return "superseded"
        self.lifecycle.finish(self.job, status, error, **fields)
        return status

    def should_stop(self) -> bool:
        """The library's stop check: a cancel, a worker shutdown; Superseded once the heartbeat was refused."""
        if self._superseded.is_set():
            raise Superseded("its heartbeat was refused")
        return bool(self._preempt) or self.lifecycle.cancel_requested(self.job.pk)

    def _heartbeat(self) -> None:
        try:
            while not self._stop.wait(heartbeat_interval()):
                try:
                    if not self.lifecycle.heartbeat(self.job):
                        self._superseded.set()
                        return
                except Exception as exc:  # noqa: BLE001 - a database blip: the next beat tries again
                    self.log.warning("%s %s: heartbeat not stored: %s", self.name, self.job.pk, exc)
                    connection.close()
        finally:
            connection.close()
