"""Uploaded datasets. A version used by a run is immutable: editing creates a new version."""
from __future__ import annotations

from django.conf import settings
from django.db import models


class Dataset(models.Model):
    class Status(models.TextChoices):
        UPLOADED = "uploaded", "Uploaded"
        VALIDATING = "validating", "Validating"
        VALID = "valid", "Valid"
        INVALID = "invalid", "Invalid"

    class EvalSplit(models.TextChoices):
        NONE = "none", "No eval split"
        FILE = "file", "Second file"
        FRACTION = "fraction", "Seeded fraction of the training file"

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=120)
    version = models.PositiveIntegerField(default=1)
    previous = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    file_path = models.CharField(max_length=500, help_text="Path under ARTIFACT_ROOT")
    original_filename = models.CharField(max_length=255)
    file_format = models.CharField(max_length=16)
    sha256 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField()
    mapping = models.JSONField(default=dict, help_text="Column mapping (gft_core.data.ColumnMapping)")
    eval_split = models.CharField(max_length=10, choices=EvalSplit.choices, default=EvalSplit.NONE)
    eval_file_path = models.CharField(max_length=500, blank=True)
    eval_fraction = models.FloatField(null=True, blank=True)
    eval_seed = models.IntegerField(default=0)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.UPLOADED)
    report = models.JSONField(default=dict, blank=True)
    archived = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [models.UniqueConstraint(fields=["team", "name", "version"], name="dataset_version_unique")]
        indexes = [models.Index(fields=["team", "sha256"])]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def usable(self) -> bool:
        return self.status == self.Status.VALID and not self.archived
