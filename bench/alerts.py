"""Alert rule evaluation (issue 21): what the rules cost per step per run, and whether one process
keeps up with 100 runs x 100 metrics at 10 steps/s (1,000 steps/s, 100,000 points/s).

Ours: webapp.alerts.monitor.RunMonitor.observe, as the metric sink calls it after each flush: the
team's rules (the 7 built-in metric rules + 3 team rules, 10 per run) in memory, rule reloads from
Postgres when they change, checked in Redis every CHECK_S, included. Peer: the same rules evaluated by a database query per rule per
step (the aggregate over the last W points of the metric, and the first-window / running-median
baseline), i.e. what an evaluator polling the stored metrics would do. Same steps, same rules.
Also: the paced load, 100 runs stepping at 10 steps/s for --seconds, all evaluated by one thread:
the busy share of each 100 ms tick (ours), and the steps/s the peer reaches.

Latency (issue 21: "an alert reaches the run page in under 1 s from the step that triggers it"):
uvicorn serving webapp.asgi, an emitter process standing in for the workers (one PostgresRedisSink
per run with the worker's flush observers, workers.sink.run_observers, logging 100 metrics at
10 steps/s), and one httpx SSE client per run on /runs/<id>/stream/, the stream the run page's
banner listens to. Every PROBE_EVERY-th step's loss jumps above a team rule's threshold (the next
step clears it). Latency = arrival of the alert event at the client - the time.time() taken in
sink.log() of the triggering step (the "t" of that step's stream entry; same machine, same clock).
Side by side: the same step's metrics event at the same client (what `live` measures).
Database `bench_alerts` (migrated here), Redis db 14.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import subprocess
import sys
import time

from bench.common import (ROOT, Stat, Skip, django_env, flush_bench_redis, migrate, percentile, print_table, record,
                          services_up, setup_django, verdict)

DB = "bench_alerts"
GOAL_US = 1000.0  # < 1 ms per step per run
GOAL_LATENCY_MS = 1000.0  # step -> alert at the run page's stream
PROBE_EVERY = 10  # steps; the probe rule fires on these and clears on the next
PROBE_RULE = "latency probe"


def _scalars(step: int, metrics: int, rng: random.Random) -> dict[str, float]:
    from gft_core.metric_names import METRIC_NAMES

    names = list(METRIC_NAMES)[:metrics] + [f"extra/m{i}" for i in range(max(0, metrics - len(METRIC_NAMES)))]
    d = {n: rng.random() for n in names}
    d["policy/entropy"] = 3.0 + rng.random()  # healthy: nothing fires, every rule runs its full path
    d["grad_norm"] = 1.0 + 0.1 * rng.random()
    d["dcr/rectified_frac"] = 0.2
    return d


def _healthy(scalars: dict[str, float], step: int) -> None:
    """The self-sample reward keeps rising: the steps are reused every 20, and a reward that cycles
    would look like a plateau to the built-in rule (which fires and clears; the figures are of the
    rules' evaluation, not of alerts being stored)."""
    scalars["reward/self"] = 0.001 * step


def _setup(runs: int):
    from django.contrib.auth import get_user_model

    from webapp.accounts.models import Team
    from webapp.alerts import services
    from webapp.alerts.builtin import ensure_builtin_rules
    from webapp.alerts.models import Alert, AlertRule
    from webapp.runs.models import Run

    Alert.objects.all().delete()
    Run.objects.filter(name__startswith="alerts-bench").delete()
    team, _ = Team.objects.get_or_create(name="alerts-bench", slug="alerts-bench")
    AlertRule.objects.filter(team=team).delete()
    ensure_builtin_rules(team)
    services.create_rule(team, name="kl", metric="policy/kl_start", condition="above", window=5, aggregation="max",
                         threshold=5.0)
    services.create_rule(team, name="loss jump", metric="loss", condition="change_above", window=10,
                         aggregation="mean", threshold=5.0)
    services.create_rule(team, name="reward low", metric="reward/mean", condition="below", window=20,
                         aggregation="min", threshold=-1.0)
    user = get_user_model().objects.filter(username="alerts-bench").first() or \
        get_user_model().objects.create_user("alerts-bench")
    return team, [Run.objects.create(team=team, name=f"alerts-bench-{i}", method="gft", config={}, created_by=user,
                                     status="running").pk for i in range(runs)]


def bench_ours(run_ids: list[int], steps: int, metrics: int) -> tuple[Stat, int]:
    """Microseconds per step per run of RunMonitor.observe (one step per call, as at 10 steps/s)."""
    from webapp.alerts.monitor import RunMonitor

    rng = random.Random(0)
    monitors = {r: RunMonitor(r) for r in run_ids}
    for r, m in monitors.items():
        m.observe({0: _scalars(0, metrics, rng)})  # loads the rules (DB), warm-up
    data = [{1 + s: _scalars(1 + s, metrics, rng)} for s in range(20)]  # reused: no RNG timed
    per_step = []
    for s in range(steps):
        step = s + 1
        scalars = next(iter(data[s % len(data)].values()))
        _healthy(scalars, step)
        t0 = time.perf_counter()
        for m in monitors.values():
            m.observe({step: scalars})
        per_step.append((time.perf_counter() - t0) / len(monitors) * 1e6)
    rules = sum(len(v) for v in next(iter(monitors.values())).rules.by_metric.values())
    return Stat.of(per_step), rules


def _store_points(run_ids: list[int], steps: int, metrics: int) -> dict[str, int]:
    """The peer reads stored points: COPY `steps` steps of every run into runs_metricpoint."""
    from workers.sink import PostgresRedisSink

    rng = random.Random(1)
    for r in run_ids:
        sink = PostgresRedisSink(r)  # no observers: the points only
        sink.start(total_steps=steps, start_step=0, config={})
        for s in range(1, steps + 1):
            sink.log(s, _scalars(s, metrics, rng))
        sink.close()
    from webapp.runs.models import MetricKey

    return dict(MetricKey.objects.values_list("name", "id"))


_AGG_SQL = {"last": "(array_agg(value ORDER BY step DESC))[1]", "mean": "avg(value)", "min": "min(value)",
            "max": "max(value)"}


def bench_peer(run_ids: list[int], steps: range, key_ids: dict[str, int]) -> Stat:
    """Microseconds per step per run: each metric rule = one query over its window (+ baseline)."""
    from django.db import connection

    from webapp.alerts.engine import METRIC_CONDITIONS
    from webapp.alerts.models import AlertRule

    team_rules = [r for r in AlertRule.objects.filter(team__name="alerts-bench", condition__in=METRIC_CONDITIONS)]
    per_step = []
    with connection.cursor() as cur:
        for step in steps:
            t0 = time.perf_counter()
            for run in run_ids:
                for rule in team_rules:
                    w = rule.window * (2 if rule.condition.startswith("change") else 1)
                    agg = "count(*) FILTER (WHERE value = 'NaN' OR value IN ('Infinity', '-Infinity'))" \
                        if rule.condition == "nonfinite" else _AGG_SQL[rule.aggregation]
                    cur.execute(f"SELECT {agg} FROM (SELECT step, value FROM runs_metricpoint WHERE run_id = %s "
                                f"AND key_id = %s AND step <= %s ORDER BY step DESC LIMIT %s) w",
                                (run, key_ids[rule.metric], step, w))
                    cur.fetchone()
                    if rule.baseline == "first_window":
                        cur.execute("SELECT avg(value) FROM (SELECT value FROM runs_metricpoint WHERE run_id = %s "
                                    "AND key_id = %s ORDER BY step LIMIT %s) f", (run, key_ids[rule.metric], rule.window))
                        cur.fetchone()
                    elif rule.baseline == "running_median":
                        cur.execute("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY value) FROM (SELECT value "
                                    "FROM runs_metricpoint WHERE run_id = %s AND key_id = %s AND step < %s "
                                    "ORDER BY step DESC LIMIT 100) h", (run, key_ids[rule.metric], step))
                        cur.fetchone()
            per_step.append((time.perf_counter() - t0) / len(run_ids) * 1e6)
    return Stat.of(per_step)


def paced_ours(run_ids: list[int], metrics: int, rate: float, seconds: float) -> tuple[float, float, int]:
    """100 runs stepping at `rate`: busy share of each tick (median, max) and ticks that overran."""
    from webapp.alerts.monitor import RunMonitor

    rng = random.Random(2)
    monitors = [RunMonitor(r) for r in run_ids]
    scalars = [_scalars(s, metrics, rng) for s in range(20)]
    for m in monitors:
        m.observe({0: scalars[0]})
    tick, busy, late = 1.0 / rate, [], 0
    t_next = time.perf_counter()
    for step in range(1, int(seconds * rate) + 1):
        _healthy(scalars[step % 20], step)
        t0 = time.perf_counter()
        for m in monitors:
            m.observe({step: scalars[step % 20]})
        spent = time.perf_counter() - t0
        busy.append(spent / tick)
        late += spent > tick
        t_next += tick
        time.sleep(max(0.0, t_next - time.perf_counter()))
    return Stat.of(busy).median, max(busy), late


def emit(run_ids: list[int], metrics: int, rate: float, seconds: float) -> None:
    """The workers of the latency phase: one sink per run with the worker's flush observers,
    stepping at `rate`; the loss of every PROBE_EVERY-th step trips the probe rule."""
    from bench.live import log_paced
    from workers.sink import PostgresRedisSink, run_observers

    rng = random.Random(3)
    data = [_scalars(s, metrics, rng) for s in range(20)]
    steps = int(seconds * rate)
    sinks = [PostgresRedisSink(r, observers=run_observers(r)) for r in run_ids]
    for sink in sinks:
        sink.start(total_steps=steps, start_step=0, config={})

    def scalars_for(step: int) -> dict[str, float]:
        scalars = {**data[step % 20], "loss": 10.0 if step % PROBE_EVERY == 0 else 1.0}
        _healthy(scalars, step)
        return scalars

    log_paced(sinks, steps, rate, scalars_for)
    print(json.dumps({"steps": steps}), flush=True)


async def _watch(url: str, cookies: dict, run_id: int, out: dict, ready: dict) -> None:
    """One run page's stream: the t of each step's metrics entry, then the probe alerts' latency.
    Like the page's EventSource, it reconnects with Last-Event-ID when the server ends the stream
    (the view ends it when its periodic access check cannot reach Postgres); counted in out."""
    import httpx

    t_of: dict[int, float] = {}
    last_id = ""
    async with httpx.AsyncClient(cookies=cookies, timeout=httpx.Timeout(30.0, read=None)) as client:
        while True:
            headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_id} if last_id else {})}
            async with client.stream("GET", f"{url}/runs/{run_id}/stream/", headers=headers) as r:
                if r.status_code != 200:
                    raise RuntimeError(f"SSE /runs/{run_id}/stream/ answered {r.status_code}")
                event = None
                async for line in r.aiter_lines():
                    ready[run_id] = True
                    if line.startswith("id:"):
                        last_id = line[3:].strip()
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        now = time.time()
                        out["last"] = time.monotonic()
                        if event == "closed":
                            raise RuntimeError(f"the stream of run {run_id} was closed by the server: {line}")
                        d = json.loads(line[5:])
                        if event == "metrics":
                            t_of[d["step"]] = d["t"]
                            if d["step"] % PROBE_EVERY == 0:
                                out["step"].append((now - d["t"]) * 1000.0)
                        elif d.get("kind") == "alert" and d.get("rule") == PROBE_RULE and d["state"] == "firing":
                            out["alert"].append((now - t_of[d["step"]]) * 1000.0)
                    elif line == "":
                        event = None
            out["reconnects"] += 1
            await asyncio.sleep(3.0)  # the stream's retry: 3000 ms, as EventSource waits


