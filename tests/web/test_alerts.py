"""Alert rules (issue 21): the in-memory rule logic (windows, aggregations, baselines, clear and
re-fire), the monitor the metric sink runs (one alert per rule and run, mute, the live event),
run failed / stalled, deliveries, and the API's bad input and scoping."""
from __future__ import annotations

import json
import math
import time

import pytest

from webapp.alerts import services
from webapp.alerts.builtin import BUILTIN_RULES
from webapp.alerts.engine import RuleSpec, RuleState, RunRules
from webapp.alerts.housekeeping import check_stalled
from webapp.alerts.models import Alert, AlertRule, Delivery
from webapp.alerts.monitor import RunMonitor
from webapp.runs import live
from webapp.runs.models import MetricKey, MetricPoint, Run


def feed(state: RuleState, values, start: int = 1) -> list:
    return [(i, v.fire) for i, x in enumerate(values, start) if (v := state.observe(i, x)) is not None]


# ---------------------------------------------------------------- rule logic (no database)
def test_mean_window_fires_once_when_full_then_clears_and_fires_again():
    st = RuleState(RuleSpec(1, "adv/zero_var_groups", "above", window=3, aggregation="mean", threshold=0.8))
    # steps 1-2: partial window, no verdict even though the values are high
    assert feed(st, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]) == [(3, True), (5, False), (9, True)]


@pytest.mark.parametrize("agg,fires_at", [("last", 3), ("min", 4), ("max", 2)])
def test_aggregations(agg, fires_at):
    st = RuleState(RuleSpec(1, "grad_norm", "above", window=2, aggregation=agg, threshold=5.0))
    assert feed(st, [6.0, 1.0, 7.0, 8.0])[0] == (fires_at, True)


def test_first_window_baseline_entropy_collapse():
    st = RuleState(RuleSpec(1, "policy/entropy", "below", window=2, aggregation="mean", threshold=0.3,
                            baseline="first_window"))
    verdicts = feed(st, [4.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.2])
    assert verdicts == [(6, True)]  # mean(1.0, 0.5) = 0.75 < 0.3 x 4.0 = 1.2
    assert st.first == 4.0


def test_running_median_baseline_grad_spike_waits_for_history():
    st = RuleState(RuleSpec(1, "grad_norm", "above", threshold=10.0, baseline="running_median"))
    assert feed(st, [1.0, 100.0]) == []  # no history yet: no verdict
    st = RuleState(RuleSpec(1, "grad_norm", "above", threshold=10.0, baseline="running_median"))
    assert feed(st, [1.0, 1.2, 0.9, 1.1, 1.0, 1.0, 50.0, 1.0]) == [(7, True), (8, False)]


def test_change_below_is_a_plateau_and_nonfinite_values_are_skipped():
    st = RuleState(RuleSpec(1, "reward/self", "change_below", window=2, aggregation="mean", threshold=0.01))
    assert feed(st, [0.1, 0.2, math.nan, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5]) == [(9, True)]


def test_nonfinite_fires_and_clears():
    st = RuleState(RuleSpec(1, "loss", "nonfinite"))
    assert feed(st, [1.0, math.inf, math.nan, 0.5]) == [(2, True), (4, False)]


def test_run_rules_update_keeps_unchanged_windows_and_firing_state():
    spec = RuleSpec(1, "grad_norm", "above", window=2, aggregation="mean", threshold=5.0)
    rules = RunRules([spec, RuleSpec(2, "", "stalled", threshold=10.0)])
    assert list(rules.by_metric) == ["grad_norm"]  # stalled is housekeeping's
    assert rules.observe(1, {"grad_norm": 9.0, "loss": 1.0}) == []
    rules.update([spec])
    assert [v.fire for v in rules.observe(2, {"grad_norm": 9.0})] == [True]
    rules.update([RuleSpec(1, "grad_norm", "above", window=2, aggregation="mean", threshold=50.0)])
    assert [v.fire for v in rules.observe(3, {"grad_norm": 9.0})] == []  # new window, firing kept
    assert [v.fire for v in rules.observe(4, {"grad_norm": 9.0})] == [False]


# ---------------------------------------------------------------- monitor, services (Postgres, Redis)
@pytest.fixture
def run(team, user):
    return Run.objects.create(team=team, name="r", method="gft", config={}, created_by=user, status="running",
                              step=0)


def _steps(start: int, values: list[float], metric: str = "grad_norm") -> dict:
    return {start + i: {metric: v, "loss": 1.0} for i, v in enumerate(values)}


