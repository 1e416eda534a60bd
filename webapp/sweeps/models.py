"""Sweeps: a base launch config, the parameters to vary, an Optuna study (in this database) that
picks them, and the trial runs it launched (SweepTrial; the Run model knows nothing of sweeps)."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse


class SweepStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    CANCELLED = "cancelled", "Cancelled"


class Sweep(models.Model):
    Status = SweepStatus

    class Strategy(models.TextChoices):
        GRID = "grid", "Grid"
        RANDOM = "random", "Random"
        TPE = "tpe", "Bayesian (TPE)"

    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="sweeps")
    name = models.CharField(max_length=200)
    base = models.JSONField(help_text="Launch inputs shared by every trial (dataset/reward config/eval suite as ids)")
    parameters = models.JSONField(help_text="{field: {values|choices: [...]} or {low, high, log}}, checked")
    strategy = models.CharField(max_length=10, choices=Strategy.choices)
    max_runs = models.PositiveIntegerField(help_text="Budget: trial runs in all")
    parallel = models.PositiveIntegerField(default=1, help_text="Trial runs queued or running at once")
    target = models.CharField(max_length=200, help_text="A metric key (eval/accuracy) or eval:<benchmark>/<metric>")
    direction = models.CharField(max_length=8, choices=[("max", "max"), ("min", "min")])
    target_mode = models.CharField(max_length=8, choices=[("final", "final"), ("best", "best")], default="final")
    pruner = models.JSONField(default=dict, blank=True, help_text='{} or {"name": "median"|"hyperband", ...}')
    seed = models.PositiveIntegerField(default=0, help_text="Seed of the sampler")
    asked = models.PositiveIntegerField(default=0, help_text="Trials asked of the study so far (the budget counts these)")
    study_name = models.CharField(max_length=100, unique=True)
    status = models.CharField(max_length=10, choices=SweepStatus.choices, default=SweepStatus.RUNNING, db_index=True)
    message = models.TextField(blank=True, help_text="Why the sweep stopped launching, if it did early")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"sweep #{self.pk} {self.name}"

    def get_absolute_url(self) -> str:
        return reverse("sweeps:detail", args=[self.pk])


class SweepTrial(models.Model):
    """One Optuna trial = one run. `state` mirrors what the study was told."""

    class State(models.TextChoices):
        RUNNING = "running", "Running"
        COMPLETE = "complete", "Complete"
        PRUNED = "pruned", "Pruned"
        FAILED = "failed", "Failed"

    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="trials")
    run = models.OneToOneField("runs.Run", on_delete=models.CASCADE, related_name="sweep_trial")
    number = models.PositiveIntegerField(help_text="Optuna trial number")
    trial_id = models.PositiveIntegerField(help_text="Optuna trial id in the study storage")
    params = models.JSONField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.RUNNING)
    value = models.FloatField(null=True, blank=True, help_text="The target value told to the study")
    pruned_step = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["number"]
        constraints = [models.UniqueConstraint(fields=["sweep", "number"], name="sweeptrial_unique_number")]
