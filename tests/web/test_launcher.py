"""`gft-studio` (stack/launcher.py) with real processes and servers: the embedded fallbacks of
`./studio up` on a machine without Postgres or Redis, the test command stopping what it started,
and the supervisor of `up` (killed processes restarted, dropped database connections survived)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time

import httpx
import psutil
import psycopg
import pytest
import redis

from stack import launcher
from tests.runs_support import tiny_assets  # noqa: F401

from ..conftest import Proc, _test_database_url, free_port, purge_queues, subprocess_env


def test_embedded_postgres_starts_takes_connections_and_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "VAR", tmp_path)
    stack = launcher.Stack()
    try:
        url = launcher._start_embedded_postgres(stack)
        launcher._ensure_database(url)
        from webapp.settings import database_from_url

        db = database_from_url(url)
        with psycopg.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"]) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "gft_studio"
    finally:
        stack.stop()
    # Stopped with the stack (`./studio test` used to leave it running).
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"], connect_timeout=2)


def test_embedded_redis_binary_serves_streams_and_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "VAR", tmp_path)
    monkeypatch.setattr(launcher.shutil, "which", lambda name: None)  # as on a machine without redis-server
    stack = launcher.Stack()
    url = f"redis://127.0.0.1:{free_port()}/0"
    try:
        launcher._start_redis(stack, url)
        r = redis.Redis.from_url(url)
        r.xadd("s", {"data": "1"})
        assert r.xlen("s") == 1
    finally:
        stack.stop()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()


def _started_pids(log: str, name: str) -> list[int]:
    """Pids of `name` in the launcher's log ("started web (pid 12)", "restarted web (pid 13, ...")."""
    return [int(p) for p in re.findall(rf"started {re.escape(name)} \(pid (\d+)", log)]


def test_test_command_stops_the_servers_it_started(tmp_path, monkeypatch, capfd):
    """`./studio test` on a machine where nothing answers at the default Redis URL: it starts one,
    pytest runs against it, and it is gone when the command returns."""
    port = free_port()
    monkeypatch.setattr(launcher, "VAR", tmp_path / "var")
    monkeypatch.setattr(launcher, "DEFAULT_REDIS", f"redis://127.0.0.1:{port}/0")
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("DATABASE_URL", _test_database_url())
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_inner.py").write_text(
        "import os, redis\n"
        "def test_uses_the_started_redis():\n"
        f"    assert os.environ['REDIS_URL'] == 'redis://127.0.0.1:{port}/0'\n"
        "    assert redis.Redis.from_url(os.environ['REDIS_URL']).ping()\n")

    rc = launcher.run_tests([str(tmp_path / "test_inner.py"), "-q", "-p", "no:django", "-p", "no:cacheprovider",
                             "-c", str(tmp_path / "pytest.ini")])
    out, err = capfd.readouterr()
    assert rc == 0, out + err
    assert "1 passed" in out
    [redis_pid] = _started_pids(err, "redis")
    assert not psutil.pid_exists(redis_pid) or psutil.Process(redis_pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_connect_timeout=2).ping()


def test_supervisor_restarts_an_exiting_process_with_growing_delays(capfd):
    stack = launcher.Stack()
    child = stack.start("crasher", [sys.executable, "-c", "raise SystemExit(3)"])
    try:
        deadline = time.monotonic() + 30
        while child.restarts < 2 and time.monotonic() < deadline:
            stack.supervise()
            time.sleep(0.1)
    finally:
        stack.stop()
    err = capfd.readouterr().err
    delays = [int(d) for d in re.findall(r"crasher \(pid \d+\) exited with code 3 after \d+ s; restarting it in (\d+) s", err)]
    assert delays[:2] == list(launcher.BACKOFF_S[:2]), err
    assert "restarted crasher" in err


def _terminate_backends_of(pid: int) -> int:
    """pg_terminate_backend for the Postgres connections of process `pid` (what a Postgres restart
    does to them); returns how many."""
    from django.conf import settings

    port = int(settings.DATABASES["default"]["PORT"] or 5432)
    client_ports = [c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp")
                    if c.raddr and c.raddr.port == port]
    if not client_ports:
        return 0
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE client_port = ANY(%s)",
                    [client_ports])
        return cur.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_up_restarts_killed_processes_and_survives_dropped_database_connections(tiny_assets, tmp_path):
    """`gft-studio up` on the test database: its own database connections are terminated, the web
    server and the housekeeping worker are SIGKILLed; the stack stays up, restarts both, the demo
    run starts training, housekeeping runs on its own worker, and SIGTERM then stops everything
    it started."""
    models = tmp_path / "models"
    shutil.copytree(tiny_assets["model"], models / "tiny-warm")  # the demo's model, without its warm-up
    port = free_port()
    env = subprocess_env(GFT_VAR_DIR=str(tmp_path / "var"), GFT_PORT=str(port), MODEL_ROOTS=str(models),
                         ARTIFACT_ROOT=str(tmp_path / "artifacts"))
    purge_queues()
    up = Proc([sys.executable, "-m", "stack.launcher", "up"], tmp_path / "up.log", env)

    def logs() -> str:
        worker_logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                              for p in sorted((tmp_path / "var" / "logs").glob("*.log")))
        return up.log()[-3000:] + worker_logs

    try:
        up.wait_for_log("GFT Studio is up", timeout=180)
        deadline = time.monotonic() + 30
        while not _terminate_backends_of(up.popen.pid):
            assert time.monotonic() < deadline, logs()
            time.sleep(0.2)
        up.wait_for_log("lost a connection", timeout=30)
        up.wait_for_log("connections are back", timeout=30)

        killed = {name: _started_pids(up.log(), name)[-1] for name in ("web", "worker-housekeeping")}
        for pid in killed.values():
            os.kill(pid, signal.SIGKILL)
        for name in killed:
            up.wait_for_log(f"restarted {name}", timeout=30)
        deadline = time.monotonic() + 90
        while True:  # the restarted web server answers
            try:
                if httpx.get(f"http://127.0.0.1:{port}/accounts/healthz/", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, logs()
            time.sleep(0.5)

        # The default worker validated the demo dataset, then the gpu worker took the demo run.
        deadline = time.monotonic() + 300
        while not re.search(r"demo run #\d+: running", up.log()):
            assert up.popen.poll() is None and time.monotonic() < deadline, logs()
            time.sleep(0.5)
        # Housekeeping (beat, every 15 s) runs on its own worker, never on the default one.
        worker_logs = tmp_path / "var" / "logs"
        deadline = time.monotonic() + 60
        while "workers.tasks.housekeeping[" not in (worker_logs / "worker-housekeeping.log").read_text():
            assert time.monotonic() < deadline, logs()
            time.sleep(0.5)
        assert "Task workers.tasks.housekeeping[" not in (worker_logs / "worker-default.log").read_text()

        up.popen.send_signal(signal.SIGTERM)
        up.popen.wait(timeout=90)
        assert up.popen.returncode == 0, logs()
        log = up.log()
        for name in ("web", "worker-gpu", "worker-default", "worker-housekeeping", "beat"):
            for pid in _started_pids(log, name):  # everything it started is gone
                assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, name
    finally:
        up.stop()
