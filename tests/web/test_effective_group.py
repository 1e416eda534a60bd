"""The effective group per prompt (issue 18): from a dataset version's validation report to the
launch form's preview (GET /runs/new/group/), the API's group-preview and the Run launched."""
from __future__ import annotations

import pytest
from django.urls import reverse

from tests.runs_support import dataset_of, launch_inputs, reward_config, tiny_assets, toy_dataset  # noqa: F401
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db


def preview(client, ds, **params):
    return client.get(reverse("runs:launch_group"), {"dataset": ds.pk, **params})


def test_preview_says_no_teachers_short_share_and_full(auth_client, team):
    none = dataset_of(team, "none", [0] * 10)
    some = dataset_of(team, "some", [3] * 6 + [1] * 4)
    full = dataset_of(team, "full", [3] * 10)

    body = preview(auth_client, none, method="gft", n_expert=1, n_teacher=0, n_self=4).json()
    assert body["message"] == "1 expert + 0 teachers + 4 self: this dataset has no teacher answers; generate them"
    assert body["group"] == {"expert": 1, "teacher": 0, "self": 4} and body["dataset_url"].endswith(f"/{none.pk}/")

    body = preview(auth_client, some, method="gft", n_expert=1, n_teacher=3, n_self=4).json()
    assert body["group"] == {"expert": 1, "teacher": 3, "self": 4}
    assert body["short_rows"] == 4 and body["short_share"] == 0.4
    assert "4 of 10 prompts (40%) get a short group" in body["message"]
    # the method decides which sources count: SFT's group is the expert answer alone, never short
    body = preview(auth_client, some, method="sft", n_teacher=3).json()
    assert body["label"] == "1 expert + 0 teachers + 0 self" and body["short_rows"] == 0

    body = preview(auth_client, full, method="gft", n_expert=1, n_teacher=3, n_self=2).json()
    assert body["message"] == "1 expert + 3 teachers + 2 self: every prompt gets the full group"
    assert body["short_share"] == 0.0 and body["warnings"] == []


def test_preview_warns_of_truncated_answers_and_refuses_bad_input(auth_client, other_client, team):
    ds = dataset_of(team, "long", [1] * 20, expert_words=40)
    body = preview(auth_client, ds, n_teacher=1, max_response_len=8, percentile=90).json()
    expert = next(t for t in body["truncation"] if t["source"] == "expert")
    assert expert["warn"] and expert["truncated"] == 20 and expert["tokens"] >= 8
    assert any(w.startswith("expert answers: p90") and "about 20 of 20" in w for w in body["warnings"])
    teacher = next(t for t in body["truncation"] if t["source"] == "teacher")
    assert not teacher["warn"] and teacher["truncated"] == 0
    assert preview(auth_client, ds, n_teacher=1, max_response_len=4096).json()["warnings"] == []
    for params, field in (({"n_self": "-1"}, "n_self"), ({"n_teacher": "x"}, "n_teacher"),
                          ({"method": "nope"}, "method"), ({"percentile": "101"}, "percentile")):
        resp = preview(auth_client, ds, **params)
        assert resp.status_code == 400 and resp.json()["field"] == field, resp.content
    assert auth_client.get(reverse("runs:launch_group"), {"dataset": "abc"}).status_code == 400
    assert preview(other_client, ds).status_code == 404  # another team's dataset


@pytest.mark.django_db(transaction=True)
def test_run_records_its_effective_group_and_api_returns_it(auth_client, api_client, team, launch_inputs):
    ds = dataset_of(team, "mixed", [2] * 7 + [0] * 3)
    inputs = {**launch_inputs, "dataset": ds.pk, "n_teacher": 2, "n_self": 2, "micro_batch_size": 5}
    resp = api_client.post("/api/runs/", inputs, format="json")
    assert resp.status_code == 201, resp.json()
    run = Run.objects.get(pk=resp.json()["id"])
    assert run.effective_group["group"] == {"expert": 1, "teacher": 2, "self": 2}
    assert run.effective_group["short_rows"] == 3 and "3 of 10 prompts (30%)" in run.effective_group["message"]
    assert api_client.get(f"/api/runs/{run.pk}/").json()["effective_group"] == run.effective_group
    page = auth_client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    assert "1 expert + 2 teachers + 2 self" in page and "3 of 10 prompts short" in page
    api = api_client.get(f"/api/datasets/{ds.pk}/group-preview/", {"n_teacher": 2, "n_self": 2, "micro_batch_size": 5}).json()
    assert api["short_rows"] == 3 and api["label"] == "1 expert + 2 teachers + 2 self"
    assert api_client.get(f"/api/datasets/{ds.pk}/group-preview/", {"n_self": "-3"}).status_code == 400
