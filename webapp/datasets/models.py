"""Uploaded datasets. A version used by a run is immutable: editing creates a new version."""
from __future__ import annotations

from pathlib import Path

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
    eval_original_filename = models.CharField(max_length=255, blank=True)
    eval_sha256 = models.CharField(max_length=64, blank=True)
    eval_size_bytes = models.BigIntegerField(default=0)
    eval_fraction = models.FloatField(null=True, blank=True)
    eval_seed = models.IntegerField(default=0)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.UPLOADED)
    report = models.JSONField(default=dict, blank=True)
    tokenizer = models.CharField(
        max_length=500, blank=True, help_text="Tokenizer for the length report: blank = built-in tiny, else a dir under MODEL_ROOTS"
    )
    archived = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [models.UniqueConstraint(fields=["team", "name", "version"], name="dataset_version_unique")]
        indexes = [models.Index(fields=["team", "sha256"])]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    # What a run trains on: a version used by a run must never change these (edit = new version).
    CONTENT_FIELDS = (
        "file_path", "sha256", "size_bytes", "file_format", "mapping", "eval_split", "eval_file_path",
        "eval_sha256", "eval_fraction", "eval_seed", "team_id", "name", "version",
    )

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            _refuse_content_change(self, kwargs.get("update_fields"))
        super().save(*args, **kwargs)

    @property
    def path(self) -> Path:
        return Path(settings.ARTIFACT_ROOT) / self.file_path

    @property
    def eval_path(self) -> Path | None:
        return Path(settings.ARTIFACT_ROOT) / self.eval_file_path if self.eval_file_path else None

    @property
    def usable(self) -> bool:
        return self.status == self.Status.VALID and not self.archived


class ImmutableVersionError(Exception):
    """A dataset or reward config version used by a run was about to change."""


def _refuse_content_change(obj: models.Model, update_fields) -> None:
    """Raise ImmutableVersionError if `obj` is used by a run and a content field differs from the DB.

    Shared by Dataset and RewardConfig; a last line of defence behind the services, which never
    edit a version in place.
    """
    fields = [f for f in obj.CONTENT_FIELDS if update_fields is None or f in update_fields]
    if not fields or not obj.runs.exists():
        return
    stored = type(obj).objects.filter(pk=obj.pk).values(*fields).first()
    if stored is None:
        return
    changed = [f for f in fields if stored[f] != getattr(obj, f)]
    if changed:
        raise ImmutableVersionError(
            f"{obj} is used by a run and cannot change ({', '.join(changed)}); create a new version instead."
        )
