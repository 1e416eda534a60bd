"""Reads of the alerts app, always through webapp.accounts.scoping."""
from __future__ import annotations

from django.db.models import QuerySet

from webapp.accounts.scoping import scoped

from .models import Alert, AlertRule, Delivery, Webhook


def rules(user) -> QuerySet[AlertRule]:
    return scoped(user, AlertRule.objects.all()).order_by("team_id", "id")


def alerts(user) -> QuerySet[Alert]:
    return (scoped(user, Alert.objects.select_related("rule", "acknowledged_by"))
            .prefetch_related("deliveries__webhook").order_by("-fired_at", "-id"))


def webhooks(user) -> QuerySet[Webhook]:
    return scoped(user, Webhook.objects.all()).order_by("team_id", "id")


def firing_on_run(run) -> list[Alert]:
    """The run's firing alerts (the run page's banner when it loads); the caller scoped the run."""
    return list(Alert.objects.filter(run=run, state=Alert.State.FIRING).select_related("rule").order_by("fired_at"))


def last_deliveries(team, limit: int = 20) -> list[Delivery]:
    return list(Delivery.objects.filter(alert__team=team).select_related("alert__rule", "webhook")[:limit])
