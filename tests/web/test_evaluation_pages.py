"""Evaluation pages (issue 17): eval suites, references, the run page's Evaluation tab (its JSON),
"Evaluate" on a run and a base model, the leaderboard on the compare page and dashboards, and
team scoping. Evaluations are made through the services as the worker makes them
(tests/eval_pages_support.py has the table of values these tests read back)."""
from __future__ import annotations

import json
import re

import pytest

from tests.eval_pages_support import model_dir, standard_picture
from webapp.dashboards.models import Dashboard
from webapp.evaluations import references
from webapp.evaluations.models import EvalSuite, Evaluation, ReferenceResult

pytestmark = pytest.mark.django_db


@pytest.fixture
def picture(team, user, tmp_path):
    return standard_picture(team, user, tmp_path)


def page_json(body: str) -> dict:
    return json.loads(body.split('<script id="page-data" type="application/json">')[1].split("</script>")[0])


def leaderboard_rows(body: str) -> list[list[str]]:
    """The leaderboard's rows as the text of their cells (tags stripped, spaces squeezed)."""
    table = body.split('<table class="table leaderboard"')[1].split("</table>")[0]
    rows = []
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)[1:]:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)
        rows.append([" ".join(re.sub(r"<[^>]+>", " ", c).split()) for c in cells])
    return rows


def test_run_tab_data_has_the_stored_accuracies_pass_at_k_and_references(auth_client, picture, team):
    a = picture["a"]
    references.add_reference(team, model="Qwen2.5-Math-1.5B", method="GFT", benchmark="MATH", value=55.5,
                             source="hand")
    body = auth_client.get(f"/runs/{a.pk}/").content.decode()
    assert 'data-tab="evaluation"' in body and 'data-panel="evaluation"' in body
    page = page_json(body)
    assert page["urls"]["evaluation"] == f"/evaluations/runs/{a.pk}/data/"
    # The Evaluate form offers the checkpoints on disk and the base model (step 0).
    assert 'action="/evaluations/runs/%d/evaluate/"' % a.pk in body
    assert '<option value="20">step 20</option>' in body and "step 0 (the base model)" in body

    data = auth_client.get(page["urls"]["evaluation"]).json()
    assert data["suite"]["id"] == picture["suite"].pk
    assert data["accuracy"]["math500"] == {"step": [0, 10, 20], "value": [50.0, 75.0, 50.0]}
    assert data["accuracy"]["gsm8k_test"] == {"step": [0, 10, 20], "value": [25.0, 50.0, 100.0]}
    assert data["pass_at_k"]["step"] == 20
    # pass@1 = mean accuracy; pass@2 = share of problems with a correct sample.
    assert data["pass_at_k"]["benchmarks"]["math500"] == {"k": [1, 2], "value": [50.0, 50.0]}
    assert data["pass_at_k"]["benchmarks"]["gsm8k_test"] == {"k": [1, 2], "value": [100.0, 100.0]}
    assert data["references"]["math500"] == [{"label": "Qwen2.5-Math-1.5B / GFT", "model": "Qwen2.5-Math-1.5B",
                                              "value": 55.5, "from_paper": False}]
    assert sorted(e["step"] for e in data["evaluations"]) == [0, 10, 20]
    assert {e["status"] for e in data["evaluations"]} == {"succeeded"}


def test_run_tab_shows_the_runs_own_suite_before_its_first_result(auth_client, picture, team, user, tmp_path):
    from tests.eval_pages_support import make_run

    run = make_run(team, user, tmp_path, "fresh", [5], model_dir(tmp_path, "other-base"))
    run.eval_suite = picture["suite"]
    run.save(update_fields=["eval_suite"])
    data = auth_client.get(f"/evaluations/runs/{run.pk}/data/").json()
    assert data["suite"] == {"id": picture["suite"].pk, "label": str(picture["suite"])}
    assert data["accuracy"] == {"math500": {"step": [], "value": []}, "gsm8k_test": {"step": [], "value": []}}
    assert data["evaluations"] == []