def _stream_alerts(run_id: int) -> list[dict]:
    out = []
    for _, fields in live.client().xrange(live.stream_key(run_id)):
        if b"event" in fields and json.loads(fields[b"event"]).get("kind") == "alert":
            out.append(json.loads(fields[b"event"]))
    return out


def test_monitor_one_alert_until_it_clears_then_a_new_one_mute_stays_quiet(team, run, django_capture_on_commit_callbacks):
    rule = services.create_rule(team, name="big grad", metric="grad_norm", condition="above", window=2,
                                aggregation="mean", threshold=5.0)
    mon = RunMonitor(run.pk)
    with django_capture_on_commit_callbacks(execute=True):
        mon.observe(_steps(1, [9.0, 9.0, 9.0, 9.0]))  # fires at step 2, stays firing
    alerts = list(Alert.objects.filter(rule=rule, run=run))
    assert [(a.step, a.state) for a in alerts] == [(2, "firing")]
    assert alerts[0].values == {"value": 9.0, "threshold": 5.0}
    assert set(AlertRule.objects.filter(team=team).exclude(builtin="").values_list("builtin", flat=True)) == set(BUILTIN_RULES)
    events = _stream_alerts(run.pk)
    assert [(e["state"], e["step"], e["rule"]) for e in events] == [("firing", 2, "big grad")]
    with django_capture_on_commit_callbacks(execute=True):
        mon.observe(_steps(5, [1.0, 1.0, 9.0, 9.0]))  # clears at 5 (mean 5 is not above 5), fires again at 8
    assert [(a.step, a.state, a.cleared_step) for a in Alert.objects.filter(rule=rule).order_by("id")] == [
        (2, "cleared", 5), (8, "firing", None)]
    assert [e["state"] for e in _stream_alerts(run.pk)] == ["firing", "cleared", "firing"]
    with django_capture_on_commit_callbacks(execute=True):
        services.set_muted(rule, True)  # announced in Redis: the monitor re-reads its rules at its next check
    Alert.objects.filter(rule=rule).update(state="cleared")
    mon._checked_at = -1e9
    mon.observe({})
    assert rule.pk not in {st.spec.id for states in mon.rules.by_metric.values() for st in states}
    with django_capture_on_commit_callbacks(execute=True):
        mon.observe(_steps(9, [1.0, 1.0, 9.0, 9.0]))
    assert Alert.objects.filter(rule=rule, state="firing").count() == 0


def test_builtin_entropy_rule_with_cancel_action_asks_the_run_to_stop(team, run, django_capture_on_commit_callbacks):
    RunMonitor(run.pk)._load()  # creates the built-in rules
    rule = AlertRule.objects.get(team=team, builtin="entropy_collapse")
    services.update_rule(rule, window=1, threshold=0.5, action="cancel")
    mon = RunMonitor(run.pk)
    with django_capture_on_commit_callbacks(execute=True):
        mon.observe(_steps(1, [3.0, 2.5, 1.0], metric="policy/entropy"))
    alert = Alert.objects.get(rule=rule)
    assert alert.step == 3 and alert.values["baseline"] == 3.0
    run.refresh_from_db()
    assert run.cancel_requested and live.client().exists(live.cancel_key(run.pk))


def test_run_failed_and_nonfinite_loss_fire_from_the_status_signal(team, run, django_capture_on_commit_callbacks):
    from webapp.runs import services as runs

    with django_capture_on_commit_callbacks(execute=True):
        runs.transition(run, "failed", message="step 3: loss is nan, training stopped", error="x")
    assert set(Alert.objects.filter(run=run).values_list("rule__builtin", flat=True)) == {"run_failed", "nonfinite_loss"}


def test_stalled_run_fires_and_clears(team, run):
    run.step = 5
    run.save()
    AlertRule.objects.create(team=team, name="stall", condition="stalled", threshold=10.0)
    key = MetricKey.objects.create(name="time/step")
    t0 = time.time() - 100
    MetricPoint.objects.bulk_create([MetricPoint(run_id=run.pk, key=key, step=s, value=1.0, wall_time=t0 + s)
                                     for s in range(1, 6)])
    assert check_stalled(min_s=1.0) == [run.pk]  # silent ~95 s > 10 x 1 s
    assert check_stalled(min_s=1.0) == []  # one alert until it clears
    assert check_stalled(now=t0 + 6, min_s=1.0) == [] and not Alert.objects.filter(state="firing").exists()


