"""Run list (filters, metric sort), run page, compare, group inspector data, dashboards CRUD, the
SSE stream under uvicorn, and team scoping (another team: 404; anonymous: login) on all of them."""
from __future__ import annotations

import json
import re
import threading
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.contrib.auth import get_user_model

from tests.metric_support import group_record, write_series, write_step
from webapp.dashboards.models import Dashboard
from webapp.runs import live
from webapp.runs.models import GroupSample, Run

pytestmark = pytest.mark.django_db


def make_run(team, user=None, **fields) -> Run:
    fields.setdefault("status", Run.Status.SUCCEEDED)
    fields.setdefault("config", {"tau": 0.3, "lr": 1e-6, "n_self": 4})
    return Run.objects.create(team=team, name=fields.pop("name", "run"), method=fields.pop("method", "gft"),
                              created_by=user, **fields)


@pytest.fixture
def runs(team, user):
    a = make_run(team, user, name="alpha-gft", tags=["paper"], summary={"loss": 0.5, "reward/mean": 0.7},
                 config={"tau": 0.1, "lr": 1e-6, "n_self": 4, "data": {"path": "a.jsonl"}}, total_steps=10, step=10)
    b = make_run(team, user, name="beta-grpo", method="grpo", status=Run.Status.FAILED,
                 summary={"loss": 0.2, "reward/mean": 0.9}, config={"tau": 0.7, "lr": 1e-6, "n_self": 4,
                                                                     "data": {"path": "a.jsonl"}})
    c = make_run(team, None, name="gamma-nosummary")
    return a, b, c


def names(resp) -> list[str]:
    body = resp.content.decode()
    return [n for n in ("alpha-gft", "beta-grpo", "gamma-nosummary") if f">{n}<" in body]


def test_run_list_filters_and_sorts(auth_client, runs):
    assert names(auth_client.get("/")) == ["alpha-gft", "beta-grpo", "gamma-nosummary"]
    assert names(auth_client.get("/?status=failed")) == ["beta-grpo"]
    assert names(auth_client.get("/?method=gft")) == ["alpha-gft", "gamma-nosummary"]
    assert names(auth_client.get("/?tag=paper")) == ["alpha-gft"]
    assert names(auth_client.get("/?user=alice")) == ["alpha-gft", "beta-grpo"]
    assert names(auth_client.get("/?q=gamma")) == ["gamma-nosummary"]
    body = auth_client.get("/?sort=metric:loss&dir=asc").content.decode()
    assert body.index(">beta-grpo<") < body.index(">alpha-gft<") < body.index(">gamma-nosummary<")
    body = auth_client.get("/?sort=metric:reward/mean&dir=desc").content.decode()
    assert body.index(">beta-grpo<") < body.index(">alpha-gft<") < body.index(">gamma-nosummary<")
    assert 'value="config:tau"' in body  # any config field can be a column
    assert "Unknown status" in auth_client.get("/?status=nope").content.decode()


def test_run_page_renders_with_chart_data(auth_client, runs):
    run = runs[0]
    resp = auth_client.get(f"/runs/{run.pk}/")
    assert resp.status_code == 200
    body = resp.content.decode()
    # plotly.js's cartesian bundle, deferred: the chart data request goes out while it loads.
    assert 'defer src="/static/vendor/plotly-cartesian.min.js"' in body and "js/run_page.js" in body
    assert "plotly/plotly.min.js" not in body
    page = json.loads(body.split('<script id="page-data" type="application/json">')[1].split("</script>")[0])
    assert page["runs"][0]["tau"] == 0.1 and page["mode"] == "run"
    groups = {c["group"] for c in page["charts"]}
    assert groups == {"Loss & optimisation", "Rewards", "Group advantages", "Coefficient rectification", "Policy"}
    assert any(c.get("ref") == "tau" for c in page["charts"])
    assert page["urls"]["stream"] == f"/runs/{run.pk}/stream/"
    # One request for every chart's history (keys of all charts, the advantage histogram), sent by
    # the page's inline script before plotly.js runs; it answers with every key's points.
    history = urlsplit(page["urls"]["history"])
    query = parse_qs(history.query)
    assert history.path == "/runs/series/" and query["runs"] == [str(run.pk)] and query["hist"] == ["adv/hist"]
    keys = query["keys"][0].split(",")
    assert keys == list(dict.fromkeys(k for c in page["charts"] for k in c["keys"])) and "loss" in keys
    assert body.index("window.gftChartData = fetch(") < body.index('<script type="module"') and "{#" not in body
    write_series(run, "loss", [1, 2, 3], [3.0, 1.0, 2.0])
    data = auth_client.get(page["urls"]["history"] + "&max_points=400").json()
    assert data["series"][str(run.pk)]["loss"]["value"] == [3.0, 1.0, 2.0]


