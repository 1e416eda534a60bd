"""Chart data: server time of the downsampled metrics endpoints on very long runs.

Database `bench_chart` (created and migrated here) holds `runs` finished runs, each with `keys`
series of `points` points (loaded with COPY, once: later invocations reuse them when the marker
in the runs' config matches). Measured in this process, against the Django app (no network):
- load_series: webapp.runs.series.load_series([run], 10 keys, max_points=1000), the function
  behind every chart;
- REST: GET /api/runs/<id>/metrics/?keys=<10 keys> with a Bearer token (DRF, JSON rendering);
- compare data: GET /runs/series/?runs=<8 ids>&keys=<10 keys> (what the compare page fetches),
  and load_series on the 8 runs;
- compare page: GET /compare/?runs=<8 ids> (HTML with the final/best summary table).
"cold" is the first view of a run whose rollups do not exist yet (they are built on that call);
every other figure is the median of `reps` warm calls after one warm-up call.
"""
from __future__ import annotations

import argparse
import io
import queue
import threading
import time

from bench.common import Skip, Stat, have, migrate, print_table, record, services_up, setup_django, verdict

DB = "bench_chart"
GOAL_SERIES_MS = 300.0
GOAL_COMPARE_MS = 1000.0
KEYS = ["loss", "grad_norm", "lr", "tokens_per_s", "reward/mean", "reward/self_accuracy", "response_len/mean",
        "adv/std", "dcr/rectified_frac", "policy/entropy"]