def test_email_and_webhook_deliveries_record_their_status(team, user, run, mailoutbox):
    user.email = "alice@example.org"
    user.save()
    hook = services.create_webhook(team, name="down", url="http://127.0.0.1:9/hook")  # nothing listens on 9
    rule = services.create_rule(team, name="r", metric="loss", condition="nonfinite")
    alert = services.fire(rule, run, 3, {"value": None})
    email = Delivery.objects.get(alert=alert, channel="email")
    assert services.deliver(email.pk) == "delivered"
    assert mailoutbox[0].to == ["alice@example.org"] and "run #" in mailoutbox[0].body
    webhook = Delivery.objects.get(alert=alert, webhook=hook)
    with pytest.raises(services.DeliveryError):
        services.deliver(webhook.pk)
    assert services.deliver(webhook.pk, last_try=True) == "failed"
    webhook.refresh_from_db()
    assert webhook.attempts == 2 and webhook.last_error


# ---------------------------------------------------------------- API
def test_api_bad_input_is_400_naming_the_field(api_client, team):
    bad = [({"metric": "policy/entropyy"}, "metric"), ({"window": 0}, "window"), ({"window": 100_000}, "window"),
           ({"condition": "sideways"}, "condition"), ({"metric": "", "condition": "above"}, "metric"),
           ({"baseline": "first_window", "condition": "nonfinite"}, "baseline")]
    for change, field in bad:
        body = {"name": "x", "metric": "loss", "condition": "above", "threshold": 1.0, **change}
        r = api_client.post("/api/alert-rules/", body, format="json")
        assert r.status_code == 400 and field in r.json(), (change, r.json())
    assert not AlertRule.objects.filter(name="x").exists()
    for url in ("ftp://example.org/x", "http://10.1.2.3/hook", "http://localhost:8000/hook", "http://[::1]/x"):
        r = api_client.post("/api/alert-webhooks/", {"name": "w", "url": url}, format="json")
        assert r.status_code == 400 and "url" in r.json(), url
    r = api_client.post("/api/alert-webhooks/", {"name": "w", "url": "http://127.0.0.1:1/x"}, format="json")
    assert r.status_code == 201  # ALERT_WEBHOOK_ALLOW_HOSTS (tests/pytest_env.py)


def test_api_crud_scoping_and_acknowledge(api_client, other_user, team, run):
    from rest_framework.test import APIClient

    from webapp.accounts.models import ApiToken

    rules = api_client.get("/api/alert-rules/").json()["results"]
    assert {r["builtin"] for r in rules} >= set(BUILTIN_RULES)
    builtin = next(r for r in rules if r["builtin"] == "entropy_collapse")
    r = api_client.patch(f"/api/alert-rules/{builtin['id']}/", {"threshold": 0.5, "muted": True}, format="json")
    assert r.status_code == 200 and r.json()["threshold"] == 0.5 and r.json()["muted"]
    assert api_client.delete(f"/api/alert-rules/{builtin['id']}/").status_code == 409
    r = api_client.post("/api/alert-rules/", {"name": "kl", "metric": "policy/kl_start", "condition": "above",
                                              "threshold": 0.2, "window": 5, "aggregation": "max"}, format="json")
    assert r.status_code == 201
    mine = r.json()["id"]
    alert = services.fire(mine, run, 7, {"value": 0.3})
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(other_user, 'o')[1]}")
    assert other.get(f"/api/alert-rules/{mine}/").status_code == 404
    assert other.patch(f"/api/alert-rules/{mine}/", {"threshold": 1}, format="json").status_code == 404
    assert other.post(f"/api/alerts/{alert.pk}/acknowledge/").status_code == 404
    assert other.get(f"/api/alerts/?run={run.pk}").json()["results"] == []
    listed = api_client.get(f"/api/alerts/?run={run.pk}").json()["results"]
    assert [(a["step"], a["rule_name"], a["state"]) for a in listed] == [(7, "kl", "firing")]
    r = api_client.post(f"/api/alerts/{alert.pk}/acknowledge/")
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "alice"
    assert api_client.get("/api/alerts/?run=x").status_code == 400
    assert api_client.delete(f"/api/alert-rules/{mine}/").status_code == 204


