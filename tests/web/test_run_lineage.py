"""Start a run from another run (issue 19, item 2): the final model or one checkpoint of a finished
run of the same team; the lineage on both run pages; every bad source a 4xx naming the field with
nothing created. No worker: the source run's files are a real model directory copied into place
(the pipeline e2e test trains through the same path)."""
from __future__ import annotations

import json
import shutil

import pytest
from django.urls import reverse

from tests.runs_support import launch_inputs, make_dataset, reward_config, tiny_assets, toy_dataset  # noqa: F401
from webapp.runs import services
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def source(api_client, launch_inputs, tiny_assets) -> Run:
    """A succeeded run with a final model and a checkpoint at step 2 on disk."""
    resp = api_client.post("/api/runs/", {**launch_inputs, "name": "source"}, format="json")
    assert resp.status_code == 201, resp.json()
    run = Run.objects.get(pk=resp.json()["id"])
    shutil.copytree(tiny_assets["model"], run.directory / "final")
    step2 = run.directory / "checkpoints" / "step-2"
    shutil.copytree(tiny_assets["model"], step2 / "model")
    (step2 / "trainer_state.json").write_text(json.dumps({"step": 2}))
    services.transition(run, Run.Status.RUNNING)
    return services.transition(run, Run.Status.SUCCEEDED, step=4)


def test_start_from_the_final_model_and_from_a_checkpoint(api_client, auth_client, launch_inputs, source):
    inputs = {k: v for k, v in launch_inputs.items() if k != "model"}
    final = api_client.post("/api/runs/", {**inputs, "init_from_run": source.pk}, format="json")
    assert final.status_code == 201, final.json()
    assert final.json()["init_from_run"] == source.pk and final.json()["init_from_step"] is None
    assert final.json()["config"]["model_path"] == str(source.directory / "final")

    ckpt = api_client.post("/api/runs/", {**inputs, "init_from_run": source.pk, "init_from_step": 2}, format="json")
    assert ckpt.status_code == 201, ckpt.json()
    assert ckpt.json()["config"]["model_path"] == str(source.directory / "checkpoints" / "step-2" / "model")

    parent_page = auth_client.get(reverse("runs:detail", args=[source.pk])).content.decode()
    assert f"continued by <a href=\"/runs/{final.json()['id']}/\">#{final.json()['id']}</a>" in parent_page
    assert f"#{ckpt.json()['id']}</a> (from step 2)" in parent_page
    child_page = auth_client.get(reverse("runs:detail", args=[ckpt.json()["id"]])).content.decode()
    assert f"starts from <a href=\"/runs/{source.pk}/\">#{source.pk}</a> step 2" in child_page

    # The form takes the same inputs (prefilled from the run page's "Start a run from this one").
    form = auth_client.get(reverse("runs:launch") + f"?init_from_run={source.pk}")
    assert form.context["form"]["init_from_run"].value() == source.pk
    data = {k: ("" if v is None else v) for k, v in {**inputs, "tags": "", "init_from_run": source.pk}.items()}
    resp = auth_client.post(reverse("runs:launch"), data)
    assert resp.status_code == 302, resp.context["form"].errors
    assert Run.objects.order_by("-pk").first().init_from_run_id == source.pk


def test_bad_sources_are_refused_and_nothing_is_created(api_client, other_client, launch_inputs, source,
                                                         other_team, tiny_assets):
    before = Run.objects.count()
    missing = api_client.post("/api/runs/", {**launch_inputs, "init_from_run": source.pk, "init_from_step": 3},
                              format="json")
    assert missing.status_code == 400 and "step 3" in missing.json()["init_from_step"][0], missing.json()
    assert "2" in missing.json()["init_from_step"][0]  # the steps it has
    step_alone = api_client.post("/api/runs/", {**launch_inputs, "init_from_step": 2}, format="json")
    assert step_alone.status_code == 400 and "init_from_step" in step_alone.json()

    unfinished = api_client.post("/api/runs/", {**launch_inputs, "name": "unfinished"}, format="json").json()["id"]
    before += 1
    resp = api_client.post("/api/runs/", {**launch_inputs, "init_from_run": unfinished}, format="json")
    assert resp.status_code == 400 and "queued" in resp.json()["init_from_run"][0], resp.json()

    # Another team's run: not found, whoever asks from outside it.
    foreign_ds = make_dataset(other_team, tiny_assets, name="theirs")
    from webapp.rewards.models import RewardConfig

    foreign_reward = RewardConfig.objects.create(team=other_team, name="m", spec={"name": "math_verify", "params": {}})
    body = {**launch_inputs, "dataset": foreign_ds.pk, "reward_config": foreign_reward.pk, "init_from_run": source.pk}
    resp = other_client.post("/api/runs/", json.dumps(body), content_type="application/json")
    assert resp.status_code == 404, resp.content
    assert Run.objects.count() == before
