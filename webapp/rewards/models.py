"""Reward configs: a reward spec of gft_core's registry, stored as data, versioned."""
from __future__ import annotations

from django.conf import settings
from django.db import models


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

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"
