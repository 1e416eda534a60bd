"""Evaluations (issue 17), web side: suites, bounds, team scoping, submitting and the lifecycle,
housekeeping, the paper's reference table, the selectors (leaderboard, accuracy_series, problem_diff),
the benchmark presets."""
from __future__ import annotations

import csv
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from tests.eval_support import benchmark, make_benchmark, suite  # noqa: F401
from tests.runs_support import tiny_assets  # noqa: F401
from webapp.datasets.models import Dataset
from webapp.evaluations import housekeeping, references, selectors, services
from webapp.evaluations.models import EvalResult, EvalStatus, Evaluation, ReferenceResult
from webapp.runs.models import Artifact, Run

pytestmark = pytest.mark.django_db


def make_run(team, tiny_assets, name="r", steps=(2, 4), final=4, method="gft"):
    """A finished run whose checkpoints and final model are the small model's directory."""
    run = Run.objects.create(team=team, name=name, method=method, status="succeeded", total_steps=final or 4,
                             config={"model_path": str(tiny_assets["model"]), "method": method})
    for s in steps:  # step-N/model, as the trainer writes it (a link to the small model)
        path = run.directory / "checkpoints" / f"step-{s}"
        path.mkdir(parents=True, exist_ok=True)
        (path / "model").symlink_to(tiny_assets["model"])
        Artifact.objects.create(run=run, kind=Artifact.Kind.CHECKPOINT, path=str(path), step=s)
    if final:
        Artifact.objects.create(run=run, kind=Artifact.Kind.FINAL_MODEL, path=str(tiny_assets["model"]), step=final)
    return run


def finished(team, suite, *, run=None, step=0, values: dict, model_path="", problems=None):  # noqa: F811
    """A succeeded evaluation with one result per benchmark: values = {dataset: avg_at_k fraction}."""
    ev = Evaluation.objects.create(team=team, run=run, suite=suite, checkpoint_step=step, checkpoint_path="/x",
                                   model_path=model_path, status=EvalStatus.SUCCEEDED, finished_at=timezone.now())
    for d, v in values.items():
        EvalResult.objects.create(evaluation=ev, benchmark=d, benchmark_name=d.name,
                                  metrics={"avg_at_k": v, "maj_at_k": v, "pass_at_k": {"1": v, "2": min(1, v + 0.1)}},
                                  problems=(problems or {}).get(d.name, []))
    return ev


# ---------------------------------------------------------------------------- suites
def test_create_suite_through_the_api_fills_default_settings(api_client, team, benchmark):  # noqa: F811
    r = api_client.post("/api/eval-suites/", {"name": "math", "benchmarks": [benchmark.pk], "settings": {"k": 8}},
                        format="json")
    assert r.status_code == 201, r.json()
    body = r.json()
    assert body["version"] == 1 and body["benchmarks"] == [benchmark.pk] and body["benchmark_names"] == ["toy_bench"]
    assert body["settings"]["k"] == 8 and body["settings"]["reward"]["name"] == "math_verify"
    nxt = api_client.post("/api/eval-suites/", {"previous": body["id"], "settings": {"k": 16}}, format="json")
    assert nxt.status_code == 201, nxt.json()
    assert nxt.json()["version"] == 2 and nxt.json()["settings"]["k"] == 16 and nxt.json()["previous"] == body["id"]
    assert [s["version"] for s in api_client.get("/api/eval-suites/?name=math").json()["results"]] == [2, 1]


@pytest.mark.parametrize("settings, field", [
    ({"k": 1025}, "k"), ({"k": 0}, "k"), ({"temperature": 11}, "temperature"), ({"top_p": 0}, "top_p"),
    ({"max_new_tokens": 131073}, "max_new_tokens"), ({"batch_size": 5000}, "batch_size"), ({"seed": -1}, "seed"),
    ({"reward": {"name": "no_such_reward"}}, "reward.name"),
])
def test_settings_out_of_bounds_answer_400_naming_the_field(api_client, benchmark, settings, field):  # noqa: F811
    r = api_client.post("/api/eval-suites/", {"name": "s", "benchmarks": [benchmark.pk], "settings": settings},
                        format="json")
    assert r.status_code == 400, r.json()
    assert field in r.json()["settings"], r.json()


