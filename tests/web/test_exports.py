"""Exports that stream and reads that are bounded (issue 16 item 8): the CSV export and the raw
worker log are async iterators served chunk by chunk by the real ASGI application (memory stays
at one chunk, measured with tracemalloc); every ?limit=/max_points= has a cap (400 naming the
parameter above it); the metrics API holds a bounded number of points per response."""
from __future__ import annotations

import asyncio
import hashlib
import time
import tracemalloc
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from tests.runs_support import launch_inputs, reward_config, tiny_assets, toy_dataset  # noqa: F401
from webapp.api import views as api_views
from webapp.runs import launch, series
from webapp.runs.models import MetricKey

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def run(team, user, launch_inputs):
    return launch.submit_run(team, user, launch_inputs)


def add_points(run, key: str, n: int) -> None:
    """n points of `key` (steps 1..n), written by Postgres itself (fast); Run.step follows."""
    key_id = MetricKey.objects.get_or_create(name=key)[0].pk
    with connection.cursor() as cur:
        cur.execute("INSERT INTO runs_metricpoint (run_id, key_id, step, value, wall_time) "
                    "SELECT %s, %s, s, s * 0.5, 1.7e9 + s FROM generate_series(1, %s) AS s", [run.pk, key_id, n])
        cur.execute("UPDATE runs_run SET step = GREATEST(step, %s) WHERE id = %s", [n, run.pk])  # as the sink does


@pytest.fixture(autouse=True)
def close_connections_per_request(monkeypatch):
    """The ASGI handler runs each request's database work in a thread of its own; closing that
    connection at the end of the request lets the test database be dropped afterwards."""
    from django.db import connections

    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)


def asgi_get(user, path: str, query: dict, on_chunk=None) -> dict:
    """GET through webapp.asgi.application as uvicorn would call it; the body arrives chunk by
    chunk (on_chunk(bytes) for each). Returns status, headers, chunks, peak traced memory."""
    from webapp.asgi import application

    c = Client()
    c.force_login(user)
    cookie = f"sessionid={c.cookies['sessionid'].value}"
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": urlencode(query).encode(), "root_path": "",
             "headers": [(b"host", b"testserver"), (b"cookie", cookie.encode())],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
    out: dict = {"chunks": []}

    sent_request = []

    async def receive():
        if not sent_request:
            sent_request.append(1)
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected (Django cancels this wait at the end)

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body" and message.get("body"):
            if on_chunk:
                on_chunk(message["body"])
            out["chunks"].append(len(message["body"]))

    tracemalloc.start()
    try:
        asyncio.run(application(scope, receive, send))
        out["peak"] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return out


def test_csv_export_of_200k_points_streams_with_bounded_memory(run, user, monkeypatch):
    n = 200_000
    t_insert = time.monotonic()
    add_points(run, "loss", n)
    pages_read: list[int] = []
    at_first_rows: list[int] = []
    real_page = series.points_page

    def counting_page(*args, **kwargs):
        pages_read.append(1)
        return real_page(*args, **kwargs)

    monkeypatch.setattr(series, "points_page", counting_page)
    lines = [0]
    first_rows: list[bytes] = []
    last = [b""]

    def on_chunk(body: bytes) -> None:
        if body.count(b"\n") > 1 and not first_rows:
            at_first_rows.append(len(pages_read))  # pages read when the first rows went out
            first_rows.append(body)
        lines[0] += body.count(b"\n")
        last[0] = body

    t0 = time.monotonic()
    print(f"points written in {t0 - t_insert:.1f} s")
    got = asgi_get(user, reverse("runs:series_csv"), {"runs": run.pk, "keys": "loss"}, on_chunk)
    elapsed = time.monotonic() - t0
    assert got["status"] == 200 and got["headers"]["content-type"].startswith("text/csv")
    assert lines[0] == n + 1  # header + every point
    assert first_rows[0].startswith(f"{run.pk},loss,1,0.5,".encode())
    assert last[0].rstrip().splitlines()[-1].startswith(f"{run.pk},loss,{n},{n * 0.5},".encode())
    total = sum(got["chunks"])
    # Streamed: the first rows left after one page was read, of the n / EXPORT_PAGE_ROWS pages.
    assert at_first_rows == [1] and len(pages_read) == n // series.EXPORT_PAGE_ROWS + 1
    assert len(got["chunks"]) > n // series.EXPORT_PAGE_ROWS
    # Bounded: the peak of Python memory during the whole request is a fraction of the body.
    assert got["peak"] < total / 3, (got["peak"], total)
    print(f"export: {n} points, {total / 1e6:.1f} MB in {len(got['chunks'])} chunks, "
          f"peak traced memory {got['peak'] / 1e6:.2f} MB, {elapsed:.1f} s")


