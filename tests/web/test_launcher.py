"""The fallbacks of `./studio up` on a machine without Postgres or Redis: real embedded servers."""
from __future__ import annotations

import psycopg
import redis

from webapp import launcher

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
