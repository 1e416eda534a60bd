"""Uploaded datasets: versioned team resources (webapp.resources.models); a version used by a run
is immutable, editing creates a new version."""
from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models

from webapp.resources.models import GpuJob, VersionedTeamResource


class Dataset(VersionedTeamResource):
    class Status(models.TextChoices):
        UPLOADED = "uploaded", "Uploaded"
        VALIDATING = "validating", "Validating"
        VALID = "valid", "Valid"
        INVALID = "invalid", "Invalid"

    class Purpose(models.TextChoices):
        TRAIN = "train", "Training"
        EVALUATION = "evaluation", "Evaluation benchmark"

    class EvalSplit(models.TextChoices):
        NONE = "none", "No eval split"
        FILE = "file", "Second file"
        FRACTION = "fraction", "Seeded fraction of the training file"

    file_path = models.CharField(max_length=500, help_text="Path under ARTIFACT_ROOT")
    original_filename = models.CharField(max_length=255)
    file_format = models.CharField(max_length=16)
    sha256 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField()
    mapping = models.JSONField(default=dict, help_text="Column mapping (gft_core.data.ColumnMapping)")
    prompt_format = models.JSONField(default=dict, blank=True,
                                     help_text="system_prompt and instruction_suffix (gft_core DataConfig), "
                                               "wrapped around every prompt of a run on this version")
    eval_split = models.CharField(max_length=10, choices=EvalSplit.choices, default=EvalSplit.NONE)
    eval_file_path = models.CharField(max_length=500, blank=True)
    eval_original_filename = models.CharField(max_length=255, blank=True)
    eval_sha256 = models.CharField(max_length=64, blank=True)
    eval_size_bytes = models.BigIntegerField(default=0)
    eval_fraction = models.FloatField(null=True, blank=True)
    eval_seed = models.IntegerField(default=0)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.UPLOADED)
    report = models.JSONField(default=dict, blank=True)
    # A benchmark (purpose "evaluation") is scored by webapp.evaluations: prompt + ground truth, no expert needed.
    purpose = models.CharField(max_length=10, choices=Purpose.choices, default=Purpose.TRAIN, db_index=True)
    # How a derived version was made (issue 18: teacher answers generated or imported): shown on its page.
    lineage = models.JSONField(default=dict, blank=True)
    tokenizer = models.CharField(
        max_length=500, blank=True, help_text="Tokenizer for the length report: blank = built-in tiny, else a dir under MODEL_ROOTS"
    )

    class Meta(VersionedTeamResource.Meta):
        constraints = [models.UniqueConstraint(fields=["team", "name", "version"], name="dataset_version_unique")]
        indexes = [models.Index(fields=["team", "sha256"])]

    # What a run trains on: a version used by a run must never change these (edit = new version).
    CONTENT_FIELDS = VersionedTeamResource.CONTENT_FIELDS + (
        "file_path", "sha256", "size_bytes", "file_format", "mapping", "eval_split", "eval_file_path",
        "eval_sha256", "eval_fraction", "eval_seed", "prompt_format",
    )

    @property
    def path(self) -> Path:
        return Path(settings.ARTIFACT_ROOT) / self.file_path

    @property
    def eval_path(self) -> Path | None:
        return Path(settings.ARTIFACT_ROOT) / self.eval_file_path if self.eval_file_path else None

    @property
    def is_benchmark(self) -> bool:
        return self.purpose == self.Purpose.EVALUATION

    @property
    def usable(self) -> bool:
        return self.status == self.Status.VALID and not self.archived


class TeacherJob(GpuJob):
    """Generating teacher answers for a dataset version (issue 18): a job on the first training
    queue (workers/teacher_tasks.py) that moves like a run (queued -> running -> succeeded | failed |
    cancelled; resume) and, when it succeeds, made `result`, a new version of `dataset`."""

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="teacher_jobs")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="teacher_jobs")
    result = models.ForeignKey(Dataset, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    run = models.ForeignKey("runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                            help_text="The run whose final model is the teacher (else model_path)")
    model_path = models.CharField(max_length=500, help_text="The teacher model directory")
    model_label = models.CharField(max_length=300)
    options = models.JSONField(default=dict, help_text="gft_core.teachers.TeacherSettings.to_dict()")

    # status, attempt, heartbeat_at, ... (the lifecycle columns): GpuJob
    done = models.PositiveIntegerField(default=0, help_text="Prompts answered so far")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"teacher job #{self.pk} for {self.dataset}"

    @property
    def partial_path(self) -> Path:
        """Finished prompts (gft_core.teachers' partial JSONL): a resumed job continues from it."""
        return Path(settings.ARTIFACT_ROOT) / "teacher_jobs" / str(self.pk) / "partial.jsonl"
