"""The generate_teachers task: one TeacherJob row -> gft_core.teachers.generate_teacher_answers ->
a new dataset version with the answers (webapp.datasets.teachers.create_result).

Thin on purpose: the state machine, cancel flag and result live in webapp.datasets.teachers; this
module loads the teacher model, generates the prompts not answered yet (the job's partial file
keeps the finished ones, so a resumed job continues without duplicates); the heartbeat and cancel
are workers/jobs.py's (JobAttempt). Registered under
webapp.dispatch.GENERATE_TEACHERS, sent on the first training queue (it needs the accelerator).
"""
from __future__ import annotations

# First: the project's app (not shared_task), which also sets Django up before the models load.
from workers.celery import app  # isort: skip

from gft_core.teachers import TeacherStopped
from webapp.datasets import teachers
from webapp.dispatch import GENERATE_TEACHERS

from .jobs import JobAttempt, Superseded


@app.task(name=GENERATE_TEACHERS, bind=True, acks_late=True)
def generate_teachers(self, job_id: int) -> str:
    """Run one queued teacher job to its end: succeeded | cancelled | failed."""
    return TeacherExecution.run_task(self, job_id)


class TeacherExecution(JobAttempt):
    """One attempt of one job inside a worker process (fenced by TeacherJob.attempt)."""

    lifecycle = teachers.jobs
    stopped = TeacherStopped

    def work(self) -> dict:
        return {"result": teachers.create_result(self.job, self._generate())}

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
                                            progress=self._progress, stop=self.should_stop,
                                            prompt_format=teachers.prompt_format(self.job))

    def _progress(self, done: int, total: int) -> None:
        if not self.lifecycle.heartbeat(self.job, done=done, total=total):
            raise Superseded("its progress was refused")
