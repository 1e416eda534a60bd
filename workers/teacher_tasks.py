"""The generate_teachers task: one TeacherJob row -> gft_core.teachers.generate_teacher_answers ->
a new dataset version with the answers (webapp.datasets.teachers.create_result).

Thin on purpose: the state machine, cancel flag and result live in webapp.datasets.teachers; this
module loads the teacher model, generates the prompts not answered yet (the job's partial file
keeps the finished ones, so a resumed job continues without duplicates) and keeps a heartbeat so
that housekeeping fails the job when this worker dies. Registered under
webapp.dispatch.GENERATE_TEACHERS, sent on the first training queue (it needs the accelerator).
"""
from __future__ import annotations

# First: the project's app (not shared_task), which also sets Django up before the models load.
from workers.celery import app  # isort: skip

import logging
import socket
import threading
import traceback

from django.db import connection

from gft_core.teachers import TeacherStopped
from webapp.datasets import teachers
from webapp.datasets.models import TeacherJob
from webapp.dispatch import GENERATE_TEACHERS

from .tasks import _describe, heartbeat_interval

log = logging.getLogger(__name__)
Status = TeacherJob.Status


class Superseded(Exception):
    """This attempt no longer owns the job (failed by housekeeping, cancelled, restarted)."""


@app.task(name=GENERATE_TEACHERS, bind=True, acks_late=True)
def generate_teachers(self, job_id: int) -> str:
    """Run one queued teacher job to its end: succeeded | cancelled | failed."""
    job = teachers.start(job_id, self.request.id or "", self.request.hostname or socket.gethostname())
    if job is None:
        log.info("teacher job %s is not queued for task %s: nothing to do", job_id, self.request.id)
        return "skipped"
    return TeacherExecution(job).execute()


class TeacherExecution:
    """One attempt of one job inside a worker process (fenced by TeacherJob.attempt)."""

    def __init__(self, job: TeacherJob):
        self.job = job
        self._stop = threading.Event()
        self._superseded = threading.Event()

    def execute(self) -> str:
        beat = threading.Thread(target=self._heartbeat, name=f"heartbeat-teachers-{self.job.pk}", daemon=True)
        beat.start()
        status, error, result = Status.FAILED, "", None
        try:
            records = self._generate()
            result = teachers.create_result(self.job, records)
            status = Status.SUCCEEDED
        except TeacherStopped as exc:
            status = Status.CANCELLED
            log.info("teacher job %s stopped: %s", self.job.pk, exc)
        except Superseded as exc:
            log.warning("teacher job %s attempt %s: %s", self.job.pk, self.job.attempt, exc)
            return "superseded"
        except Exception as exc:  # noqa: BLE001 - every failure ends as a failed job, with the reason
            error = _describe(exc)
            log.error("teacher job %s failed: %s\n%s", self.job.pk, error, traceback.format_exc())
        finally:
            self._stop.set()
            beat.join(timeout=heartbeat_interval() * 2 + 10)
        if self._superseded.is_set():
            return "superseded"
        teachers.finish(self.job, status, error, result)
        return status

    def _generate(self) -> dict[int, dict]:
        import torch

        from gft_core.data import ColumnMapping, load_examples
        from gft_core.policy import load_policy
        from gft_core.teachers import generate_teacher_answers

        dataset = self.job.dataset
        examples = load_examples(dataset.path, ColumnMapping(**dataset.mapping))
        model, tokenizer = load_policy(self.job.model_path)
        model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        with torch.no_grad():
            return generate_teacher_answers(model, tokenizer, examples, self.job.options, self.job.partial_path,
                                            progress=self._progress, stop=self._should_stop)

    def _progress(self, done: int, total: int) -> None:
        if not teachers.heartbeat(self.job, done=done, total=total):
            raise Superseded("its progress was refused")

    def _should_stop(self) -> bool:
        if self._superseded.is_set():
            raise Superseded("its heartbeat was refused")
        return teachers.cancel_requested(self.job.pk)

    def _heartbeat(self) -> None:
        try:
            while not self._stop.wait(heartbeat_interval()):
                try:
                    if not teachers.heartbeat(self.job):
                        self._superseded.set()
                        return
                except Exception as exc:  # noqa: BLE001 - a database blip: the next beat tries again
                    log.warning("teacher job %s: heartbeat not stored: %s", self.job.pk, exc)
                    connection.close()
        finally:
            connection.close()
