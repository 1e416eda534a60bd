"""Sweeps without a worker: bad input (service and API: 400 naming the field, nothing created),
a grid sweep queues its first trials through the launch service, cancel, the sweep page's plot data."""
from __future__ import annotations

import json

import optuna
import pytest

from tests.runs_support import launch_inputs, reward_config, tiny_assets, toy_dataset  # noqa: F401
from webapp.runs.models import Run
from webapp.sweeps import search, services
from webapp.sweeps.models import Sweep, SweepTrial



@pytest.fixture
def base(launch_inputs) -> dict:
    return {k: v for k, v in launch_inputs.items() if k not in ("name", "tau", "seed", "lr")}


def sweep_data(base: dict, **over) -> dict:
    return {"name": "tau sweep", "strategy": "grid", "base": base, "parameters": {"tau": [0.2, 0.6]},
            "budget": {"runs": 4, "parallel": 1}, "target": {"metric": "reward/mean", "direction": "max"}, **over}


def nothing_created() -> bool:
    return not Sweep.objects.exists() and not Run.objects.exists() and not SweepTrial.objects.exists()


BAD = [
    ({"parameters": {"nope": [1, 2]}}, "parameters.nope", "Unknown setting"),
    ({"parameters": {"output_dir": ["a", "b"]}}, "parameters.output_dir", "not bounded"),
    ({"parameters": {"tau": []}}, "parameters.tau", "empty"),
    ({"parameters": {"tau": [0.5, 1.5]}}, "parameters.tau", "must be in (0, 1]"),
    ({"parameters": {"n_self": {"low": 1, "high": 999}}, "strategy": "random"}, "parameters.n_self", "999"),
    ({"parameters": {"tau": [0.1, 0.2, 0.3, 0.4, 0.5]}}, "budget.runs", "grid has 5 points"),
    ({"parameters": {"lr": {"low": 1e-4, "high": 1e-2}}}, "parameters.lr", "grid takes a list"),
    ({"parameters": {}}, "parameters", "at least one"),
    ({"target": {"metric": "loss", "direction": "up"}}, "target.direction", "max or min"),
    ({"budget": {"runs": 0}}, "budget.runs", "1 to"),
]


@pytest.mark.django_db
def test_bad_sweep_input_names_the_field_and_creates_nothing(team, user, base):
    studies = len(optuna.get_all_study_names(search.storage()))
    for over, field, text in BAD:
        with pytest.raises(services.SweepError) as exc:
            services.create_sweep(team, user, sweep_data(base, **over))
        assert text in " ".join(exc.value.errors.get(field, [])), (over, exc.value.errors)
        assert nothing_created()
    assert len(optuna.get_all_study_names(search.storage())) == studies


@pytest.mark.django_db
def test_bad_base_and_bad_parameter_value_for_the_run_are_400_through_the_api(api_client, base):
    studies = len(optuna.get_all_study_names(search.storage()))
    resp = api_client.post("/api/sweeps/", sweep_data({**base, "dataset": 999999}), format="json")
    assert resp.status_code == 400 and "base.dataset" in resp.json(), resp.json()
    # n_teacher 5 is within gft_core's bounds but more than the toy dataset's rows offer
    resp = api_client.post("/api/sweeps/", sweep_data({k: v for k, v in base.items() if k != "n_teacher"},
                                                      parameters={"n_teacher": [1, 5]}), format="json")
    assert resp.status_code == 400 and "parameters.n_teacher" in resp.json(), resp.json()
    resp = api_client.post("/api/sweeps/", sweep_data(base, parameters={"tau": []}), format="json")
    assert resp.status_code == 400 and "parameters.tau" in resp.json()
    resp = api_client.post("/api/sweeps/", sweep_data(base, parameters={"data.path": ["a"]}), format="json")
    assert resp.status_code == 400 and "parameters.data.path" in resp.json()
    assert nothing_created() and len(optuna.get_all_study_names(search.storage())) == studies


@pytest.mark.django_db(transaction=True)
def test_grid_sweep_queues_parallel_trials_groups_seeds_and_cancel_stops_them(api_client, base, auth_client):
    resp = api_client.post("/api/sweeps/", sweep_data(base, parameters={"tau": [0.2], "seed": [0, 1, 2]},
                                                      budget={"runs": 3, "parallel": 2}), format="json")
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    assert body["progress"]["budget"] == 3 and body["asked"] == 2 and len(body["trials"]) == 2
    runs = Run.objects.filter(sweep_trial__sweep_id=body["id"]).order_by("pk")
    assert [r.status for r in runs] == ["queued", "queued"]
    assert {r.config["tau"] for r in runs} == {0.2} and len({r.config["seed"] for r in runs}) == 2
    assert all(r.config["max_steps"] == 4 for r in runs)
    study = optuna.load_study(study_name=Sweep.objects.get().study_name, storage=search.storage())
    assert len(study.trials) == 2

    # Trials that differ only in seed are one row: mean +/- std of their values.
    for value, trial in zip((0.5, 0.7), SweepTrial.objects.order_by("number")):
        SweepTrial.objects.filter(pk=trial.pk).update(state="complete", value=value)
    page = auth_client.get(f"/sweeps/{body['id']}/")
    assert page.status_code == 200
    html = page.content.decode()
    data = json.loads(html.split('<script id="sweep-data" type="application/json">')[1].split("</script>")[0])
    assert data["params"] == ["tau", "seed"] and [t["value"] for t in data["trials"]] == [0.5, 0.7]
    assert "sweep-parcoords" in html and f"/compare/?runs={runs[0].pk},{runs[1].pk}" in html
    best = SweepTrial.objects.get(value=0.7).run_id
    assert "0.6000 ± 0.1414 (n=2)" in html and f"run #{best}</a>" in html  # the seed group's row; the best run

    resp = api_client.post(f"/api/sweeps/{body['id']}/cancel/")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert set(Run.objects.values_list("status", flat=True)) == {"cancelled"}
    assert Sweep.objects.get().asked == 2  # cancelled runs launched nothing more
    assert api_client.post(f"/api/sweeps/{body['id']}/cancel/").status_code == 409


@pytest.mark.django_db
def test_new_sweep_page_reuses_the_launch_form_and_starts_a_sweep(auth_client, launch_inputs):
    assert "/sweeps/new/" in auth_client.get("/runs/new/").content.decode()
    page = auth_client.get("/sweeps/new/").content.decode()
    assert 'name="parameters"' in page and 'name="tau"' in page and 'name="dataset"' in page
    form = {**launch_inputs, "tags": "s", "sweep_name": "from the form", "strategy": "grid", "parallel": 1,
            "target": "reward/mean", "direction": "max", "mode": "final", "pruner": "median", "sweep_seed": 0}
    bad = auth_client.post("/sweeps/new/", {**form, "parameters": "tau: [0.2, 7]"})
    assert bad.status_code == 200 and "parameters.tau" in bad.content.decode() and not Sweep.objects.exists()
    resp = auth_client.post("/sweeps/new/", {**form, "parameters": "tau: [0.2, 0.4]"})
    assert resp.status_code == 302, resp.content.decode()[:3000]
    sweep = Sweep.objects.get()
    assert sweep.parameters == {"tau": {"values": [0.2, 0.4]}} and "tau" not in sweep.base
    assert sweep.max_runs == 2 and sweep.pruner["name"] == "median" and sweep.trials.count() == 1
