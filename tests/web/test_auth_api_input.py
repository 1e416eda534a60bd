"""Bad API input answers 4xx, never 500 (issue 16 item 8): deeply nested JSON, malformed paging,
ids that are not numbers; the schema documents the error answers."""
from __future__ import annotations

import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db

DEEP = 100_000  # deeper than Python's recursion limit: json.loads itself raises RecursionError


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("url", ["/api/reward-configs/", "/api/runs/", "/api/datasets/"])
@pytest.mark.parametrize("depth", [DEEP, settings.API_MAX_JSON_DEPTH + 1])
def test_deeply_nested_json_body_is_400(api_client, url, depth):
    resp = api_client.post(url, data=_nested(depth), content_type="application/json")
    assert resp.status_code == 400, resp.content[:300]
    assert "nested deeper than" in resp.json()["detail"]


def test_nested_json_within_the_limit_is_read(api_client, team):
    spec = {"name": "weighted_sum", "params": {"components": [{"weight": 1.0, "spec": {"name": "gsm8k"}}]}}
    resp = api_client.post("/api/reward-configs/", {"name": "nested", "spec": spec}, format="json")
    assert resp.status_code in (201, 400) and "nested deeper" not in resp.content.decode()


def test_deeply_nested_json_in_a_form_field_is_400(api_client, team):
    resp = api_client.post("/api/reward-configs/", {"name": "deep", "spec": _nested(DEEP)})  # multipart
    assert resp.status_code == 400 and "spec" in resp.json()


@pytest.mark.parametrize("query", ["limit=abc", "limit=0", "limit=100000", "offset=-1", "offset=x", "limit=1&limit=2"])
def test_bad_paging_is_400_naming_the_parameter(api_client, query):
    resp = api_client.get(f"/api/runs/?{query}")
    assert resp.status_code == 400 and query.split("=")[0] in resp.json()


@pytest.mark.parametrize("url", ["/api/runs/abc/", "/api/runs/0.5/cancel/", "/api/nothing-here/"])
def test_unknown_api_urls_are_json_404(api_client, client, url):
    resp = api_client.get(url)
    assert resp.status_code == 404 and resp["Content-Type"] == "application/json"
    assert client.get(url).status_code in (401, 403)  # anonymous: authentication first


def test_schema_documents_error_answers(client):
    schema = client.get("/api/schema/?format=json").json()
    for path, item in schema["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            assert {"401", "403", "429"} <= codes, (method, path)
            if "{id}" in path:
                assert "404" in codes, (method, path)
            if op.get("parameters") or "requestBody" in op:
                assert "400" in codes, (method, path)


def test_conflicts_are_documented_and_answered(api_client, client, team, user):
    from webapp.runs.models import Run

    schema = client.get("/api/schema/?format=json").json()
    for action in ("cancel", "resume"):
        assert "409" in schema["paths"][f"/api/runs/{{id}}/{action}/"]["post"]["responses"], action
    done = Run.objects.create(team=team, name="done", method="gft", config={}, created_by=user, status="succeeded")
    resp = api_client.post(f"/api/runs/{done.pk}/cancel/")
    assert resp.status_code == 409 and resp.json()["detail"]
