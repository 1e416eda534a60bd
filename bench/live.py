"""Live latency: trainer's sink.log() call -> the event arriving at an SSE client.

Three processes on loopback, as in production: uvicorn serving webapp.asgi (one worker), an
emitter process standing in for the trainers (one PostgresRedisSink per run, the sink the worker
uses, each logging `metrics` scalars at `rate` steps/s; the sinks' flush threads run as in a
worker), and this process holding the SSE clients (httpx async streaming on /runs/<id>/stream/,
logged in with a Django session cookie, `clients` spread evenly over the runs).
Latency of one event at one client = arrival time - the "t" of the stream entry, which is the
time.time() taken inside sink.log() (same machine, same clock). Lost = steps a client never got.
Database `bench_gft` (migrated here), Redis db 14. Runs with the sink's default flush interval
(what workers.tasks uses) and, for comparison, with a shorter one (--alt-flush).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from bench.common import (ROOT, Skip, Stat, django_env, flush_bench_redis, migrate, percentile, print_table, record,
                          services_up, setup_django, verdict)

DB = "bench_gft"
GOAL_P99_MS = 250.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_paced(sinks: list, steps: int, rate: float, scalars_for: Callable[[int], dict[str, float]]) -> None:
    """One trainer thread per sink logs steps 1..steps at `rate` steps/s (the sinks staggered over one
    step, as independent runs are), then closes its sink."""
    import threading

    def trainer(sink, offset: float) -> None:
        t0 = time.perf_counter() + offset
        for step in range(1, steps + 1):
            delay = t0 + (step - 1) / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sink.log(step, scalars_for(step))

    threads = [threading.Thread(target=trainer, args=(s, i / rate / len(sinks))) for i, s in enumerate(sinks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for sink in sinks:
        sink.close()


def emit(run_ids: list[int], metrics: int, rate: float, seconds: float, flush_interval: float | None) -> None:
    """The trainers: every run logs `metrics` scalars per step at `rate` steps/s for `seconds`."""
    from workers.sink import PostgresRedisSink

    names = [f"live/m{i}" for i in range(metrics)]
    steps = int(seconds * rate)
    kw = {} if flush_interval is None else {"flush_interval": flush_interval}
    sinks = [PostgresRedisSink(r, **kw) for r in run_ids]
    for s in sinks:
        s.start(total_steps=steps, start_step=0, config={})

    log_paced(sinks, steps, rate, lambda step: {k: step * 0.001 + i for i, k in enumerate(names)})
    print(json.dumps({"steps": steps}), flush=True)


async def _client(url: str, cookies: dict, run_id: int, lat: list, got: set, ready: asyncio.Event,
                  n_ready: list, n_total: int, stop: asyncio.Event) -> None:
    import httpx

    async with httpx.AsyncClient(cookies=cookies, timeout=httpx.Timeout(30.0, read=None)) as client:
        async with client.stream("GET", f"{url}/runs/{run_id}/stream/", headers={"Accept": "text/event-stream"}) as r:
            if r.status_code != 200:
                raise RuntimeError(f"SSE /runs/{run_id}/stream/ answered {r.status_code}: {(await r.aread())[:300]!r}")
            event = None
            first = True
            async for line in r.aiter_lines():  # ends when the task is cancelled (stop)
                if first:
                    first = False
                    n_ready[0] += 1
                    if n_ready[0] == n_total:
                        ready.set()
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event in (None, "metrics"):
                    now = time.time()
                    try:
                        d = json.loads(line[5:])
                    except ValueError:
                        continue
                    if "step" in d and "t" in d:
                        lat.append((now - d["t"]) * 1000.0)
                        got.add(d["step"])
                elif line == "":
                    event = None


async def _clients(url: str, cookies: dict, run_ids: list[int], n: int, start_emitter, steps_box: dict) -> dict:
    lat: list[float] = []
    gots: list[tuple[int, set]] = []
    ready, stop = asyncio.Event(), asyncio.Event()
    n_ready = [0]
    tasks = []
    for i in range(n):
        rid = run_ids[i % len(run_ids)]
        got: set = set()
        gots.append((rid, got))
        tasks.append(asyncio.create_task(_client(url, cookies, rid, lat, got, ready, n_ready, n, stop)))
    try:
        await asyncio.wait_for(ready.wait(), timeout=60)
    except asyncio.TimeoutError:
        for t in tasks:
            if t.done() and t.exception():
                raise t.exception()
        raise RuntimeError(f"only {n_ready[0]} of {n} SSE clients connected in 60 s")
    proc = start_emitter()
    conns = 0
    while proc.poll() is None:
        await asyncio.sleep(0.1)
        conns = max(conns, await asyncio.to_thread(_pg_connections))
        for t in tasks:
            if t.done() and t.exception():
                raise t.exception()
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"emitter failed:\n{out[-3000:]}\n{proc.stderr.read()[-3000:]}")
    steps = json.loads(out.strip().splitlines()[-1])["steps"]
    deadline = time.monotonic() + 3.0  # stragglers
    while time.monotonic() < deadline and any(len(g) < steps for _, g in gots):
        await asyncio.sleep(0.05)
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lost = sum(steps - len(g) for _, g in gots)
    steps_box["steps"] = steps
    return {"lat": lat, "lost": lost, "expected": steps * n, "pg_conns": conns}


def _pg_connections() -> int:
    """Connections to the bench database now (server, emitter, this process)."""
    from bench.common import pg_admin_conn

    with pg_admin_conn() as c:
        return c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (DB,)).fetchone()[0]


def one_config(url: str, cookies: dict, run_ids: list[int], a, flush_interval: float | None) -> dict:
    env = django_env(DB)

    def start_emitter():
        args = [sys.executable, "-m", "bench.live", "--role", "emit", "--run-ids", ",".join(map(str, run_ids)),
                "--metrics", str(a.metrics), "--rate", str(a.rate), "--seconds", str(a.seconds)]
        if flush_interval is not None:
            args += ["--flush", str(flush_interval)]
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    box: dict = {}
    return asyncio.run(_clients(url, cookies, run_ids, a.clients, start_emitter, box))


def _start_server(db: str = DB):
    """uvicorn serving webapp.asgi on a free loopback port, Django on bench database `db`."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--host", "127.0.0.1",
                               "--port", str(port), "--log-level", "warning", "--timeout-graceful-shutdown", "2"],
                              cwd=ROOT, env=django_env(db), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return f"http://127.0.0.1:{port}", server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"uvicorn did not start:\n{server.stdout.read().decode()[-3000:]}")
            time.sleep(0.2)


