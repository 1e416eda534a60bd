"""Writes of the alerts app: rules, firing and clearing alerts, acknowledging, muting, webhooks and
their deliveries. Alerts fire from the metric sink (webapp.alerts.monitor), housekeeping (stalled)
and the run status signal (failed); each fire notifies the run page (its live stream), the team's
webhooks and e-mail (a Celery task per delivery, so a target that is down never slows training).
"""
from __future__ import annotations

import ipaddress
import logging
import math
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from gft_core.metric_names import METRIC_NAMES, system_metric_names
from webapp import dispatch
from webapp.runs import live
from webapp.runs.models import Run

from .models import MAX_WINDOW, Action, Alert, AlertRule, Condition, Delivery, Webhook

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_S = 5.0
DELIVERY_RETRIES = 5  # after the first try; backoff() seconds apart
STALL_MAX_MULTIPLE = 1000.0
THRESHOLD_MAX = 1e12  # |threshold|; the API's field bounds and the page's form both end up here


class RuleError(ValueError):
    """A rule setting that cannot be: 400 naming the field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class DeliveryError(RuntimeError):
    """A delivery failed in a way worth retrying."""


# ---------------------------------------------------------------------------- rules
def metric_names() -> tuple[str, ...]:
    """The trainer's metrics and the worker's system metrics (GPU memory alerts, say)."""
    return METRIC_NAMES + system_metric_names()


def check_rule(fields: dict) -> dict:
    """Cross-field checks and ranges of a rule's settings, for the API and the page's forms alike
    (each field's type and choices are the serializer's / form's)."""
    cond = fields.get("condition")
    metric = fields.get("metric", "") or ""
    window = fields.get("window", 1)
    threshold = fields.get("threshold", 0.0)
    if cond in (Condition.STALLED, Condition.FAILED):
        if metric:
            raise RuleError("metric", f"A {cond} rule watches the run, not a metric: leave metric empty.")
    elif metric not in metric_names():
        raise RuleError("metric", f"Unknown metric {metric!r}: one of {', '.join(metric_names())}.")
    if not 1 <= window <= MAX_WINDOW:
        raise RuleError("window", f"The window must be 1..{MAX_WINDOW} steps.")
    if not (math.isfinite(threshold) and abs(threshold) <= THRESHOLD_MAX):
        raise RuleError("threshold", f"The threshold must be a finite number within ±{THRESHOLD_MAX:g}.")
    if cond == Condition.STALLED and not 1.0 <= threshold <= STALL_MAX_MULTIPLE:
        raise RuleError("threshold", f"A stalled rule's threshold is a multiple of the median step time: "
                                     f"1..{STALL_MAX_MULTIPLE:g}.")
    if fields.get("baseline", "none") != "none" and cond not in (Condition.ABOVE, Condition.BELOW):
        raise RuleError("baseline", "A baseline only applies to above and below rules.")
    return fields


def rules_version_key(team_id: int) -> str:
    """Redis key bumped on every rule change of a team: running monitors re-read their rules from
    the database only when it moved (a Redis GET every few seconds instead of a query)."""
    return f"alerts:team:{team_id}:rules"


def _rules_changed(team_id: int) -> None:
    def bump() -> None:
        try:
            live.client().incr(rules_version_key(team_id))
        except Exception as exc:  # noqa: BLE001 - monitors also re-read every FULL_RELOAD_S
            log.warning("team %s: could not announce a rule change: %s", team_id, exc)

    transaction.on_commit(bump)


def create_rule(team, **fields) -> AlertRule:
    check_rule(fields)
    rule = AlertRule.objects.create(team=team, **fields)
    _rules_changed(team.pk)
    return rule


def delete_rule(rule: AlertRule) -> None:
    team_id = rule.team_id
    rule.delete()
    _rules_changed(team_id)


def update_rule(rule: AlertRule, **fields) -> AlertRule:
    """Change a rule (a built-in one keeps its key); checked as a whole before anything is saved."""
    current = {f: getattr(rule, f) for f in ("metric", "condition", "window", "aggregation", "threshold", "baseline")}
    check_rule({**current, **fields})
    for name, value in fields.items():
        setattr(rule, name, value)
    rule.save()
    _rules_changed(rule.team_id)
    return rule


def set_muted(rule: AlertRule, muted: bool) -> AlertRule:
    rule.muted = muted
    rule.save(update_fields=["muted", "updated_at"])
    _rules_changed(rule.team_id)
    return rule


# ---------------------------------------------------------------------------- alerts
def _format(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def alert_message(rule: AlertRule, run: Run, step: int, values: dict) -> str:
    shown = ", ".join(f"{k} {_format(v)}" for k, v in values.items() if k != "detail")
    detail = f" {values['detail']}" if values.get("detail") else ""
    return (f"[{rule.severity}] {rule.name} on run #{run.pk} {run.name} at step {step}: {rule.describe()}"
            f"{f' ({shown})' if shown else ''}.{detail}")


def fire(rule: AlertRule | int, run: Run | int, step: int, values: dict) -> Alert | None:
    """Fire `rule` on `run` (None if the rule is muted or disabled now, or already firing on it).

    After the commit: a live event on the run's stream (the page's banner), a delivery task per
    webhook and one for e-mail, and the rule's action (cancel: the run checkpoints at its next step).
    """
    rule = AlertRule.objects.get(pk=rule) if isinstance(rule, int) else rule
    run = Run.objects.get(pk=run) if isinstance(run, int) else run
    rule.refresh_from_db(fields=["enabled", "muted"])  # a mute made a moment ago counts
    if not rule.active:
        return None
    try:
        with transaction.atomic():
            alert = Alert.objects.create(rule=rule, run=run, team_id=run.team_id, step=step, values=values,
                                         message=alert_message(rule, run, step, values))
            _queue_deliveries(alert)
            transaction.on_commit(lambda: _publish(alert))
            if rule.action == Action.CANCEL:
                transaction.on_commit(lambda: _cancel(run, rule))
    except IntegrityError:
        return None  # already firing on this run (alerts_one_firing_per_rule_run): one alert until it clears
    log.warning("alert %s: %s", alert.pk, alert.message)
    return alert


def clear(rule_id: int, run_id: int, step: int | None = None) -> int:
    """Clear the rule's firing alert on the run; the banner goes away. Returns how many were cleared."""
    alerts = list(Alert.objects.filter(rule_id=rule_id, run_id=run_id, state=Alert.State.FIRING))
    for alert in alerts:
        Alert.objects.filter(pk=alert.pk).update(state=Alert.State.CLEARED, cleared_at=timezone.now(), cleared_step=step)
        alert.state, alert.cleared_step = Alert.State.CLEARED, step
        _publish(alert)
    return len(alerts)


def clear_where(run_id: int, conditions: tuple[str, ...]) -> int:
    rule_ids = set(Alert.objects.filter(run_id=run_id, state=Alert.State.FIRING, rule__condition__in=conditions)
                   .values_list("rule_id", flat=True))
    return sum(clear(rid, run_id) for rid in rule_ids)


def acknowledge(alert: Alert, user) -> Alert:
    if alert.acknowledged_by_id is None:
        alert.acknowledged_by, alert.acknowledged_at = user, timezone.now()
        alert.save(update_fields=["acknowledged_by", "acknowledged_at"])
    return alert


def live_payload(alert: Alert) -> dict:
    """The stream event of an alert (docs/INTERFACES.md, Redis): the run page's banner."""
    rule = alert.rule
    return {"kind": "alert", "alert": alert.pk, "state": alert.state, "rule": rule.name, "rule_id": rule.pk,
            "severity": rule.severity, "step": alert.step, "values": alert.values, "message": alert.message,
            "action": rule.action, "cleared_step": alert.cleared_step}


def _publish(alert: Alert) -> None:
    try:
        live.publish_event(alert.run_id, live_payload(alert))
    except Exception as exc:  # noqa: BLE001 - the page also shows firing alerts when it loads
        log.warning("alert %s: could not publish to the run's stream: %s", alert.pk, exc)


def _cancel(run: Run, rule: AlertRule) -> None:
    from webapp.runs import services as runs

    try:
        runs.request_cancel(run, by=f"alert rule {rule.name}")
    except runs.TransitionError:
        pass  # already finished
    except Exception as exc:  # noqa: BLE001 - the alert itself is stored and sent; say why it did not cancel
        log.error("alert rule %s could not cancel run %s: %s", rule.pk, run.pk, exc)


# ---------------------------------------------------------------------------- webhooks, e-mail
def check_webhook_url(url: str) -> str:
    """http(s) only, and not to a private, loopback, link-local or reserved address (the server
    must not be made to call its own network) unless the host is in ALERT_WEBHOOK_ALLOW_HOSTS."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RuleError("url", "A webhook URL must be http:// or https:// with a host.")
    host = parts.hostname
    if host in settings.ALERT_WEBHOOK_ALLOW_HOSTS:
        return url
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError, UnicodeError):
        raise RuleError("url", f"The host {host!r} does not resolve.") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%")[0])
        if not addr.is_global:
            raise RuleError("url", f"The host {host!r} resolves to {addr}, a private or loopback address; "
                                   "set ALERT_WEBHOOK_ALLOW_HOSTS to allow it.")
    return url


def create_webhook(team, *, name: str, url: str, enabled: bool = True) -> Webhook:
    check_webhook_url(url)
    return Webhook.objects.create(team=team, name=name, url=url, enabled=enabled)


def _queue_deliveries(alert: Alert) -> None:
    rows = [Delivery(alert=alert, webhook=h, channel=Delivery.Channel.WEBHOOK, target=h.url)
            for h in Webhook.objects.filter(team_id=alert.team_id, enabled=True)]
    if settings.ALERT_EMAIL:
        emails = sorted(set(get_user_model().objects.filter(memberships__team_id=alert.team_id, is_active=True)
                            .exclude(email="").values_list("email", flat=True)))
        if emails:
            rows.append(Delivery(alert=alert, channel=Delivery.Channel.EMAIL, target=",".join(emails)))
    for d in Delivery.objects.bulk_create(rows):
        dispatch.send(dispatch.DELIVER_ALERT, [d.pk], on_error=lambda exc, pk=d.pk: _broker_down(pk, exc))


def _broker_down(delivery_id: int, exc: Exception) -> None:
    Delivery.objects.filter(pk=delivery_id).update(status=Delivery.Status.FAILED,
                                                   last_error=f"could not queue the delivery: {exc}")


def backoff(retries: int) -> int:
    """Seconds before retry number `retries` + 1: 2, 4, 8, 16, 32."""
    return min(300, 2 ** (retries + 1))


def deliver(delivery_id: int, *, last_try: bool = False) -> str:
    """Send one delivery (the Celery task workers.alert_tasks.deliver_alert). Raises DeliveryError
    to be retried unless `last_try`; records the status, attempts and last error either way."""
    d = Delivery.objects.select_related("alert__rule", "alert__run").filter(pk=delivery_id).first()
    if d is None or d.status == Delivery.Status.DELIVERED:
        return "skipped"
    d.attempts += 1
    try:
        if d.channel == Delivery.Channel.WEBHOOK:
            d.response_code = _post_webhook(d.target, d.alert.message)
        else:
            send_mail(f"[GFT Studio] {d.alert.rule.name} on run #{d.alert.run_id}", d.alert.message,
                      settings.DEFAULT_FROM_EMAIL, d.target.split(","))
    except (DeliveryError, OSError) as exc:
        d.status = Delivery.Status.FAILED if last_try else Delivery.Status.RETRYING
        d.last_error = str(exc)[:2000]
        d.save(update_fields=["attempts", "status", "last_error", "response_code", "updated_at"])
        if last_try:
            return d.status
        raise DeliveryError(str(exc)) from exc
    except RuleError as exc:  # the URL now resolves somewhere private: never retried
        d.status, d.last_error = Delivery.Status.FAILED, str(exc)
        d.save(update_fields=["attempts", "status", "last_error", "updated_at"])
        return d.status
    d.status, d.last_error = Delivery.Status.DELIVERED, ""
    d.save(update_fields=["attempts", "status", "last_error", "response_code", "updated_at"])
    return d.status


def _post_webhook(url: str, text: str) -> int:
    import httpx

    check_webhook_url(url)  # again at send time: the name may resolve elsewhere now
    try:
        resp = httpx.post(url, json={"text": text}, timeout=WEBHOOK_TIMEOUT_S, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
    if not 200 <= resp.status_code < 300:
        raise DeliveryError(f"HTTP {resp.status_code}: {resp.text[:200]}")
    return resp.status_code
