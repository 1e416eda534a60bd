"""Sweep page: time until a sweep of 500 runs is drawn in Chromium (parcoords, scatters, runs table).

Database `bench_sweep_page` (created and migrated here) holds one team with a TPE sweep over
tau, lr, n_self and seed: `trials` trial runs (rows created directly: a full gft_core config, a
summary and metric ranges of 20 metrics), 85% complete, 10% pruned, 5% failed; reused when the
count matches. uvicorn serves webapp.asgi (as in production); Debian's Chromium, driven by
Playwright, logs in once and then opens the page `reps` times after one warm-up (same browser
context: Plotly comes from the cache as for a user's second sweep). Per open, from the browser's
navigation start:
- the sweep page: until static/js/sweep_page.js marks `sweep-drawn` (its Plotly calls resolved:
  the parcoords, one scatter per parameter, with the runs table already parsed);
- the peer: the run table `/` of the same runs (200 rows a page, its largest; the sweep shows all
  500) until its load event, i.e. the product's plain list page on the same rows;
- the sweep page's server time alone (Django's test client in this process) and its query count.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time

from bench.common import (ROOT, Skip, Stat, django_env, migrate, print_table, record, services_up, setup_django,
                          verdict)
from bench.runtable import METRICS

DB = "bench_sweep_page"
GOAL_MS = 1000.0
PASSWORD = "bench-pass-123"


def load(team, user, n: int) -> tuple[object, float | None]:
    """(the bench sweep, seconds spent loading or None when reused)."""
    import random

    from gft_core.config import GFTConfig

    from webapp.runs.models import Run
    from webapp.sweeps.models import Sweep, SweepTrial

    sweep = Sweep.objects.filter(team=team).first()
    if sweep is not None and sweep.trials.count() == n:
        return sweep, None
    t0 = time.perf_counter()
    Run.objects.filter(team=team).delete()
    Sweep.objects.filter(team=team).delete()
    rng = random.Random(0)
    params = {"tau": {"low": 0.05, "high": 1.0, "log": False, "type": "float"},
              "lr": {"low": 1e-6, "high": 1e-4, "log": True, "type": "float"},
              "n_self": {"values": [2, 4, 8]}, "seed": {"values": [0, 1, 2]}}
    sweep = Sweep.objects.create(team=team, name="tau x lr x n_self", base={}, parameters=params, strategy="tpe",
                                 max_runs=n, parallel=4, target="reward/mean", direction="max", asked=n,
                                 study_name=f"bench-sweep-page-{team.pk}", status=Sweep.Status.SUCCEEDED,
                                 pruner={"name": "median", "startup_trials": 5, "warmup_steps": 10},
                                 created_by=user)
    base = GFTConfig().to_dict()
    runs, trials = [], []
    for i in range(n):
        p = {"tau": round(rng.uniform(0.05, 1.0), 4), "lr": 10 ** rng.uniform(-6, -4),
             "n_self": rng.choice([2, 4, 8]), "seed": rng.choice([0, 1, 2])}
        state = "complete" if i % 20 < 17 else "pruned" if i % 20 < 19 else "failed"
        value = 0.2 + 0.5 * (1 - abs(p["tau"] - 0.4)) + 0.05 * rng.random() if state != "failed" else None
        status = {"complete": Run.Status.SUCCEEDED, "pruned": Run.Status.CANCELLED, "failed": Run.Status.FAILED}[state]
        summary = {m: rng.random() for m in METRICS} | ({"reward/mean": value} if value is not None else {})
        runs.append(Run(team=team, created_by=user, name=f"{sweep.name} #{i} tau={p['tau']:.4g}, lr={p['lr']:.4g}",
                        method="gft", config={**base, **p}, summary=summary, status=status,
                        metric_range={m: sorted([rng.random(), rng.random() + 0.5]) for m in METRICS},
                        step=200 if state == "complete" else 40, total_steps=200, tags=["sweep"]))
        trials.append((i, p, state, value))
    runs = Run.objects.bulk_create(runs, batch_size=500)
    SweepTrial.objects.bulk_create([
        SweepTrial(sweep=sweep, run=r, number=i, trial_id=i + 1, params=p, state=state, value=value,
                   pruned_step=40 if state == "pruned" else None)
        for r, (i, p, state, value) in zip(runs, trials)], batch_size=500)
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("ANALYZE runs_run; ANALYZE sweeps_sweeptrial")
    return sweep, time.perf_counter() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--host", "127.0.0.1",
                               "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=django_env(DB),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"uvicorn did not start:\n{server.stdout.read().decode()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("uvicorn did not answer in 60 s")


SWEEP_DRAWN = "() => performance.getEntriesByName('sweep-drawn').length > 0"
SWEEP_MS = "() => performance.getEntriesByName('sweep-drawn')[0].startTime"
LOADED_MS = "() => performance.getEntriesByType('navigation')[0].loadEventEnd"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench sweep_page", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--trials", type=int, default=500)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args(argv)
    if a.quick:
        a.trials, a.reps = 50, 1
    why = services_up()
    if why:
        raise Skip(why)
    from tests.browser.support import ARGS, CHROMIUM

    if CHROMIUM is None:
        raise Skip("no chromium binary (/usr/bin/chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise Skip("playwright is not installed") from None
    migrate(DB)
    setup_django(DB)
    from django.contrib.auth import get_user_model
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from webapp.accounts.models import Membership, Team

    slug = "bench-sweep-quick" if a.quick else "bench-sweep"
    team, _ = Team.objects.get_or_create(slug=slug, defaults={"name": slug})
    User = get_user_model()
    user = User.objects.filter(username=slug).first() or User.objects.create_user(slug, password=PASSWORD)
    Membership.objects.get_or_create(user=user, team=team, defaults={"role": Membership.Role.ADMIN})
    sweep, load_s = load(team, user, a.trials)
    print(f"sweep of {a.trials:,} runs " + (f"loaded in {load_s:.1f} s" if load_s else "(reused)"), flush=True)
    path = f"/sweeps/{sweep.pk}/"

    # Server time of the page alone, in this process.
    web = Client(HTTP_HOST="127.0.0.1")
    web.force_login(user)
    reset_queries()
    with CaptureQueriesContext(connection) as q:
        r = web.get(path)
    if r.status_code != 200 or r.content.count(b"\"pruned_step\"") != a.trials:
        raise RuntimeError(f"GET {path} -> {r.status_code}, not a record per trial in sweep-data")
    server_ts = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        web.get(path)
        server_ts.append(time.perf_counter() - t0)
    queries = len(q)

    server, base = _start_server()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/accounts/login/")
            page.fill("input[name=username]", slug)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit], input[type=submit]")
            page.wait_for_url(f"{base}/")

            def sweep_page() -> float:
                page.goto(f"{base}{path}")
                page.wait_for_function(SWEEP_DRAWN, timeout=60_000)
                if page.locator("#sweep-trials tbody tr").count() != a.trials or \
                        page.evaluate("() => document.getElementById('sweep-scatter').data.length") != len(sweep.parameters):
                    raise RuntimeError("the sweep page did not draw every scatter and row")
                return page.evaluate(SWEEP_MS) / 1000

            def run_table() -> float:
                page.goto(f"{base}/?per_page=200", wait_until="load")
                return page.evaluate(LOADED_MS) / 1000

            cases = {"sweep page: parcoords + scatters + table drawn": sweep_page,
                     "peer: run table / of the same runs (200 rows), loaded": run_table}
            times: dict[str, list[float]] = {k: [] for k in cases}
            for fn in cases.values():
                fn()  # warm-up: Plotly and the scripts in the cache, uvicorn's imports done
            for _ in range(a.reps):  # interleaved
                for name, fn in cases.items():
                    times[name].append(fn())
            browser.close()
            if errors:
                raise RuntimeError(f"page errors: {errors[:3]}")
    finally:
        server.terminate()
        server.wait(timeout=10)

    rows, out = [], []
    stats = {name: Stat.of(ts) for name, ts in times.items()}
    stats[f"sweep page, server time alone ({queries} queries)"] = Stat.of(server_ts)
    for name, stat in stats.items():
        goal = GOAL_MS if name.startswith("sweep page:") else None
        ok = None if goal is None else stat.median * 1000 < goal
        rows.append([name, stat.fmt(3, 1000, " ms"), f"< {goal:,.0f} ms" if goal else "-", verdict(ok)])
        out.append((f"{name}, {a.trials:,} runs", stat.fmt(3, 1000, " ms"), f"< {goal:,.0f} ms" if goal else "",
                    verdict(ok)))
    print_table(f"sweep_page: {a.trials:,} trial runs, Chromium {a.reps} opens after a warm-up",
                ["page", "time from navigation start [min-max]", "goal", "verdict"], rows)
    record("sweep_page", out, quick=a.quick)
    return 0
