"""Chart series: min/max downsampling (plain and through rollups), zoom, live tail, resume, summaries,
histograms, and the JSON/CSV endpoints with team scoping."""
from __future__ import annotations

import math
import random

import pytest
from django.utils import timezone

from tests.metric_support import write_series
from webapp.runs import series
from webapp.runs.models import MetricHistogram, MetricRollup, Run

pytestmark = pytest.mark.django_db


def make_run(team, **fields) -> Run:
    fields.setdefault("status", Run.Status.SUCCEEDED)
    return Run.objects.create(team=team, name=fields.pop("name", "r"), method="gft", config={"tau": 0.3}, **fields)


def spiky(n: int, seed: int = 0, start: int = 1) -> tuple[list[int], list[float]]:
    """A noisy series with single-step spikes up and down at random steps."""
    rng = random.Random(seed)
    steps = list(range(start, start + n))
    values = [math.sin(s / 300) + rng.random() * 0.1 for s in steps]
    for i in rng.sample(range(n), 12):
        values[i] += rng.choice([-25.0, 40.0]) * rng.random()
    return steps, values


def assert_bucket_extremes_survive(steps, values, got, width):
    """Every bucket (step // width) keeps its min and max point, and every returned point is real."""
    real = dict(zip(steps, values))
    pairs = set(zip(got["step"], got["value"]))
    for s, v in pairs:
        assert real[s] == v, f"step {s}: returned {v}, stored {real[s]}"
    buckets: dict[int, list[tuple[float, int]]] = {}
    for s, v in zip(steps, values):
        buckets.setdefault(s // width, []).append((v, s))
    for b, pts in buckets.items():
        lo, hi = min(pts), max(pts)
        assert (lo[1], lo[0]) in pairs, f"min of bucket {b} (step {lo[1]}) lost"
        assert (hi[1], hi[0]) in pairs, f"max of bucket {b} (step {hi[1]}) lost"
    assert got["step"] == sorted(got["step"])


def test_short_series_comes_back_whole(team):
    run = make_run(team)
    steps, values = spiky(400)
    write_series(run, "loss", steps, values)
    got = series.load_series([run.pk], ["loss", "never/logged"], max_points=1000)[run.pk]
    assert list(got) == ["loss"]
    assert got["loss"]["step"] == steps and got["loss"]["value"] == values
    assert got["loss"]["wall_time"][0] == 1.7e9 + 1


def test_min_and_max_of_every_bucket_survive(team):
    run = make_run(team)
    steps, values = spiky(5000, seed=1)
    write_series(run, "loss", steps, values)
    got = series.load_series([run.pk], ["loss"], max_points=200)[run.pk]["loss"]
    width = series.bucket_width(steps[0], steps[-1], 200)
    assert width > 1
    assert len(got["step"]) <= 2 * (5000 // width + 1)
    assert_bucket_extremes_survive(steps, values, got, width)
    assert max(got["value"]) == max(values) and min(got["value"]) == min(values)


@pytest.fixture
def small_rollups(monkeypatch):
    """Rollup levels scaled down so a test series of 20,000 points goes through them."""
    monkeypatch.setattr(series, "LEVELS", (4, 32))
    monkeypatch.setattr(series, "ROLLUP_MIN_STEPS", 1000)


def test_rollups_give_the_same_bucket_extremes(team, small_rollups):
    run = make_run(team)
    steps, values = spiky(20_000, seed=2, start=3)
    write_series(run, "loss", steps, values)
    got = series.load_series([run.pk], ["loss"], max_points=300)[run.pk]["loss"]
    assert MetricRollup.objects.filter(run=run, width=32).exists(), "the long series should use rollups"
    width = series.bucket_width(steps[0], steps[-1], 300)
    assert width % 32 == 0
    assert_bucket_extremes_survive(steps, values, got, width)
    # The second read only reads rollups (nothing new) and gives the same answer.
    assert series.load_series([run.pk], ["loss"], max_points=300)[run.pk]["loss"] == got


def test_zoom_returns_full_resolution_even_over_rollups(team, small_rollups):
    run = make_run(team)
    steps, values = spiky(20_000, seed=3)
    write_series(run, "loss", steps, values)
    series.load_series([run.pk], ["loss"], max_points=300)  # builds rollups
    got = series.load_series([run.pk], ["loss"], step_min=5_001, step_max=5_800, max_points=1000)[run.pk]["loss"]
    assert got["step"] == list(range(5_001, 5_801))
    assert got["value"] == values[5_000:5_800]
    # A wider zoom is bucketed again, over rollups and raw edges, with every bucket's extremes.
    lo, hi = 1_003, 14_999
    got = series.load_series([run.pk], ["loss"], step_min=lo, step_max=hi, max_points=200)[run.pk]["loss"]
    inside = [(s, v) for s, v in zip(steps, values) if lo <= s <= hi]
    assert_bucket_extremes_survive([s for s, _ in inside], [v for _, v in inside], got,
                                   series.bucket_width(lo, hi, 200))
    assert got["step"][0] >= lo and got["step"][-1] <= hi


def test_live_run_rolls_up_only_complete_buckets_and_sees_new_points(team, small_rollups):
    run = make_run(team, status=Run.Status.RUNNING, started_at=timezone.now(), attempt=1)
    now = timezone.now().timestamp()
    steps, values = spiky(10_000, seed=4)
    write_series(run, "loss", steps, values, walls=[now + s * 1e-3 for s in steps])
    series.load_series([run.pk], ["loss"], max_points=200)
    top = MetricRollup.objects.filter(run=run, width=4).order_by("-bucket").first()
    assert (top.bucket + 1) * 4 - 1 < steps[-1], "the bucket of the newest point is not complete yet"
    more_steps, more_values = list(range(10_001, 12_001)), [0.0] * 2000
    more_values[1500] = 99.0  # a spike in the new part
    write_series(run, "loss", more_steps, more_values, walls=[now + s * 1e-3 for s in more_steps])
    got = series.load_series([run.pk], ["loss"], max_points=200)[run.pk]["loss"]
    assert 99.0 in got["value"] and got["step"][-1] == 12_000
    all_steps, all_values = steps + more_steps, values + more_values
    assert_bucket_extremes_survive(all_steps, all_values, got, series.bucket_width(1, 12_000, 200))


def test_a_running_run_is_read_through_its_step_so_a_poller_skips_nothing(team):
    """The poller asks for the steps after the newest it has over all keys. Keys are read one query
    each; a flush committed between two of them (here: step 8 of `lr` but not yet of `loss` as
    Run.step says 7) must not hand out step 8 of one key only, or the poller's next request
    (step_min 9) would never bring `loss` at step 8."""
    run = make_run(team, status=Run.Status.RUNNING, started_at=timezone.now(), attempt=1)
    write_series(run, "loss", range(1, 8), [1.0] * 7)
    write_series(run, "lr", range(1, 9), [0.1] * 8)
    Run.objects.filter(pk=run.pk).update(step=7)  # step 8's flush is not committed for every key yet
    got = series.load_series([run.pk], ["loss", "lr"], step_min=1)[run.pk]
    assert got["loss"]["step"][-1] == got["lr"]["step"][-1] == 7
    assert series.load_series([run.pk], ["lr"], step_min=8)[run.pk] == {}
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED)  # finished: every stored point
    assert series.load_series([run.pk], ["lr"], step_min=8)[run.pk]["lr"]["step"] == [8]


def test_resume_drops_rollups_of_the_earlier_attempt(team, small_rollups):
    run = make_run(team, status=Run.Status.FAILED, attempt=1)
    steps, values = spiky(8_000, seed=5)
    write_series(run, "loss", steps, values)
    series.load_series([run.pk], ["loss"], max_points=100)
    assert MetricRollup.objects.filter(run=run, attempt=1).exists()
    # Resume from the checkpoint at step 4000: the sink deletes later steps, the trainer rewrites them.
    from webapp.runs.models import MetricPoint

    MetricPoint.objects.filter(run_id=run.pk, step__gt=4000).delete()
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED, attempt=2)
    new_values = [-500.0 if s == 6000 else 1.0 for s in range(4001, 8001)]
    write_series(run, "loss", list(range(4001, 8001)), new_values)
    run.refresh_from_db()
    got = series.load_series([run.pk], ["loss"], max_points=100)[run.pk]["loss"]
    assert not MetricRollup.objects.filter(run=run, attempt=1).exists()
    assert min(got["value"]) == -500.0
    assert max(got["value"]) == max(values[:4000] + [1.0])