async def _latency_clients(url: str, cookies: dict, run_ids: list[int], start_emitter) -> dict:
    out: dict = {"step": [], "alert": [], "last": 0.0, "reconnects": 0}
    ready = {r: False for r in run_ids}
    tasks = [asyncio.create_task(_watch(url, cookies, r, out, ready)) for r in run_ids]

    def check() -> None:
        for t in tasks:
            if t.done() and t.exception():
                raise t.exception()

    deadline = time.monotonic() + 60
    while not all(ready.values()):
        check()
        if time.monotonic() > deadline:
            raise RuntimeError("the SSE clients did not connect in 60 s")
        await asyncio.sleep(0.05)
    proc = start_emitter()
    out["last"] = time.monotonic()
    while proc.poll() is None:
        check()
        await asyncio.sleep(0.1)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"emitter failed:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    steps = json.loads(stdout.strip().splitlines()[-1])["steps"]
    expected = steps // PROBE_EVERY * len(run_ids)
    # Stragglers: on a loaded machine the sinks and the server fall behind, and what is late is
    # measured late, not dropped: wait while events still come (10 s of silence ends it, 120 s at most).
    deadline = time.monotonic() + 120.0
    while len(out["alert"]) < expected and time.monotonic() < min(deadline, out["last"] + 10.0):
        await asyncio.sleep(0.05)
    for t in tasks:
        t.cancel()
    for t, r in zip(tasks, await asyncio.gather(*tasks, return_exceptions=True)):
        if isinstance(r, Exception):
            raise r
    if not out["step"]:
        raise RuntimeError(f"no step reached the SSE clients; the emitter said:\n{stderr[-3000:]}")
    return {**out, "expected": expected}


