"""Metric rollups are precomputed by the worker (at the end of every run) and by housekeeping (for
long running runs), so the first chart view of a big run does not build them.

Rollup levels are scaled down (as in test_series.py) so that short series go through them.
"""
from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.metric_support import write_series
from tests.runs_support import launch_inputs, reward_config, tiny_assets, toy_dataset  # noqa: F401
from webapp.runs import launch as launching
from webapp.runs import series
from webapp.runs.models import MetricKey, MetricPoint, MetricRollup, Run
from workers.tasks import housekeeping, train_run


def rollup_tops(run: Run, key: str) -> dict[int, int]:
    """Last rolled-up bucket per width of one series (-1: none)."""
    kid = MetricKey.objects.get(name=key).pk
    rows = MetricRollup.objects.filter(run=run, key_id=kid, attempt=run.attempt)
    return {w: max((r.bucket for r in rows if r.width == w), default=-1) for w in series.LEVELS}


@pytest.mark.django_db(transaction=True)  # the worker's sink writes through its own connection
def test_a_run_ends_with_its_rollups_built(monkeypatch, team, user, launch_inputs):
    monkeypatch.setattr(series, "LEVELS", (2, 4))
    monkeypatch.setattr(series, "ROLLUP_MIN_STEPS", 4)
    plan = launching.build_config(team, {**launch_inputs, "max_steps": 9, "checkpoint_interval": 0})
    config, fields = plan.config, plan.fields
    run = Run.objects.create(team=team, created_by=user, config=config, status=Run.Status.QUEUED,
                             queued_at=timezone.now(), **fields)
    # The task body as the worker runs it, in this process (no broker).
    assert train_run.apply(args=[run.pk]).get() == Run.Status.SUCCEEDED
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED and run.step == 9, (run.error, run.log_tail)
    # Every complete bucket of every series is rolled up: steps 1..9 -> width 2: buckets 0..3
    # (bucket 4 = steps 8, 9 is complete too: the run has ended), width 4: buckets 0..1.
    for key in ("loss", "dcr/rectified_frac", "reward/mean"):
        assert rollup_tops(run, key) == {2: 4, 4: 1}, key
    # The first view finds nothing left to build.
    with CaptureQueriesContext(connection) as queries:
        got = series.load_series([run.pk], ["loss"], max_points=4)[run.pk]["loss"]
    assert not [q for q in queries.captured_queries if "INSERT" in q["sql"]]
    values = dict(MetricPoint.objects.filter(run_id=run.pk, key__name="loss").values_list("step", "value"))
    assert min(values.values()) in got["value"] and max(values.values()) in got["value"]


@pytest.mark.django_db
def test_housekeeping_rolls_up_long_running_runs_only_over_new_points(monkeypatch, team):
    monkeypatch.setattr(series, "LEVELS", (4, 32))
    monkeypatch.setattr(series, "ROLLUP_MIN_STEPS", 1000)
    now = timezone.now()
    run = Run.objects.create(team=team, name="long", method="gft", config={}, status=Run.Status.RUNNING, started_at=now,
                             heartbeat_at=now, attempt=1, step=2000, total_steps=10_000)
    short = Run.objects.create(team=team, name="short", method="gft", config={}, status=Run.Status.RUNNING, started_at=now,
                               heartbeat_at=now, attempt=1, step=500, total_steps=10_000)
    t0 = now.timestamp()
    write_series(run, "loss", range(1, 2001), [float(s % 97) for s in range(1, 2001)],
                 walls=[t0 + s * 1e-3 for s in range(1, 2001)])
    write_series(short, "loss", range(1, 501), [1.0] * 500, walls=[t0] * 500)

    assert housekeeping()["rolled_up"] == [run.pk]
    # Buckets before the newest point's bucket are complete: 2000 // 4 - 1 and 2000 // 32 - 1.
    assert rollup_tops(run, "loss") == {4: 499, 32: 61}
    assert not MetricRollup.objects.filter(run=short).exists()

    # Nothing new: housekeeping writes nothing.
    with CaptureQueriesContext(connection) as queries:
        housekeeping()
    assert not [q for q in queries.captured_queries if "runs_metricrollup" in q["sql"] and "INSERT" in q["sql"]]
    assert rollup_tops(run, "loss") == {4: 499, 32: 61}

    # New steps: only the newly completed buckets are added.
    write_series(run, "loss", range(2001, 2101), [0.5] * 100, walls=[t0 + s * 1e-3 for s in range(2001, 2101)])
    Run.objects.filter(pk=run.pk).update(step=2100)
    housekeeping()
    assert rollup_tops(run, "loss") == {4: 2100 // 4 - 1, 32: 2100 // 32 - 1}
    assert MetricRollup.objects.filter(run=run, width=4).count() == 2100 // 4
