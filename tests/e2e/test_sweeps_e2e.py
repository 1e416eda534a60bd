"""Sweeps end to end with a real Celery worker, the trainer on the small model, Postgres and Redis:
a 2-point grid through `gft sweeps submit --follow` and `gft sweeps best`, then a 2-trial Optuna
TPE search with a median pruner whose second trial is pruned from live metrics and cancelled.
(Four runs in all: each costs a worker child and the model's load, most of this test's time.)"""
from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
import yaml

from tests.conftest import subprocess_env
from tests.runs_support import wait_for
from webapp.runs.models import Run, RunEvent
from webapp.sweeps import search
from webapp.sweeps.models import Sweep, SweepTrial

pytestmark = pytest.mark.django_db(transaction=True)


def gft(*args: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "client", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=400)


def test_grid_sweep_from_the_cli_and_a_pruned_tpe_search(celery_worker, live_server_url, api_token, api_client,
                                                             auth_client, launch_inputs, tmp_path):
    base = {k: v for k, v in launch_inputs.items() if k not in ("name", "tau", "lr")}
    env = subprocess_env(GFT_URL=live_server_url, GFT_TOKEN=api_token, XDG_CONFIG_HOME=str(tmp_path / "config"))

    # A grid of 2 points, 2 steps each, followed to the end from the CLI.
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "tau grid", "strategy": "grid", "base": {**base, "max_steps": 2}, "parameters": {"tau": [0.2, 0.6]},
        "budget": {"parallel": 2}, "target": {"metric": "reward/mean", "direction": "max"}}))
    submit = gft("sweeps", "submit", "sweep.yaml", "--follow", "--interval", "0.5", env=env, cwd=tmp_path)
    assert submit.returncode == 0, submit.stdout + submit.stderr + celery_worker.log()[-4000:]
    grid = Sweep.objects.get(name="tau grid")
    assert grid.status == "succeeded" and "2/2 launched" in submit.stdout
    trials = list(grid.trials.select_related("run"))
    assert sorted(t.params["tau"] for t in trials) == [0.2, 0.6]
    assert all(t.state == "complete" and t.run.status == "succeeded" and t.value is not None for t in trials)
    assert sorted(t.run.config["tau"] for t in trials) == [0.2, 0.6]
    best = gft("sweeps", "best", str(grid.pk), env=env, cwd=tmp_path)
    top = max(trials, key=lambda t: t.value)
    assert best.returncode == 0 and f"run #{top.run_id}" in best.stdout and "tau=" in best.stdout, best.stdout

    # TPE search of 2 trials over lr with a median pruner (1 startup trial). The target is the
    # logged `lr` itself, so the pruning is certain: with seed 0 TPE's startup trials draw lr
    # 1.25e-3 then 6.8e-4, and the second falls below the first one's at step 1.
    resp = api_client.post("/api/sweeps/", {
        "name": "lr search", "strategy": "tpe", "seed": 0, "base": {**base, "max_steps": 4},
        "parameters": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}, "budget": {"runs": 2, "parallel": 1},
        "target": {"metric": "lr", "direction": "max", "mode": "final"},
        "pruner": {"name": "median", "startup_trials": 1, "warmup_steps": 0}}, format="json")
    assert resp.status_code == 201, resp.json()
    sweep_id = resp.json()["id"]
    sweep = wait_for(lambda: Sweep.objects.get(pk=sweep_id).status != "running" and Sweep.objects.get(pk=sweep_id),
                     timeout=400, what="the TPE search to end", on_timeout=lambda: celery_worker.log()[-5000:])
    assert sweep.status == "succeeded" and sweep.asked == 2 and sweep.strategy == "tpe"
    trials = list(sweep.trials.select_related("run").order_by("number"))
    assert [t.state for t in trials] == ["complete", "pruned"], [(t.state, t.run.status) for t in trials]
    pruned = trials[1]
    assert pruned.run.status == "cancelled" and pruned.run.step < 4
    reasons = " ".join(RunEvent.objects.filter(run=pruned.run).values_list("message", flat=True))
    assert f"pruned at step {pruned.pruned_step}" in reasons, reasons
    study = optuna.load_study(study_name=sweep.study_name, storage=search.storage())
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"]
    assert study.best_trial.params["lr"] == pytest.approx(trials[0].params["lr"])

    detail = api_client.get(f"/api/sweeps/{sweep_id}/").json()
    assert detail["best"]["run"] == trials[0].run_id and len(detail["trials"]) == 2
    page = auth_client.get(f"/sweeps/{sweep_id}/").content.decode()
    assert "pruned at step" in auth_client.get(f"/runs/{trials[1].run_id}/").content.decode()
    assert f"run #{trials[0].run_id}" in page and "sweep-parcoords" in page
    assert Run.objects.filter(sweep_trial__isnull=True).count() == 0
