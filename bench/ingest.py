"""Metric ingestion: points/s made durable in Postgres, our sink vs MLflow's log_batch.

Our side: bench.sink_driver (the sink engineer's driver) per run: one PostgresRedisSink logs
`steps` steps of `keys` scalars, timed from the first log() until close() has committed every
point (binary COPY into the table, one transaction per flush, plus the XADD of each step
to Redis db 14). Database `bench_gft`, created and migrated here.
MLflow side: MlflowClient on an SQL tracking store (`postgresql+psycopg://.../bench_mlflow`, the
store an MLflow tracking server writes to, called directly: no REST hop, which only favours
MLflow), one run per run, log_batch of up to 1,000 metrics per call (MLflow's maximum per
request: 10 steps x 100 keys), timed from the first log_batch until the last returned (each call
is one committed transaction).
Same runs x keys x steps and the same values on both sides; runs one after the other; tables
emptied between repetitions; sides interleaved. Plus our sink alone at a larger size.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import time

from bench.common import PG_URL, Skip, Stat, ensure_database, have, migrate, print_table, record, services_up, setup_django, verdict

GOAL_POINTS = 200_000
GOAL_RATIO = 20.0
GFT_DB, MLFLOW_DB = "bench_gft", "bench_mlflow"
MLFLOW_BATCH = 1000  # MLflow's MAX_METRICS_PER_BATCH


def gft_once(runs: int, keys: int, steps: int) -> float:
    """Seconds to make runs x keys x steps points durable (sum over runs) with bench.sink_driver."""
    from bench import sink_driver

    total = 0.0
    for _ in range(runs):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            sink_driver.main(["--steps", str(steps), "--keys", str(keys)])
        # "<N> points in <s>s over <f> flushes: <rate> points/s durable": the rate has the precision
        m = re.search(r"(\d+) points in [\d.]+s .*?: ([\d,]+) points/s", buf.getvalue())
        if not m or int(m.group(1)) != keys * steps:
            raise RuntimeError(f"unexpected output of bench.sink_driver: {buf.getvalue()!r}")
        total += int(m.group(1)) / float(m.group(2).replace(",", ""))
    return total


class MLflowSide:
    def __init__(self) -> None:
        import logging

        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)

        ensure_database(MLFLOW_DB, fresh=True)
        self.uri = PG_URL.replace("postgres://", "postgresql+psycopg://", 1) + f"/{MLFLOW_DB}"
        self.client = MlflowClient(tracking_uri=self.uri)  # creates the schema (alembic) here, untimed
        self.exp = self.client.create_experiment(f"bench-{time.time()}")

    def once(self, runs: int, keys: int, steps: int) -> float:
        from mlflow.entities import Metric

        names = [f"bench/k{i}" for i in range(keys)]
        per_call = max(1, MLFLOW_BATCH // keys)
        run_ids = [self.client.create_run(self.exp).info.run_id for _ in range(runs)]
        total = 0.0
        for rid in run_ids:
            t0 = time.perf_counter()
            ts = int(time.time() * 1000)
            for s0 in range(1, steps + 1, per_call):
                batch = [Metric(k, step * 0.001 + i, ts, step)
                         for step in range(s0, min(steps, s0 + per_call - 1) + 1) for i, k in enumerate(names)]
                self.client.log_batch(rid, metrics=batch)
            total += time.perf_counter() - t0
        stored = self.count(run_ids)
        assert stored == runs * keys * steps, f"MLflow stored {stored} of {runs * keys * steps} points"
        self.truncate()
        return total

    def count(self, run_ids: list[str]) -> int:
        import psycopg

        with psycopg.connect(f"{PG_URL}/{MLFLOW_DB}") as c:
            return c.execute("SELECT count(*) FROM metrics WHERE run_uuid = ANY(%s)", (run_ids,)).fetchone()[0]

    def truncate(self) -> None:
        import psycopg

        with psycopg.connect(f"{PG_URL}/{MLFLOW_DB}", autocommit=True) as c:
            c.execute("TRUNCATE metrics, latest_metrics")


def _truncate_gft() -> None:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("TRUNCATE runs_metricpoint")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench ingest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--keys", type=int, default=100)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--scale-runs", type=int, default=10, help="our sink alone: runs x keys x scale-steps")
    p.add_argument("--scale-steps", type=int, default=1000)
    a = p.parse_args(argv)
    if a.quick:
        a.runs, a.keys, a.steps, a.reps, a.scale_runs, a.scale_steps = 2, 10, 20, 1, 1, 50
    why = services_up()
    if why:
        raise Skip(why)
    try:
        import bench.sink_driver  # noqa: F401
        import workers.sink  # noqa: F401
    except ImportError as e:
        raise Skip(f"workers.sink / bench.sink_driver not available ({e})") from None
    migrate(GFT_DB)
    setup_django(GFT_DB)
    from bench.common import flush_bench_redis

    flush_bench_redis()
    _truncate_gft()
    ml = MLflowSide() if have("mlflow") else None
    points = a.runs * a.keys * a.steps

    gft_once(1, a.keys, max(10, a.steps // 4))  # warm-up: key interning, connections, caches
    if ml:
        ml.once(1, a.keys, min(a.steps, 20))
    gft_t, ml_t = [], []
    for _ in range(a.reps):
        gft_t.append(gft_once(a.runs, a.keys, a.steps))
        _truncate_gft()
        if ml:
            ml_t.append(ml.once(a.runs, a.keys, a.steps))
    scale_t = []
    for _ in range(a.reps):
        scale_t.append(gft_once(a.scale_runs, a.keys, a.scale_steps))
        _truncate_gft()
    flush_bench_redis()

    gft = Stat.of([points / t for t in gft_t])
    scale_points = a.scale_runs * a.keys * a.scale_steps
    scale = Stat.of([scale_points / t for t in scale_t])
    rows = [[f"gft PostgresRedisSink", f"{a.runs} x {a.keys} x {a.steps}", f"{points:,}", Stat.of(gft_t).fmt(3), gft.fmt()]]
    out = [(f"gft sink points/s ({a.runs}x{a.keys}x{a.steps})", gft.fmt(), f">= {GOAL_POINTS:,}", verdict(gft.median >= GOAL_POINTS))]
    if ml:
        mlf = Stat.of([points / t for t in ml_t])
        rows.append(["MLflow log_batch (SQL store)", f"{a.runs} x {a.keys} x {a.steps}", f"{points:,}",
                     Stat.of(ml_t).fmt(3), mlf.fmt()])
        ratio = gft.median / mlf.median
        out += [("MLflow log_batch points/s", mlf.fmt(), "", ""),
                ("gft/MLflow ingestion ratio", f"{ratio:.1f}x", f">= {GOAL_RATIO:.0f}x", verdict(ratio >= GOAL_RATIO))]
    else:
        out.append(("MLflow log_batch", "skipped: mlflow not installed", f">= {GOAL_RATIO:.0f}x", "n/a"))
    rows.append([f"gft PostgresRedisSink (scale)", f"{a.scale_runs} x {a.keys} x {a.scale_steps}", f"{scale_points:,}",
                 Stat.of(scale_t).fmt(3), scale.fmt()])
    out.append((f"gft sink points/s at scale ({a.scale_runs}x{a.keys}x{a.scale_steps})", scale.fmt(),
                f">= {GOAL_POINTS:,}", verdict(scale.median >= GOAL_POINTS)))
    print_table(f"ingest: points made durable in Postgres, {a.reps} repetitions (runs x keys x steps, runs in sequence)",
                ["side", "runs x keys x steps", "points", "seconds", "points/s"], rows)
    if ml:
        print(f"gft / MLflow: {gft.median / mlf.median:.1f}x (goal >= {GOAL_RATIO:.0f}x); "
              f"gft {gft.median:,.0f} points/s (goal >= {GOAL_POINTS:,})")
    else:
        print("skipped: MLflow side (mlflow not installed; see bench/README.md)")
    record("ingest", out, quick=a.quick)
    return 0
