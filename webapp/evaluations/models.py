"""Evaluations (issue 17): benchmark suites, evaluations of a run checkpoint or a base model,
their results per benchmark, and reference results (e.g. the GFT paper's Table 1).

- EvalSuite is a versioned team resource (webapp.resources): a version used by an evaluation never
  changes its benchmarks or settings (editing makes a new version).
- An Evaluation scores one model directory (a run's checkpoint, its final model, or a base model
  under MODEL_ROOTS = "step 0") on every benchmark of one suite version. Its status moves like a
  run's (GpuJob, webapp.resources.jobs); the worker (workers/eval_tasks.py) writes
  progress every generation batch and one EvalResult per benchmark.
- Accuracy values are stored as gft_core computes them (fractions 0..1); the selectors show
  percentages, the unit of the paper's table.
"""
from __future__ import annotations

from django.db import models

from webapp.resources.models import GpuJob, VersionedTeamResource
from webapp.runs.models import RunStatus


class EvalSuite(VersionedTeamResource):
    # team.eval_suites (the abstract default, the app label, is Evaluation.team's team.evaluations)
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="eval_suites")
    benchmarks = models.JSONField(default=list, help_text="Dataset version ids (purpose evaluation), in order")
    settings = models.JSONField(default=dict, help_text="gft_core EvalSettings.to_dict()")
    description = models.TextField(blank=True)

    CONTENT_FIELDS = VersionedTeamResource.CONTENT_FIELDS + ("benchmarks", "settings")

    class Meta(VersionedTeamResource.Meta):
        constraints = [models.UniqueConstraint(fields=["team", "name", "version"], name="evalsuite_version_unique")]

    @property
    def runs(self) -> models.QuerySet:
        """What uses this version (the shared lifecycle of webapp.resources asks `obj.runs`): its evaluations."""
        return self.evaluations.all()

    def benchmark_datasets(self) -> list:
        """The suite's benchmark Dataset versions, in the suite's order (deleted ones left out)."""
        from webapp.datasets.models import Dataset

        by_id = Dataset.objects.in_bulk(self.benchmarks)
        return [by_id[i] for i in self.benchmarks if i in by_id]


# An evaluation's lifecycle is a run's (GpuJob): queued -> running -> succeeded | failed | cancelled; resume.
EvalStatus = RunStatus


class Evaluation(GpuJob):
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="evaluations")
    run = models.ForeignKey("runs.Run", null=True, blank=True, on_delete=models.CASCADE, related_name="evaluations")
    model_path = models.CharField(max_length=500, blank=True,
                                  help_text="The base model (a directory under MODEL_ROOTS) this evaluation or its run starts from")
    checkpoint_step = models.PositiveIntegerField(default=0, help_text="0 = the base model")
    checkpoint_path = models.CharField(max_length=500, help_text="The model directory evaluated (copied at submit)")
    suite = models.ForeignKey(EvalSuite, on_delete=models.PROTECT, related_name="evaluations")
    # status, attempt, heartbeat_at, ... (the lifecycle columns): GpuJob
    done = models.PositiveIntegerField(default=0, help_text="Problems scored so far (all benchmarks)")
    total = models.PositiveIntegerField(default=0, help_text="Problems to score (all benchmarks)")
    current_benchmark = models.CharField(max_length=120, blank=True)
    prompt_format = models.JSONField(
        default=dict, blank=True,
        help_text="How prompts were built (gft_core PromptFormat.describe() + source, overrides): the run's "
                  "training settings for its checkpoints, else the defaults; the suite's and the request's settings win")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["team", "-created_at"]), models.Index(fields=["run", "checkpoint_step"]),
                   models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        what = f"run #{self.run_id}" if self.run_id else "base model"
        return f"evaluation #{self.pk} of {what} step {self.checkpoint_step}"

    @property
    def is_base(self) -> bool:
        return self.run_id is None

    @property
    def prompt_format_label(self) -> str:
        return prompt_format_label(self.prompt_format)


def prompt_format_label(fmt: dict | None) -> str:
    """One line for an Evaluation.prompt_format: "chat template + system prompt + suffix “…” (run #3)"."""
    if not fmt:
        return "not recorded"
    if fmt.get("chat_template_applied"):
        text = "chat template"
    elif fmt.get("use_chat_template"):
        text = "plain (the model has no chat template)"
    else:
        text = "plain (chat template off)"
    if fmt.get("system_prompt"):
        text += f" + system prompt “{fmt['system_prompt'][:40]}”"
    if fmt.get("instruction_suffix"):
        text += f" + suffix “{fmt['instruction_suffix'][:40]}”"
    overrides = [*fmt.get("set_by_suite", []), *fmt.get("set_by_request", [])]
    source = fmt.get("source") or ""
    note = ", ".join(x for x in (source, f"set: {', '.join(overrides)}" if overrides else "") if x)
    return f"{text} ({note})" if note else text


class EvalResult(models.Model):
    """One benchmark's result of one evaluation: gft_core's BenchmarkResult.summary() as `metrics`,
    per-problem outcomes as `problems` (webapp.evaluations.services.problem_record)."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="results")
    benchmark = models.ForeignKey("datasets.Dataset", null=True, on_delete=models.SET_NULL, related_name="eval_results")
    benchmark_name = models.CharField(max_length=120)
    metrics = models.JSONField(default=dict)
    problems = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["evaluation", "id"]
        constraints = [models.UniqueConstraint(fields=["evaluation", "benchmark"], name="evalresult_unique_benchmark")]


class ReferenceResult(models.Model):
    """A number reported elsewhere (a paper), shown next to the team's own results."""

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="reference_results")
    model = models.CharField(max_length=200)
    method = models.CharField(max_length=100)
    benchmark = models.CharField(max_length=120)
    metric = models.CharField(max_length=50, default="accuracy")
    value = models.FloatField(help_text="As reported (accuracy in percent)")
    source = models.CharField(max_length=300, blank=True)
    from_paper = models.BooleanField(default=False, help_text="Reported by the GFT paper, not measured here")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "method", "benchmark"]
        constraints = [models.UniqueConstraint(fields=["team", "model", "method", "benchmark", "metric", "source"],
                                               name="referenceresult_unique")]