def test_benchmarks_must_be_the_teams_evaluation_datasets(api_client, team, other_team, tiny_assets):  # noqa: F811
    train = make_benchmark(team, tiny_assets, name="train", validate=False)
    Dataset.objects.filter(pk=train.pk).update(purpose=Dataset.Purpose.TRAIN)
    foreign = make_benchmark(other_team, tiny_assets, name="theirs", validate=False)
    for ids in ([train.pk], [foreign.pk], [], [10**9]):
        r = api_client.post("/api/eval-suites/", {"name": "s", "benchmarks": ids}, format="json")
        assert r.status_code == 400 and "benchmarks" in r.json(), r.json()


# ---------------------------------------------------------------------------- submit, cancel, resume
def test_submit_an_evaluation_of_a_run_checkpoint(api_client, team, suite, tiny_assets):  # noqa: F811
    run = make_run(team, tiny_assets)
    r = api_client.post("/api/evaluations/", {"run": run.pk, "suite": suite.pk, "step": "final"}, format="json")
    assert r.status_code == 201, r.json()
    ev = Evaluation.objects.get(pk=r.json()["id"])
    assert (ev.status, ev.run_id, ev.checkpoint_step, ev.total) == ("queued", run.pk, 4, 8)
    assert ev.checkpoint_path == str(tiny_assets["model"]) and ev.celery_task_id
    latest = api_client.post("/api/evaluations/", {"run": run.pk, "suite": suite.pk, "step": "latest"}, format="json")
    assert latest.json()["checkpoint_step"] == 4
    two = api_client.post("/api/evaluations/", {"run": run.pk, "suite": suite.pk, "step": "2"}, format="json")
    assert two.status_code == 201 and two.json()["checkpoint_step"] == 2
    base = api_client.post("/api/evaluations/", {"run": run.pk, "suite": suite.pk, "step": "0"}, format="json").json()
    assert base["run"] is None and base["checkpoint_step"] == 0 and base["model_path"] == str(tiny_assets["model"])
    bad = api_client.post("/api/evaluations/", {"run": run.pk, "suite": suite.pk, "step": "3"}, format="json")
    assert bad.status_code == 400 and "step" in bad.json()
    for step in ("soon", "-1", "1" * 12):
        assert api_client.post("/api/evaluations/", {"run": run.pk, "suite": suite.pk, "step": step},
                               format="json").status_code == 400
    model = api_client.post("/api/evaluations/", {"model": "/etc", "suite": suite.pk}, format="json")
    assert model.status_code == 400 and "model" in model.json()
    listed = api_client.get(f"/api/evaluations/?run={run.pk}").json()["results"]
    assert {e["checkpoint_step"] for e in listed} == {0, 2, 4}  # the base model's row comes with the run's


