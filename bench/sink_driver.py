"""Throughput of PostgresRedisSink: `DEBUG=1 python -m bench.sink_driver [--steps N --keys K]`.

Logs N steps of K scalars into a scratch run of the configured database (DATABASE_URL, migrated),
times from the first log() until close() has made every point durable (committed), checks the
row count, then deletes the scratch run. Prints points per second.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")


def main(argv: list[str] | None = None) -> None:
    import django

    django.setup()
    from webapp.accounts.models import Team
    from webapp.runs.models import MetricPoint, Run
    from workers.sink import PostgresRedisSink

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--keys", type=int, default=50)
    args = p.parse_args(argv)

    team, _ = Team.objects.get_or_create(slug="bench-sink", defaults={"name": "bench-sink"})
    run = Run.objects.create(team=team, name="sink benchmark", method="gft", config={})
    keys = [f"bench/k{i}" for i in range(args.keys)]
    sink = PostgresRedisSink(run.pk)
    try:
        sink.start(total_steps=args.steps, start_step=0, config={})
        t0 = time.perf_counter()
        for step in range(1, args.steps + 1):
            sink.log(step, {k: step * 0.001 + i for i, k in enumerate(keys)})
        sink.close()
        elapsed = time.perf_counter() - t0
        stored = MetricPoint.objects.filter(run_id=run.pk).count()
        total = args.steps * args.keys
        assert stored == total, f"stored {stored} of {total} points"
        print(f"{total} points in {elapsed:.2f}s over {sink.flushes} flushes: {total / elapsed:,.0f} points/s durable")
    finally:
        MetricPoint.objects.filter(run_id=run.pk)._raw_delete(using="default")
        from webapp.runs import live

        live.client().delete(live.stream_key(run.pk))
        run.delete()


if __name__ == "__main__":
    main()
