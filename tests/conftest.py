"""Shared fixtures: real Postgres (pytest-django's test database), real Redis, real processes.

The environment (test Redis database, temporary artifact and model roots) is set by the plugin
tests/pytest_env.py, loaded before Django reads its settings.
Subprocess fixtures (Celery worker, uvicorn) point at the same test database, so tests that use
them need `transactional_db` (their rows must be committed to be seen). They, and the `chromium`
browser, are kept from one test to the next while consecutive tests ask for them (see "shared
processes"), so tests that use `celery_worker` run faster next to each other.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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


def _settle_worker(timeout: float = 5) -> bool:
    """Drop the waiting task messages, then wait for the one a worker may have taken to finish (late
    ack: it stays in `unacked` until it returns); False if it is still running."""
    from workers.celery import app

    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        client.delete("gpu", "default")
        time.sleep(0.2)  # a message just popped is added to `unacked` a moment later
        deadline = time.monotonic() + timeout
        while client.hlen("unacked") and time.monotonic() < deadline:
            time.sleep(0.1)
        return not client.hlen("unacked")


# ---------------------------------------------------------------- shared processes
# Starting a Celery worker or uvicorn costs seconds on a loaded 2-core machine (imports, Django
# setup), and most tests only need "one there". So one process is kept while consecutive tests ask
# for the same fixture with the same child environment (a test that sets another, e.g. a monkeypatched
# variable, gets a new one); it is stopped as soon as the next test does not ask for it, so no idle
# worker takes the tasks of a test that starts workers of its own. A test sees the same object as
# before: a Proc whose log() starts where the test began; kill()/stop() end the shared process and
# the next test gets a fresh one.
class SharedProc(Proc):
    """One test's view of a shared process: the same child, its log from this test's start on."""

    def __init__(self, proc: Proc):
        self.__dict__.update(proc.__dict__)
        self._offset = self.log_path.stat().st_size

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(self._offset)
            return f.read().decode(errors="replace")


class _Shared:
    """The process kept for one fixture between consecutive tests, with the environment it got."""

    def __init__(self, fixture: str):
        self.fixture, self.proc, self.env = fixture, None, None

    def get(self, env: dict[str, str], start) -> Proc:
        """The kept process if it is alive and has `env`; else a new one from start(), kept instead."""
        env = {k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"}  # pytest sets it per test
        if self.proc is not None and (self.proc.popen.poll() is not None or self.env != env):
            self.release()
        if self.proc is None:
            self.proc, self.env = start(), env
        return self.proc

    def release(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.stop()
        self.proc, self.env = None, None


_SHARED = {name: _Shared(name) for name in ("celery_worker", "live_server_url")}


def _release_unused(nextitem) -> None:
    wanted = getattr(nextitem, "fixturenames", ())
    for shared in _SHARED.values():
        if shared.fixture not in wanted:
            shared.release()
    if "chromium" not in wanted:
        _release_browser()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Stop what the next test does not ask for, after this test's own teardown; after the last test,
    before it (its teardown also drops the test database, which a child's connection would block)."""
    if nextitem is None:
        _release_unused(None)
    try:
        return (yield)
    finally:
        _release_unused(nextitem)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    """Also when the run stops early (-x, Ctrl-C): before the test database is dropped."""
    for shared in _SHARED.values():
        shared.release()
    _release_browser()


@pytest.fixture
def celery_worker(transactional_db, tmp_path_factory):
    """A real worker on the gpu and default queues, started on empty queues (the previous test's
    worker when it used one: it is idle, its queues purged)."""
    purge_queues()
    shared = _SHARED["celery_worker"]
    proc = shared.get(subprocess_env(), lambda: start_worker(tmp_path_factory.mktemp("worker")))
    yield SharedProc(proc)
    # Before the test's tables are emptied: nothing of this test may still run in the kept worker.
    if not _settle_worker():
        shared.release()
    purge_queues()


def _start_uvicorn(log_dir: Path, env: dict[str, str]) -> Proc:
    """uvicorn on a free port, answering (its address in `.url`)."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--host", "127.0.0.1", "--port", str(port),
            "--timeout-graceful-shutdown", "2", "--log-level", "warning"]
    proc = Proc(args, log_dir / "uvicorn.log", env)
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
    # The first request imports the views (seconds under load): done here, not in a test's timeout.
    urllib.request.urlopen(f"{url}/accounts/login/", timeout=120).close()
    proc.url = url
    return proc


@pytest.fixture
def live_server_url(transactional_db, tmp_path_factory):
    """The ASGI app under uvicorn (as in production: SSE needs ASGI), on a free port (a server kept
    from the previous test when its environment is the same)."""
    env = subprocess_env()
    shared = _SHARED["live_server_url"]
    proc = shared.get(env, lambda: _start_uvicorn(tmp_path_factory.mktemp("uvicorn"), env))
    yield proc.url


# ---------------------------------------------------------------- browser
_BROWSER: list = []  # [playwright context manager, browser] while consecutive tests use `chromium`


def _release_browser() -> None:
    if _BROWSER:
        from django.db import connections

        manager, browser = _BROWSER
        _BROWSER.clear()
        browser.close()
        connections.close_all()  # those opened while Playwright's loop ran (see `chromium`)
        manager.__exit__(None, None, None)
        connections.close_all()  # the thread's own


@pytest.fixture
def chromium():
    """Debian's Chromium driven by Playwright (no `playwright install`: there is no internet).
    Skips, saying why, when the binary or the Python package is missing. The browser is kept for the
    next test when it uses `chromium` too; the contexts (cookies, pages) a test opened are closed after it."""
    from tests.browser.support import ARGS, CHROMIUM

    if CHROMIUM is None:
        pytest.skip("no chromium binary (apt-get install chromium) for the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    if _BROWSER and not _BROWSER[1].is_connected():
        _release_browser()
    if not _BROWSER:
        manager = sync_api.sync_playwright()
        p = manager.__enter__()
        _BROWSER.extend([manager, p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)])
    browser = _BROWSER[1]
    yield browser
    for ctx in list(browser.contexts) if browser.is_connected() else ():
        ctx.close()
    # Under Playwright's loop Django's connection is a context-local one of its own: close it,
    # or it keeps the test database open at teardown.
    from django.db import connections

    connections.close_all()