def test_final_and_best(team, small_rollups):
    run = make_run(team)
    steps, values = spiky(5_000, seed=6)
    write_series(run, "loss", steps, values)
    write_series(run, "reward/mean", [1, 2, 3], [0.1, 0.9, 0.5])
    write_series(run, "adv/std", [1, 2], [0.3, 0.2])
    out = series.final_and_best([run.pk], ["loss", "reward/mean", "adv/std", "nothing"])[run.pk]
    assert out["loss"]["final"] == values[-1] and out["loss"]["final_step"] == 5_000
    assert out["loss"]["best"] == min(values) and out["loss"]["direction"] == "min"
    assert out["loss"]["best_step"] == steps[values.index(min(values))]
    assert out["reward/mean"] == {**out["reward/mean"], "final": 0.5, "best": 0.9, "best_step": 2, "direction": "max"}
    assert out["adv/std"]["best"] is None and out["adv/std"]["max"] == 0.3
    assert "nothing" not in out


def test_histograms_sum_bins_over_step_buckets(team):
    run = make_run(team)
    from tests.metric_support import key_id

    kid = key_id("adv/hist")
    MetricHistogram.objects.bulk_create([MetricHistogram(run_id=run.pk, key_id=kid, step=s, lo=-3, hi=3,
                                                         counts=[s, 1, 0]) for s in range(1, 101)])
    whole = series.load_histograms([run.pk], "adv/hist", max_rows=200)[run.pk]
    assert whole["step"] == list(range(1, 101)) and whole["counts"][4] == [5, 1, 0]
    summed = series.load_histograms([run.pk], "adv/hist", max_rows=10)[run.pk]
    assert len(summed["step"]) <= 11
    assert sum(c[0] for c in summed["counts"]) == sum(range(1, 101))
    assert sum(c[1] for c in summed["counts"]) == 100 and summed["lo"] == -3