def test_per_problem_view_gained_and_lost_against_the_base_model(auth_client, picture):
    a = picture["a"]
    url = f"/evaluations/runs/{a.pk}/problems/?suite={picture['suite'].pk}&benchmark=math500&step=20"
    data = auth_client.get(url).json()
    assert data["base"] is not None
    # math500: base 0/2 and 2/2; step 20 2/2 and 0/2 -> problem 0 gained, problem 1 lost.
    (gained,), (lost,) = data["solved_only_by_run"], data["solved_only_by_base"]
    assert gained["index"] == 0 and gained["ground_truth"] == "2" and gained["run"]["correct"] == 2
    assert gained["run"]["extracted"] == ["2", "2"] and "\\boxed{2}" in gained["run"]["responses"][0]
    assert gained["base"]["response_correct"] == [False, False]
    assert lost["index"] == 1 and lost["base"]["correct"] == 2 and lost["run"]["correct"] == 0
    # Bad or missing parameters: a 400 naming them, never a 500; an unevaluated step: 404.
    assert auth_client.get(f"/evaluations/runs/{a.pk}/problems/?benchmark=math500").status_code == 400
    assert auth_client.get(url.replace("step=20", "step=nan")).status_code == 400
    assert auth_client.get(url.replace("step=20", "step=15")).status_code == 404


def test_leaderboard_average_base_row_and_baseline_delta(auth_client, picture):
    a, b, suite = picture["a"], picture["b"], picture["suite"]
    body = auth_client.get(f"/compare/?runs={a.pk},{b.pk}&lb_suite={suite.pk}&lb_pick=best&lb_baseline={b.pk}").content.decode()
    assert "js/leaderboard.js" in body
    head = body.split('<table class="table leaderboard"')[1].split("</thead>")[0]
    assert [h for h in re.findall(r">([^<>]+)</th>", head)] == ["Run", "Checkpoint", "math500", "gsm8k_test", "Average"]
    rows = leaderboard_rows(body)
    assert rows[0] == [f"#{a.pk} gft A", "step 20", "50.0 (+25.0)", "100.0 (+75.0)", "75.0 (+50.0)"]
    assert rows[1] == [f"#{b.pk} sft B baseline", "step 10", "25.0 (0.0)", "25.0 (0.0)", "25.0 (0.0)"]
    assert rows[2] == ["Base model Qwen2.5-Math-1.5B base model", "step 0", "50.0 (+25.0)", "25.0 (0.0)", "37.5 (+12.5)"]
    # Without a baseline: no differences; "final" picks the last evaluated step.
    body = auth_client.get(f"/compare/?runs={a.pk},{b.pk}&lb_suite={suite.pk}&lb_pick=final").content.decode()
    rows = leaderboard_rows(body)
    assert rows[0][1:] == ["step 20", "50.0", "100.0", "75.0"] and "(" not in " ".join(rows[2])
    # Defaults (no lb_ parameters): the team's suite, best checkpoint, no baseline.
    assert leaderboard_rows(auth_client.get(f"/compare/?runs={a.pk},{b.pk}").content.decode())[0][4] == "75.0"


def test_reference_rows_in_the_leaderboard_and_the_paper_button(auth_client, picture, team):
    a, b = picture["a"], picture["b"]
    resp = auth_client.get("/evaluations/references/")
    assert resp.status_code == 200 and "Add the GFT paper's Table 1" in resp.content.decode()
    resp = auth_client.post("/evaluations/references/paper/", follow=True)
    assert "rows reported by the GFT paper" in resp.content.decode()
    assert ReferenceResult.objects.filter(team=team, from_paper=True).count() > 50
    assert "reported by the paper" in auth_client.get("/evaluations/references/").content.decode()
    resp = auth_client.post("/evaluations/references/", {"model": "ours", "method": "GFT", "benchmark": "GSM8K",
                                                         "metric": "accuracy", "value": "81.5", "source": "notes"})
    assert resp.status_code == 302
    assert auth_client.post("/evaluations/references/", {"model": "x", "method": "y", "benchmark": "z",
                                                         "metric": "accuracy", "value": "abc"}).status_code == 400
    rows = leaderboard_rows(auth_client.get(f"/compare/?runs={a.pk},{b.pk}").content.decode())
    paper = [r for r in rows if r[0] == "Qwen2.5-Math-1.5B / GFT reported by the paper"]
    assert paper and paper[0][2] != "–"  # MATH matched to math500
    assert ["ours / GFT reference", "notes", "–", "81.5", "81.5"] in rows


def test_dashboard_saves_the_leaderboard_settings(auth_client, picture):
    a, b, suite = picture["a"], picture["b"], picture["suite"]
    resp = auth_client.post("/dashboards/new/", {"name": "evals", "runs": f"{a.pk},{b.pk}", "smoothing": "0",
                                                 "lb_suite": str(suite.pk), "lb_pick": "final", "lb_baseline": str(b.pk)})
    assert resp.status_code == 302
    dash = Dashboard.objects.get(name="evals")
    assert dash.leaderboard == {"suite": suite.pk, "pick": "final", "baseline": b.pk}
    body = auth_client.get(f"/dashboards/{dash.pk}/").content.decode()
    assert 'data-pick="final"' in body and leaderboard_rows(body)[0][4] == "75.0 (+50.0)"
    assert f'name="lb_baseline" value="{b.pk}"' in body  # the save form keeps them
    # A baseline outside the dashboard's runs is refused, naming the field.
    resp = auth_client.post(f"/dashboards/{dash.pk}/edit/", {"name": "evals", "runs": f"{a.pk}", "smoothing": "0",
                                                             "lb_pick": "best", "lb_baseline": str(b.pk)})
    assert resp.status_code == 400 and "baseline" in resp.content.decode().lower()