def test_plotly_is_served_locally(auth_client):
    from django.contrib.staticfiles import finders

    assert finders.find("plotly/plotly.min.js")
    # The run and compare pages' cartesian bundle (vendored) is the same plotly.js as the wheel's.
    version = re.compile(r"plotly\.js(?: \([a-z -]+\))? v(\d+\.\d+\.\d+)")
    with open(finders.find("plotly/plotly.min.js")) as full, open(finders.find("vendor/plotly-cartesian.min.js")) as part:
        assert version.search(full.read(400)).group(1) == version.search(part.read(400)).group(1)


def test_compare_shows_only_differing_config_and_summary(auth_client, runs):
    a, b, _ = runs
    write_series(a, "loss", [1, 2, 3], [3.0, 1.0, 2.0])
    write_series(b, "loss", [1, 2], [5.0, 4.0])
    resp = auth_client.get(f"/compare/?runs={a.pk},{b.pk}")
    assert resp.status_code == 200
    ctx = resp.context
    diff = dict(ctx["diff"])
    assert diff["tau"] == [0.1, 0.7] and diff["method"] == ["gft", "grpo"]  # once, not also as "(method)"
    assert "lr" not in diff and "data.path" not in diff
    loss_row = next(r for r in ctx["summary_rows"] if r[0] == "loss")
    assert loss_row[2][0]["final"] == 2.0 and loss_row[2][0]["best"] == 1.0 and loss_row[2][1]["best"] == 4.0
    # One history request for both runs; a comparison draws no advantage heatmap, so no histogram.
    query = parse_qs(urlsplit(ctx["page"]["urls"]["history"]).query)
    assert query["runs"] == [f"{a.pk},{b.pk}"] and "hist" not in query and "loss" in query["keys"][0].split(",")
    assert "window.gftChartData = fetch(" in resp.content.decode()
    assert auth_client.get("/compare/").status_code == 200  # no runs yet: explains how to pick
    assert auth_client.get("/compare/?runs=1,x").status_code == 404


def test_group_inspector_data_and_export(auth_client, other_client, runs):
    run = runs[0]
    for step in (10, 20):
        GroupSample.objects.create(run=run, step=step, group_index=0, data=group_record(0, f"prompt at {step}"))
    latest = auth_client.get(f"/runs/{run.pk}/groups/").json()
    assert latest["step"] == 20 and latest["steps"] == [10, 20] and latest["tau"] == 0.1
    g = latest["groups"][0]
    assert g["prompt"] == "prompt at 20" and g["sources"]["expert"]["mean_c"] == pytest.approx(0.74)
    assert g["sources"]["expert"]["rectified_frac"] == pytest.approx(0.4)
    assert g["responses"][1]["advantage"] == -1.0  # stored values, not recomputed
    assert auth_client.get(f"/runs/{run.pk}/groups/?step=15").json()["step"] == 10
    export = auth_client.get(f"/runs/{run.pk}/groups/?step=10&group=0&download=1")
    assert "attachment" in export["Content-Disposition"]
    assert json.loads(export.content)["prompt"] == "prompt at 10"
    assert auth_client.get(f"/runs/{run.pk}/groups/?step=10&group=7&download=1").status_code == 404
    assert other_client.get(f"/runs/{run.pk}/groups/").status_code == 404