def test_an_evaluation_records_its_prompt_format(api_client, auth_client, team, user, suite, tiny_assets,
                                                tmp_path):  # noqa: F811
    """Issue 22: a run's checkpoint is evaluated with the run's prompt format (its config's data
    settings), a base model with the defaults; the suite's and the request's settings win. The
    format is stored on the evaluation and shown by the API and the run's evaluation tab."""
    import json
    import shutil

    from gft_core.tiny import CHAT_TEMPLATE

    chat = tmp_path / "chat-model"  # the small model with a chat template
    shutil.copytree(tiny_assets["model"], chat)
    tc = json.loads((chat / "tokenizer_config.json").read_text())
    (chat / "tokenizer_config.json").write_text(json.dumps({**tc, "chat_template": CHAT_TEMPLATE}))
    run = make_run(team, tiny_assets, final=None)
    run.config["data"] = {"use_chat_template": True, "system_prompt": "Be exact.", "instruction_suffix": "Box it."}
    run.save(update_fields=["config"])
    Artifact.objects.create(run=run, kind=Artifact.Kind.FINAL_MODEL, path=str(chat), step=4)
    run_format = {"use_chat_template": True, "system_prompt": "Be exact.", "instruction_suffix": "Box it."}

    final = api_client.post("/api/evaluations/", {"run": run.pk, "suite": suite.pk, "step": "final"}, format="json")
    assert final.status_code == 201, final.json()
    assert final.json()["prompt_format"] == {**run_format, "chat_template_applied": True, "source": f"run #{run.pk}",
                                             "set_by_suite": [], "set_by_request": []}
    assert api_client.get(f"/api/evaluations/{final.json()['id']}/").json()["prompt_format"]["system_prompt"] == "Be exact."
    # a checkpoint of the small model (no template): the run's settings, plain prompts
    two = api_client.post("/api/evaluations/", {"run": run.pk, "suite": suite.pk, "step": "2"}, format="json").json()
    assert two["prompt_format"] == {**run_format, "chat_template_applied": False, "source": f"run #{run.pk}",
                                    "set_by_suite": [], "set_by_request": []}
    # the base model: the defaults, as training's (chat template on, nothing else)
    base = api_client.post("/api/evaluations/", {"run": run.pk, "suite": suite.pk, "step": "0"}, format="json").json()
    assert base["prompt_format"] == {"use_chat_template": True, "system_prompt": "", "instruction_suffix": "",
                                     "chat_template_applied": False, "source": "defaults", "set_by_suite": [],
                                     "set_by_request": []}
    # the request's settings win over the run's
    off = api_client.post("/api/evaluations/", {"run": run.pk, "suite": suite.pk, "step": "final",
                                                "prompt_format": {"use_chat_template": False}}, format="json").json()
    assert off["prompt_format"] == {**run_format, "use_chat_template": False, "chat_template_applied": False,
                                    "source": f"run #{run.pk}", "set_by_suite": [], "set_by_request": ["use_chat_template"]}
    bad = api_client.post("/api/evaluations/", {"run": run.pk, "suite": suite.pk, "prompt_format": {"use_chat_template": "maybe"}},
                          format="json")
    assert bad.status_code == 400 and "prompt_format" in bad.json(), bad.json()
    long = api_client.post("/api/evaluations/", {"run": run.pk, "suite": suite.pk,
                                                 "prompt_format": {"system_prompt": "x" * 5000}}, format="json")
    assert long.status_code == 400 and "system_prompt" in long.json()["prompt_format"], long.json()
    # ... and so do the suite's
    plain_suite = services.new_suite_version(suite, user, settings={"use_chat_template": False, "system_prompt": ""})
    ev = services.submit_evaluation(team, user, suite=plain_suite, run=run, step="final")
    assert ev.prompt_format == {"use_chat_template": False, "system_prompt": "", "instruction_suffix": "Box it.",
                                "chat_template_applied": False, "source": f"run #{run.pk}",
                                "set_by_suite": ["use_chat_template", "system_prompt"], "set_by_request": []}
    bad_suite = api_client.post("/api/eval-suites/", {"previous": suite.pk, "settings": {"instruction_suffix": "x" * 5000}},
                                format="json")
    assert bad_suite.status_code == 400 and "instruction_suffix" in bad_suite.json()["settings"], bad_suite.json()

    # the run's evaluation tab lists each evaluation with its format
    data = auth_client.get(f"/evaluations/runs/{run.pk}/data/?suite={suite.pk}").json()
    prompts = {j["id"]: j["prompt"] for j in data["evaluations"]}
    assert prompts[final.json()["id"]] == (f"chat template + system prompt “Be exact.” + suffix “Box it.” (run #{run.pk})")
    assert prompts[off["id"]].startswith("plain (chat template off) + system prompt")


def test_another_teams_objects_are_404(api_client, other_client, team, other_team, suite, tiny_assets):  # noqa: F811
    run = make_run(team, tiny_assets)
    mine = api_client.post("/api/evaluations/", {"run": run.pk, "suite": suite.pk}, format="json").json()
    theirs = make_run(other_team, tiny_assets)
    r = api_client.post("/api/evaluations/", {"run": theirs.pk, "suite": suite.pk}, format="json")
    assert r.status_code == 404
    assert api_client.get(f"/api/evaluations/?run={theirs.pk}").status_code == 404
    assert api_client.get(f"/api/evaluations/leaderboard/?runs={theirs.pk}&suite={suite.pk}").status_code == 404
    for url in (f"/api/eval-suites/{suite.pk}/", f"/api/evaluations/{mine['id']}/"):
        assert other_client.get(url).status_code == 404
    assert other_client.post(f"/api/evaluations/{mine['id']}/cancel/").status_code == 404
    assert other_client.get("/api/evaluations/").json()["results"] == []


