"""Saved comparisons of runs, shared within a team."""
from __future__ import annotations

from django.conf import settings
from django.db import models


class Dashboard(models.Model):
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="dashboards")
    name = models.CharField(max_length=120)
    run_ids = models.JSONField(default=list, help_text="Runs in display order; the order fixes each run's colour")
    charts = models.JSONField(default=list, blank=True, help_text="Chart ids to show; empty = all")
    smoothing = models.FloatField(default=0.0)
    chart_settings = models.JSONField(default=dict, blank=True,
                                      help_text="Chart toolbar: log (bool), xmode (step|wall|relative), sync (bool)")
    leaderboard = models.JSONField(default=dict, blank=True,
                                   help_text="Leaderboard settings: suite id, pick (best|final), baseline run id")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="dashboard_name_unique")]

    def __str__(self) -> str:
        return self.name
