"""Reward configs: a reward spec of gft_core's registry, stored as data, versioned."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.datasets.models import _refuse_content_change


class RewardConfig(models.Model):
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="reward_configs")
    name = models.CharField(max_length=120)
    version = models.PositiveIntegerField(default=1)
    previous = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    spec = models.JSONField(help_text='gft_core reward spec, e.g. {"name": "math_verify", "params": {}}')
    description = models.TextField(blank=True)
    archived = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [models.UniqueConstraint(fields=["team", "name", "version"], name="reward_version_unique")]

    CONTENT_FIELDS = ("spec", "team_id", "name", "version")

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            _refuse_content_change(self, kwargs.get("update_fields"))
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


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
    response_ground_truth = models.TextField(blank=True, help_text="Its ground truth; blank = the first sampled row's")
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