def test_cancel_and_resume(api_client, team, suite, tiny_assets):  # noqa: F811
    run = make_run(team, tiny_assets)
    ev = api_client.post("/api/evaluations/", {"run": run.pk, "suite": suite.pk}, format="json").json()
    r = api_client.post(f"/api/evaluations/{ev['id']}/cancel/")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert api_client.post(f"/api/evaluations/{ev['id']}/cancel/").status_code == 409
    old_task = Evaluation.objects.get(pk=ev["id"]).celery_task_id
    r = api_client.post(f"/api/evaluations/{ev['id']}/resume/")
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert Evaluation.objects.get(pk=ev["id"]).celery_task_id != old_task
    assert api_client.post(f"/api/evaluations/{ev['id']}/resume/").status_code == 409
    # a running one is asked to stop (the worker reads the flag after each batch)
    e = Evaluation.objects.get(pk=ev["id"])
    services.start(e.pk, e.celery_task_id, "w")
    r = api_client.post(f"/api/evaluations/{ev['id']}/cancel/")
    assert r.json()["status"] == "running" and r.json()["cancel_requested"] and services.cancel_requested(e.pk)


def test_housekeeping_fails_an_evaluation_whose_worker_died(team, suite, tiny_assets, settings):  # noqa: F811
    run = make_run(team, tiny_assets)
    ev = services.submit_evaluation(team, None, suite=suite, run=run, step="final")
    ev = services.start(ev.pk, ev.celery_task_id, "w")
    assert housekeeping.fail_stale_evaluations() == []
    Evaluation.objects.filter(pk=ev.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=600))
    assert housekeeping.fail_stale_evaluations() == [ev.pk]
    ev.refresh_from_db()
    assert ev.status == "failed" and "heartbeat" in ev.error
    assert not services.store_result(ev, suite.benchmark_datasets()[0], {"avg_at_k": 1.0})  # fenced


def test_a_suite_used_by_an_evaluation_keeps_its_content(team, user, suite, tiny_assets):  # noqa: F811
    from webapp.resources.models import ImmutableVersionError

    services.submit_evaluation(team, user, suite=suite, run=make_run(team, tiny_assets), step="final")
    suite.settings = {**suite.settings, "k": 64}
    with pytest.raises(ImmutableVersionError):
        suite.save()
    with pytest.raises(services.InUseError):
        services.delete(suite, user)


# ---------------------------------------------------------------------------- reference results
def test_paper_table_is_loaded_once(api_client, team):
    r = api_client.post("/api/reference-results/add_paper_table/", {}, format="json")
    assert r.status_code == 200 and r.json()["added"] == 228
    api_client.post("/api/reference-results/add_paper_table/", {}, format="json")
    rows = ReferenceResult.objects.filter(team=team)
    # LUFFY and CHORD are reported for one model only: 9 methods x 4 models + 2 x 1, on 6 benchmarks
    assert rows.count() == 228 == (9 * 4 + 2) * 6 and all(r.from_paper for r in rows)
    assert len({r.model for r in rows}) == 4 and len({r.method for r in rows}) == 11
    assert len({r.benchmark for r in rows}) == 6
    with open(references.FIXTURE) as f:
        first = next(csv.DictReader(f))
    ref = rows.get(model=first["model"], method=first["method"], benchmark=first["benchmark"])
    assert ref.value == float(first["value"])
    listed = api_client.get("/api/reference-results/?method=GFT&benchmark=MATH").json()
    assert listed["count"] == 4


