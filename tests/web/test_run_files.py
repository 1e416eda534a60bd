"""A run's files (issue 20 item 5): every artifact downloads for members of its team (viewers
included; another team gets 404), a directory as a tar streamed chunk by chunk with its exact
length known in advance, the group samples as JSONL, sizes on the page and in the API the real
size on disk, and the log read by bounded byte windows (the Logs page follows them)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from tests.web.test_exports import asgi_get, close_connections_per_request  # noqa: F401
from webapp.accounts.models import ApiToken, Membership
from webapp.runs import files
from webapp.runs.models import Artifact, GroupSample, Run

pytestmark = pytest.mark.django_db(transaction=True)


def body(resp) -> bytes:
    """The whole body (a streamed one is consumed as Django's WSGI handler would)."""
    if not resp.streaming:
        return resp.content
    with pytest.warns(Warning, match="consume asynchronous iterators"):  # served async under ASGI
        return b"".join(resp)


@pytest.fixture
def run(team, user):
    """A finished run with a log, two checkpoints (one nested, one 3 MB file), a final model and
    an artifact whose path is outside its directory; 250 group samples (3 pages of rows)."""
    run = Run.objects.create(team=team, name="files", method="gft", created_by=user, status=Run.Status.SUCCEEDED,
                             total_steps=4, step=4, config={"tau": 0.3})
    d = run.directory
    (d / "checkpoint-2" / "sub").mkdir(parents=True)
    (d / "checkpoint-2" / "model.safetensors").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    (d / "checkpoint-2" / "sub" / "state.json").write_text('{"step": 2}')
    (d / "final").mkdir()
    (d / "final" / "config.json").write_text("{}" * 100)
    run.log_path.write_text("".join(f"line {i} é\n" for i in range(20_000)))
    for kind, path, step in [("log", run.log_path, 0), ("checkpoint", d / "checkpoint-2", 2),
                             ("final_model", d / "final", 4), ("checkpoint", d.parent, 3)]:
        Artifact.objects.create(run=run, kind=kind, path=str(path), step=step)  # sizes left at 0, as recorded
    GroupSample.objects.bulk_create([GroupSample(run=run, step=s, group_index=g, data={"prompt": f"p{s}-{g}", "step": -1})
                                     for s in range(1, 126) for g in range(2)])
    return run


def art(run, kind: str, step: int) -> Artifact:
    return Artifact.objects.get(run=run, kind=kind, step=step)


def test_directory_artifact_is_a_tar_of_its_files_with_its_exact_length(auth_client, run):
    ckpt = art(run, "checkpoint", 2)
    resp = auth_client.get(reverse("runs:artifact_download", args=[run.pk, ckpt.pk]))
    assert resp.status_code == 200 and resp["Content-Type"] == "application/x-tar"
    assert resp["Content-Disposition"] == f'attachment; filename="run{run.pk}-checkpoint-step2.tar"'
    data = body(resp)
    assert len(data) == int(resp["Content-Length"]) and len(data) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
        root = f"run{run.pk}-checkpoint-step2"
        assert names == [f"{root}/model.safetensors", f"{root}/sub/state.json"]
        assert tar.extractfile(f"{root}/model.safetensors").read() == \
            (run.directory / "checkpoint-2" / "model.safetensors").read_bytes()
        assert tar.extractfile(f"{root}/sub/state.json").read() == b'{"step": 2}'
    log = body(auth_client.get(reverse("runs:artifact_download", args=[run.pk, art(run, "log", 0).pk])))
    assert log == run.log_path.read_bytes()
    final = auth_client.get(reverse("runs:artifact_download", args=[run.pk, art(run, "final_model", 4).pk]))
    with tarfile.open(fileobj=io.BytesIO(body(final))) as tar:
        assert [m.name for m in tar.getmembers() if m.isfile()] == [f"run{run.pk}-final_model-step4/config.json"]


def test_a_big_checkpoint_streams_through_asgi_with_bounded_memory(run, user):
    big = run.directory / "checkpoint-2" / "model.safetensors"
    with big.open("wb") as f:
        for _ in range(24):
            f.write(os.urandom(1024 * 1024))
    received = hashlib.sha256()
    got = asgi_get(user, reverse("runs:artifact_download", args=[run.pk, art(run, "checkpoint", 2).pk]), {},
                   received.update)
    size = sum(got["chunks"])
    assert got["status"] == 200 and size == int(got["headers"]["content-length"]) > 24 * 1024 * 1024
    assert len(got["chunks"]) >= 24 * 1024 * 1024 // files.CHUNK_BYTES  # chunk by chunk, not one body
    assert got["peak"] < size / 4, (got["peak"], size)
    print(f"checkpoint tar: {size / 1e6:.1f} MB in {len(got['chunks'])} chunks, peak traced memory "
          f"{got['peak'] / 1e6:.2f} MB")


def test_group_samples_jsonl_every_row_in_step_order(auth_client, run):
    resp = auth_client.get(reverse("runs:group_samples", args=[run.pk]))
    assert resp.status_code == 200 and resp["Content-Type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in body(resp).decode().splitlines()]
    assert len(rows) == 250
    assert [(r["step"], r["group_index"]) for r in rows] == [(s, g) for s in range(1, 126) for g in range(2)]
    assert rows[0] == {"prompt": "p1-0", "run": run.pk, "step": 1, "group_index": 0}  # the row's step wins


def test_team_isolation_viewer_allowed_and_outside_paths_refused(auth_client, other_client, run, team, client):
    urls = [reverse("runs:artifact_download", args=[run.pk, a.pk]) for a in run.artifacts.all()]
    urls += [reverse("runs:group_samples", args=[run.pk]), reverse("runs:logs", args=[run.pk]),
             reverse("runs:log_text", args=[run.pk])]
    for url in urls:
        assert other_client.get(url).status_code == 404, url
    viewer = get_user_model().objects.create_user("vera", password="vera-pass-123")
    Membership.objects.create(user=viewer, team=team, role=Membership.Role.VIEWER)
    client.force_login(viewer)
    outside = art(run, "checkpoint", 3)  # the runs folder itself: not inside this run's directory
    for url in urls:
        expected = 404 if f"/artifacts/{outside.pk}/" in url else 200
        assert client.get(url).status_code == expected, url
    # Another run's artifact id under this run's URL is a 404 too.
    other = Run.objects.create(team=team, name="other", method="gft", created_by=run.created_by, config={})
    theirs = Artifact.objects.create(run=other, kind="log", path=str(other.log_path))
    assert auth_client.get(reverse("runs:artifact_download", args=[run.pk, theirs.pk])).status_code == 404


def test_sizes_on_the_page_and_in_the_api_are_the_size_on_disk(auth_client, api_token, run):
    ckpt_bytes = 3 * 1024 * 1024 + 7 + len('{"step": 2}')
    page = auth_client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    rows = dict(re.findall(r'data-artifact="(\d+)">(.*?)</tr>', page, re.S))
    sizes = {int(k): re.search(r'class="size">(.*?)</td>', v).group(1) for k, v in rows.items()}
    log_kib = run.log_path.stat().st_size / 1024
    assert sizes == {art(run, "checkpoint", 2).pk: "3.0\xa0MB", art(run, "final_model", 4).pk: "200\xa0bytes",
                     art(run, "log", 0).pk: f"{log_kib:.1f}\xa0KB", art(run, "checkpoint", 3).pk: ""}
    for a in run.artifacts.exclude(step=3):
        assert reverse("runs:artifact_download", args=[run.pk, a.pk]) in rows[str(a.pk)]
    assert "not on disk" in rows[str(art(run, "checkpoint", 3).pk)]
    assert reverse("runs:group_samples", args=[run.pk]) in page
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token}")
    arts = {(a["kind"], a["step"]): a for a in api.get(f"/api/runs/{run.pk}/").json()["artifacts"]}
    assert arts[("checkpoint", 2)]["size_bytes"] == ckpt_bytes
    assert arts[("log", 0)]["size_bytes"] == run.log_path.stat().st_size > 0
    assert arts[("final_model", 4)]["size_bytes"] == 200
    # The API's download action and group samples.
    a = arts[("checkpoint", 2)]
    assert a["download_url"] == f"/api/runs/{run.pk}/artifacts/{a['id']}/download/"
    resp = api.get(a["download_url"])
    assert resp.status_code == 200 and resp["Content-Type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(body(resp))) as tar:
        assert sum(m.size for m in tar.getmembers()) == ckpt_bytes
    lines = body(api.get(f"/api/runs/{run.pk}/group-samples/")).decode().splitlines()
    assert len(lines) == 250 and json.loads(lines[-1])["step"] == 125
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(get_user_model().objects.create_user('eve'), 't')[1]}")
    assert other.get(a["download_url"]).status_code == 404
    assert api.get(f"/api/runs/{run.pk}/artifacts/999999/download/").status_code == 404


def test_log_windows_follow_the_file_and_page_back(auth_client, run):
    url = reverse("runs:log_text", args=[run.pk])
    size = run.log_path.stat().st_size
    tail = auth_client.get(url).json()
    assert tail["end"] == tail["size"] == size and tail["text"].endswith("line 19999 é\n")
    assert 0 < tail["start"] and tail["end"] - tail["start"] <= files.LOG_WINDOW_BYTES
    assert tail["text"].startswith("line ")  # whole lines only
    earlier = auth_client.get(url, {"before": tail["start"]}).json()
    assert earlier["end"] == tail["start"] and earlier["text"].startswith("line ")
    assert earlier["text"].endswith("\n") and tail["live"] is False
    # Following: a half-written line waits for its end; then the rest comes from `end`.
    with run.log_path.open("a") as f:
        f.write("step 5/5 loss=0.1 ")
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING)
    grown = auth_client.get(url, {"after": size}).json()
    assert grown["text"] == "" and grown["end"] == size and grown["size"] > size and grown["live"] is True
    Run.objects.filter(pk=run.pk).update(status=Run.Status.FAILED)  # ended: nothing completes the line
    assert auth_client.get(url, {"after": size}).json()["text"] == "step 5/5 loss=0.1 "
    with run.log_path.open("a") as f:
        f.write("reward=1.0\n")
    grown = auth_client.get(url, {"after": size}).json()
    assert grown["text"] == "step 5/5 loss=0.1 reward=1.0\n" and grown["end"] == grown["size"]
    # Reading all from 0 takes several bounded windows.
    windows, at = 0, 0
    while at < grown["size"]:
        w = auth_client.get(url, {"after": at}).json()
        assert len(w["text"].encode()) <= files.LOG_WINDOW_BYTES
        at, windows = w["end"], windows + 1
    assert 2 <= windows <= -(-grown["size"] // files.LOG_WINDOW_BYTES) + 1
    for bad in ({"after": "-1"}, {"before": "x"}, {"after": "1", "before": "2"}, {"after": str(2**70)}):
        r = auth_client.get(url, bad)
        assert r.status_code == 400 and ("after" in r.json()["error"] or "before" in r.json()["error"]), bad
    page = auth_client.get(reverse("runs:logs", args=[run.pk])).content.decode()
    assert "line 19999 é" in page and 'id="log-follow"' in page and "line 0 é" not in page
    assert Client().get(url).status_code == 302  # anonymous: to the login page


def test_step_lines_name_step_loss_reward_time_and_lr():
    import logging

    from workers.steplog import StepLog, step_line

    assert step_line(3, 40, {"loss": 0.69314, "reward/mean": 0.5, "time/step": 1.234, "lr": 1e-5, "x": 1.0}) == \
        "step 3/40 loss=0.6931 reward=0.5000 step_time=1.23s lr=1.00e-05"
    assert step_line(7, None, {"loss": float("nan")}) == "step 7 loss=nan"
    records: list[str] = []
    logger = logging.getLogger("gft.run.test-steplog")
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    logger.addHandler(handler)
    try:  # a step with other metrics only (an evaluation, system metrics) is no training step
        StepLog(logger, lambda: 4)({2: {"loss": 1.0}, 3: {"eval/accuracy": 0.5}, 4: {"loss": 0.5, "lr": 0.1}})
    finally:
        logger.removeHandler(handler)
    assert records == ["step 2/4 loss=1.0000", "step 4/4 loss=0.5000 lr=1.00e-01"]
