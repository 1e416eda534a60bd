"""Auth hardening (issue 16 item 7): login lockout, API throttles, TLS settings, the placeholder
SECRET_KEY, token expiry and read-only scope, token revoke input, live streams that end when
access does."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from webapp.accounts.models import ApiToken, Membership
from webapp.runs.models import Run

from ..conftest import ROOT

pytestmark = pytest.mark.django_db


def _python(code: str, **env_overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SECRET_KEY", "DEBUG", "SECURE_COOKIES", "HSTS_SECONDS", "TRUST_X_FORWARDED_PROTO")}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


# ---------------------------------------------------------------- SECRET_KEY and TLS settings
def test_placeholder_secret_key_from_env_example_refuses_to_start():
    placeholder = next(line.split("=", 1)[1] for line in (ROOT / ".env.example").read_text().splitlines()
                       if line.startswith("SECRET_KEY="))
    proc = _python("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='webapp.settings'; django.setup()",
                   SECRET_KEY=placeholder, DEBUG="1")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "ImproperlyConfigured" in last and "SECRET_KEY is the placeholder from .env.example" in last


_TLS_PROBE = """
import django, json, os
os.environ['DJANGO_SETTINGS_MODULE'] = 'webapp.settings'
django.setup()
from django.test import Client
r = Client().get('/accounts/login/', HTTP_HOST='localhost', HTTP_X_FORWARDED_PROTO='https')
print(json.dumps({'hsts': r.headers.get('Strict-Transport-Security'), 'secure': bool(r.cookies['csrftoken']['secure'])}))
"""


def test_tls_settings_are_off_by_default_and_on_from_env():
    off = _python(_TLS_PROBE, SECRET_KEY="x" * 50)
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout.splitlines()[-1]) == {"hsts": None, "secure": False}
    on = _python(_TLS_PROBE, SECRET_KEY="x" * 50, SECURE_COOKIES="1", HSTS_SECONDS="3600", TRUST_X_FORWARDED_PROTO="1")
    assert on.returncode == 0, on.stderr
    assert json.loads(on.stdout.splitlines()[-1]) == {"hsts": "max-age=3600", "secure": True}


# ---------------------------------------------------------------- login lockout (django-axes)
def _fail_logins(client, url: str, username: str, times: int) -> list[int]:
    return [client.post(url, {"username": username, "password": "wrong-password"}).status_code for _ in range(times)]


def test_login_page_locks_out_after_failure_limit(client, user):
    limit = settings.AXES_FAILURE_LIMIT
    codes = _fail_logins(client, "/accounts/login/", "alice", limit)
    assert codes[:-1] == [200] * (limit - 1)  # the form again, "Wrong username or password"
    locked = client.post("/accounts/login/", {"username": "alice", "password": "alice-pass-123"})
    assert locked.status_code == 429
    assert "Too many login attempts" in locked.content.decode()
    assert "_auth_user_id" not in client.session  # the right password does not get in while locked


def test_successful_login_below_the_limit_works(client, user):
    _fail_logins(client, "/accounts/login/", "alice", settings.AXES_FAILURE_LIMIT - 1)
    ok = client.post("/accounts/login/", {"username": "alice", "password": "alice-pass-123"})
    assert ok.status_code == 302 and client.session["_auth_user_id"] == str(user.pk)


def test_admin_login_locks_out_too(client):
    get_user_model().objects.create_superuser("root", password="root-pass-123")
    _fail_logins(client, "/admin/login/", "root", settings.AXES_FAILURE_LIMIT)
    locked = client.post("/admin/login/", {"username": "root", "password": "root-pass-123"})
    assert locked.status_code == 429


# ---------------------------------------------------------------- API throttles
@pytest.fixture
def low_rates(settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {"anon": "100/min", "user": "7/min", "token": "3/min"}}


def test_api_token_rate_limit_answers_429_with_retry_after(low_rates, user):
    from rest_framework.test import APIClient

    a, b = APIClient(), APIClient()
    a.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user, 'a')[1]}")
    b.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user, 'b')[1]}")
    assert [a.get("/api/teams/").status_code for _ in range(3)] == [200] * 3
    over = a.get("/api/teams/")
    assert over.status_code == 429 and 0 < int(over["Retry-After"]) <= 60
    # Per token: another token of the same user still has its own budget (the user's 7/min is
    # not reached: 4 requests of token a count there, 3 of b).
    assert [b.get("/api/teams/").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_api_user_rate_limit_applies_to_sessions(low_rates, auth_client):
    codes = [auth_client.get("/api/teams/").status_code for _ in range(8)]
    assert codes == [200] * 7 + [429]


# ---------------------------------------------------------------- token expiry and scope
def _bearer(raw: str):
    from rest_framework.test import APIClient

    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return c


def test_expired_token_is_401(user):
    _, raw = ApiToken.issue(user, "old", expires_at=timezone.now() - timedelta(seconds=1))
    resp = _bearer(raw).get("/api/teams/")
    assert resp.status_code == 401 and "expired" in resp.json()["detail"]
    _, fresh = ApiToken.issue(user, "new", expires_at=timezone.now() + timedelta(days=1))
    assert _bearer(fresh).get("/api/teams/").status_code == 200


def test_read_only_token_reads_but_gets_403_on_writes(user, team):
    run = Run.objects.create(team=team, name="r", method="gft", config={}, created_by=user, status="running")
    _, raw = ApiToken.issue(user, "ro", read_only=True)
    c = _bearer(raw)
    assert c.get("/api/runs/").status_code == 200
    assert c.get(f"/api/runs/{run.pk}/").status_code == 200
    for resp in (c.post(f"/api/runs/{run.pk}/cancel/"), c.post("/api/runs/", {"dataset": 1, "reward_config": 1}),
                 c.post("/api/reward-configs/", {"name": "x", "spec": {"name": "gsm8k"}}, format="json")):
        assert resp.status_code == 403 and "read-only" in resp.json()["detail"]
    run.refresh_from_db()
    assert not run.cancel_requested


def test_token_page_creates_read_only_expiring_token(auth_client, user):
    resp = auth_client.post("/accounts/tokens/", {"name": "ci", "expires_in_days": "30", "scope": "read-only"})
    assert resp.status_code == 200 and 'id="new-token"' in resp.content.decode()
    token = ApiToken.objects.get(user=user, name="ci")
    assert token.read_only
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    assert "read-only" in auth_client.get("/accounts/tokens/").content.decode()
    default = auth_client.post("/accounts/tokens/", {"name": "cli2"})
    assert default.status_code == 200
    t2 = ApiToken.objects.get(user=user, name="cli2")
    assert not t2.read_only and t2.expires_at is None
    bad = auth_client.post("/accounts/tokens/", {"name": "x", "expires_in_days": "-1", "scope": "root"})
    assert bad.status_code == 400 and not ApiToken.objects.filter(name="x").exists()


def test_token_revoke_with_bad_or_foreign_id_is_4xx(auth_client, user, other_user):
    mine, _ = ApiToken.issue(user, "mine")
    theirs, _ = ApiToken.issue(other_user, "theirs")
    assert auth_client.post("/accounts/tokens/", {"revoke": "abc"}).status_code == 400
    assert auth_client.post("/accounts/tokens/", {"revoke": str(2**70)}).status_code == 400
    assert auth_client.post("/accounts/tokens/", {"revoke": str(theirs.pk)}).status_code == 404
    assert auth_client.post("/accounts/tokens/", {"revoke": str(mine.pk)}).status_code == 302
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.revoked and not theirs.revoked


# ---------------------------------------------------------------- live streams end with access
@pytest.fixture
def fast_recheck(monkeypatch):
    """The uvicorn child re-checks access every second (read from the environment at start)."""
    monkeypatch.setenv("SSE_RECHECK_S", "1")


def _read_until_closed(lines_iter, seconds: float) -> tuple[list[str], bool]:
    """Lines of an SSE response for up to `seconds`; True if the server ended the stream."""
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    for line in lines_iter:
        lines.append(line)
        if time.monotonic() > deadline:
            return lines, False
    return lines, True


@pytest.fixture
def streaming(fast_recheck, live_server_url, client, user, team):
    """(http client with the user's session on the uvicorn server, run, its open SSE lines)."""
    run = Run.objects.create(team=team, name="live", method="gft", config={}, created_by=user)
    client.force_login(user)
    cookies = {"sessionid": client.cookies["sessionid"].value}
    with httpx.Client(base_url=live_server_url, cookies=cookies, timeout=10) as http:
        with http.stream("GET", f"/runs/{run.pk}/stream/") as r:
            assert r.status_code == 200
            yield http, run, r.iter_lines()


@pytest.mark.django_db(transaction=True)
def test_stream_closes_after_logout(streaming):
    http, run, lines_iter = streaming
    lines, closed = _read_until_closed(lines_iter, 2.5)  # still allowed: keep-alives, no close
    assert not closed and ": keep-alive" in lines
    csrf = http.get("/accounts/login/").cookies["csrftoken"]
    assert http.post("/accounts/logout/", data={"csrfmiddlewaretoken": csrf}).status_code == 302
    lines, closed = _read_until_closed(lines_iter, 5)
    assert closed and "event: closed" in lines
    assert http.get(f"/runs/{run.pk}/stream/").status_code == 302  # to the login page


@pytest.mark.django_db(transaction=True)
def test_stream_closes_when_removed_from_team(streaming, user, team):
    http, run, lines_iter = streaming
    next(lines_iter)
    Membership.objects.filter(user=user, team=team).delete()
    lines, closed = _read_until_closed(lines_iter, 5)
    assert closed and "event: closed" in lines
    assert http.get(f"/runs/{run.pk}/stream/").status_code == 404


def test_api_still_answers_when_the_throttle_store_is_down(low_rates, settings, api_client):
    settings.CACHES = {**settings.CACHES, "throttle": {**settings.CACHES["throttle"],
                                                       "LOCATION": "redis://127.0.0.1:1/0"}}
    assert api_client.get("/api/teams/").status_code == 200
