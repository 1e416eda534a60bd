"""REST API: token auth, per-team scoping (other team 404, anonymous 401, viewer 403), run filters,
metrics endpoint, dataset/reward creation through the apps' services, OpenAPI schema."""
from __future__ import annotations

import time

import pytest
from rest_framework.test import APIClient

from tests.runs_support import launch_inputs, reward_config, tiny_assets, toy_dataset  # noqa: F401
from webapp.accounts.models import ApiToken, Membership
from webapp.datasets.models import Dataset
from webapp.runs import launch, progress
from webapp.runs.models import Run
from workers.sink import PostgresRedisSink

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def other_api(other_user):
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(other_user, 't')[1]}")
    return c


@pytest.fixture
def run(team, user, launch_inputs):
    return launch.submit_run(team, user, launch_inputs)


def test_anonymous_and_bad_token_get_401(client, run):
    assert client.get("/api/runs/").status_code == 401
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Bearer gft_nope")
    assert bad.get(f"/api/runs/{run.pk}/").status_code == 401


def test_other_team_gets_404_everywhere(other_api, run, toy_dataset, reward_config):
    for url in (f"/api/runs/{run.pk}/", f"/api/runs/{run.pk}/metrics/", f"/api/datasets/{toy_dataset.pk}/",
                f"/api/reward-configs/{reward_config.pk}/"):
        assert other_api.get(url).status_code == 404, url
    for url in (f"/api/runs/{run.pk}/cancel/", f"/api/runs/{run.pk}/resume/"):
        assert other_api.post(url).status_code == 404, url
        assert other_api.get(url).status_code == 404, url  # not 405: existence is not revealed
    assert other_api.get("/api/runs/").json()["results"] == []
    assert other_api.get("/api/datasets/").json()["results"] == []
    resp = other_api.post("/api/runs/", {"dataset": toy_dataset.pk, "reward_config": reward_config.pk}, format="json")
    assert resp.status_code == 400 and "dataset" in resp.json() and "reward_config" in resp.json()
    assert Run.objects.count() == 1


def test_viewer_reads_but_cannot_write(team, run, launch_inputs):
    from django.contrib.auth import get_user_model

    viewer = get_user_model().objects.create_user("vic")
    Membership.objects.create(user=viewer, team=team, role=Membership.Role.VIEWER)
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(viewer, 't')[1]}")
    assert c.get(f"/api/runs/{run.pk}/").status_code == 200
    assert c.post(f"/api/runs/{run.pk}/cancel/").status_code == 403
    assert c.post("/api/runs/", launch_inputs, format="json").status_code == 403


def test_create_list_filter_retrieve(api_client, run, launch_inputs, user):
    resp = api_client.post("/api/runs/", {**launch_inputs, "method": "gft_no_dcr", "tags": ["x"], "config": {"kl_interval": 0}},
                           format="json")
    assert resp.status_code == 201, resp.json()
    second = resp.json()
    assert second["status"] == "queued" and second["queue_position"] == 2 and second["config"]["kl_interval"] == 0
    ids = lambda **q: [r["id"] for r in api_client.get("/api/runs/", q).json()["results"]]  # noqa: E731
    assert ids() == [second["id"], run.pk]
    assert ids(method="gft_no_dcr") == [second["id"]]
    assert ids(tag="x") == [second["id"]]
    assert ids(status="queued", user="alice") == [second["id"], run.pk]
    assert ids(dataset=run.dataset_id, status="running") == []
    detail = api_client.get(f"/api/runs/{run.pk}/").json()
    assert detail["queue_position"] == 1 and detail["progress"] == 0.0 and detail["config"]["tau"] == 0.5
    teams = api_client.get("/api/teams/").json()["results"]
    assert [(t["slug"], t["role"]) for t in teams] == [("alpha", "member")]


def test_metrics_endpoint_downsamples(api_client, run):
    sink = PostgresRedisSink(run.pk, flush_interval=0.05)
    sink.start(total_steps=500, start_step=0, config={})
    for s in range(1, 501):
        sink.log(s, {"loss": 1.0 / s, "reward/mean": s / 500})
    sink.close()
    full = api_client.get(f"/api/runs/{run.pk}/metrics/?keys=loss&max_points=1000").json()["metrics"]
    assert full["loss"]["step"] == list(range(1, 501)) and set(full) == {"loss"}
    small = api_client.get(f"/api/runs/{run.pk}/metrics/?keys=loss,reward/mean&max_points=50").json()["metrics"]
    assert set(small) == {"loss", "reward/mean"} and len(small["loss"]["step"]) <= 60
    assert 1 in small["loss"]["step"]  # the min/max buckets keep the spike at the start
    window = api_client.get(f"/api/runs/{run.pk}/metrics/?step_min=100&step_max=109").json()["metrics"]
    assert window["loss"]["step"] == list(range(100, 110)) and set(window) == {"loss", "reward/mean"}