def test_suites_page_create_and_bad_input(auth_client, picture, team):
    body = auth_client.get("/evaluations/suites/").content.decode()
    assert "math v1" in body.replace("</strong> v", " v") and "Add benchmark presets" in body
    assert 'href="/evaluations/suites/"' in auth_client.get("/").content.decode()  # nav link
    bench = [str(d.pk) for d in picture["benchmarks"].values()]
    good = {"name": "greedy", "benchmarks": bench, "k": "1", "temperature": "0", "top_p": "1", "max_new_tokens": "64",
            "reward": "math_verify", "seed": "3", "use_chat_template": "true"}
    assert auth_client.post("/evaluations/suites/", good).status_code == 302
    suite = EvalSuite.objects.get(name="greedy")
    assert suite.settings["k"] == 1 and suite.settings["use_chat_template"] is True and suite.settings["seed"] == 3
    # the prompt format left blank is the model's own (a run's training settings); a suffix typed is the suite's
    auth_client.post("/evaluations/suites/", {**good, "name": "own", "use_chat_template": "", "instruction_suffix": "Box it."})
    own = EvalSuite.objects.get(name="own").settings
    assert (own["use_chat_template"], own["system_prompt"], own["instruction_suffix"]) == (None, None, "Box it.")
    assert "chat template the model&#x27;s · suffix “Box it.”" in auth_client.get("/evaluations/suites/").content.decode()
    resp = auth_client.post("/evaluations/suites/", {**good, "name": "bad", "k": "5000"})
    assert resp.status_code == 400 and "k (samples per problem)" in resp.content.decode()
    resp = auth_client.post("/evaluations/suites/", {**good, "name": "greedy"})  # the service's error, on its field
    assert resp.status_code == 400 and "already has a suite named" in resp.content.decode()
    assert not EvalSuite.objects.filter(name="bad").exists()


def test_evaluate_a_run_checkpoint_and_a_base_model(auth_client, picture, team, tmp_path, settings):
    a, suite = picture["a"], picture["suite"]
    resp = auth_client.post(f"/evaluations/runs/{a.pk}/evaluate/", {"suite": suite.pk, "step": "10"})
    assert resp.status_code == 302 and resp["Location"].endswith(f"/runs/{a.pk}/#evaluation")
    ev = Evaluation.objects.filter(run=a).latest("created_at")
    assert ev.status == "queued" and ev.checkpoint_step == 10
    # A step without a checkpoint: nothing queued, the message says why.
    n = Evaluation.objects.count()
    resp = auth_client.post(f"/evaluations/runs/{a.pk}/evaluate/", {"suite": suite.pk, "step": "15"}, follow=True)
    assert Evaluation.objects.count() == n and "Evaluate" in resp.content.decode()
    # A base model from the suites page.
    settings.MODEL_ROOTS = [str(tmp_path)]
    path = model_dir(tmp_path, "other-base")
    resp = auth_client.post("/evaluations/evaluate/", {"suite": suite.pk, "model_path": path}, follow=True)
    ev = Evaluation.objects.latest("created_at")
    assert ev.run_id is None and ev.checkpoint_step == 0 and ev.model_path == path
    assert "other-base" in resp.content.decode()


def test_another_team_gets_404(other_client, other_team, picture):
    a, suite = picture["a"], picture["suite"]
    for url in (f"/evaluations/runs/{a.pk}/data/", f"/evaluations/runs/{a.pk}/problems/?suite={suite.pk}&benchmark=math500&step=20",
                f"/runs/{a.pk}/"):
        assert other_client.get(url).status_code == 404, url
    assert other_client.post(f"/evaluations/runs/{a.pk}/evaluate/", {"suite": suite.pk, "step": "10"}).status_code == 404
    # Its own pages do not list the team's suites or results.
    assert "math" not in other_client.get("/evaluations/suites/").content.decode().split("<main>")[1].split("New suite")[0]
    # Another team's suite is not a choice: nothing queued.
    assert other_client.post("/evaluations/evaluate/", {"suite": suite.pk, "model_path": picture["base"]}).status_code == 302
    assert not Evaluation.objects.filter(team=other_team).exists()
