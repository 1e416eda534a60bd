"""Team quotas (webapp/accounts/quotas.py): active runs (queued + running) and stored bytes, enforced
in launch, clone, resume and dataset upload / new version; 429 (API) or a form error (pages) naming
the limit and the current use, and nothing half-created."""
from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.urls import reverse

from tests.runs_support import launch_inputs, reward_config, tiny_assets, toy_dataset  # noqa: F401
from tests.web.test_datasets import form_data as upload_form, jsonl, stored_files, toy_rows
from tests.web.test_runs_launch import form_data
from webapp.accounts import quotas
from webapp.datasets import services as datasets
from webapp.datasets.models import Dataset
from webapp.runs import launch, services
from webapp.runs.models import Artifact, Run, RunStatus

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def max_runs(settings):
    settings.TEAM_MAX_ACTIVE_RUNS = 2
    settings.TEAM_MAX_STORAGE_BYTES = 0
    return 2


def _fail(run: Run) -> None:
    services.transition(run.pk, RunStatus.FAILED, message="test", error="boom")


def test_api_launch_beyond_the_active_run_limit_is_429_and_creates_nothing(api_client, team, user, launch_inputs,
                                                                           max_runs):
    for _ in range(max_runs):
        assert api_client.post("/api/runs/", launch_inputs, format="json").status_code == 201
    r = api_client.post("/api/runs/", launch_inputs, format="json")
    assert r.status_code == 429, r.content
    body = r.json()
    assert body["quota"] == "active_runs" and body["limit"] == 2 and body["used"] == 2
    assert "TEAM_MAX_ACTIVE_RUNS" in body["detail"] and "2 of its 2" in body["detail"]
    assert Run.objects.count() == 2
    # a clone counts too
    source = Run.objects.first()
    r = api_client.post("/api/runs/", {**launch_inputs, "clone_of": source.pk}, format="json")
    assert r.status_code == 429 and Run.objects.count() == 2
    # a finished run frees its slot
    _fail(source)
    assert api_client.post("/api/runs/", launch_inputs, format="json").status_code == 201


def test_launch_form_shows_the_quota_as_a_form_error(auth_client, team, user, launch_inputs, max_runs):
    for _ in range(max_runs):
        launch.submit_run(team, user, launch_inputs)
    resp = auth_client.post(reverse("runs:launch"), form_data(launch_inputs))
    assert resp.status_code == 200
    assert "TEAM_MAX_ACTIVE_RUNS" in resp.content.decode()
    assert Run.objects.count() == 2


def test_resume_beyond_the_limit_is_refused_and_the_run_stays_failed(api_client, auth_client, team, user,
                                                                     launch_inputs, settings):
    settings.TEAM_MAX_ACTIVE_RUNS = 1
    first = launch.submit_run(team, user, launch_inputs)
    _fail(first)
    launch.submit_run(team, user, launch_inputs)  # takes the only slot
    r = api_client.post(f"/api/runs/{first.pk}/resume/")
    assert r.status_code == 429 and r.json()["quota"] == "active_runs"
    resp = auth_client.post(reverse("runs:resume", args=[first.pk]), follow=True)
    assert "TEAM_MAX_ACTIVE_RUNS" in resp.content.decode()
    first.refresh_from_db()
    assert first.status == RunStatus.FAILED and first.events.filter(to_status=RunStatus.QUEUED).count() == 1
    settings.TEAM_MAX_ACTIVE_RUNS = 0  # unlimited
    assert api_client.post(f"/api/runs/{first.pk}/resume/").status_code == 200


def test_concurrent_launches_cannot_both_take_the_last_slot(team, user, launch_inputs, settings):
    settings.TEAM_MAX_ACTIVE_RUNS = 1
    plan = launch.build_config(team, launch_inputs)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def go() -> None:
        try:
            barrier.wait()
            launch.submit_run(team, user, plan)
            outcomes.append("ok")
        except quotas.QuotaExceeded:
            outcomes.append("quota")
        finally:
            connection.close()

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok", "quota", "quota", "quota"]
    assert Run.objects.count() == 1