def test_dashboards_crud(auth_client, runs, team, other_team):
    a, b, _ = runs
    resp = auth_client.post("/dashboards/new/", {"name": "tau sweep", "runs": f"{a.pk},{b.pk}",
                                                 "charts": ["rectified", "loss"], "smoothing": "0.6"})
    dash = Dashboard.objects.get(name="tau sweep")
    assert resp.status_code == 302 and resp["Location"] == f"/dashboards/{dash.pk}/"
    assert dash.team == team and dash.run_ids == [a.pk, b.pk] and dash.smoothing == 0.6
    assert sorted(dash.charts) == ["loss", "rectified"]
    assert "tau sweep" in auth_client.get("/dashboards/").content.decode()
    page = auth_client.get(f"/dashboards/{dash.pk}/")
    assert page.status_code == 200 and [c["id"] for c in page.context["page"]["charts"]] == ["loss", "rectified"]
    assert page.context["page"]["smoothing"] == 0.6
    # Same name twice, or a run of another team: refused with the reason.
    assert auth_client.post("/dashboards/new/", {"name": "tau sweep", "runs": str(a.pk)}).status_code == 400
    foreign = make_run(other_team, name="foreign")
    bad = auth_client.post("/dashboards/new/", {"name": "x", "runs": f"{a.pk},{foreign.pk}"})
    assert bad.status_code == 400 and "not runs of team" in bad.content.decode()
    resp = auth_client.post(f"/dashboards/{dash.pk}/edit/", {"name": "tau sweep 2", "runs": str(b.pk), "smoothing": "0"})
    dash.refresh_from_db()
    assert resp.status_code == 302 and dash.name == "tau sweep 2" and dash.run_ids == [b.pk] and dash.charts == []
    assert auth_client.get(f"/dashboards/{dash.pk}/edit/").status_code == 405
    assert auth_client.post(f"/dashboards/{dash.pk}/delete/").status_code == 302
    assert not Dashboard.objects.filter(pk=dash.pk).exists()


def test_viewer_cannot_save_dashboards(client, team, runs):
    from webapp.accounts.models import Membership

    viewer = get_user_model().objects.create_user("vera", password="x-pass-123456")
    Membership.objects.create(user=viewer, team=team, role=Membership.Role.VIEWER)
    client.force_login(viewer)
    assert client.get(f"/compare/?runs={runs[0].pk},{runs[1].pk}").status_code == 200
    assert client.post("/dashboards/new/", {"name": "v", "runs": str(runs[0].pk)}).status_code == 403


def test_every_page_of_mine_is_404_for_another_team_and_login_for_anonymous(client, other_client, runs, team):
    a, b, _ = runs
    dash = Dashboard.objects.create(team=team, name="d", run_ids=[a.pk, b.pk])
    urls = [f"/runs/{a.pk}/", f"/runs/{a.pk}/stream/", f"/runs/{a.pk}/groups/", f"/compare/?runs={a.pk},{b.pk}",
            f"/compare/?runs={a.pk}", f"/runs/series/?runs={a.pk}&keys=loss", f"/runs/series.csv?runs={a.pk}&keys=loss",
            f"/dashboards/{dash.pk}/"]
    for url in urls:
        assert other_client.get(url).status_code == 404, url
        anon = client.get(url)
        assert anon.status_code == 302 and anon["Location"].startswith("/accounts/login/"), url
    for url in (f"/dashboards/{dash.pk}/edit/", f"/dashboards/{dash.pk}/delete/"):
        assert other_client.post(url, {"name": "stolen", "runs": str(a.pk)}).status_code == 404, url
    assert Dashboard.objects.filter(pk=dash.pk, name="d").exists()
    body = other_client.get("/dashboards/").content.decode()
    assert f"/dashboards/{dash.pk}/" not in body
    assert "alpha-gft" not in other_client.get("/").content.decode()


