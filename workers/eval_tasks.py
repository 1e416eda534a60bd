"""The evaluate task: one Evaluation row -> gft_core.benchmarks.evaluate_benchmark per benchmark.

Thin on purpose: the state machine, progress, results and cancel flag live in
webapp.evaluations.services; this module loads the model directory the evaluation names (a run's
checkpoint, its final model, or a base model), evaluates every benchmark of the suite not scored
yet (a resumed evaluation keeps what it had). The heartbeat, cancel and re-queue on a worker
shutdown (SIGTERM, forwarded to this process like a run's: workers/tasks.py) are workers/jobs.py's
(JobAttempt). Registered under webapp.dispatch.EVALUATE, sent on the first training queue (it
needs the accelerator like a run).
"""
from __future__ import annotations

# First: the project's app (not shared_task), which also sets Django up before the models load.
from workers.celery import app  # isort: skip

import logging

from gft_core.benchmarks import EvaluationStopped
from webapp.dispatch import EVALUATE
from webapp.evaluations import services
from webapp.evaluations.models import Evaluation

from .jobs import JobAttempt, Superseded

log = logging.getLogger(__name__)


@app.task(name=EVALUATE, bind=True, acks_late=True)
def evaluate(self, evaluation_id: int) -> str:
    """Evaluate one queued evaluation to its end: succeeded | cancelled | failed."""
    return EvalExecution.run_task(self, evaluation_id)


class EvalExecution(JobAttempt):
    """One attempt of one evaluation inside a worker process (fenced by Evaluation.attempt); a worker
    shutdown (SIGTERM) stops it after the batch and queues it again, never kills it."""

    lifecycle = services.jobs
    stopped = EvaluationStopped
    REQUEUE_ON_SIGNAL = True

    @property
    def ev(self) -> Evaluation:
        return self.job

    def work(self) -> None:
        """Every benchmark of the suite not scored yet, one EvalResult each."""
        import torch

        from gft_core.benchmarks import EvalSettings, evaluate_benchmark, load_benchmark
        from gft_core.policy import load_policy

        settings = EvalSettings.from_dict(self.ev.suite.settings)
        prompt_format = services.prompt_format_of(self.ev)  # the run's training format, unless told otherwise
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
                                            stop=self.should_stop, prompt_format=prompt_format)
            if services.store_result(self.ev, d, result.to_dict()) is None:
                raise Superseded("its result was refused")
            done = before + len(examples[d.pk])
            log.info("evaluation %s: %s avg@k %.4f", self.ev.pk, d.name, result.avg_at_k)

    def _progress(self, done: int, total: int, benchmark: str) -> None:
        if not services.record_progress(self.ev, done, total, benchmark):
            raise Superseded("its progress was refused")
