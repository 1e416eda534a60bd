"""Runs, their lifecycle log, artifacts and metric time series.

Metric points are the big table (millions of rows per run). Its primary key is
(run, key, step): the index serves "key K of run R in step order" with one range scan,
and a retried flush of the same (run, key, step) cannot create a duplicate.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models.functions import Now
from django.urls import reverse


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class RunQuerySet(models.QuerySet):
    def stale(self, timeout_s: float) -> "RunQuerySet":
        """Running runs whose heartbeat is older than `timeout_s`, measured on the database's
        clock (workers write heartbeat_at with Now()), each with `heartbeat_age` (a timedelta)."""
        cutoff = models.ExpressionWrapper(Now() - timedelta(seconds=timeout_s), output_field=models.DateTimeField())
        age = models.ExpressionWrapper(Now() - models.F("heartbeat_at"), output_field=models.DurationField())
        # heartbeat_at < cutoff (not age > timeout): the (status, heartbeat_at) index serves it
        return self.filter(status=RunStatus.RUNNING, heartbeat_at__lt=cutoff).annotate(heartbeat_age=age)


class QueuedWork(models.Model):
    """The abstract lifecycle columns of what a worker runs from a task queue like a run (Run; and
    webapp.resources.models.GpuJob: Evaluation, TeacherJob): the run state machine (queued ->
    running -> succeeded | failed | cancelled), fenced by `attempt`, kept alive by `heartbeat_at`."""

    Status = RunStatus
    ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
    FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)

    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    attempt = models.PositiveIntegerField(default=0)
    celery_task_id = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # .stale(timeout_s): running with a heartbeat older than timeout_s, on the database's clock
    objects = RunQuerySet.as_manager()

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE


class Run(QueuedWork):
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="runs")
    name = models.CharField(max_length=200)
    method = models.CharField(max_length=20)
    config = models.JSONField(help_text="The gft_core config this run trains with")
    recipe = models.CharField(max_length=50, blank=True,
                              help_text="The gft_core recipe (gft_core/recipes.py) the config was built from at launch")
    dataset = models.ForeignKey("datasets.Dataset", null=True, blank=True, on_delete=models.PROTECT, related_name="runs")
    reward_config = models.ForeignKey(
        "rewards.RewardConfig", null=True, blank=True, on_delete=models.PROTECT, related_name="runs"
    )
    eval_suite = models.ForeignKey("evaluations.EvalSuite", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="training_runs",
                                   help_text="Evaluated during training at every eval interval and at the end")
    cloned_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="clones")
    init_from_run = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="continuations",
                                      help_text="The run whose model this run starts from (same team)")
    init_from_step = models.PositiveIntegerField(null=True, blank=True,
                                                 help_text="Its checkpoint step; blank = its final model")
    tags = ArrayField(models.CharField(max_length=50), default=list, blank=True)
    queue = models.CharField(max_length=50, default="gpu")
    num_gpus = models.PositiveSmallIntegerField(default=1)

    # status, attempt, heartbeat_at, ... (the lifecycle columns): QueuedWork
    attempt = models.PositiveIntegerField(default=0, help_text="How many times a worker started this run")
    step = models.PositiveIntegerField(default=0, help_text="Latest optimizer step reported")
    total_steps = models.PositiveIntegerField(default=0)
    log_tail = models.TextField(blank=True)
    summary = models.JSONField(default=dict, blank=True, help_text="Final value of each metric")
    effective_group = models.JSONField(default=dict, blank=True,
                                       help_text="The group per prompt on its dataset at launch (runs/effective_group.py)")
    metric_range = models.JSONField(default=dict, blank=True,
                                    help_text="[min, max] of each metric over the run (kept by the sink)")
    notes = models.TextField(blank=True, max_length=20_000)
    archived_at = models.DateTimeField(null=True, blank=True, help_text="Hidden from the run table while set")
    output_dir = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["team", "-created_at"]), models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.name}"

    def get_absolute_url(self) -> str:
        return reverse("runs:detail", args=[self.pk])

    @property
    def directory(self) -> Path:
        """Where the run's checkpoints, final model and worker log live."""
        return Path(self.output_dir) if self.output_dir else Path(settings.ARTIFACT_ROOT) / "runs" / str(self.pk)

    @property
    def log_path(self) -> Path:
        """The run's worker log (every attempt appends to it)."""
        return self.directory / "worker.log"

    def read_log_end(self, lines: int = 60) -> str:
        """The last `lines` lines of the worker log ("" when there is none yet)."""
        path = self.log_path
        if not path.is_file():
            return ""
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class RunEvent(models.Model):
    """The lifecycle log of a run: every status change, cancel request and resume."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=20)  # status | cancel_requested | resume | info | error
    from_status = models.CharField(max_length=10, blank=True)
    to_status = models.CharField(max_length=10, blank=True)
    message = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["created_at", "id"]


class Artifact(models.Model):
    class Kind(models.TextChoices):
        CHECKPOINT = "checkpoint", "Checkpoint"
        FINAL_MODEL = "final_model", "Final model"
        LOG = "log", "Log"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    path = models.CharField(max_length=500)
    step = models.PositiveIntegerField(default=0)
    size_bytes = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step", "id"]
        constraints = [models.UniqueConstraint(fields=["run", "kind", "path"], name="artifact_unique_path")]


class MetricKey(models.Model):
    """Interned metric names: points store a small integer instead of the name."""

    name = models.CharField(max_length=100, unique=True)

    def __str__(self) -> str:
        return self.name


class MetricPoint(models.Model):
    # Composite primary key; Django's admin cannot show such models (Django 5.2), so points are
    # browsed through the run pages and the metrics API.
    pk = models.CompositePrimaryKey("run_id", "key_id", "step")
    run = models.ForeignKey(Run, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+")
    key = models.ForeignKey(MetricKey, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+")
    step = models.IntegerField()
    value = models.FloatField()
    wall_time = models.FloatField(help_text="Unix time of the step, seconds")


class MetricHistogram(models.Model):
    pk = models.CompositePrimaryKey("run_id", "key_id", "step")
    run = models.ForeignKey(Run, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+")
    key = models.ForeignKey(MetricKey, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+")
    step = models.IntegerField()
    lo = models.FloatField()
    hi = models.FloatField()
    counts = ArrayField(models.IntegerField())


class GroupSample(models.Model):
    """A group the trainer sampled for the group inspector (see docs/INTERFACES.md)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="group_samples")
    step = models.IntegerField()
    group_index = models.PositiveSmallIntegerField()
    data = models.JSONField()

    class Meta:
        ordering = ["step", "group_index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "step", "group_index"], name="group_sample_unique")
        ]


class MetricRollup(models.Model):
    """Min and max point of one fixed-width step bucket of a long series (webapp/runs/series.py).

    Charts of runs with millions of points read these few rows instead of scanning every point.
    Rows are derived data: built lazily from MetricPoint for buckets no new point can enter, and
    tagged with the run's attempt so a resumed run (whose later steps are rewritten) rebuilds them.
    """

    pk = models.CompositePrimaryKey("run_id", "key_id", "width", "bucket")
    run = models.ForeignKey(Run, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+")
    key = models.ForeignKey(MetricKey, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+")
    width = models.IntegerField(help_text="Bucket width in steps")
    bucket = models.IntegerField(help_text="step // width")
    attempt = models.PositiveIntegerField(default=0)
    n = models.IntegerField()
    min_step = models.IntegerField()
    min_value = models.FloatField()
    min_wall = models.FloatField()
    max_step = models.IntegerField()
    max_value = models.FloatField()
    max_wall = models.FloatField()