def latency(team, runs: int, metrics: int, rate: float, seconds: float) -> dict:
    """Step -> alert event at a real SSE client of the run page's stream, through uvicorn."""
    import logging

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    from bench.live import _start_server, _stop_server
    from webapp.accounts.models import Membership
    from webapp.alerts import services
    from webapp.alerts.models import AlertRule
    from webapp.runs.models import MetricPoint, Run

    logging.getLogger("httpx").setLevel(logging.WARNING)
    user = get_user_model().objects.get(username="alerts-bench")
    Membership.objects.get_or_create(user=user, team=team)
    c = Client()
    c.force_login(user)
    cookies = {settings.SESSION_COOKIE_NAME: c.cookies[settings.SESSION_COOKIE_NAME].value}
    AlertRule.objects.filter(team=team, name=PROBE_RULE).delete()
    probe = services.create_rule(team, name=PROBE_RULE, metric="loss", condition="above", window=1, threshold=5.0)
    run_ids = [Run.objects.create(team=team, name=f"alerts-bench-latency-{i}", method="gft", config={},
                                  created_by=user, status="running").pk for i in range(runs)]

    def start_emitter():
        args = [sys.executable, "-m", "bench.alerts", "--role", "emit", "--run-ids", ",".join(map(str, run_ids)),
                "--metrics", str(metrics), "--rate", str(rate), "--seconds", str(seconds)]
        return subprocess.Popen(args, cwd=ROOT, env=django_env(DB), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    url, server = _start_server(DB)
    try:
        return asyncio.run(_latency_clients(url, cookies, run_ids, start_emitter))
    finally:
        _stop_server(server)
        MetricPoint.objects.filter(run_id__in=run_ids)._raw_delete(using="default")
        Run.objects.filter(pk__in=run_ids).delete()
        probe.delete()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench alerts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--metrics", type=int, default=100)
    p.add_argument("--rate", type=float, default=10.0, help="steps per second per run")
    p.add_argument("--steps", type=int, default=200, help="steps per run timed for ours")
    p.add_argument("--peer-runs", type=int, default=20, help="runs evaluated by the peer (it is slow)")
    p.add_argument("--peer-steps", type=int, default=10)
    p.add_argument("--seconds", type=float, default=10.0, help="length of the paced load")
    p.add_argument("--latency-runs", type=int, default=10, help="runs (one SSE client each) of the latency phase")
    p.add_argument("--latency-seconds", type=float, default=15.0)
    p.add_argument("--role", default="bench", help=argparse.SUPPRESS)
    p.add_argument("--run-ids", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.role == "emit":
        import django

        django.setup()
        emit([int(x) for x in a.run_ids.split(",")], a.metrics, a.rate, a.seconds)
        return 0
    if a.quick:
        a.runs, a.steps, a.peer_runs, a.peer_steps, a.seconds = 5, 20, 2, 3, 1.0
        a.latency_runs, a.latency_seconds = 2, 3.0
    why = services_up()
    if why:
        raise Skip(why)
    migrate(DB)
    setup_django(DB)
    flush_bench_redis()
    t0 = time.perf_counter()

    def phase(what: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f} s] {what}", flush=True)

    team, run_ids = _setup(a.runs)
    phase(f"{a.runs} runs set up; ours: {a.steps} steps per run")
    ours, n_rules = bench_ours(run_ids, a.steps, a.metrics)
    phase(f"paced load for {a.seconds:g} s")
    busy_med, busy_max, late = paced_ours(run_ids, a.metrics, a.rate, a.seconds)
    peer_ids = run_ids[: a.peer_runs]
    phase(f"storing {120 + a.peer_steps} steps of {a.peer_runs} runs for the peer")
    key_ids = _store_points(peer_ids, 120 + a.peer_steps, a.metrics)
    phase("peer")
    peer = bench_peer(peer_ids, range(121, 121 + a.peer_steps), key_ids)
    phase(f"latency: {a.latency_runs} runs x {a.metrics} metrics at {a.rate:g} steps/s for {a.latency_seconds:g} s, "
          "one SSE client each")
    lat = latency(team, a.latency_runs, a.metrics, a.rate, a.latency_seconds)
    la, ls = lat["alert"], lat["step"]
    lat_p50, lat_p99 = percentile(la, 50), percentile(la, 99)
    need = a.runs * a.rate  # steps/s to evaluate
    ours_cap = 1e6 / ours.median
    peer_cap = 1e6 / peer.median
    rows = [
        ("rule evaluation per step per run (us), ours: in memory in the sink",
         f"{ours.fmt(3)} ({n_rules} rules, {a.metrics} metrics)", f"< {GOAL_US:.0f} us", verdict(ours.median < GOAL_US)),
        ("same rules, peer: a DB query per rule per step (us)", f"{peer.fmt(3)} ({a.peer_runs} runs x {a.peer_steps} steps)",
         "", ""),
        (f"steps/s one core evaluates (need {need:,.0f}: {a.runs} runs x {a.rate:g} steps/s)",
         f"ours {ours_cap:,.0f} / peer {peer_cap:,.0f}", f">= {need:,.0f}", verdict(ours_cap >= need)),
        (f"paced {a.runs} runs x {a.metrics} metrics at {a.rate:g} steps/s for {a.seconds:g} s: busy share of a tick",
         f"median {busy_med * 100:.1f}%, max {busy_max * 100:.1f}%, {late} ticks overran", "0 overran",
         verdict(late == 0)),
        ("peer at the same load", f"{need / peer_cap * 100:.0f}% of a core per second of training",
         "", verdict(None)),
        (f"step -> alert at the run page's SSE stream (uvicorn), p50 / p99 (max) ms, {a.latency_runs} runs x "
         f"{a.metrics} metrics at {a.rate:g} steps/s",
         f"{lat_p50:.0f} / {lat_p99:.0f} ({max(la, default=math.nan):.0f}) ms, {len(la)} of {lat['expected']} alerts, "
         f"{lat['reconnects']} reconnects",
         f"p99 < {GOAL_LATENCY_MS:.0f} ms", verdict(lat_p99 < GOAL_LATENCY_MS and len(la) == lat["expected"])),
        ("the same steps' metrics event at the same clients, p50 / p99 (max) ms",
         f"{percentile(ls, 50):.0f} / {percentile(ls, 99):.0f} ({max(ls, default=math.nan):.0f}) ms", "", ""),
    ]
    print_table("alerts: rule evaluation cost (ours vs a DB query per step), step -> alert latency", ["figure", "value", "goal", "verdict"], rows)
    record("alerts", rows, quick=a.quick)
    return 0 if not math.isnan(ours.median) else 1


if __name__ == "__main__":
    sys.exit(main())
