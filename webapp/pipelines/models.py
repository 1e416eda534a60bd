"""Pipelines: an ordered list of stages (each a run's launch inputs), launched as one experiment.

Stage 1 is queued at once; each next stage is queued when the previous one succeeds, starting from
its final model (Run.init_from_run). A stage that fails or is cancelled stops the rest.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse

from webapp.runs.models import RunStatus


class Pipeline(models.Model):
    Status = RunStatus
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="pipelines")
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.RUNNING, db_index=True)
    message = models.TextField(blank=True, help_text="Why it stopped: which stage and why")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["team", "-created_at"])]

    def __str__(self) -> str:
        return f"pipeline #{self.pk} {self.name}"

    def get_absolute_url(self) -> str:
        return reverse("pipelines:detail", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return self.status in (RunStatus.QUEUED, RunStatus.RUNNING)


class PipelineStage(models.Model):
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="stages")
    index = models.PositiveSmallIntegerField(help_text="0-based position")
    method = models.CharField(max_length=20)
    inputs = models.JSONField(help_text="The stage's launch inputs (as POST /api/runs/ takes them)")
    run = models.OneToOneField("runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="pipeline_stage")

    class Meta:
        ordering = ["pipeline", "index"]
        constraints = [models.UniqueConstraint(fields=["pipeline", "index"], name="pipeline_stage_unique")]

    def __str__(self) -> str:
        return f"stage {self.index + 1} ({self.method})"
