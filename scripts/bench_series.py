"""Time chart reads on huge runs: N runs x S series x P points loaded with COPY, then load_series
(cold: first read builds the rollups; warm), a zoom, compare of all runs, final_and_best, and the
/runs/series/ JSON endpoint.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gft_bench SECRET_KEY=x \
        python scripts/bench_series.py --runs 8 --series 10 --points 1000000

Use a scratch database (it is migrated, and the runs it creates are kept for re-runs with --reuse).
Points are written step by step, all series of a step together, as the worker's sink writes them.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

KEYS = ["loss", "grad_norm", "lr", "tokens_per_s", "reward/mean", "adv/mean", "adv/std", "dcr/rectified_frac",
        "dcr/mean_c", "policy/entropy"]


def copy_points(run_id: int, key_ids: list[int], n_points: int, chunk: int = 100_000) -> float:
    """COPY n_points steps of every key into MetricPoint; returns seconds."""
    rng = np.random.default_rng(run_id)
    t0 = time.perf_counter()
    with connection.cursor() as cur, cur.cursor.copy(
            "COPY runs_metricpoint (run_id, key_id, step, value, wall_time) FROM STDIN") as cp:
        for start in range(1, n_points + 1, chunk):
            steps = np.arange(start, min(start + chunk, n_points + 1))
            buf = io.StringIO()
            for k in key_ids:
                values = np.sin(steps / 5000 + k) + rng.random(len(steps)) * 0.1
                spikes = rng.random(len(steps)) < 1e-5
                values[spikes] += 10.0  # single-step spikes the charts must keep
                cols = np.column_stack([steps, values, 1.7e9 + steps * 0.5])
                buf.write("".join(f"{run_id}\t{k}\t{int(s)}\t{v!r}\t{w!r}\n" for s, v, w in cols.tolist()))
            cp.write(buf.getvalue())
    return time.perf_counter() - t0


def timed(fn, repeat: int = 5) -> tuple[float, float, float]:
    """Median, min, max milliseconds over `repeat` calls (the caller warms up if it wants)."""
    xs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        xs.append((time.perf_counter() - t) * 1000)
    return statistics.median(xs), min(xs), max(xs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--series", type=int, default=10)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--reuse", action="store_true", help="reuse runs named bench-series-* of an earlier call")
    args = ap.parse_args()
    call_command("migrate", verbosity=0)

    from django.test import Client

    from webapp.accounts.models import Membership, Team
    from webapp.runs import series
    from webapp.runs.models import MetricKey, MetricRollup, Run

    team, _ = Team.objects.get_or_create(slug="bench-series", defaults={"name": "bench"})
    keys = KEYS[: args.series]
    key_ids = [MetricKey.objects.get_or_create(name=k)[0].pk for k in keys]
    name = f"bench-series-{args.series}x{args.points}"
    runs = list(Run.objects.filter(team=team, name=name).order_by("pk")) if args.reuse else []
    while len(runs) < args.runs:
        run = Run.objects.create(team=team, name=name, method="gft", config={"tau": 0.3}, status="succeeded",
                                 attempt=1, total_steps=args.points, step=args.points)
        dt = copy_points(run.pk, key_ids, args.points)
        print(f"run {run.pk}: COPY {args.series} x {args.points:,} points in {dt:.1f} s "
              f"({args.series * args.points / dt:,.0f} points/s)", flush=True)
        runs.append(run)
    runs = runs[: args.runs]
    with connection.cursor() as cur:
        cur.execute("ANALYZE runs_metricpoint")
    ids = [r.pk for r in runs]

    print(f"\n{args.runs} runs x {args.series} series x {args.points:,} points (max_points=1000)")
    for r in runs:  # first read of each run builds its rollups (once per run)
        had = MetricRollup.objects.filter(run=r).exists()
        t = time.perf_counter()
        series.load_series([r.pk], keys)
        if not had:
            print(f"  cold load_series run {r.pk} (builds rollups): {(time.perf_counter() - t) * 1000:,.0f} ms")
    one = timed(lambda: series.load_series([ids[0]], keys))
    print(f"  load_series 1 run x {args.series} series, warm: median {one[0]:.0f} ms [{one[1]:.0f}-{one[2]:.0f}]")
    lo, hi = args.points // 2, args.points // 2 + args.points // 10
    zoom = timed(lambda: series.load_series([ids[0]], keys, step_min=lo, step_max=hi))
    print(f"  zoom to 10% of the run: median {zoom[0]:.0f} ms [{zoom[1]:.0f}-{zoom[2]:.0f}]")
    near = timed(lambda: series.load_series([ids[0]], keys, step_min=lo, step_max=lo + 999))
    print(f"  zoom to 1,000 steps (full resolution): median {near[0]:.0f} ms [{near[1]:.0f}-{near[2]:.0f}]")
    cmp_ = timed(lambda: series.load_series(ids, keys))
    print(f"  compare load_series {len(ids)} runs: median {cmp_[0]:.0f} ms [{cmp_[1]:.0f}-{cmp_[2]:.0f}]")
    fab = timed(lambda: series.final_and_best(ids, keys))
    print(f"  final_and_best {len(ids)} runs: median {fab[0]:.0f} ms [{fab[1]:.0f}-{fab[2]:.0f}]")

    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="bench-series")
    Membership.objects.get_or_create(user=user, team=team)
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    q = "&keys=" + ",".join(keys)
    api1 = timed(lambda: client.get(f"/runs/series/?runs={ids[0]}{q}"))
    apin = timed(lambda: client.get(f"/runs/series/?runs={','.join(map(str, ids))}{q}"))
    size = len(client.get(f"/runs/series/?runs={ids[0]}{q}").content)
    print(f"  GET /runs/series/ 1 run: median {api1[0]:.0f} ms [{api1[1]:.0f}-{api1[2]:.0f}], {size / 1024:.0f} KiB JSON")
    print(f"  GET /runs/series/ {len(ids)} runs: median {apin[0]:.0f} ms [{apin[1]:.0f}-{apin[2]:.0f}]")


if __name__ == "__main__":
    main()