def test_storage_counts_distinct_dataset_files_and_run_artifacts(team, other_team, user, launch_inputs, toy_dataset):
    base = quotas.storage_bytes(team)
    assert base == toy_dataset.size_bytes + toy_dataset.eval_size_bytes
    v2 = datasets.new_dataset_version(toy_dataset, user, eval_seed=3)  # same files: counted once
    assert v2.file_path == toy_dataset.file_path and quotas.storage_bytes(team) == base
    run = launch.submit_run(team, user, launch_inputs)
    Artifact.objects.create(run=run, kind=Artifact.Kind.CHECKPOINT, path="/x/step-2", step=2, size_bytes=10_000)
    Artifact.objects.create(run=run, kind=Artifact.Kind.FINAL_MODEL, path="/x/final", step=4, size_bytes=5_000)
    assert quotas.storage_bytes(team) == base + 15_000
    assert quotas.storage_bytes(other_team) == 0
    assert quotas.usage(team)["storage_bytes"] == base + 15_000


def test_upload_beyond_the_storage_limit_is_refused_and_stores_nothing(api_client, auth_client, team, user, settings):
    content = jsonl(toy_rows(20))
    settings.TEAM_MAX_STORAGE_BYTES = len(content) - 1
    f = io.BytesIO(content)
    f.name = "big.jsonl"
    r = api_client.post("/api/datasets/", {"name": "big", "file": f, "mapping": '"toy"'}, format="multipart")
    assert r.status_code == 429, r.content
    assert r.json()["quota"] == "storage_bytes" and "TEAM_MAX_STORAGE_BYTES" in r.json()["detail"]
    resp = auth_client.post(reverse("datasets:upload"), upload_form("toy.jsonl", content))
    assert resp.status_code == 200 and "TEAM_MAX_STORAGE_BYTES" in resp.content.decode()
    assert not Dataset.objects.exists() and stored_files(team) == []
    incoming = Path(django_settings.ARTIFACT_ROOT) / "datasets" / str(team.pk) / ".incoming"
    assert not incoming.exists() or not any(incoming.iterdir())

    settings.TEAM_MAX_STORAGE_BYTES = len(content)  # exactly fits
    v1 = datasets.create_dataset_from_upload(team, user, io.BytesIO(content), name="fits", filename="a.jsonl",
                                             mapping="toy")
    with pytest.raises(datasets.UploadError, match="TEAM_MAX_STORAGE_BYTES"):
        datasets.new_dataset_version(v1, user, fileobj=io.BytesIO(jsonl(toy_rows(3))), filename="b.jsonl")
    # a new version that keeps its file adds no bytes
    assert datasets.new_dataset_version(v1, user, eval_seed=5).version == 2
    assert Dataset.objects.count() == 2


def test_a_full_storage_refuses_new_runs(api_client, team, user, launch_inputs, toy_dataset, settings):
    run = launch.submit_run(team, user, launch_inputs)
    Artifact.objects.create(run=run, kind=Artifact.Kind.FINAL_MODEL, path="/x/final", step=4, size_bytes=10**6)
    _fail(run)
    settings.TEAM_MAX_STORAGE_BYTES = quotas.storage_bytes(team)
    r = api_client.post("/api/runs/", launch_inputs, format="json")
    assert r.status_code == 429 and r.json()["quota"] == "storage_bytes"
    assert api_client.post(f"/api/runs/{run.pk}/resume/").status_code == 429
    assert Run.objects.count() == 1
    settings.TEAM_MAX_STORAGE_BYTES = 0
    assert api_client.post("/api/runs/", launch_inputs, format="json").status_code == 201


def test_the_team_api_shows_the_quotas_and_their_use(api_client, team, user, launch_inputs, settings):
    settings.TEAM_MAX_ACTIVE_RUNS, settings.TEAM_MAX_STORAGE_BYTES = 5, 0
    launch.submit_run(team, user, launch_inputs)
    quota = api_client.get(f"/api/teams/{team.pk}/").json()["quota"]
    assert quota == {"active_runs": 1, "max_active_runs": 5, "storage_bytes": quotas.storage_bytes(team),
                     "max_storage_bytes": 0}
