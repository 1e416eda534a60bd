"""Pipelines without a worker (issue 19, item 2): bad stages refused with nothing created, the
advance / stop-on-failure / resume / cancel rules driven through the real run lifecycle
(webapp.runs.services.transition, whose run_status_changed signal advances the pipeline), and the
pages. The e2e test (tests/e2e/test_pipeline_e2e.py) trains two stages with a real worker."""
from __future__ import annotations

import json
import shutil

import pytest
from django.urls import reverse

from tests.runs_support import launch_inputs, make_dataset, reward_config, tiny_assets, toy_dataset  # noqa: F401
from webapp.pipelines.models import Pipeline
from webapp.runs import services
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)


def stage(inputs: dict, method: str, **changes) -> dict:
    out = {k: v for k, v in inputs.items() if k not in ("model", "name", "micro_batch_size")}
    return {**out, "method": method, "micro_batch_size": 2, **changes}


def body(launch_inputs, *methods, **first) -> dict:
    stages = [stage(launch_inputs, m) for m in methods]
    stages[0].update(model=launch_inputs["model"], **first)
    return {"name": "p", "stages": stages}


def test_bad_stages_are_400_naming_stage_and_field_and_nothing_is_created(api_client, other_client, launch_inputs,
                                                                          other_team, tiny_assets):
    cases = [
        ({"stages": [stage(launch_inputs, "sft", model=launch_inputs["model"]), stage(launch_inputs, "gft", tau=7)]},
         "stages.1.tau"),
        ({"stages": [stage(launch_inputs, "sft", model=launch_inputs["model"], bogus=1)]}, "stages.0.bogus"),
        ({"stages": [stage(launch_inputs, "nope", model=launch_inputs["model"])]}, "stages.0.method"),
        ({"stages": [stage(launch_inputs, "sft", model=launch_inputs["model"]),
                     stage(launch_inputs, "gft", model=launch_inputs["model"])]}, "stages.1.model"),
        ({"stages": []}, "stages"),
    ]
    for payload, field in cases:
        resp = api_client.post("/api/pipelines/", payload, format="json")
        assert resp.status_code == 400 and field in resp.json(), (field, resp.json())
    unfinished = api_client.post("/api/runs/", launch_inputs, format="json").json()["id"]
    resp = api_client.post("/api/pipelines/", body(launch_inputs, "gft", init_from_run=unfinished), format="json")
    assert resp.status_code == 400 and "queued" in resp.json()["stages.0.init_from_run"][0], resp.json()
    # Another team asking to start from this team's run: 404, as if the run did not exist.
    theirs = {**body(launch_inputs, "gft", init_from_run=unfinished)}
    theirs["stages"][0].update(dataset=make_dataset(other_team, tiny_assets, name="b").pk)
    from webapp.rewards.models import RewardConfig

    theirs["stages"][0]["reward_config"] = RewardConfig.objects.create(
        team=other_team, name="m", spec={"name": "math_verify", "params": {}}).pk
    resp = other_client.post("/api/pipelines/", json.dumps(theirs), content_type="application/json")
    assert resp.status_code == 404, resp.content
    assert Pipeline.objects.count() == 0 and Run.objects.count() == 1  # only the unfinished source


def test_stages_advance_stop_on_failure_resume_and_cancel(api_client, auth_client, launch_inputs, tiny_assets):
    resp = api_client.post("/api/pipelines/", body(launch_inputs, "sft", "gft", "grpo"), format="json")
    assert resp.status_code == 201, resp.json()
    p = resp.json()
    assert p["status"] == "running" and [s["method"] for s in p["stages"]] == ["sft", "gft", "grpo"]
    first = Run.objects.get(pk=p["stages"][0]["run"]["id"])
    assert first.status == "queued" and f"pipeline:{p['id']}" in first.tags
    assert p["stages"][1]["run"] is None and Run.objects.count() == 1

    # Stage 1 fails: the rest stops, the status names the stage and the reason.
    services.transition(first, Run.Status.RUNNING)
    services.transition(first, Run.Status.FAILED, error="CUDA out of memory")
    pipeline = Pipeline.objects.get(pk=p["id"])
    assert pipeline.status == "failed", pipeline.message
    assert "Stage 1 (sft" in pipeline.message and "CUDA out of memory" in pipeline.message
    assert "stages 2-3 not started" in pipeline.message and Run.objects.count() == 1

    # Resumed, it carries on; succeeding, stage 2 is queued from its final model.
    services.transition(first, Run.Status.QUEUED)
    assert Pipeline.objects.get(pk=p["id"]).status == "running"
    services.transition(first, Run.Status.RUNNING)
    shutil.copytree(tiny_assets["model"], first.directory / "final")
    services.transition(first, Run.Status.SUCCEEDED, step=4)
    second = Pipeline.objects.get(pk=p["id"]).stages.get(index=1).run
    assert second is not None and second.status == "queued" and second.method == "gft"
    assert second.init_from_run_id == first.pk and second.init_from_step is None
    assert second.config["model_path"] == str(first.directory / "final")

    page = auth_client.get(reverse("pipelines:detail", args=[p["id"]])).content.decode()
    assert f"?runs={first.pk},{second.pk}" in page and "Compare all stages" in page
    # Cancel: the active stage's run is cancelled, no later stage starts.
    resp = api_client.post(f"/api/pipelines/{p['id']}/cancel/")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled", resp.json()
    assert f"during stage 2 (gft, run #{second.pk})" in resp.json()["message"]
    second.refresh_from_db()
    assert second.status == "cancelled" and resp.json()["stages"][2]["run"] is None
    assert api_client.post(f"/api/pipelines/{p['id']}/cancel/").status_code == 409


def test_new_pipeline_page_and_list(auth_client, launch_inputs):
    assert auth_client.get(reverse("pipelines:new") + "?methods=sft,gft").status_code == 200
    data = {"methods": "sft,gft", "name": "from the form"}
    for i, method in enumerate(("sft", "gft")):
        fields = stage(launch_inputs, method, tags="")
        if i == 0:
            fields["model"] = launch_inputs["model"]
        data.update({f"s{i}-{k}": ("" if v is None else v) for k, v in fields.items()})
    resp = auth_client.post(reverse("pipelines:new"), {**data, "s1-tau": 7})
    assert resp.status_code == 200 and Pipeline.objects.count() == 0
    assert "tau" in resp.context["stages"][1][1].errors
    resp = auth_client.post(reverse("pipelines:new"), data)
    assert resp.status_code == 302, [f.errors for _, f in resp.context["stages"]]
    pipeline = Pipeline.objects.get()
    assert pipeline.name == "from the form" and pipeline.stages.count() == 2
    assert "from the form" in auth_client.get(reverse("pipelines:list")).content.decode()
