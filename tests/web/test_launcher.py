"""The fallbacks of `./studio up` on a machine without Postgres or Redis: real embedded servers."""
from __future__ import annotations

import psycopg
import redis

from stack import launcher

from ..conftest import free_port


def test_embedded_postgres_starts_and_takes_connections(tmp_path, monkeypatch):
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


def test_embedded_redis_binary_serves_streams(tmp_path, monkeypatch):
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


def test_services_stdout_is_only_the_urls_the_test_command_evals(tmp_path):
    """`./studio test` evals this output: progress ("created database ...") must go to stderr."""
    import os
    import subprocess
    import sys
    import uuid

    from webapp.settings import database_from_url

    name = f"gft_launcher_{uuid.uuid4().hex[:8]}"
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    env = {**os.environ, "DATABASE_URL": f"{base}/{name}", "GFT_VAR_DIR": str(tmp_path)}
    try:
        proc = subprocess.run([sys.executable, "-m", "stack.launcher", "services"], env=env,
                              capture_output=True, text=True, timeout=120, check=True)
        assert f"created database {name}" in proc.stderr
        lines = proc.stdout.splitlines()
        assert [line.split("=", 1)[0] for line in lines] == ["DATABASE_URL", "REDIS_URL"]
    finally:
        db = database_from_url(os.environ["DATABASE_URL"])
        with psycopg.connect(dbname="postgres", user=db["USER"], host=db["HOST"], port=db["PORT"],
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
