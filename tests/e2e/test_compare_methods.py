"""`gft-studio compare` (stack/compare.py) end to end at a tiny size: its own real Celery workers
validate the task's datasets, train two methods for two steps each with their eval suite, and
evaluate the base model; the command saves a team dashboard with the leaderboard and prints it."""
from __future__ import annotations

import os
import signal

import pytest

from stack import launcher
from tests.runs_support import tiny_assets  # noqa: F401

from ..conftest import _test_database_url, purge_queues

pytestmark = pytest.mark.django_db(transaction=True)


def test_compare_runs_methods_evaluates_checkpoints_and_saves_a_dashboard(tmp_path, monkeypatch, tiny_assets,  # noqa: F811
                                                                          capsys):
    from webapp.dashboards.models import Dashboard
    from webapp.evaluations.models import EvalResult, Evaluation
    from webapp.evaluations.selectors import leaderboard
    from webapp.runs.models import Run

    purge_queues()
    monkeypatch.setattr(launcher, "VAR", tmp_path / "var")
    monkeypatch.setenv("DATABASE_URL", _test_database_url())  # the workers it starts use the test database
    outside = signal.getsignal(signal.SIGTERM)
    environ = dict(os.environ)  # the command sets its settings (STATIC_ROOT...) for the processes it starts
    try:
        rc = launcher.main(["compare", "--steps", "2", "--methods", "sft,gft", "--team", "Compare",
                            "--model", str(tiny_assets["model"]), "--eval-problems", "4", "--k", "1",
                            "--eval-interval", "2"])
    finally:
        signal.signal(signal.SIGTERM, outside)
        os.environ.clear()
        os.environ.update(environ)  # later tests' servers must not inherit them
    logs = "".join(p.read_text(errors="replace")[-3000:] for p in (tmp_path / "var" / "logs").glob("*.log"))
    assert rc == 0, logs

    runs = list(Run.objects.filter(team__name="Compare").order_by("pk"))
    assert [(r.method, r.status, r.step) for r in runs] == [("sft", "succeeded", 2), ("gft", "succeeded", 2)]
    assert len({r.config["seed"] for r in runs}) == 1 and len({r.dataset_id for r in runs}) == 1
    for run in runs:  # every checkpoint (eval_interval = checkpoint_interval = 2) evaluated on the benchmark
        evs = Evaluation.objects.filter(run=run, status="succeeded").order_by("checkpoint_step")
        assert [e.checkpoint_step for e in evs] == [2]
        for res in EvalResult.objects.filter(evaluation__in=evs):
            assert res.benchmark_name == "toy-easy-eval-4" and res.metrics["n_problems"] == 4
            assert 0.0 <= res.metrics["avg_at_k"] <= 1.0 and len(res.problems) == 4
    base = Evaluation.objects.get(team__name="Compare", run__isnull=True)
    assert base.status == "succeeded" and base.results.count() == 1

    dash = Dashboard.objects.get(team__name="Compare")
    assert dash.run_ids == [r.pk for r in runs] and dash.leaderboard["pick"] == "final"
    lb = leaderboard(dash.team, runs, runs[0].eval_suite, pick=dash.leaderboard["pick"])
    assert lb["suite"] == dash.leaderboard["suite"] == runs[0].eval_suite_id
    rows = {(r["kind"], r.get("method")): r for r in lb["rows"]}
    assert set(rows) == {("run", "sft"), ("run", "gft"), ("base", None)}
    assert all(isinstance(r["values"]["toy-easy-eval-4"], float) for r in rows.values())

    out = capsys.readouterr().out
    assert "| method | step | toy-easy-eval-4 |" in out and "| base model | 0 |" in out and "| gft | 2 |" in out
