"""Alert rules, alerts, webhooks and their deliveries (issue 21)."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

MAX_WINDOW = 1000  # steps; the in-memory window of a rule (webapp.alerts.engine) holds at most 2x this


class Condition(models.TextChoices):
    ABOVE = "above", "above"
    BELOW = "below", "below"
    CHANGE_ABOVE = "change_above", "changes by more than"
    CHANGE_BELOW = "change_below", "changes by less than (plateau)"
    NONFINITE = "nonfinite", "is NaN or inf"
    STALLED = "stalled", "no new step for N x the median step time"
    FAILED = "failed", "the run failed"


class Aggregation(models.TextChoices):
    LAST = "last", "last"
    MEAN = "mean", "mean"
    MIN = "min", "min"
    MAX = "max", "max"


class Baseline(models.TextChoices):
    """What the threshold is relative to: an absolute number, or a multiple of the run's own
    level, because healthy entropy and gradient norms differ by orders of magnitude between models."""

    NONE = "none", "absolute threshold"
    FIRST_WINDOW = "first_window", "x the mean of the run's first window"
    RUNNING_MEDIAN = "running_median", "x the running median of earlier steps"


class Severity(models.TextChoices):
    INFO = "info", "info"
    WARNING = "warning", "warning"
    CRITICAL = "critical", "critical"


class Action(models.TextChoices):
    NONE = "none", "notify only"
    CANCEL = "cancel", "cancel the run (it checkpoints at its next step)"


class AlertRule(models.Model):
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=120)
    builtin = models.CharField(max_length=40, blank=True, help_text="Key of the built-in GFT rule, blank for team rules")
    metric = models.CharField(max_length=100, blank=True, help_text="A metric name (gft_core METRIC_NAMES)")
    condition = models.CharField(max_length=15, choices=Condition.choices)
    window = models.PositiveIntegerField(default=1, help_text="Steps aggregated (1..MAX_WINDOW)")
    aggregation = models.CharField(max_length=4, choices=Aggregation.choices, default=Aggregation.LAST)
    threshold = models.FloatField(default=0.0)
    baseline = models.CharField(max_length=15, choices=Baseline.choices, default=Baseline.NONE)
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.WARNING)
    action = models.CharField(max_length=6, choices=Action.choices, default=Action.NONE)
    enabled = models.BooleanField(default=True)
    muted = models.BooleanField(default=False, help_text="Evaluated nowhere and notifies nobody until unmuted")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team", "id"]
        constraints = [models.UniqueConstraint(fields=["team", "builtin"], condition=~Q(builtin=""),
                                               name="alerts_one_builtin_per_team")]

    def __str__(self) -> str:
        return self.name

    @property
    def active(self) -> bool:
        return self.enabled and not self.muted

    def describe(self) -> str:
        """The condition in words, for the feed, e-mails and webhooks."""
        c = self.condition
        if c == Condition.FAILED:
            return "the run failed"
        if c == Condition.STALLED:
            return f"no new step for {self.threshold:g} x the median step time"
        if c == Condition.NONFINITE:
            return f"{self.metric} is NaN or inf"
        over = f"{self.aggregation} over {self.window} step{'s' if self.window != 1 else ''}"
        if c in (Condition.CHANGE_ABOVE, Condition.CHANGE_BELOW):
            more = "more" if c == Condition.CHANGE_ABOVE else "less"
            return f"{self.metric} ({over}) changes by {more} than {self.threshold:g} from the window before"
        rel = {Baseline.NONE: "", Baseline.FIRST_WINDOW: " x its first-window mean",
               Baseline.RUNNING_MEDIAN: " x its running median"}[self.baseline]
        return f"{self.metric} ({over}) {c} {self.threshold:g}{rel}"


class Alert(models.Model):
    class State(models.TextChoices):
        FIRING = "firing", "firing"
        CLEARED = "cleared", "cleared"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="alerts")
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="alerts")
    step = models.PositiveIntegerField(default=0, help_text="The step that triggered it")
    values = models.JSONField(default=dict, help_text="value, threshold, baseline at that step")
    message = models.TextField(blank=True)
    state = models.CharField(max_length=7, choices=State.choices, default=State.FIRING)
    fired_at = models.DateTimeField(auto_now_add=True)
    cleared_at = models.DateTimeField(null=True, blank=True)
    cleared_step = models.PositiveIntegerField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="+")
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-fired_at", "-id"]
        indexes = [models.Index(fields=["team", "-fired_at"]), models.Index(fields=["run", "state"])]
        # One alert per rule and run until it clears, even if two processes (the sink and
        # housekeeping) decide to fire at once: the loser's insert fails and it reuses the winner.
        constraints = [models.UniqueConstraint(fields=["rule", "run"], condition=Q(state="firing"),
                                               name="alerts_one_firing_per_rule_run")]


class Webhook(models.Model):
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="alert_webhooks")
    name = models.CharField(max_length=120)
    url = models.URLField(max_length=500)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["team", "id"]


class Delivery(models.Model):
    """One notification of one alert to one target (a webhook, or the team's e-mail addresses)."""

    class Channel(models.TextChoices):
        WEBHOOK = "webhook", "webhook"
        EMAIL = "email", "e-mail"

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        RETRYING = "retrying", "retrying"
        DELIVERED = "delivered", "delivered"
        FAILED = "failed", "failed"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    webhook = models.ForeignKey(Webhook, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries")
    channel = models.CharField(max_length=7, choices=Channel.choices)
    target = models.CharField(max_length=2000)
    status = models.CharField(max_length=9, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