def test_eta_from_step_times(run):
    from webapp.runs.services import transition

    transition(run, "running", worker="w")
    sink = PostgresRedisSink(run.pk, flush_interval=0.05)
    sink.start(total_steps=10, start_step=0, config={})
    for s in range(1, 4):
        sink.log(s, {"loss": 1.0})
        time.sleep(0.2)
    sink.close()
    run.refresh_from_db()
    eta = progress.eta_seconds(run)
    assert eta is not None and 7 * 0.1 < eta < 7 * 2.0


def test_reward_config_and_dataset_creation_through_services(api_client, tiny_assets):
    resp = api_client.post("/api/reward-configs/", {"name": "exact", "spec": {"name": "exact_match", "params": {}}},
                           format="json")
    assert resp.status_code == 201, resp.json()
    assert resp.json()["version"] == 1
    bad = api_client.post("/api/reward-configs/", {"name": "bad", "spec": {"name": "no_such_reward"}}, format="json")
    assert bad.status_code == 400
    with open(tiny_assets["train"], "rb") as f:
        up = api_client.post("/api/datasets/", {"name": "toy-up", "file": f, "mapping": '"toy"'}, format="multipart")
    assert up.status_code == 201, up.json()
    assert up.json()["status"] in ("uploaded", "validating", "valid")


def test_openapi_schema_and_docs(client, api_client):
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    body = schema.json()
    assert "/api/runs/{id}/metrics/" in body["paths"] and "/api/runs/{id}/cancel/" in body["paths"]
    assert "ApiToken" in body["components"]["securitySchemes"]
    assert client.get("/api/docs/").status_code == 200


def test_oversized_upload_stops_at_the_limit(api_client, tiny_assets, settings):
    """The API reads an upload only up to UPLOAD_MAX_BYTES (413, nothing stored), as the page does."""
    settings.UPLOAD_MAX_BYTES = 2000
    with open(tiny_assets["train"], "rb") as f:
        assert len(f.read()) > 2000
        f.seek(0)
        r = api_client.post("/api/datasets/", {"name": "big", "mapping": '"toy"', "file": f}, format="multipart")
    assert r.status_code == 413
    assert r.json()["file"][0].endswith("the file is larger than the upload limit of 2.0 KiB.")
    assert not Dataset.objects.filter(name="big").exists()


@pytest.mark.parametrize("config,field,says", [
    ({"kl_interval": -1}, "config.kl_interval", "[0, 1000000]"),
    ({"eval_samples": 5000}, "config.eval_samples", "[1, 1024]"),
    ({"top_p": 0}, "config.top_p", "(0, 1]"),
    ({"save_final": "yes"}, "config.save_final", "true or false"),
    ({"not_a_setting": 1}, "config.not_a_setting", "unknown setting"),
    ({"output_dir": "/etc"}, "config.output_dir", "set from the launch inputs"),
    ({"model_path": "/etc"}, "config.model_path", "set from the launch inputs"),
    ({"data": {"path": "/etc/passwd"}}, "config.data", "set from the launch inputs"),
    ({"reward": {"name": "exact_match"}}, "config.reward", "set from the launch inputs"),
    ({"tau": 0.2}, "config.tau", "launch field"),
])
def test_api_config_is_checked_key_by_key(api_client, launch_inputs, config, field, says):
    """The free-form `config` merges nothing unchecked: an out-of-range value, an unknown key or a
    key the web sets itself is a 400 naming config.<key>, and nothing is queued."""
    resp = api_client.post("/api/runs/", {**launch_inputs, "config": config}, format="json")
    assert resp.status_code == 400, resp.json()
    assert field in resp.json() and says in " ".join(resp.json()[field]), resp.json()
    assert Run.objects.count() == 0


@pytest.mark.parametrize("changes,field", [
    ({"tau": 1.5}, "tau"), ({"max_steps": 2_000_000}, "max_steps"), ({"seed": -1}, "seed"),
    ({"method": "nope"}, "method"), ({"num_gpus": 9}, "num_gpus"), ({"num_gpus": 0}, "num_gpus"),
    ({"queue": "default"}, "queue"), ({"name": "x" * 201}, "name"), ({"eval_fraction": 1.0}, "eval_fraction"),
])
def test_api_launch_fields_carry_their_bounds(api_client, launch_inputs, changes, field):
    resp = api_client.post("/api/runs/", {**launch_inputs, **changes}, format="json")
    assert resp.status_code == 400 and field in resp.json(), resp.json()
    assert Run.objects.count() == 0


def test_api_schema_shows_the_generated_bounds(api_client):
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    schemas = schema["components"]["schemas"]
    props = schemas["RunCreateRequest"]["properties"]
    assert props["tau"]["maximum"] == 1 and props["max_steps"]["maximum"] == 1_000_000
    assert props["num_gpus"]["maximum"] == 8 and props["seed"]["maximum"] == 2**32 - 1
    assert schemas["QueueEnum"]["enum"] == ["gpu"] and schemas["MethodEnum"]["enum"][:2] == ["gft", "sft"]
    assert "GFT (group advantage" in props["method"]["description"]  # labels from the method table
