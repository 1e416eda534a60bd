"""Reward configs: a reward spec of gft_core's registry, stored as data; a versioned team resource."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.resources.models import VersionedTeamResource


class RewardConfig(VersionedTeamResource):
    spec = models.JSONField(help_text='gft_core reward spec, e.g. {"name": "math_verify", "params": {}}')
    description = models.TextField(blank=True)

    class Meta(VersionedTeamResource.Meta):
        constraints = [models.UniqueConstraint(fields=["team", "name", "version"], name="reward_version_unique")]

    CONTENT_FIELDS = VersionedTeamResource.CONTENT_FIELDS + ("spec",)


class RewardTest(models.Model):
    """One run of the "test this reward" panel: scores of a dataset's expert/teacher answers.

    Computed by workers.data_tasks.test_reward on the default queue; `result` holds the scores
    per source and per sampled row.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    reward_config = models.ForeignKey(RewardConfig, on_delete=models.CASCADE, related_name="tests")
    dataset = models.ForeignKey("datasets.Dataset", on_delete=models.CASCADE, related_name="reward_tests")
    sample_size = models.PositiveIntegerField(default=100)
    seed = models.IntegerField(default=0)
    response = models.TextField(blank=True, help_text="A pasted response to score as well")
    response_ground_truth = models.TextField(blank=True, help_text="Its ground truth (required when the reward compares with one)")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"test of {self.reward_config} on {self.dataset}"
