"""The platform's spine: settings, start-up checks, state machine, tokens, teams, metric table."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

from webapp.accounts.models import ApiToken, Membership, Team
from webapp.runs import live
from webapp.runs.models import MetricKey, MetricPoint, Run, RunEvent
from webapp.runs.services import TransitionError, request_cancel, transition

from ..conftest import ROOT


def _run_python(code: str, **env_overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_missing_secret_key_outside_debug_refuses_to_start():
    proc = _run_python("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='webapp.settings'; django.setup()")
    assert proc.returncode != 0
    assert "SECRET_KEY is not set" in proc.stderr


_ENSURE_SERVICES = "from stack.launcher import Stack, ensure_services; ensure_services(Stack())"


@pytest.mark.parametrize(
    ("var", "url", "expected"),
    [
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere", "Cannot reach Postgres at postgres://postgres@127.0.0.1:1/"),
        ("REDIS_URL", "redis://127.0.0.1:1/0", "Cannot reach Redis at redis://127.0.0.1:1/0"),
    ],
)
def test_unreachable_service_gives_one_clear_line(var, url, expected):
    proc = _run_python(_ENSURE_SERVICES, **{var: url})
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_password_is_not_in_unreachable_message():
    proc = _run_python(_ENSURE_SERVICES, DATABASE_URL="postgres://u:hunter2@127.0.0.1:1/x")
    assert "hunter2" not in proc.stderr and "u:***@" in proc.stderr


# ---------------------------------------------------------------- state machine
@pytest.fixture
def run(team, user):
    return Run.objects.create(team=team, name="r", method="gft", config={}, created_by=user)


def test_lifecycle_goes_through_transition_and_logs_events(run):
    transition(run, Run.Status.RUNNING, worker="w1")
    assert run.status == "running" and run.attempt == 1 and run.started_at and run.worker == "w1"
    transition(run, Run.Status.FAILED, message="boom", error="boom")
    assert run.finished_at and run.error == "boom"
    transition(run, Run.Status.QUEUED, message="resume")  # resume keeps the id
    assert run.status == "queued" and run.error == "" and run.finished_at is None
    kinds = list(RunEvent.objects.filter(run=run).values_list("kind", "from_status", "to_status"))
    assert kinds == [("status", "queued", "running"), ("status", "running", "failed"), ("resume", "failed", "queued")]


# running -> queued is allowed (a stopping worker re-queues its run); a user's resume of a running
# run is refused by launch.resume_run (tests/e2e/test_faults.py).
@pytest.mark.parametrize(("frm", "to"), [("queued", "succeeded"), ("succeeded", "queued"), ("failed", "running")])
def test_forbidden_transitions_raise(run, frm, to):
    Run.objects.filter(pk=run.pk).update(status=frm)
    with pytest.raises(TransitionError):
        transition(run.pk, to)
    assert Run.objects.get(pk=run.pk).status == frm


def test_status_change_is_published_on_the_run_stream(run, django_capture_on_commit_callbacks):
    live.client().delete(live.stream_key(run.pk))
    with django_capture_on_commit_callbacks(execute=True):
        transition(run, Run.Status.RUNNING)
    entries = live.client().xrange(live.stream_key(run.pk))
    assert len(entries) == 1 and b'"status": "running"' in entries[0][1][b"event"]


def test_cancel_queued_is_immediate_and_running_sets_flag(run, team, user):
    request_cancel(run, by="alice")
    assert run.status == "cancelled"
    other = Run.objects.create(team=team, name="r2", method="gft", config={}, created_by=user)
    transition(other, Run.Status.RUNNING)
    request_cancel(other)
    assert other.cancel_requested and other.status == "running"
    assert live.client().get(live.cancel_key(other.pk)) == b"1"


# ---------------------------------------------------------------- teams and tokens
def test_api_token_is_hashed_at_rest(user):
    token, raw = ApiToken.issue(user, "laptop")
    stored = ApiToken.objects.filter(pk=token.pk).values_list("digest", "hint").get()
    assert raw not in stored and raw.startswith("gft_") and len(stored[0]) == 64


def test_token_authentication_accepts_valid_rejects_revoked(user):
    from rest_framework.exceptions import AuthenticationFailed
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from webapp.accounts.auth import ApiTokenAuthentication

    token, raw = ApiToken.issue(user, "x")
    request = Request(APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {raw}"))
    assert ApiTokenAuthentication().authenticate(request)[0] == user
    token.revoked = True
    token.save()
    with pytest.raises(AuthenticationFailed):
        ApiTokenAuthentication().authenticate(Request(APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {raw}")))


def test_team_switcher_only_switches_to_own_teams(auth_client, user, other_team):
    mine = Team.objects.create(name="Gamma", slug="gamma")
    Membership.objects.create(user=user, team=mine, role="viewer")
    assert auth_client.post("/accounts/team/", {"team": mine.pk, "next": "/"}).status_code == 302
    assert auth_client.session["current_team_id"] == mine.pk
    assert auth_client.post("/accounts/team/", {"team": other_team.pk}).status_code == 404


def test_invite_command_creates_team_and_user(db, capsys):
    call_command("invite", "Research Lab", "carol", "--role", "admin")
    out = capsys.readouterr().out
    assert "carol is admin of team 'Research Lab'" in out and "One-time password:" in out
    m = Membership.objects.get(user__username="carol")
    assert m.team.slug == "research-lab" and m.role == "admin"


def test_login_page_and_redirect(client, user):
    assert client.get("/").status_code == 302
    resp = client.post("/accounts/login/", {"username": "alice", "password": "alice-pass-123"})
    assert resp.status_code == 302
    assert client.get("/").status_code == 200


def test_healthz_reports_database_and_redis(client, db):
    resp = client.get("/accounts/healthz/")
    assert resp.status_code == 200 and resp.json() == {"database": "ok", "redis": "ok"}


# ---------------------------------------------------------------- metric table
def test_metric_point_primary_key_rejects_duplicates_and_serves_series_by_index(run):
    key = MetricKey.objects.create(name="loss")
    MetricPoint.objects.create(run=run, key=key, step=1, value=1.0, wall_time=0.0)
    with pytest.raises(IntegrityError), transaction.atomic():
        MetricPoint.objects.create(run=run, key=key, step=1, value=2.0, wall_time=0.0)
    with connection.cursor() as cur:
        cur.execute("SET enable_seqscan = off")
        cur.execute("EXPLAIN SELECT step, value FROM runs_metricpoint WHERE run_id = %s AND key_id = %s ORDER BY step",
                    [run.pk, key.pk])
        plan = "\n".join(r[0] for r in cur.fetchall())
    assert "runs_metricpoint_pkey" in plan and "Sort" not in plan
