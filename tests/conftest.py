"""Shared fixtures: real Postgres (pytest-django's test database), real Redis, real processes.

The environment (test Redis database, temporary artifact and model roots) is set by the plugin
tests/pytest_env.py, loaded before Django reads its settings.
Subprocess fixtures (Celery worker, uvicorn) point at the same test database, so tests that use
them need `transactional_db` (their rows must be committed to be seen).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = (ROOT.parent / "shared" / "data").resolve()


def pytest_sessionstart(session):
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()


# ---------------------------------------------------------------- users and teams
@pytest.fixture
def team(db):
    from webapp.accounts.models import Team

    return Team.objects.create(name="Alpha", slug="alpha")


@pytest.fixture
def other_team(db):
    from webapp.accounts.models import Team

    return Team.objects.create(name="Beta", slug="beta")


@pytest.fixture
def user(team):
    from django.contrib.auth import get_user_model

    from webapp.accounts.models import Membership

    u = get_user_model().objects.create_user("alice", password="alice-pass-123")
    Membership.objects.create(user=u, team=team, role=Membership.Role.MEMBER)
    return u


@pytest.fixture
def other_user(other_team):
    """A user of another team: must get 404 on everything of `team`."""
    from django.contrib.auth import get_user_model

    from webapp.accounts.models import Membership

    u = get_user_model().objects.create_user("bob", password="bob-pass-123")
    Membership.objects.create(user=u, team=other_team, role=Membership.Role.ADMIN)
    return u


@pytest.fixture
def auth_client(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def other_client(other_user):
    from django.test import Client

    c = Client()
    c.force_login(other_user)
    return c


@pytest.fixture
def api_token(user) -> str:
    from webapp.accounts.models import ApiToken

    return ApiToken.issue(user, "tests")[1]


@pytest.fixture
def api_client(api_token):
    from rest_framework.test import APIClient

    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token}")
    return c


# ---------------------------------------------------------------- real processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _test_database_url() -> str:
    from django.conf import settings

    db = settings.DATABASES["default"]
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child process that must use the test database and test Redis."""
    env = dict(os.environ)
    env.update(DATABASE_URL=_test_database_url(), PYTHONUNBUFFERED="1", **extra)
    return env


class Proc:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str]):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"process exited early:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"{text!r} not seen in {timeout}s:\n{self.log()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a Celery worker and its pool children)."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=30)

    def stop(self) -> None:
        self.kill(signal.SIGTERM) if self.popen.poll() is None else None
        self._log.close()


def start_worker(tmp_path: Path, queues: str = "gpu,default", name: str = "w1") -> Proc:
    """A real Celery worker process, configured as in production (prefork, 1 process, 1 task per child)."""
    args = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queues, "-n", f"{name}@%h",
            "--concurrency", "1", "--prefetch-multiplier", "1", "--max-tasks-per-child", "1",
            "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    proc = Proc(args, tmp_path / f"worker-{name}.log", subprocess_env())
    proc.wait_for_log("ready.", timeout=90)
    return proc


def purge_queues() -> None:
    """Drop task messages left by earlier tests, so a new worker starts with this test's tasks."""
    from workers.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.client.delete("gpu", "default", "unacked", "unacked_index")


@pytest.fixture
def celery_worker(transactional_db, tmp_path):
    """A real worker on the gpu and default queues, started on empty queues."""
    purge_queues()
    proc = start_worker(tmp_path)
    yield proc
    proc.stop()


@pytest.fixture
def live_server_url(transactional_db, tmp_path):
    """The ASGI app under uvicorn (as in production: SSE needs ASGI), on a free port."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--host", "127.0.0.1", "--port", str(port),
            "--timeout-graceful-shutdown", "2", "--log-level", "warning"]
    proc = Proc(args, tmp_path / "uvicorn.log", subprocess_env())
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.popen.poll() is not None:
                raise RuntimeError(proc.log())
            time.sleep(0.2)
    yield url
    proc.stop()


# ---------------------------------------------------------------- browser
@pytest.fixture
def chromium():
    """Debian's Chromium driven by Playwright (no `playwright install`: there is no internet).
    Skips, saying why, when the binary or the Python package is missing."""
    from tests.browser.support import ARGS, CHROMIUM

    if CHROMIUM is None:
        pytest.skip("no chromium binary (apt-get install chromium) for the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()
        # Under Playwright's loop Django's connection is a context-local one of its own: close it,
        # or it keeps the test database open at teardown.
        from django.db import connections

        connections.close_all()