def test_raw_log_of_a_multi_mb_file_is_streamed(run, user):
    path = run.log_path
    path.parent.mkdir(parents=True, exist_ok=True)
    line = b"step 123: loss=0.4567 reward/mean=0.89 tokens_per_s=12345.6 (a worker log line)\n"
    body = line * (8 * 1024 * 1024 // len(line))
    size, digest = len(body), hashlib.sha256(body).digest()
    path.write_bytes(body)
    del body  # only its size and digest are kept
    received = hashlib.sha256()  # not the bytes themselves: they would count in the traced memory
    got = asgi_get(user, reverse("runs:logs", args=[run.pk]), {"raw": "1"}, received.update)
    assert got["status"] == 200 and got["headers"]["content-type"].startswith("text/plain")
    assert got["headers"]["content-length"] == str(size) and received.digest() == digest
    assert len(got["chunks"]) >= size // (256 * 1024)
    assert got["peak"] < size / 4, (got["peak"], size)
    print(f"raw log: {size / 1e6:.1f} MB in {len(got['chunks'])} chunks, peak traced memory "
          f"{got['peak'] / 1e6:.2f} MB")


def test_limits_above_their_cap_are_400_naming_the_parameter(api_client, auth_client, run):
    cap = api_views.METRICS_MAX_POINTS_PER_KEY
    for value in (cap + 1, 1, 10**12):
        r = api_client.get(f"/api/runs/{run.pk}/metrics/", {"max_points": value})
        assert r.status_code == 400 and "max_points" in r.json(), (value, r.content)
    assert api_client.get(f"/api/runs/{run.pk}/metrics/", {"max_points": cap}).status_code == 200
    r = api_client.get(f"/api/runs/{run.pk}/metrics/", {"keys": "x," * api_views.METRICS_KEYS_MAX_CHARS})
    assert r.status_code == 400 and "keys" in r.json()
    r = api_client.get("/api/runs/", {"limit": 1001})
    assert r.status_code == 400 and "limit" in r.json()
    r = auth_client.get(reverse("runs:series"), {"runs": run.pk, "keys": "loss", "max_points": 20_001})
    assert r.status_code == 400 and "max_points" in r.json()["error"]
    assert auth_client.get(reverse("runs:series"), {"runs": run.pk, "keys": "loss",
                                                    "max_points": 20_000}).status_code == 200


def test_metrics_api_answers_a_bounded_number_of_points_and_names_the_keys_left(api_client, run, settings):
    per_key = 60_000
    for key in ("a/loss", "b/loss", "c/loss", "d/loss"):
        add_points(run, key, per_key)
    url = f"/api/runs/{run.pk}/metrics/"
    first = api_client.get(url, {"max_points": 100_000}).json()
    budget = api_views.METRICS_MAX_POINTS_PER_RESPONSE
    assert sorted(first["metrics"]) == ["a/loss", "b/loss", "c/loss"]  # 180k points; a fourth would pass 200k
    assert sum(len(s["step"]) for s in first["metrics"].values()) <= budget
    assert first["more_keys"] == ["d/loss"]
    assert all(len(s["step"]) == per_key for s in first["metrics"].values())  # full resolution
    rest = api_client.get(url, {"max_points": 100_000, "keys": ",".join(first["more_keys"])}).json()
    assert list(rest["metrics"]) == ["d/loss"] and rest["more_keys"] == []
    small = api_client.get(url, {"max_points": 100}).json()  # downsampled: everything fits
    assert small["more_keys"] == [] and len(small["metrics"]) == 4
    assert all(len(s["step"]) <= 100 for s in small["metrics"].values())