# ---------------------------------------------------------------------------------------- SSE
def _session_cookies(user) -> dict[str, str]:
    from django.test import Client

    c = Client()
    c.force_login(user)
    return {"sessionid": c.cookies["sessionid"].value}


def _in_thread(fn) -> None:
    """Run fn in this (timer) thread and close the thread's own database connection."""
    from django.db import connection

    try:
        fn()
    finally:
        connection.close()


def _read_events(resp, count: int) -> list[dict]:
    """Parse SSE frames until `count` events with an id have arrived."""
    events, frame = [], {}
    for line in resp.iter_lines():
        if line == "":
            if "id" in frame:
                events.append(frame)
                if len(events) >= count:
                    break
            frame = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(": ")
            frame[field] = value
    return events


def test_sse_streams_from_last_event_id_and_is_scoped(live_server_url, team, user, other_user):
    run = make_run(team, user, status=Run.Status.RUNNING, total_steps=100)
    key = live.stream_key(run.pk)
    live.client().delete(key)
    for step in (1, 2):
        write_step(run, step, {"loss": 1.0 / step})
    first_id = live.client().xrange(key)[0][0].decode()
    url = f"{live_server_url}/runs/{run.pk}/stream/"
    cookies = _session_cookies(user)
    with httpx.Client(cookies=cookies, timeout=20) as http:
        # Resume after the first entry: exactly the second, then a new one written while we listen.
        with http.stream("GET", url, headers={"Last-Event-ID": first_id}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert resp.headers["x-accel-buffering"] == "no" and resp.headers["cache-control"] == "no-cache"
            threading.Timer(0.5, _in_thread, [lambda: write_step(run, 3, {"loss": 0.25})]).start()
            events = _read_events(resp, 2)
        assert [json.loads(e["data"])["step"] for e in events] == [2, 3]
        assert {e["event"] for e in events} == {"metrics"}
        # ?last_id= on a first connection; status changes come as "status" events.
        live.publish_event(run.pk, {"status": "succeeded", "step": 3})
        with http.stream("GET", url, params={"last_id": events[-1]["id"]}) as resp:
            (status,) = _read_events(resp, 1)
        assert status["event"] == "status" and json.loads(status["data"])["status"] == "succeeded"
    with httpx.Client(cookies=_session_cookies(other_user), timeout=10) as http:
        assert http.get(url).status_code == 404
    with httpx.Client(timeout=10, follow_redirects=False) as http:
        anon = http.get(url)
        assert anon.status_code == 302 and "/accounts/login/" in anon.headers["location"]


def test_run_table_stream_announces_new_runs_to_the_teams_members_only(live_server_url, team, user, other_user):
    key = live.team_stream_key(team.pk)
    live.client().delete(key)
    url = f"{live_server_url}/runs/live/"
    with httpx.Client(cookies=_session_cookies(user), timeout=20) as http:
        with http.stream("GET", url, params={"team": team.pk, "since": f"t{team.pk}:0-0"}) as resp:
            assert resp.status_code == 200
            threading.Timer(0.5, _in_thread, [lambda: live.announce_new_run(team.pk, 123)]).start()
            (created,) = _read_events(resp, 1)
        assert created["event"] == "created" and json.loads(created["data"]) == {"run": 123}
        assert created["id"] == f"t{team.pk}:" + live.client().xrange(key)[-1][0].decode()  # resumable
    with httpx.Client(cookies=_session_cookies(other_user), timeout=10) as http:
        assert http.get(url, params={"team": team.pk}).status_code == 204  # another team's: nothing to follow
