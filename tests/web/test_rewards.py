"""Reward configs: forms built from the registry, specs as data, versions, delete protection, the
"test this reward" panel on the shared GSM8K and MATH-500 files, access (real Postgres).

The test task runs in-process here; tests/e2e/test_datasets_e2e.py runs it through a real worker.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from webapp.datasets import services as dataset_services
from webapp.resources.models import ImmutableVersionError
from webapp.rewards import services
from webapp.rewards.models import RewardConfig, RewardTest
from webapp.runs.models import Run
from workers.data_tasks import test_reward as run_reward_test

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
GSM8K_TRAIN = SHARED / "gsm8k" / "train.parquet"
MATH500 = SHARED / "math_eval" / "math_oai.jsonl"


def term(i: int, reward: str, weight: float = 1.0, **params) -> dict:
    data = {f"terms-{i}-reward": reward, f"terms-{i}-weight": str(weight)}
    for k, v in params.items():
        if v is True:
            data[f"terms-{i}-{reward}__{k}"] = "on"
        elif v is not False:
            data[f"terms-{i}-{reward}__{k}"] = str(v)
    return data


def config_form(name: str, *terms: dict, spec_json: str = "") -> dict:
    data = {"name": name, "description": "", "spec_json": spec_json, "terms-TOTAL_FORMS": str(len(terms)),
            "terms-INITIAL_FORMS": "0", "terms-MIN_NUM_FORMS": "1", "terms-MAX_NUM_FORMS": "8"}
    for t in terms:
        data.update(t)
    return data


def shared_dataset(team, user, path: Path, preset: str):
    if not path.exists():
        pytest.skip(f"{path} not present")
    with open(path, "rb") as f:
        return dataset_services.create_dataset_from_upload(team, user, f, name=path.stem, filename=path.name, mapping=preset)


# ---------------------------------------------------------------- forms and specs
def test_form_shows_every_registered_reward(auth_client):
    from gft_core.rewards import describe_rewards

    page = auth_client.get(reverse("rewards:create")).content.decode()
    for r in describe_rewards():
        if r["name"] != "weighted_sum":
            assert f'data-reward="{r["name"]}"' in page
    assert 'name="terms-0-math_verify__rel_tol"' in page and 'name="terms-0-length_penalty__unit"' in page


def test_create_single_term_stores_plain_spec(auth_client, team):
    r = auth_client.post(reverse("rewards:create"), config_form("mv", term(0, "math_verify", rel_tol=0.001, percent=True, timeout_s=2)))
    cfg = RewardConfig.objects.get(name="mv")
    assert r.status_code == 302 and r["Location"] == reverse("rewards:detail", args=[cfg.pk])
    assert cfg.spec == {"name": "math_verify", "params": {"rel_tol": 0.001, "percent": True, "timeout_s": 2.0}}
    assert cfg.team == team and cfg.version == 1
    page = auth_client.get(reverse("rewards:detail", args=[cfg.pk])).content.decode()
    assert "math_verify(rel_tol=0.001, percent=True, timeout_s=2.0)" in page


def test_create_weighted_sum_of_terms(auth_client):
    r = auth_client.post(reverse("rewards:create"), config_form(
        "combo", term(0, "math_verify", percent=False), term(1, "length_penalty", 0.5, max_len=400, penalty=0.01, unit="chars")))
    assert r.status_code == 302, r.content.decode()[:3000]
    spec = RewardConfig.objects.get(name="combo").spec
    assert spec["name"] == "weighted_sum"
    terms = spec["params"]["terms"]
    assert [(t["name"], t["weight"]) for t in terms] == [("math_verify", 1.0), ("length_penalty", 0.5)]
    assert terms[0]["params"]["percent"] is False and terms[1]["params"] == {"max_len": 400, "penalty": 0.01, "unit": "chars"}
    from gft_core.rewards import build_reward

    assert build_reward(spec)(["\\boxed{3}" + "x" * 500], ["3"], ["p"]) == [pytest.approx(1.0 - 0.5 * 0.01 * 109)]


@pytest.mark.parametrize("form, message", [
    (config_form("bad", term(0, "regex_match", pattern="(")), "invalid regular expression"),
    (config_form("bad", term(0, "regex_match")), "regex_match needs pattern"),
    (config_form("bad", term(0, "length_penalty", max_len=-3)), "must be &gt;= 0"),
    (config_form("bad", term(0, "math_verify"), spec_json='{"name": "__import__(\'os\').system(\'id\')"}'), "unknown reward"),
    (config_form("bad", term(0, "math_verify"), spec_json='{"name": "math_verify", "params": {"code": "print(1)"}}'), "unknown parameter"),
    (config_form("bad", term(0, "math_verify"), spec_json="{not json"), "Not valid JSON"),
    (config_form("bad", term(0, "math_verify"), spec_json='{"name": "reward_model", "params": {"path": "/etc"}}'), "under MODEL_ROOTS"),
    (config_form("bad", term(0, "length_penalty", max_len=10, unit="tokens", tokenizer="/usr")), "under MODEL_ROOTS"),
    (config_form("bad"), "Please submit at least 1 form"),
])
def test_bad_specs_are_refused(auth_client, form, message):
    r = auth_client.post(reverse("rewards:create"), form)
    assert r.status_code == 200
    assert message in r.content.decode()
    assert not RewardConfig.objects.exists()


def test_spec_json_is_data_for_nested_sums(team, user, auth_client):
    spec = {"name": "weighted_sum", "params": {"terms": [
        {"name": "weighted_sum", "weight": 0.5, "params": {"terms": [{"name": "gsm8k", "params": {}}]}},
        {"name": "exact_match", "weight": 2, "params": {"case_sensitive": False}}]}}
    r = auth_client.post(reverse("rewards:create"), config_form("nested", term(0, "math_verify"), spec_json=json.dumps(spec)))
    assert r.status_code == 302
    cfg = RewardConfig.objects.get(name="nested")
    assert cfg.spec == spec
    page = auth_client.get(reverse("rewards:new_version", args=[cfg.pk])).content.decode()
    assert "exact_match" in page and "case_sensitive" in page  # nested specs are edited as JSON


def test_reward_model_spec_is_checked_without_loading_a_model(team, user, settings):
    model_dir = Path(settings.MODEL_ROOTS[0]) / "rm"
    cfg = services.create_reward_config(team, user, name="rm", spec={"name": "reward_model", "params": {"path": str(model_dir)}})
    assert cfg.spec["params"]["path"] == str(model_dir)
    with pytest.raises(services.RewardConfigError, match="expected int"):
        services.create_reward_config(team, user, name="rm2", spec={"name": "reward_model", "params": {"path": str(model_dir), "batch_size": "8"}})
    with pytest.raises(services.RewardConfigError, match="required parameter"):
        services.create_reward_config(team, user, name="rm3", spec={"name": "reward_model", "params": {}})


def test_duplicate_name_is_refused(team, user):
    services.create_reward_config(team, user, name="x", spec={"name": "gsm8k"})
    with pytest.raises(services.RewardConfigError, match="already has a reward config named"):
        services.create_reward_config(team, user, name="x", spec={"name": "gsm8k"})


# ---------------------------------------------------------------- versions, archive, delete
def test_edit_creates_a_new_version_and_used_versions_are_immutable(auth_client, team, user):
    v1 = services.create_reward_config(team, user, name="mv", spec={"name": "math_verify", "params": {}})
    Run.objects.create(team=team, name="r", method="gft", config={}, reward_config=v1)
    page = auth_client.get(reverse("rewards:new_version", args=[v1.pk])).content.decode()
    assert 'value="math_verify" selected' in page
    r = auth_client.post(reverse("rewards:new_version", args=[v1.pk]), config_form("ignored", term(0, "gsm8k")))
    v2 = RewardConfig.objects.get(version=2)
    assert r.status_code == 302 and v2.name == "mv" and v2.previous == v1 and v2.spec == {"name": "gsm8k", "params": {}}
    v1.refresh_from_db()
    assert v1.spec == {"name": "math_verify", "params": {}}
    v1.spec = {"name": "gsm8k", "params": {}}
    with pytest.raises(ImmutableVersionError):
        v1.save()

    r = auth_client.post(reverse("rewards:delete", args=[v1.pk]), follow=True)
    assert "cannot be deleted. Archive it instead." in r.content.decode() and RewardConfig.objects.filter(pk=v1.pk).exists()
    auth_client.post(reverse("rewards:archive", args=[v1.pk]))
    v1.refresh_from_db()
    assert v1.archived
    r = auth_client.post(reverse("rewards:delete", args=[v2.pk]))
    assert r.status_code == 302 and not RewardConfig.objects.filter(pk=v2.pk).exists()


# ---------------------------------------------------------------- test this reward, on real data
def _run_test(config, dataset, user, **kw) -> RewardTest:
    test = services.start_reward_test(config, dataset, user, **kw)
    assert run_reward_test(test.pk) == "done", RewardTest.objects.get(pk=test.pk).error
    test.refresh_from_db()
    return test


def test_gsm8k_expert_answers_score_one(team, user, auth_client):
    ds = shared_dataset(team, user, GSM8K_TRAIN, "gsm8k")
    for name, spec in [("gsm8k", {"name": "gsm8k", "params": {}}), ("mv", {"name": "math_verify", "params": {}})]:
        cfg = services.create_reward_config(team, user, name=name, spec=spec)
        test = _run_test(cfg, ds, user, sample_size=300, seed=1, response="... so she has #### 18 left", response_ground_truth="18")
        expert = test.result["sources"]["expert"]
        assert (expert["n"], expert["mean"], expert["min"]) == (300, 1.0, 1.0)
        assert test.result["sources"]["teacher"] is None and test.result["rows_seen"] == 7473
        assert test.result["pasted"] == {"score": 1.0, "ground_truth": "18"}
    page = auth_client.get(reverse("rewards:detail", args=[cfg.pk]) + f"?test={test.pk}").content.decode()
    assert 'id="reward-hist"' in page and "300 rows sampled of 7473" in page


def test_math500_expert_answers_score_one(team, user, auth_client):
    ds = shared_dataset(team, user, MATH500, "math")
    cfg = services.create_reward_config(team, user, name="mv", spec={"name": "math_verify", "params": {}})
    test = _run_test(cfg, ds, user, sample_size=1000, response="I think it is 7.", response_ground_truth="8")
    expert = test.result["sources"]["expert"]
    assert (expert["n"], expert["mean"], expert["min"]) == (500, 1.0, 1.0)
    assert test.result["pasted"]["score"] == 0.0


def _teacher_test(team, user) -> RewardTest:
    """Ten rows, one wrong expert answer, one right and one wrong teacher answer per row."""
    rows = [{"prompt": f"{i}+{i}?", "expert": f"\\boxed{{{2 * i}}}", "teachers": [f"\\boxed{{{2 * i}}}", "\\boxed{-1}"],
             "answer": str(2 * i)} for i in range(10)]
    rows[4]["expert"] = "I give up"
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    ds = dataset_services.create_dataset_from_upload(team, user, io.BytesIO(content), name="t", filename="t.jsonl", mapping="toy")
    cfg = services.create_reward_config(team, user, name="mv", spec={"name": "math_verify", "params": {}})
    return _run_test(cfg, ds, user, sample_size=10)


def test_teacher_scores_and_failures_first(team, user):
    test = _teacher_test(team, user)
    assert test.result["sources"]["expert"]["mean"] == 0.9
    assert test.result["sources"]["teacher"]["n"] == 20 and test.result["sources"]["teacher"]["mean"] == 0.5
    assert test.result["rows"][0]["number"] == 5 and test.result["rows"][0]["expert"] == 0.0


def test_panel_lists_the_answers_below_one(team, user, auth_client):
    test = _teacher_test(team, user)
    page = auth_client.get(reverse("rewards:detail", args=[test.reward_config_id]) + f"?test={test.pk}").content.decode()
    low = page.split("Answers scoring below 1", 1)[1].split("<details>", 1)[0]
    assert low.count("<tr><td>") == 10 and "I give up" in low  # every row has a teacher answer of -1


def test_a_test_whose_answers_all_time_out_stops_at_its_time_limit(team, user, auth_client, settings):
    """Every answer runs over math_verify's budget (sympy on 10^(10^7) takes seconds): the test
    stops after REWARD_TEST_MAX_S with what it scored and says so, instead of holding the worker
    for sample size x budget."""
    settings.REWARD_TEST_MAX_S = 1.5
    rows = [{"prompt": f"{i}+1?", "expert": f"\\boxed{{{i}}}", "teachers": [f"\\boxed{{{i}}}"], "answer": "10^{10^{7}}"}
            for i in range(20)]
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    ds = dataset_services.create_dataset_from_upload(team, user, io.BytesIO(content), name="slow", filename="s.jsonl",
                                                     mapping="toy")
    cfg = services.create_reward_config(team, user, name="mv", spec={"name": "math_verify", "params": {"timeout_s": 0.3}})
    t0 = time.monotonic()
    test = _run_test(cfg, ds, user, sample_size=20)
    took = time.monotonic() - t0
    stopped = test.result["stopped"]
    assert stopped["after_s"] == 1.5 and stopped["answers"] == 40 and 1 <= stopped["scored"] < 40, stopped
    assert took < 1.5 + 0.3 + 5, took  # the limit plus at most one answer's budget (and start-up)
    assert test.result["timeouts"] == stopped["scored"] and test.result["sources"]["expert"]["max"] == 0.0
    assert len(test.result["rows"]) <= stopped["scored"]
    page = auth_client.get(reverse("rewards:detail", args=[cfg.pk]) + f"?test={test.pk}").content.decode()
    assert 'id="test-stopped"' in page and f"{stopped['scored']} of 40 answers scored" in page
    assert 'id="test-timeouts"' in page


def test_a_test_within_its_time_limit_scores_everything(team, user):
    test = _teacher_test(team, user)
    assert "stopped" not in test.result and test.result["timeouts"] == 0 and len(test.result["rows"]) == 10


def test_reward_needing_a_ground_truth_fails_with_a_message(team, user):
    content = b'{"prompt": "p", "expert": "e"}\n'
    ds = dataset_services.create_dataset_from_upload(team, user, io.BytesIO(content), name="t", filename="t.jsonl",
                                                     mapping={"prompt": "prompt", "expert": "expert"})
    cfg = services.create_reward_config(team, user, name="mv", spec={"name": "math_verify", "params": {}})
    test = services.start_reward_test(cfg, ds, user, sample_size=5)
    assert run_reward_test(test.pk) == "failed"
    test.refresh_from_db()
    assert "needs a ground truth" in test.error


def test_panel_form_queues_a_test(auth_client, team, user, django_capture_on_commit_callbacks):
    from tests.web.test_datasets import queued_tasks
    from webapp import dispatch

    ds = dataset_services.create_dataset_from_upload(team, user, io.BytesIO(b'{"prompt": "p", "expert": "4", "teachers": [], "answer": "4"}\n'),
                                                     name="t", filename="t.jsonl", mapping="toy")
    cfg = services.create_reward_config(team, user, name="mv", spec={"name": "math_verify", "params": {}})
    page = auth_client.get(reverse("rewards:detail", args=[cfg.pk]) + f"?dataset={ds.pk}").content.decode()
    assert f'<option value="{ds.pk}" selected>' in page
    assert "the sampled rows&#x27; are not used" in page  # the form says the pasted response needs its own
    # A pasted response without its ground truth: refused, naming the field (no row's answer stands in).
    post = {"dataset": ds.pk, "sample_size": 10, "seed": 0, "response": "\\boxed{4}", "response_ground_truth": ""}
    r = auth_client.post(reverse("rewards:test", args=[cfg.pk]), post, follow=True)
    assert "response_ground_truth: The pasted response needs its own ground truth" in r.content.decode()
    assert not RewardTest.objects.exists()
    with pytest.raises(services.RewardConfigError, match="response_ground_truth"):
        services.start_reward_test(cfg, ds, user, sample_size=5, response="4")
    with django_capture_on_commit_callbacks(execute=True):
        r = auth_client.post(reverse("rewards:test", args=[cfg.pk]), {**post, "response_ground_truth": "4"})
    test = RewardTest.objects.get()
    assert (dispatch.TEST_REWARD, [test.pk]) in queued_tasks() and r["Location"].endswith(f"?test={test.pk}#test")
    assert auth_client.get(reverse("rewards:test_status", args=[cfg.pk, test.pk])).json()["status"] == "queued"
    run_reward_test(test.pk)
    page = auth_client.get(r["Location"]).content.decode()
    assert 'data-source="pasted"' in page and "Done" in page
    test.refresh_from_db()
    assert test.result["pasted"] == {"score": 1.0, "ground_truth": "4"}


def test_bad_json_spec_message(auth_client):
    r = auth_client.post(reverse("rewards:create"), config_form("j", spec_json='{"name": "math_verify\n"}'))
    errors = " ".join(r.context["form"].errors["spec_json"])
    assert "Invalid control character at line 1, column 22" in errors and "at at" not in errors


# ---------------------------------------------------------------- access
def reward_urls(cfg: RewardConfig, test: RewardTest) -> list[tuple[str, str]]:
    pk = cfg.pk
    return [("get", reverse("rewards:detail", args=[pk])), ("get", reverse("rewards:new_version", args=[pk])),
            ("post", reverse("rewards:new_version", args=[pk])), ("post", reverse("rewards:test", args=[pk])),
            ("get", reverse("rewards:test_status", args=[pk, test.pk])), ("post", reverse("rewards:archive", args=[pk])),
            ("post", reverse("rewards:delete", args=[pk]))]


@pytest.fixture
def secret(team, user):
    ds = dataset_services.create_dataset_from_upload(team, user, io.BytesIO(b'{"prompt": "p", "expert": "4", "teachers": [], "answer": "4"}\n'),
                                                     name="t", filename="t.jsonl", mapping="toy")
    cfg = services.create_reward_config(team, user, name="secret", spec={"name": "gsm8k", "params": {}})
    return cfg, RewardTest.objects.create(reward_config=cfg, dataset=ds)


def test_other_team_gets_404_everywhere(other_client, secret):
    cfg, test = secret
    for method, url in reward_urls(cfg, test):
        assert getattr(other_client, method)(url).status_code == 404, url
    assert "secret" not in other_client.get(reverse("rewards:list")).content.decode()
    assert RewardConfig.objects.filter(pk=cfg.pk, archived=False).exists()


def test_other_team_cannot_test_on_our_dataset(client, secret, other_user, other_team):
    """A dataset of another team is not a choice of the panel, even when its id is posted."""
    cfg, test = secret
    own = services.create_reward_config(other_team, other_user, name="mine", spec={"name": "gsm8k", "params": {}})
    client.force_login(other_user)
    r = client.post(reverse("rewards:test", args=[own.pk]), {"dataset": test.dataset_id, "sample_size": 5, "seed": 0}, follow=True)
    assert "Select a valid choice" in r.content.decode()
    assert not RewardTest.objects.filter(reward_config=own).exists()


def test_anonymous_is_sent_to_login(client, secret):
    cfg, test = secret
    for method, url in reward_urls(cfg, test) + [("get", reverse("rewards:list")), ("get", reverse("rewards:create"))]:
        r = getattr(client, method)(url)
        assert r.status_code == 302 and r["Location"].startswith(reverse("login")), url


# ---------------------------------------------------------------- specs that used to answer 500
def _deep_spec(levels: int) -> dict:
    spec: dict = {"name": "gsm8k", "params": {}}
    for _ in range(levels):
        spec = {"name": "weighted_sum", "params": {"terms": [{"name": "weighted_sum", "weight": 1, "params": {"terms": [spec]}}]}}
    return spec


def spec_depth(value) -> int:
    from webapp.api.parsers import json_depth_exceeds

    return next(d for d in range(1, 1000) if not json_depth_exceeds(value, d)) + 1  # + the body's own level


NASTY_SPECS = [
    # RE2 reads "a{4294967296}" as literal text (a valid pattern); a repeat it cannot run is refused
    ("regex RE2 cannot run", {"name": "regex_match", "params": {"pattern": "a{1001}"}}, "invalid regular expression (RE2)"),
    ("bare pattern", {"pattern": "a{4294967296}"}, "unknown key"),
    ("params a list", {"name": "weighted_sum", "params": [1]}, "reward.params=[1]: expected a mapping"),
    ("deeply nested", _deep_spec(40), "nests deeper than 32 levels"),
]


@pytest.mark.parametrize("spec, message", [c[1:] for c in NASTY_SPECS], ids=[c[0] for c in NASTY_SPECS])
def test_nasty_specs_are_a_form_error_on_the_spec_field(auth_client, spec, message):
    """Issue 16: these answered 500; now the JSON field says what is wrong and nothing is created."""
    r = auth_client.post(reverse("rewards:create"), config_form("bad", term(0, "math_verify"), spec_json=json.dumps(spec)))
    assert r.status_code == 200
    assert message in r.context["form"].errors["spec_json"][0]
    assert not RewardConfig.objects.exists()


@pytest.mark.parametrize("spec, message", [c[1:] for c in NASTY_SPECS], ids=[c[0] for c in NASTY_SPECS])
def test_nasty_specs_are_a_400_naming_spec_in_the_api(api_client, spec, message):
    r = api_client.post("/api/reward-configs/", {"name": "bad", "spec": spec}, format="json")
    # A body nested past API_MAX_JSON_DEPTH is refused by the API's JSON parser before the field is read.
    error = r.json()["detail"] if spec_depth(spec) > settings.API_MAX_JSON_DEPTH else r.json()["spec"][0]
    assert r.status_code == 400 and (message in error or "nested deeper than" in error)
    assert not RewardConfig.objects.exists()


def test_json_nested_past_the_parsers_limit_is_a_400(auth_client, api_client):
    """Nesting deep enough to make json.loads itself give up (RecursionError)."""
    body = '{"name": "weighted_sum", "params": ' + "[" * 100_000 + "]" * 100_000 + "}"
    r = auth_client.post(reverse("rewards:create"), config_form("bad", term(0, "math_verify"), spec_json=body))
    assert r.status_code == 200 and "nests too deeply" in r.context["form"].errors["spec_json"][0]
    r = api_client.post("/api/reward-configs/", '{"name": "bad", "spec": ' + body + "}", content_type="application/json")
    assert r.status_code == 400 and "nested deeper than" in r.json()["detail"]
    assert not RewardConfig.objects.exists()


# ---------------------------------------------------------------- who may archive and delete
def test_members_manage_their_own_reward_configs_admins_any(client, team, user, api_client):
    from tests.web.test_datasets import team_member
    from webapp.accounts.models import Membership

    cfg = services.create_reward_config(team, user, name="alices", spec={"name": "gsm8k", "params": {}})
    carol, carol_api = team_member(team, "carol", Membership.Role.MEMBER)
    client.force_login(carol)
    assert reverse("rewards:delete", args=[cfg.pk]) not in client.get(reverse("rewards:detail", args=[cfg.pk])).content.decode()
    for name in ("archive", "delete"):
        r = client.post(reverse(f"rewards:{name}", args=[cfg.pk]))
        assert r.status_code == 403 and "Only the member who created alices v1 (alice)" in r.content.decode()
    assert carol_api.post(f"/api/reward-configs/{cfg.pk}/archive/", {}, format="json").status_code == 403
    assert carol_api.delete(f"/api/reward-configs/{cfg.pk}/").status_code == 403
    cfg.refresh_from_db()
    assert not cfg.archived
    # a member may still make a new version; she then manages that one
    r = client.post(reverse("rewards:new_version", args=[cfg.pk]), config_form("ignored", term(0, "math_verify")))
    v2 = RewardConfig.objects.get(version=2)
    assert r.status_code == 302 and v2.created_by == carol
    assert carol_api.delete(f"/api/reward-configs/{v2.pk}/").status_code == 204

    r = api_client.post(f"/api/reward-configs/{cfg.pk}/archive/", {"archived": True}, format="json")
    assert r.status_code == 200 and r.json()["archived"] is True
    dave, dave_api = team_member(team, "dave", Membership.Role.ADMIN)
    assert dave_api.delete(f"/api/reward-configs/{cfg.pk}/").status_code == 204
    assert not RewardConfig.objects.exists()