# ---------------------------------------------------------------------------- selectors
def test_leaderboard_values_average_delta_base_and_reference_rows(team, user, tiny_assets):  # noqa: F811
    math = make_benchmark(team, tiny_assets, name="math500", validate=False)
    amc = make_benchmark(team, tiny_assets, name="amc23", validate=False)
    Dataset.objects.filter(pk__in=[math.pk, amc.pk]).update(status="valid")
    s = services.create_suite(team, user, name="m", benchmarks=[math.pk, amc.pk])
    a, b = make_run(team, tiny_assets, name="a"), make_run(team, tiny_assets, name="b", method="sft")
    finished(team, s, run=a, step=2, values={math: 0.50, amc: 0.30})
    finished(team, s, run=a, step=4, values={math: 0.40, amc: 0.20})  # final is worse than step 2
    finished(team, s, run=b, step=4, values={math: 0.45, amc: 0.10})
    finished(team, s, step=0, model_path=str(tiny_assets["model"]), values={math: 0.20, amc: 0.05})
    references.add_paper_table(team)

    board = selectors.leaderboard(team, [a, b], s, pick="best", baseline_run=b)
    assert board["benchmarks"] == ["math500", "amc23"]
    ra, rb, base = board["rows"][:3]
    assert (ra["kind"], ra["step"], ra["values"]) == ("run", 2, {"math500": 50.0, "amc23": 30.0})
    assert ra["average"] == 40.0 and ra["delta"] == {"math500": 5.0, "amc23": 20.0} and ra["delta_average"] == 12.5
    assert rb["average"] == 27.5 and rb["delta_average"] == 0.0
    assert (base["kind"], base["step"], base["values"]) == ("base", 0, {"math500": 20.0, "amc23": 5.0})
    assert base["average"] == 12.5 and base["delta_average"] == -15.0
    refs = [r for r in board["rows"] if r["kind"] == "reference"]
    gft = next(r for r in refs if r["model"] == "Qwen2.5-Math-1.5B" and r["method"] == "GFT")
    assert gft["from_paper"] and set(gft["values"]) == {"math500", "amc23"} and gft["values"]["math500"] is not None
    final = selectors.leaderboard(team, [a], s, pick="final", references=False)
    assert final["rows"][0]["step"] == 4 and final["rows"][0]["average"] == 30.0 and final["rows"][0]["delta"] is None
    assert selectors.leaderboard(team, [a], s, metric="pass@2")["rows"][0]["values"]["math500"] == 60.0
    with pytest.raises(selectors.SelectorError):
        selectors.leaderboard(team, [a], s, metric="bogus")

    series = selectors.accuracy_series(a, s)
    assert series == {"math500": [(0, 20.0), (2, 50.0), (4, 40.0)], "amc23": [(0, 5.0), (2, 30.0), (4, 20.0)]}


def test_leaderboard_api(api_client, team, user, suite, benchmark, tiny_assets):  # noqa: F811
    a = make_run(team, tiny_assets)
    finished(team, suite, run=a, step=4, values={benchmark: 0.25})
    r = api_client.get(f"/api/evaluations/leaderboard/?runs={a.pk}&suite={suite.pk}&pick=final&baseline={a.pk}")
    assert r.status_code == 200, r.json()
    assert r.json()["rows"][0]["values"] == {"toy_bench": 25.0}
    assert api_client.get(f"/api/evaluations/leaderboard/?runs={a.pk}&suite={suite.pk}&pick=x").status_code == 400
    assert api_client.get(f"/api/evaluations/leaderboard/?suite={suite.pk}").status_code == 400


def test_problem_diff(team, suite, benchmark, tiny_assets):  # noqa: F811
    def p(i, correct):
        return {"index": i, "prompt": f"q{i}", "ground_truth": str(i), "k": 2, "correct": correct,
                "responses": ["a", "b"], "extracted": ["1", None], "response_correct": [True, False]}

    run = make_run(team, tiny_assets)
    mine = finished(team, suite, run=run, step=4, values={benchmark: 0.5},
                    problems={"toy_bench": [p(0, 2), p(1, 1), p(2, 0), p(3, 0)]})
    base = finished(team, suite, step=0, values={benchmark: 0.25},
                    problems={"toy_bench": [p(0, 1), p(1, 0), p(2, 2), p(3, 0)]})
    diff = selectors.problem_diff(mine, base, benchmark)
    assert [x["index"] for x in diff["solved_only_by_run"]] == [1]
    assert [x["index"] for x in diff["solved_only_by_base"]] == [2]
    assert (diff["solved_by_both"], diff["solved_by_neither"], diff["compared"]) == (1, 1, 4)
    assert diff["solved_only_by_run"][0]["run"]["responses"] == ["a", "b"]
    assert selectors.problem_diff(mine, base, "toy_bench", min_correct=2)["solved_only_by_run"][0]["index"] == 0


# ---------------------------------------------------------------------------- benchmark presets
def test_add_benchmarks_command_creates_evaluation_datasets(team, settings):
    call_command("add_benchmarks", "Alpha", "--preset", "amc23", "--preset", "aime24")
    made = Dataset.objects.filter(team=team).order_by("name")
    assert [(d.name, d.purpose) for d in made] == [("aime24", "evaluation"), ("amc23", "evaluation")]
    call_command("add_benchmarks", "Alpha", "--preset", "amc23")  # again: left as it is
    assert Dataset.objects.filter(team=team).count() == 2
    with pytest.raises(Exception, match="Unknown benchmark preset"):
        call_command("add_benchmarks", "Alpha", "--preset", "amc23", "--preset", "nope")