def _csv_chunks(run_ids: list[int], key_ids: list[int], points: int, out: "queue.Queue") -> None:
    """Producer thread: tab-separated COPY text, one chunk per (run, key) series."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pc

    opts = pc.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    steps = np.arange(1, points + 1, dtype=np.int32)
    wall = np.round(1.7e9 + steps * 0.5, 3)
    try:
        for r, run_id in enumerate(run_ids):
            for k, key_id in enumerate(key_ids):
                rng = np.random.default_rng(r * 1000 + k)
                value = np.exp(-steps / (points / 3)) * (k + 1) + rng.normal(0, 0.05, points)
                value[rng.integers(0, points, 20)] += 5.0  # spikes that downsampling must keep
                tb = pa.table({"run_id": np.full(points, run_id, np.int64), "key_id": np.full(points, key_id, np.int64),
                               "step": steps, "value": np.round(value, 6), "wall_time": wall})
                buf = io.BytesIO()
                pc.write_csv(tb, buf, opts)
                out.put(buf.getbuffer())
    finally:
        out.put(None)


def load(team, user, n_runs: int, points: int, keys: list[str] = KEYS) -> tuple[list, float | None]:
    """The bench runs (reused when already loaded with these sizes); seconds spent loading or None."""
    import psycopg
    from django.db import connection

    from webapp.runs.models import MetricKey, MetricPoint, MetricRollup, Run
    from workers.sink import conninfo_from_settings

    marker = {"bench_chart": {"points": points, "keys": keys}}
    runs = list(Run.objects.filter(team=team, config=marker).order_by("pk"))
    if len(runs) >= n_runs:
        return runs[:n_runs], None
    old = list(Run.objects.filter(team=team).values_list("pk", flat=True))
    MetricPoint.objects.filter(run_id__in=old)._raw_delete(using="default")
    MetricRollup.objects.filter(run_id__in=old)._raw_delete(using="default")
    Run.objects.filter(pk__in=old).delete()
    key_ids = [MetricKey.objects.get_or_create(name=k)[0].pk for k in keys]
    runs = [Run.objects.create(team=team, name=f"chart bench {i}", method="gft", config={"loading": True},
                               status=Run.Status.SUCCEEDED, step=points, total_steps=points, created_by=user)
            for i in range(n_runs)]
    t0 = time.perf_counter()
    q: queue.Queue = queue.Queue(maxsize=2)
    producer = threading.Thread(target=_csv_chunks, args=([r.pk for r in runs], key_ids, points, q), daemon=True)
    producer.start()
    with psycopg.connect(**conninfo_from_settings(), autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        with conn.cursor() as cur:
            while (chunk := q.get()) is not None:
                with cur.copy("COPY runs_metricpoint (run_id, key_id, step, value, wall_time) FROM STDIN") as cp:
                    cp.write(chunk)
        conn.execute("ANALYZE runs_metricpoint")
    producer.join()
    Run.objects.filter(pk__in=[r.pk for r in runs]).update(config=marker)
    connection.close()
    return list(Run.objects.filter(pk__in=[r.pk for r in runs]).order_by("pk")), time.perf_counter() - t0


def _timed(fn, reps: int, warmup: int = 1) -> Stat:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return Stat.of(ts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench chart", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--points", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--max-points", type=int, default=1000)
    a = p.parse_args(argv)
    if a.quick:
        a.runs, a.points, a.reps = 2, 20_000, 1
    why = services_up()
    if why:
        raise Skip(why)
    if not (have("webapp.runs.series") and have("workers.sink")):
        raise Skip("webapp/runs/series.py (the charts engineer's) is not available yet")
    migrate(DB)
    setup_django(DB)
    from django.contrib.auth import get_user_model
    from django.test import Client

    from webapp.accounts.models import ApiToken, Membership, Team
    from webapp.runs import series
    from webapp.runs.models import MetricRollup

    slug = "bench-chart-quick" if a.quick else "bench-chart"  # the smoke test keeps the big runs
    team, _ = Team.objects.get_or_create(slug=slug, defaults={"name": slug})
    user = get_user_model().objects.filter(username="bench-chart").first() or \
        get_user_model().objects.create_user("bench-chart", password="bench-chart-pass-123")
    Membership.objects.get_or_create(user=user, team=team, defaults={"role": Membership.Role.MEMBER})
    runs, load_s = load(team, user, a.runs, a.points)
    ids = [r.pk for r in runs]
    first = ids[0]
    total = a.runs * len(KEYS) * a.points
    print(f"{a.runs} runs x {len(KEYS)} series x {a.points:,} points = {total:,} points "
          + (f"loaded with COPY in {load_s:.1f} s ({total / load_s:,.0f} rows/s)" if load_s else "(reused from an earlier run)"),
          flush=True)

    token = ApiToken.issue(user, f"bench-{time.time()}")[1]
    api = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {token}")
    web = Client(HTTP_HOST="127.0.0.1")
    web.force_login(user)
    keys = ",".join(KEYS)

    def get(client, url: str, **params):
        r = client.get(url, params)
        if r.status_code != 200:
            raise RuntimeError(f"GET {url} -> {r.status_code}: {r.content[:500]!r}")
        return r

    # cold: the first view of a long run builds its rollups
    MetricRollup.objects.filter(run_id=first)._raw_delete(using="default")
    t0 = time.perf_counter()
    cold = series.load_series([first], KEYS, max_points=a.max_points)
    cold_s = time.perf_counter() - t0
    n_out = sum(len(s["step"]) for s in cold[first].values())
    for rid in ids[1:]:  # what housekeeping does at the end of a run
        series.refresh_rollups(next(r for r in runs if r.pk == rid))

    res = {
        "load_series (1 run)": _timed(lambda: series.load_series([first], KEYS, max_points=a.max_points), a.reps),
        "REST /api/runs/<id>/metrics/": _timed(lambda: get(api, f"/api/runs/{first}/metrics/", keys=keys,
                                                           max_points=a.max_points), a.reps),
        f"load_series ({a.runs} runs)": _timed(lambda: series.load_series(ids, KEYS, max_points=a.max_points), a.reps),
        f"compare data /runs/series/ ({a.runs} runs)": _timed(lambda: get(web, "/runs/series/", runs=",".join(map(str, ids)),
                                                                           keys=keys, max_points=a.max_points), a.reps),
        f"compare page /compare/ ({a.runs} runs)": _timed(lambda: get(web, "/compare/", runs=",".join(map(str, ids))), a.reps),
    }
    goals = {"load_series (1 run)": GOAL_SERIES_MS, "REST /api/runs/<id>/metrics/": GOAL_SERIES_MS,
             f"load_series ({a.runs} runs)": GOAL_COMPARE_MS, f"compare data /runs/series/ ({a.runs} runs)": GOAL_COMPARE_MS,
             f"compare page /compare/ ({a.runs} runs)": GOAL_COMPARE_MS}
    rows = [["load_series (1 run), cold: builds rollups", f"{cold_s * 1000:,.0f} ms", "-", f"{n_out:,} points out", ""]]
    out = [("load_series cold first view (1 run, builds rollups)", f"{cold_s * 1000:,.0f} ms", "", "")]
    for name, s in res.items():
        g = goals[name]
        rows.append([name, s.fmt(3, 1000, " ms"), f"< {g:,.0f} ms", "", verdict(s.median * 1000 < g)])
        out.append((f"{name}, {len(KEYS)} x {a.points:,}-point series", s.fmt(3, 1000, " ms"), f"< {g:,.0f} ms",
                    verdict(s.median * 1000 < g)))
    print_table(f"chart: {len(KEYS)} series x {a.points:,} points per run, max_points={a.max_points}, "
                f"{a.reps} warm calls", ["endpoint", "server time [min-max]", "goal", "note", "verdict"], rows)
    record("chart", out, quick=a.quick)
    return 0