def test_feed_page_acknowledge_and_mute(auth_client, team, run):
    rule = services.create_rule(team, name="kl", metric="policy/kl_start", condition="above", threshold=0.2)
    alert = services.fire(rule, run, 4, {"value": 0.3})
    page = auth_client.get("/alerts/").content.decode()
    assert "kl" in page and "Entropy collapse" in page and "Acknowledge" in page
    assert auth_client.post(f"/alerts/{alert.pk}/acknowledge/").status_code == 302
    assert auth_client.post(f"/alerts/rules/{rule.pk}/mute/", {"muted": "1"}).status_code == 302
    alert.refresh_from_db()
    rule.refresh_from_db()
    assert alert.acknowledged_by is not None and rule.muted
    r = auth_client.post("/alerts/rules/new/", {"name": "bad", "metric": "nope", "condition": "above", "window": 1,
                                                "aggregation": "last", "threshold": 1, "baseline": "none",
                                                "severity": "info", "action": "none"})
    assert r.status_code == 400 and not AlertRule.objects.filter(name="bad").exists()


def test_viewer_sees_the_feed_without_controls_they_cannot_use(client, team, run):
    """A viewer reads alerts and rules; acknowledge, mute, edit and the new-rule / new-webhook forms
    are writers' (each answers 403 to a viewer), so the page does not offer them."""
    from django.contrib.auth import get_user_model

    from webapp.accounts.models import Membership

    rule = services.create_rule(team, name="kl", metric="policy/kl_start", condition="above", threshold=0.2)
    alert = services.fire(rule, run, 4, {"value": 0.3})
    viewer = get_user_model().objects.create_user("vera", password="x-pass-123456")
    Membership.objects.create(user=viewer, team=team, role=Membership.Role.VIEWER)
    client.force_login(viewer)
    page = client.get("/alerts/").content.decode()
    assert "kl" in page and "Entropy collapse" in page and f"#{run.pk}" in page
    for control in ("<button>Acknowledge</button>", "Mute", "rule-edit-link", "Add rule", "Add webhook"):
        assert control not in page, control
    assert client.post(f"/alerts/{alert.pk}/acknowledge/").status_code == 403
    assert client.post(f"/alerts/rules/{rule.pk}/edit/", {"name": "x"}).status_code == 403


def test_rule_edit_page_same_checks_as_the_api(auth_client, other_client, team, django_capture_on_commit_callbacks):
    """An existing rule (a built-in one here) is edited from a form: each bad value is a 400 naming
    the field with nothing saved, like the API's; a good one is saved and announced to running
    monitors; another team's rule is a 404."""
    auth_client.get("/alerts/")  # creates the built-in rules
    rule = AlertRule.objects.get(team=team, builtin="grad_spike")
    url = f"/alerts/rules/{rule.pk}/edit/"
    page = auth_client.get(url)
    assert page.status_code == 200 and 'value="Gradient spike"' in page.content.decode()
    good = {"name": "Gradient spike", "metric": "grad_norm", "condition": "above", "window": 3, "aggregation": "max",
            "threshold": 20, "baseline": "running_median", "severity": "critical", "action": "cancel", "enabled": "on"}
    bad = [({"metric": "grad_normm"}, "metric"), ({"window": 0}, "window"), ({"window": 100_000}, "window"),
           ({"threshold": 1e13}, "threshold"), ({"condition": "sideways"}, "condition"),
           ({"condition": "nonfinite"}, "baseline"), ({"condition": "stalled"}, "metric"), ({"name": ""}, "name")]
    for change, field in bad:
        r = auth_client.post(url, {**good, **change})
        assert r.status_code == 400 and field in r.context["form"].errors, (change, r.context["form"].errors)
        api = auth_client.patch(f"/api/alert-rules/{rule.pk}/", {**good, **change, "enabled": True},
                                content_type="application/json")
        assert api.status_code == 400 and field in api.json(), (change, api.json())
    assert AlertRule.objects.get(pk=rule.pk).window == 1  # nothing saved
    version = live.client().get(services.rules_version_key(team.pk))
    with django_capture_on_commit_callbacks(execute=True):
        assert auth_client.post(url, good).status_code == 302
    rule.refresh_from_db()
    assert (rule.window, rule.aggregation, rule.threshold, rule.action, rule.builtin) == (3, "max", 20.0, "cancel",
                                                                                          "grad_spike")
    assert not rule.muted and rule.enabled
    assert live.client().get(services.rules_version_key(team.pk)) != version  # monitors re-read their rules
    assert f"/alerts/rules/{rule.pk}/edit/" in auth_client.get("/alerts/").content.decode()
    assert other_client.get(url).status_code == 404 and other_client.post(url, good).status_code == 404