def _stop_server(server) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench live", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--metrics", type=int, default=100)
    p.add_argument("--rate", type=float, default=10.0, help="steps per second per run")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--alt-flush", type=float, default=0.1, help="second configuration's flush interval (0 = skip)")
    p.add_argument("--role", default="bench", help=argparse.SUPPRESS)
    p.add_argument("--run-ids", default="", help=argparse.SUPPRESS)
    p.add_argument("--flush", type=float, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.role == "emit":
        import django

        django.setup()
        emit([int(x) for x in a.run_ids.split(",")], a.metrics, a.rate, a.seconds, a.flush)
        return 0
    if a.quick:
        a.runs, a.metrics, a.seconds, a.clients, a.alt_flush = 2, 5, 1.0, 4, 0
    why = services_up()
    if why:
        raise Skip(why)
    from bench.common import have

    if not (have("workers.sink") and have("webapp.runs.views.live")):
        raise Skip("the SSE view (webapp/runs/views/live.py) or workers/sink.py is not available yet")
    migrate(DB)
    setup_django(DB)
    flush_bench_redis()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from webapp.accounts.models import Membership, Team
    from webapp.runs.models import Run

    team, _ = Team.objects.get_or_create(slug="bench-live", defaults={"name": "bench-live"})
    user = get_user_model().objects.filter(username="bench-live").first() or \
        get_user_model().objects.create_user("bench-live", password="bench-live-pass-123")
    Membership.objects.get_or_create(user=user, team=team, defaults={"role": Membership.Role.MEMBER})
    c = Client()
    c.force_login(user)
    from django.conf import settings

    cookies = {settings.SESSION_COOKIE_NAME: c.cookies[settings.SESSION_COOKIE_NAME].value}

    configs = [("default", None)] + ([(f"flush_interval={a.alt_flush}", a.alt_flush)] if a.alt_flush else [])
    results = []
    created: list[int] = []
    try:
        for label, fi in configs:
            # A fresh server per configuration: streams of the previous one leave no connections behind.
            url, server = _start_server()
            try:
                runs = [Run.objects.create(team=team, name=f"live bench {i}", method="gft", config={},
                                           status=Run.Status.RUNNING, created_by=user) for i in range(a.runs)]
                created += [r.pk for r in runs]
                results.append((label, one_config(url, cookies, [r.pk for r in runs], a, fi)))
            finally:
                _stop_server(server)
    finally:
        from webapp.runs.models import MetricPoint

        MetricPoint.objects.filter(run_id__in=created)._raw_delete(using="default")
        Run.objects.filter(pk__in=created).delete()
        flush_bench_redis()

    rows, out = [], []
    for label, r in results:
        lat = r["lat"]
        p50, p95, p99 = (percentile(lat, q) for q in (50, 95, 99))
        mx = max(lat) if lat else float("nan")
        rows.append([label, f"{a.runs} x {a.metrics} x {a.rate:g}/s, {a.seconds:g} s", a.clients, f"{len(lat):,}",
                     f"{p50:.0f}", f"{p95:.0f}", f"{p99:.0f}", f"{mx:.0f}", f"{r['lost']} of {r['expected']:,}",
                     r["pg_conns"]])
        ok = p99 < GOAL_P99_MS and r["lost"] == 0
        out.append((f"sink->SSE latency p50/p95/p99 ms, lost ({label})",
                    f"{p50:.0f}/{p95:.0f}/{p99:.0f} ms, lost {r['lost']}", f"p99 < {GOAL_P99_MS:.0f} ms, 0 lost", verdict(ok)))
    print_table("live: sink.log() -> SSE client latency (ms), loopback",
                ["sink config", "runs x metrics x rate", "clients", "events", "p50", "p95", "p99", "max", "lost",
                "max Postgres conns"], rows)
    record("live", out, quick=a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
