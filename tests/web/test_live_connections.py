"""Open live streams must not hold Postgres connections (there are only ~100 of them)."""
from __future__ import annotations

import httpx
import pytest
from django.db import connection

from webapp.runs.models import Run


def _backends() -> int:
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cur.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_open_sse_streams_hold_no_database_connection(live_server_url, client, user, team):
    run = Run.objects.create(team=team, name="live", method="gft", config={}, created_by=user)
    client.force_login(user)
    cookies = {"sessionid": client.cookies["sessionid"].value}
    with httpx.Client(base_url=live_server_url, cookies=cookies, timeout=10) as http:
        http.get(f"/runs/{run.pk}/")  # warm the server's own connection
        before = _backends()
        streams = [http.stream("GET", f"/runs/{run.pk}/stream/") for _ in range(8)]
        responses = [s.__enter__() for s in streams]
        try:
            for r in responses:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                next(r.iter_lines())  # the stream has started: access was checked
            assert _backends() <= before + 1
        finally:
            for s in streams:
                s.__exit__(None, None, None)