def test_series_json_scoped_to_team_and_nan_safe(auth_client, other_client, team):
    run = make_run(team)
    write_series(run, "loss", [1, 2, 3], [1.0, float("nan"), 0.5])
    url = f"/runs/series/?runs={run.pk}&keys=loss,lr&hist=adv/hist"
    body = auth_client.get(url).json()
    assert body["series"][str(run.pk)]["loss"]["value"] == [1.0, None, 0.5]
    assert body["runs"][str(run.pk)]["status"] == "succeeded"
    assert body["stream_ids"] == {str(run.pk): None}  # finished runs are not followed
    assert other_client.get(url).status_code == 404
    zoom = auth_client.get(f"/runs/series/?runs={run.pk}&keys=loss&step_min=2&step_max=3").json()
    assert zoom["series"][str(run.pk)]["loss"]["step"] == [2, 3]


def test_series_csv_has_every_point(auth_client, other_client, team):
    run = make_run(team)
    steps, values = spiky(3000, seed=7)
    write_series(run, "loss", steps, values)
    resp = auth_client.get(f"/runs/series.csv?runs={run.pk}&keys=loss")
    lines = b"".join(resp).decode().strip().splitlines()  # an async iterator (ASGI): the test client collects it
    assert lines[0] == "run_id,metric,step,value,wall_time"
    assert len(lines) == 3001 and lines[1].startswith(f"{run.pk},loss,1,")
    assert other_client.get(f"/runs/series.csv?runs={run.pk}&keys=loss").status_code == 404
