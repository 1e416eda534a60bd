"""The run table (issue 19 item 3): configurable columns, sort, filters in the URL, a query count
that does not grow with the runs; editing after launch (page and PATCH), archive, delete, bulk."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from webapp.accounts.models import ApiToken, Membership
from webapp.evaluations.models import EvalResult, EvalSuite, Evaluation
from webapp.runs.listing import run_table
from webapp.runs.models import Artifact, GroupSample, MetricHistogram, MetricKey, MetricPoint, MetricRollup, Run


def make_run(team, user, name, **fields) -> Run:
    fields.setdefault("status", Run.Status.SUCCEEDED)
    fields.setdefault("config", {"lr": 1e-6, "tau": 0.5, "data": {"path": "a.jsonl"}})
    return Run.objects.create(team=team, name=name, method=fields.pop("method", "gft"), created_by=user, **fields)


@pytest.fixture
def table_runs(team, user):
    a = make_run(team, user, "run-a", config={"lr": 3e-6, "tau": 0.1, "data": {"path": "a.jsonl"}},
                 summary={"loss": 0.4}, metric_range={"loss": [0.3, 2.0], "reward/mean": [0.1, 0.8]}, tags=["paper"])
    b = make_run(team, user, "run-b", config={"lr": 1e-5, "tau": 0.7, "data": {"path": "b.jsonl"}},
                 summary={"loss": 0.9}, metric_range={"loss": [0.2, 3.0], "reward/mean": [0.2, 0.6]},
                 notes="the lucky seed")
    c = make_run(team, user, "run-c", config={"lr": 1e-6, "tau": 0.3}, method="grpo", status=Run.Status.FAILED)
    suite = EvalSuite.objects.create(team=team, name="s", version=1, benchmarks=[], settings={})
    for run, step, acc in ((a, 10, 0.2), (a, 20, 0.5), (b, 20, 0.25)):
        ev = Evaluation.objects.create(team=team, run=run, suite=suite, checkpoint_step=step, checkpoint_path="x",
                                       status=Evaluation.Status.SUCCEEDED)
        EvalResult.objects.create(evaluation=ev, benchmark_name="math500", metrics={"avg_at_k": acc})
    return a, b, c


def order(resp) -> list[str]:
    return re.findall(r'>(run-[a-z])</a>', resp.content.decode())


def cells(resp, run: Run) -> list[str]:
    row = resp.content.decode().split(f'<tr data-run="{run.pk}"')[1].split("</tr>")[0]
    return re.findall(r'<td class="num">([^<]*)</td>', row)


def test_columns_sort_and_filters_from_the_url(auth_client, table_runs):
    a, b, c = table_runs
    cols = "cols=config:lr,config:data.path,min:loss,best:reward/mean,final:loss,eval:math500"
    resp = auth_client.get(f"/?{cols}&sort=config:lr&dir=asc")
    assert order(resp) == ["run-c", "run-a", "run-b"]
    assert cells(resp, a) == ["3e-06", "a.jsonl", "0.3", "0.8", "0.4", "50"]  # eval: newest checkpoint, percent
    assert cells(resp, c) == ["1e-06", "–", "–", "–", "–", "–"]
    assert 'href="/?' in resp.content.decode() and "sort=config%3Alr&amp;dir=desc" in resp.content.decode()  # header flips
    assert order(auth_client.get(f"/?{cols}&sort=eval:math500&dir=desc")) == ["run-a", "run-b", "run-c"]
    assert order(auth_client.get(f"/?{cols}&sort=min:loss&dir=asc")) == ["run-b", "run-a", "run-c"]  # missing last
    assert order(auth_client.get("/?sort=metric:loss&dir=asc")) == ["run-a", "run-b", "run-c"]  # older URLs
    assert order(auth_client.get("/?q=lucky")) == ["run-b"]  # text matches notes too
    assert order(auth_client.get("/?method=grpo")) == ["run-c"]
    assert order(auth_client.get("/?tag=paper&status=succeeded")) == ["run-a"]
    Run.objects.filter(pk=b.pk).update(archived_at="2026-01-01T00:00Z")
    assert order(auth_client.get("/?sort=name&dir=asc")) == ["run-a", "run-c"]  # archived hidden by default
    assert order(auth_client.get("/?archived=only")) == ["run-b"]
    assert order(auth_client.get("/?archived=all&sort=name&dir=asc")) == ["run-a", "run-b", "run-c"]
    body = auth_client.get("/?cols=config:nope,bogus&sort=drop").content.decode()
    assert "Unknown config field &#x27;nope&#x27;" in body and "Unknown column" in body and "Unknown sort" in body


def test_query_count_does_not_grow_with_the_runs(auth_client, team, user, table_runs):
    url = "/?cols=config:lr,config:tau,final:loss,max:reward/mean,eval:math500&sort=eval:math500&per_page=100"
    # One active row already: the live feed reads the active rows' states again (one query for all).
    Run.objects.filter(pk=table_runs[0].pk).update(status=Run.Status.RUNNING)
    with CaptureQueriesContext(connection) as few:
        assert auth_client.get(url).status_code == 200
    Run.objects.bulk_create([Run(team=team, name=f"bulk-{i}", method="gft", config={"lr": i}, created_by=user,
                                 status=Run.Status.RUNNING if i % 2 else Run.Status.SUCCEEDED, tags=[f"t{i}"])
                             for i in range(60)])
    with CaptureQueriesContext(connection) as many:
        assert auth_client.get(url).status_code == 200
    assert 5 <= len(few) == len(many) <= 14, [q["sql"][:80] for q in many]


def test_selector_pages_on_the_server(team, user):
    Run.objects.bulk_create([Run(team=team, name=f"r{i:02}", method="gft", config={"seed": i}, created_by=user)
                             for i in range(30)])
    table = run_table(Run.objects.filter(team=team), {"cols": "config:seed", "sort": "config:seed", "dir": "asc",
                                                      "per_page": "25"}, 2)
    assert [r.cells for r in table.page.object_list] == [["25"], ["26"], ["27"], ["28"], ["29"]]
    assert table.page.paginator.count == 30


# ---------------------------------------------------------------------------- PATCH /api/runs/<id>/
def test_patch_edits_name_tags_notes_only(api_client, other_user, user, table_runs):
    a = table_runs[0]
    resp = api_client.patch(f"/api/runs/{a.pk}/", {"name": "renamed", "tags": ["x", "y", "x"], "notes": "why"},
                            format="json")
    assert resp.status_code == 200, resp.content
    a.refresh_from_db()
    assert (a.name, a.tags, a.notes) == ("renamed", ["x", "y"], "why")
    bad = api_client.patch(f"/api/runs/{a.pk}/", {"notes": "n", "config": {"lr": 1}}, format="json")
    assert bad.status_code == 400 and "config" in bad.json()
    assert api_client.patch(f"/api/runs/{a.pk}/", {"name": ""}, format="json").status_code == 400
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(other_user, 'o')[1]}")
    assert other.patch(f"/api/runs/{a.pk}/", {"name": "theirs"}, format="json").status_code == 404
    ro = APIClient()
    ro.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(user, 'ro', read_only=True)[1]}")
    assert ro.patch(f"/api/runs/{a.pk}/", {"name": "ro"}, format="json").status_code == 403
    a.refresh_from_db()
    assert a.name == "renamed"


def test_run_page_edits_name_tags_notes(auth_client, table_runs):
    a = table_runs[0]
    auth_client.post(f"/runs/{a.pk}/edit/", {"name": "page name", "tags": "one, two", "notes": "from the page"})
    a.refresh_from_db()
    assert (a.name, a.tags, a.notes) == ("page name", ["one", "two"], "from the page")
    assert "from the page" in auth_client.get(f"/runs/{a.pk}/").content.decode()


# ---------------------------------------------------------------------------- archive and delete
@pytest.fixture
def teammate(team):
    from django.contrib.auth import get_user_model

    u = get_user_model().objects.create_user("carol", password="carol-pass-123")
    Membership.objects.create(user=u, team=team, role=Membership.Role.MEMBER)
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(u, 'c')[1]}")
    return u, c


def test_archive_and_delete_permissions(api_client, teammate, user, team, table_runs):
    a, b, c = table_runs
    carol, carol_api = teammate
    denied = carol_api.post(f"/api/runs/{a.pk}/archive/", {}, format="json")
    assert denied.status_code == 403 and "admin" in denied.json()["detail"]
    assert carol_api.delete(f"/api/runs/{a.pk}/").status_code == 403
    assert api_client.post(f"/api/runs/{a.pk}/archive/", {}, format="json").json()["archived_at"]
    assert api_client.post(f"/api/runs/{a.pk}/archive/", {"archived": False}, format="json").json()["archived_at"] is None
    Membership.objects.filter(user=carol).update(role=Membership.Role.ADMIN)
    assert carol_api.post(f"/api/runs/{b.pk}/archive/", {}, format="json").status_code == 200  # admins: any run
    running = make_run(team, user, "active", status=Run.Status.RUNNING)
    assert api_client.delete(f"/api/runs/{running.pk}/").status_code == 409
    assert api_client.post(f"/api/runs/{running.pk}/archive/", {}, format="json").status_code == 409


def test_api_list_archived_filter(api_client, table_runs):
    a, b, c = table_runs
    Run.objects.filter(pk=b.pk).update(archived_at="2026-01-01T00:00Z")

    def names(query: str = "") -> list[str]:
        resp = api_client.get(f"/api/runs/{query}")
        assert resp.status_code == 200, resp.json()
        return sorted(r["name"] for r in resp.json()["results"])

    assert names() == names("?archived=false") == ["run-a", "run-c"]  # as the run table: archived hidden
    assert names("?archived=true") == ["run-b"]
    assert names("?archived=all&method=gft") == ["run-a", "run-b"]
    bad = api_client.get("/api/runs/?archived=maybe")
    assert bad.status_code == 400 and "archived" in bad.json()
    schema = api_client.get("/api/schema/?format=json").json()
    params = {p["name"]: p for p in schema["paths"]["/api/runs/"]["get"]["parameters"]}
    assert sorted(params["archived"]["schema"]["enum"]) == ["all", "false", "true"]


def test_delete_removes_metrics_samples_artifacts_and_files(api_client, team, user, settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path
    run = make_run(team, user, "doomed")
    keep = make_run(team, user, "kept")
    key = MetricKey.objects.get_or_create(name="loss")[0]
    for r in (run, keep):
        MetricPoint.objects.bulk_create([MetricPoint(run=r, key=key, step=s, value=1.0, wall_time=s) for s in range(50)])
        MetricHistogram.objects.create(run=r, key=key, step=1, lo=0, hi=1, counts=[1])
        MetricRollup.objects.create(run=r, key=key, width=10, bucket=0, n=10, min_step=0, min_value=1, min_wall=0,
                                    max_step=1, max_value=1, max_wall=1)
        GroupSample.objects.create(run=r, step=1, group_index=0, data={})
    directory = Path(run.directory)
    (directory / "final").mkdir(parents=True)
    (directory / "final" / "model.bin").write_bytes(b"x" * 10)
    Artifact.objects.create(run=run, kind="final_model", path=str(directory / "final"))
    assert api_client.delete(f"/api/runs/{run.pk}/").status_code == 204
    assert not Run.objects.filter(pk=run.pk).exists() and not directory.exists()
    for model in (MetricPoint, MetricHistogram, MetricRollup, GroupSample):
        assert not model.objects.filter(run_id=run.pk).exists()
        assert model.objects.filter(run_id=keep.pk).exists()
    assert not Artifact.objects.filter(run_id=run.pk).exists()


# ---------------------------------------------------------------------------- bulk actions
def test_bulk_tag_archive_cancel(auth_client, team, user, table_runs):
    a, b, c = table_runs
    queued = make_run(team, user, "waiting", status=Run.Status.QUEUED)
    ids = f"{a.pk},{b.pk}"
    auth_client.post("/runs/bulk/", {"action": "tag", "runs": ids, "tags": "ablation, tau"})
    assert Run.objects.get(pk=a.pk).tags == ["paper", "ablation", "tau"]
    assert Run.objects.get(pk=b.pk).tags == ["ablation", "tau"]
    auth_client.post("/runs/bulk/", {"action": "cancel", "runs": f"{queued.pk},{a.pk}"})
    assert Run.objects.get(pk=queued.pk).status == Run.Status.CANCELLED  # a: finished, reported, skipped
    resp = auth_client.post("/runs/bulk/", {"action": "archive", "runs": ids, "next": "/?tag=tau"}, follow=True)
    assert resp.redirect_chain[-1][0] == "/?tag=tau"
    assert Run.objects.filter(pk__in=[a.pk, b.pk], archived_at__isnull=False).count() == 2
    body = auth_client.get("/").content.decode()
    assert 'id="compare-form"' in body and 'action="/compare/"' in body


@pytest.mark.django_db(transaction=True)
def test_sink_keeps_each_metrics_min_and_max(team, user):
    from workers.sink import PostgresRedisSink

    run = make_run(team, user, "ranged", status=Run.Status.RUNNING)
    sink = PostgresRedisSink(run.pk, flush_interval=60)
    sink.start(total_steps=10, start_step=0, config={})
    for step, loss in enumerate([3.0, 1.0, float("nan"), 2.0], start=1):
        sink.log(step, {"loss": loss})
    sink.flush()
    for step, loss in enumerate([0.5, 4.0], start=5):
        sink.log(step, {"loss": loss, "reward/mean": loss / 10})
    sink.close()
    run.refresh_from_db()
    assert run.metric_range == {"loss": [0.5, 4.0], "reward/mean": [0.05, 0.4]}
