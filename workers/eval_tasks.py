"""The evaluate task: one Evaluation row -> gft_core.benchmarks.evaluate_benchmark per benchmark.

Thin on purpose: the state machine, progress, results and cancel flag live in
webapp.evaluations.services; this module loads the model directory the evaluation names (a run's
checkpoint, its final model, or a base model), evaluates every benchmark of the suite not scored
yet (a resumed evaluation keeps what it had), and keeps a heartbeat so that housekeeping fails the
evaluation when this worker dies. A worker shutdown (SIGTERM, forwarded to this process like a
run's: workers/tasks.py) stops it after the current batch and queues it again. Registered under webapp.dispatch.EVALUATE, sent on the first
training queue (it needs the accelerator like a run).
"""
from __future__ import annotations

# First: the project's app (not shared_task), which also sets Django up before the models load.
from workers.celery import app  # isort: skip

import logging
import signal
import socket
import threading
import traceback

from django.db import connection

from gft_core.benchmarks import EvaluationStopped
from webapp.dispatch import EVALUATE
from webapp.evaluations import services
from webapp.evaluations.models import EvalStatus, Evaluation

from .tasks import _describe, heartbeat_interval, preemptible

log = logging.getLogger(__name__)


class Superseded(Exception):
    """This attempt no longer owns the evaluation (failed by housekeeping, cancelled, restarted)."""


@app.task(name=EVALUATE, bind=True, acks_late=True)
def evaluate(self, evaluation_id: int) -> str:
    """Evaluate one queued evaluation to its end: succeeded | cancelled | failed."""
    ev = services.start(evaluation_id, self.request.id or "", self.request.hostname or socket.gethostname())
    if ev is None:
        log.info("evaluation %s is not queued for task %s: nothing to do", evaluation_id, self.request.id)
        return "skipped"
    return EvalExecution(ev).execute()


class EvalExecution:
    """One attempt of one evaluation inside a worker process (fenced by Evaluation.attempt)."""

    def __init__(self, ev: Evaluation):
        self.ev = ev
        self._stop = threading.Event()
        self._superseded = threading.Event()
        self._preempt = ""  # the signal that asked this worker to stop ("SIGTERM")

    def execute(self) -> str:
        with preemptible(self._on_signal):  # SIGTERM stops after the batch and re-queues, never kills
            return self._execute()

    def _on_signal(self, signum: int) -> None:
        self._preempt = signal.Signals(signum).name  # only a flag: no logging inside a handler

    def _execute(self) -> str:
        beat = threading.Thread(target=self._heartbeat, name=f"heartbeat-eval-{self.ev.pk}", daemon=True)
        beat.start()
        status, error = EvalStatus.FAILED, ""
        try:
            self._evaluate_all()
            status = EvalStatus.SUCCEEDED
        except EvaluationStopped as exc:
            status, error = EvalStatus.CANCELLED, ""
            log.info("evaluation %s stopped: %s", self.ev.pk, exc)
            if self._preempt and not self._superseded.is_set():
                self._stop.set()
                services.requeue(self.ev)
                return "requeued"
        except Superseded as exc:
            log.warning("evaluation %s attempt %s: %s", self.ev.pk, self.ev.attempt, exc)
            return "superseded"
        except Exception as exc:  # noqa: BLE001 - every failure ends as a failed evaluation, with the reason
            error = _describe(exc)
            log.error("evaluation %s failed: %s\n%s", self.ev.pk, error, traceback.format_exc())
        finally:
            self._stop.set()
            beat.join(timeout=heartbeat_interval() * 2 + 10)
        if self._superseded.is_set():
            return "superseded"
        services.finish(self.ev, status, error)
        return status

    def _evaluate_all(self) -> None:
        import torch

        from gft_core.benchmarks import EvalSettings, evaluate_benchmark, load_benchmark
        from gft_core.policy import load_policy

        settings = EvalSettings.from_dict(self.ev.suite.settings)
        scored = services.evaluated_benchmarks(self.ev)
        datasets = self.ev.suite.benchmark_datasets()
        examples = {d.pk: load_benchmark(d.path, d.mapping) for d in datasets}
        total = sum(len(x) for x in examples.values())
        done = sum(len(examples[d.pk]) for d in datasets if d.pk in scored)
        self._progress(done, total, "")
        model, tokenizer = load_policy(self.ev.checkpoint_path)
        model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        for d in datasets:
            if d.pk in scored:
                continue
            before = done
            with torch.no_grad():
                result = evaluate_benchmark(model, tokenizer, examples[d.pk], settings, name=d.name,
                                            progress=lambda n, _t, b=before, name=d.name: self._progress(b + n, total, name),
                                            stop=self._should_stop)
            if services.store_result(self.ev, d, result.to_dict()) is None:
                raise Superseded("its result was refused")
            done = before + len(examples[d.pk])
            log.info("evaluation %s: %s avg@k %.4f", self.ev.pk, d.name, result.avg_at_k)

    def _progress(self, done: int, total: int, benchmark: str) -> None:
        if not services.record_progress(self.ev, done, total, benchmark):
            raise Superseded("its progress was refused")

    def _should_stop(self) -> bool:
        if self._superseded.is_set():
            raise Superseded("its heartbeat was refused")
        return bool(self._preempt) or services.cancel_requested(self.ev.pk)

    def _heartbeat(self) -> None:
        try:
            while not self._stop.wait(heartbeat_interval()):
                try:
                    if not services.heartbeat(self.ev):
                        self._superseded.set()
                        return
                except Exception as exc:  # noqa: BLE001 - a database blip: the next beat tries again
                    log.warning("evaluation %s: heartbeat not stored: %s", self.ev.pk, exc)
                    connection.close()
        finally:
            connection.close()