def test_add_benchmarks_api(api_client, team):
    r = api_client.post("/api/eval-suites/add-benchmarks/", {"presets": ["amc23"]}, format="json")
    assert r.status_code == 200, r.json()
    assert r.json()["benchmarks"][0]["name"] == "amc23" and r.json()["benchmarks"][0]["created"]
    assert api_client.post("/api/eval-suites/add-benchmarks/", {"presets": ["x"]}, format="json").status_code == 400


def test_every_preset_makes_a_valid_benchmark(team):
    from workers.data_tasks import validate_dataset

    call_command("add_benchmarks", "alpha")  # by slug; every preset whose file is there
    made = {d.name: d for d in Dataset.objects.filter(team=team)}
    assert set(made) == {"math500", "aime24", "amc23", "minerva_math", "gsm8k_test"}
    for d in made.values():
        validate_dataset(d.pk)
        d.refresh_from_db()
        assert d.status == "valid" and d.is_benchmark, (d.name, d.report.get("fatal"), d.report.get("train", {}).get("errors"))
    assert made["math500"].report["train"]["valid_rows"] == 500


# ---------------------------------------------------------------------------- leftovers of issue 17
def test_reference_api_writes_through_the_service(api_client, team):
    """One write path: the API's create is references.add_reference (trimmed names, updates in place)."""
    row = {"model": " Qwen2.5-Math-1.5B ", "method": "GFT ", "benchmark": " MATH", "value": 50.0, "source": "notes"}
    r = api_client.post("/api/reference-results/", row, format="json")
    assert r.status_code == 201, r.content
    assert (r.json()["model"], r.json()["method"], r.json()["benchmark"]) == ("Qwen2.5-Math-1.5B", "GFT", "MATH")
    assert api_client.post("/api/reference-results/", {**row, "value": 51.5}, format="json").status_code == 201
    ref = ReferenceResult.objects.get(team=team)
    assert ref.value == 51.5 and not ref.from_paper


def test_benchmarks_are_not_offered_for_training(api_client, auth_client, team, tiny_assets, benchmark):  # noqa: F811
    from tests.runs_support import make_dataset, reward_config  # noqa: F401

    train = make_dataset(team, tiny_assets, name="toy-train")
    listed = {d["name"]: d["purpose"] for d in api_client.get("/api/datasets/").json()["results"]}
    assert listed == {"toy-train": "train", "toy_bench": "evaluation"}
    form = auth_client.get("/runs/new/").content.decode()
    picker = form.split('name="dataset"')[1].split("</select>")[0]
    assert f'value="{train.pk}"' in picker and f'value="{benchmark.pk}"' not in picker
    from webapp.rewards.models import RewardConfig

    reward = RewardConfig.objects.create(team=team, name="math", spec={"name": "math_verify", "params": {}})
    r = api_client.post("/api/runs/", {"method": "sft", "model": str(tiny_assets["model"]), "dataset": benchmark.pk,
                                       "reward_config": reward.pk}, format="json")
    assert r.status_code == 400 and "benchmark" in r.json()["dataset"][0]


def test_evaluation_models_are_in_the_admin(client, team):
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.create_superuser("root", "", "root-pass-123"))
    for model in ("evalsuite", "evaluation", "evalresult", "referenceresult"):
        assert client.get(f"/admin/evaluations/{model}/").status_code == 200, model


def test_migration_unsets_the_old_default_chat_template_off(team, user, suite):  # noqa: F811
    """Suites stored use_chat_template false as the old default: the migration makes it null (the
    model's own format); a suite that asked for the template keeps it."""
    import importlib

    from django.apps import apps

    from webapp.evaluations.models import EvalSuite

    migration = importlib.import_module("webapp.evaluations.migrations.0002_evaluation_prompt_format")
    on = services.new_suite_version(suite, user, settings={"use_chat_template": True})
    EvalSuite.objects.filter(pk=suite.pk).update(settings={**suite.settings, "use_chat_template": False})
    migration.unset_chat_template_off(apps, None)
    assert EvalSuite.objects.get(pk=suite.pk).settings["use_chat_template"] is None
    assert EvalSuite.objects.get(pk=on.pk).settings["use_chat_template"] is True
