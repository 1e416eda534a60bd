"""The abstract models of a versioned team resource (Dataset, RewardConfig) and of a GPU job
(GpuJob: Evaluation, TeacherJob).

Invariants:
- versions are numbered per (team, name) from 1; a new version points to the one it was made
  from (`previous`) and the old one stays as it is;
- a version used by a run never changes its CONTENT_FIELDS (editing makes a new version): save()
  refuses it, a last line of defence behind the services, which never edit a version in place;
- archiving hides a version from pickers (allowed even when runs use it); deleting is refused
  while a run uses it (runs point to it with on_delete=PROTECT, related_name "runs").
"""
from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.runs.models import QueuedWork


class ImmutableVersionError(Exception):
    """A dataset or reward config version used by a run was about to change."""


class VersionedTeamResource(models.Model):
    # Reverse names: team.datasets, team.rewards (the app label of the concrete model).
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="%(app_label)s")
    name = models.CharField(max_length=120)
    version = models.PositiveIntegerField(default=1)
    previous = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    archived = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    # What a run used: never changed once a run uses the version (subclasses add theirs).
    CONTENT_FIELDS: tuple[str, ...] = ("team_id", "name", "version")

    class Meta:
        abstract = True
        ordering = ["name", "-version"]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            self._refuse_content_change(kwargs.get("update_fields"))
        super().save(*args, **kwargs)

    def _refuse_content_change(self, update_fields) -> None:
        """Raise ImmutableVersionError if a run uses this version and a content field differs from the DB."""
        fields = [f for f in self.CONTENT_FIELDS if update_fields is None or f in update_fields]
        if not fields or not self.runs.exists():
            return
        stored = type(self).objects.filter(pk=self.pk).values(*fields).first()
        if stored is None:
            return
        changed = [f for f in fields if stored[f] != getattr(self, f)]
        if changed:
            raise ImmutableVersionError(
                f"{self} is used by a run and cannot change ({', '.join(changed)}); create a new version instead."
            )


class GpuJob(QueuedWork):
    """The abstract model of a job on the first training queue that moves like a run (Evaluation,
    TeacherJob): the lifecycle columns of a run (QueuedWork) and its progress (done of total).
    Its writes are webapp.resources.jobs.JobLifecycle; its worker side is workers/jobs.py."""

    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True

    @property
    def progress(self) -> float:
        return round(self.done / self.total, 4) if self.total else 0.0
