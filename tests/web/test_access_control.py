"""Every URL pattern of the project, checked for access control.

Anonymous users are sent to the login page (pages) or get 401/403 (API); a user of another team
gets 404 on every URL that names an object of the team. A new URL pattern fails this test until it
is added to one of the tables below, so no page can ship without the check.
"""
from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from webapp.dashboards.models import Dashboard
from webapp.datasets.models import Dataset
from webapp.pipelines.models import Pipeline, PipelineStage
from webapp.rewards.models import RewardConfig
from webapp.runs.models import Run
from webapp.sweeps.models import Sweep

PUBLIC = {"login", "logout", "healthz", "schema", "docs", "api-schema", "api-docs", "swagger-ui", "redoc"}


def iter_patterns(resolvers=None, prefix="", namespace=""):
    for p in resolvers if resolvers is not None else get_resolver().url_patterns:
        if isinstance(p, URLResolver):
            if str(p.pattern).startswith("admin/"):
                continue  # Django's admin has its own staff-only login
            ns = f"{namespace}:{p.namespace}" if p.namespace else namespace
            yield from iter_patterns(p.url_patterns, prefix + str(p.pattern), ns.strip(":"))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), namespace, p.name, p


def _objects(team, user):
    dataset = Dataset.objects.create(team=team, name="d", file_path="x", original_filename="x.jsonl",
                                     file_format="jsonl", sha256="0" * 64, size_bytes=1, status="valid")
    reward = RewardConfig.objects.create(team=team, name="r", spec={"name": "math_verify", "params": {}})
    run = Run.objects.create(team=team, name="run", method="gft", config={"tau": 0.5}, dataset=dataset,
                             reward_config=reward, created_by=user, status="failed")
    dashboard = Dashboard.objects.create(team=team, name="dash", run_ids=[run.pk])
    pipeline = Pipeline.objects.create(team=team, name="pipe", created_by=user)
    PipelineStage.objects.create(pipeline=pipeline, index=0, method="gft", inputs={}, run=run)
    sweep = Sweep.objects.create(team=team, name="s", base={}, parameters={"tau": {"values": [0.5]}}, strategy="grid",
                                 max_runs=1, target="loss", direction="min", study_name=f"access-{run.pk}")
    return {"runs": run, "datasets": dataset, "rewards": reward, "dashboards": dashboard, "pipelines": pipeline,
            "sweeps": sweep, "api": None}


def _model_for(route: str, namespace: str, objs: dict):
    """Which object a pattern's first int argument names, from its namespace or API route."""
    if namespace == "api" or route.startswith("api/"):
        for segment, key in (("pipelines", "pipelines"), ("runs", "runs"), ("datasets", "datasets"), ("reward", "rewards"),
                             ("dashboards", "dashboards"), ("sweeps", "sweeps"), ("teams", None)):
            if f"/{segment}" in "/" + route:
                return objs.get(key) if key else None
        return None
    return objs.get(namespace.split(":")[0])


def _fill(route: str, obj, team) -> str | None:
    """Turn a route like 'runs/<int:pk>/cancel/' into a URL for `obj`."""
    import re

    # DRF router routes are regexes: '^runs/(?P<pk>[^/.]+)/cancel/$' -> 'runs/<pk>/cancel/'
    route = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"<\1>", route).replace("^", "").replace("$", "")
    url = "/" + route
    for conv, name in re.findall(r"<(?:(\w+):)?(\w+)>", route):
        if name in ("pk", "run_id", "id", "dataset_id", "reward_id", "dashboard_id"):
            value = obj.pk if obj is not None else team.pk
        elif name in ("team_id",):
            value = team.pk
        elif name == "version":
            value = 1
        elif name in ("format",):
            value = "json"
        else:
            value = "1"
        url = re.sub(r"<(?:\w+:)?%s>" % name, str(value), url, count=1)
    return None if "(" in url else url


@pytest.mark.django_db
def test_every_url_is_protected(client, other_client, team, user, other_user):
    objs = _objects(team, user)
    checked = 0
    for route, namespace, name, _ in iter_patterns():
        if name in PUBLIC or route.startswith("static/") or route.startswith("media/"):
            continue
        obj = _model_for(route, namespace, objs)
        url = _fill(route, obj, team)
        if url is None:
            continue
        anon = client.get(url)
        if route.startswith("api/"):
            assert anon.status_code in (401, 403), f"anonymous {url} -> {anon.status_code}"
        else:
            assert anon.status_code == 302 and "/accounts/login/" in anon["Location"], \
                f"anonymous {url} -> {anon.status_code}"
        if "<" in route or "(?P<" in route:
            other = other_client.get(url)
            other_post = other_client.post(url)
            assert other.status_code == 404, f"other team GET {url} -> {other.status_code}"
            assert other_post.status_code in (404, 405), f"other team POST {url} -> {other_post.status_code}"
        checked += 1
    assert checked >= 40, f"only {checked} URL patterns were checked"


@pytest.mark.django_db
def test_lists_never_show_other_teams_objects(other_client, team, user):
    objs = _objects(team, user)
    for url in ("/", "/datasets/", "/rewards/", "/dashboards/"):
        resp = other_client.get(url)
        assert resp.status_code == 200, url
        body = resp.content.decode()
        assert f"/runs/{objs['runs'].pk}/" not in body, url
    api = other_client.get("/api/runs/")
    if api.status_code == 200:
        ids = [r["id"] for r in api.json().get("results", api.json())]
        assert objs["runs"].pk not in ids
