"""Never a 500 on a bad request (issue 16 item 8): the whole REST API, fuzzed from its own OpenAPI
schema with schemathesis. Every generated request (valid and invalid) must get an answer that is
not a 5xx and that matches the schema (status code, content type, body)."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings as hyp_settings
from schemathesis.config._operations import OperationConfig, OperationsConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from webapp.accounts.models import ApiToken

from .test_access_control import _objects

MAX_EXAMPLES = 15  # per operation; keeps the whole fuzz run under ~90 s on 2 cores


@pytest.fixture
def wsgi_app():
    """The project's WSGI app, called in-process inside the test's transaction. Like Django's test
    client, requests must not close the connection (close_old_connections would: inside the
    test's transaction autocommit is off)."""
    from django.core import signals
    from django.db import close_old_connections

    from webapp.wsgi import application

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield application
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(wsgi_app, settings, user, team):

    # No throttling here: the fuzzer sends hundreds of requests with one token.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {}}
    _objects(team, user)  # one object of each kind, so some generated ids name real ones
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    raw = ApiToken.issue(user, "fuzz")[1]
    schema.config.headers = {"Authorization": f"Bearer {raw}"}
    # The coverage phase sends every boundary value of every field: for the launch's ~30 fields
    # that alone takes a minute, so POST /api/runs/ gets the (bounded) fuzzing phase only.
    schema.config.operations = OperationsConfig(operations=[OperationConfig.from_dict(
        {"include-path": "/api/runs/", "include-method": "POST", "phases": {"coverage": {"enabled": False}}})])
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


# "A schema-valid request must be accepted" cannot hold where the input names other objects or is
# checked beyond what the schema can say: these operations answer 400/404 to schema-valid input
# (an id of no object of yours, a launch setting out of the method's range, a spec that is no
# reward). Everything else (no 5xx, documented status codes, content types and bodies, invalid
# input rejected) is still checked for them.
ACCEPTANCE_NOT_CHECKED = {
    "POST /api/runs/",            # launch validation (helper webruns): ids, bounds per method/model
    "POST /api/datasets/",        # upload validation (helper resources): file contents, mapping
    "POST /api/reward-configs/",  # reward spec validation (helpers resources, gftrewards)
    "POST /api/eval-suites/",     # benchmark dataset ids of the team; name + benchmarks unless `previous`
    "POST /api/eval-suites/add-benchmarks/",  # preset names
    "POST /api/evaluations/",     # suite/run ids of the team, a checkpoint on disk, a model under MODEL_ROOTS
    "GET /api/evaluations/leaderboard/",  # run ids of the team, pick/metric names
    "POST /api/pipelines/",       # stages: launch validation per stage (helper pipe19)
    "GET /api/datasets/{id}/group-preview/",  # group counts and max_response_len bounded per launch field
    "POST /api/alert-rules/",     # settings checked together (metric empty only for stalled/failed, baseline...)
    "PUT /api/alert-rules/{id}/",
    "PATCH /api/alert-rules/{id}/",
    "POST /api/alert-webhooks/",  # the URL's host must resolve to a public address
    "POST /api/sweeps/",          # launch inputs of the base, parameters checked against gft_core's fields
    "POST /api/datasets/{id}/teacher-answers/",  # a model under MODEL_ROOTS or a run of the team (issue 18)
    "POST /api/datasets/{id}/teacher-import/",   # the file's key column, rows matching the dataset's
    "POST /api/reference-results/",  # a team of yours; text without NUL characters (Postgres cannot store them)
}


@schema.parametrize()
@hyp_settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx_and_matches_its_schema(case):
    excluded = [positive_data_acceptance] if case.operation.label in ACCEPTANCE_NOT_CHECKED else []
    case.call_and_validate(excluded_checks=excluded)
