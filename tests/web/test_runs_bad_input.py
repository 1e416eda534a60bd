"""Never a 500 on the runs pages: query strings that Python half-accepts ("²".isdigit() is True
but int("²") fails; float("1e400") is inf; a NUL byte in a path) answer a 4xx that says what is
wrong. The test client re-raises a view's exception, so each of these failed as an error before."""
from __future__ import annotations

import pytest
from django.urls import reverse

from webapp.dashboards.models import Dashboard
from webapp.runs.listing import parse_id
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(team, user):
    return Run.objects.create(team=team, name="r", method="gft", created_by=user, config={"tau": 0.3},
                              status=Run.Status.SUCCEEDED)


@pytest.mark.parametrize("raw,expected", [("12", 12), (" 7 ", 7), ("²", None), ("٣", None), ("-1", None),
                                          ("1e3", None), ("", None), ("9" * 19, None), (str(2**63 - 1), 2**63 - 1)])
def test_parse_id_takes_ascii_digits_within_bigint_only(raw, expected):
    assert parse_id(raw) == expected


@pytest.mark.parametrize("ids", ["%C2%B2", "1,%C2%B2", "%D9%A3", "99999999999999999999"])
def test_compare_with_a_unicode_digit_is_not_found(auth_client, run, ids):
    resp = auth_client.get(f"/compare/?runs={ids}")
    assert resp.status_code == 404


def test_series_with_a_unicode_digit_is_not_found(auth_client, run):
    assert auth_client.get("/runs/series/?runs=%C2%B2&keys=loss").status_code == 404
    assert auth_client.get("/runs/series.csv?runs=%C2%B2&keys=loss").status_code == 404


@pytest.mark.parametrize("param", ["step_min=1e400", "step_max=-1e400", "step_min=nan", "max_points=inf",
                                   "step_min=abc", "step_min=99999999999999999999"])
def test_series_with_a_step_out_of_range_is_a_bad_request(auth_client, run, param):
    resp = auth_client.get(f"/runs/series/?runs={run.pk}&keys=loss&{param}")
    assert resp.status_code == 400
    name = param.split("=")[0]
    assert name in resp.content.decode()


def test_group_inspector_with_a_step_out_of_range_is_a_bad_request(auth_client, run):
    assert auth_client.get(f"/runs/{run.pk}/groups/?step=1e400").status_code == 400


def test_clone_with_a_unicode_digit_is_not_found(auth_client, run):
    assert auth_client.get(reverse("runs:launch") + "?clone=%C2%B2").status_code == 404
    assert auth_client.get(reverse("runs:launch") + "?clone=99999999999999999999").status_code == 404


def test_dashboard_with_a_unicode_digit_is_a_field_error(auth_client, run):
    resp = auth_client.post(reverse("dashboards:create"), {"name": "d", "runs": f"{run.pk},²"})
    assert resp.status_code == 400 and "is not a run id" in resp.content.decode()
    assert not Dashboard.objects.exists()


@pytest.mark.parametrize("model", ["%00", "tiny%00", "/models/%00x"])
def test_defaults_for_a_model_with_a_nul_byte_is_a_bad_request(auth_client, model):
    resp = auth_client.get(reverse("runs:launch_defaults") + f"?model={model}")
    assert resp.status_code == 400 and resp.json()["field"] == "model" and "NUL" in resp.json()["error"]


def test_defaults_for_an_unknown_method_is_a_bad_request(auth_client):
    resp = auth_client.get(reverse("runs:launch_defaults"), {"model": "tiny", "method": "nope"})
    assert resp.status_code == 400 and resp.json()["field"] == "method" and "nope" in resp.json()["error"]
