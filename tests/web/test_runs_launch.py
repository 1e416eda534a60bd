"""Launch form and service: every bad input is a field error and nothing is queued; clone;
cancel/resume/logs access. No worker here: runs stay queued (the broker holds their message)."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from tests.eval_support import benchmark, suite  # noqa: F401
from tests.runs_support import launch_inputs, make_dataset, reward_config, tiny_assets, toy_dataset  # noqa: F401
from gft_core.config import config_diff
from webapp.accounts.models import Membership
from webapp.runs import launch, progress
from webapp.runs.models import Run, RunEvent

pytestmark = pytest.mark.django_db(transaction=True)


def form_data(inputs: dict, **changes) -> dict:
    data = {**inputs, **changes}
    data["tags"] = ", ".join(data.get("tags") or [])
    return {k: ("" if v is None else v) for k, v in data.items()}


def test_form_queues_a_run_with_a_celery_task(auth_client, launch_inputs):
    resp = auth_client.post(reverse("runs:launch"), form_data(launch_inputs))
    assert resp.status_code == 302, resp.content.decode()[:3000]
    run = Run.objects.get()
    assert run.status == "queued" and run.celery_task_id and run.queue == "gpu"
    assert run.config["tau"] == 0.5 and run.config["output_dir"].endswith(f"runs/{run.pk}")
    assert run.config["data"]["eval_path"] is None and run.config["data"]["eval_fraction"] == 0.0
    assert run.tags == ["test"] and run.created_by.username == "alice"
    assert progress.queue_position(run) == 1
    assert RunEvent.objects.filter(run=run, to_status="queued").exists()


BAD_INPUTS = [
    ("tau", {"tau": 0}, "tau"),
    ("tau", {"tau": 1.5}, "tau"),
    ("lr", {"lr": 0}, "lr"),
    ("lr", {"lr": -1e-4}, "lr"),
    ("prompts_per_step", {"prompts_per_step": 0}, "prompts_per_step"),
    ("micro_batch_size", {"micro_batch_size": -8}, "micro_batch_size"),
    ("max_response_len", {"max_response_len": 0}, "max_response_len"),
    ("max_steps", {"max_steps": 0}, "max_steps"),
    ("model outside roots", {"model": "/etc"}, "model"),
    ("teacher count", {"n_teacher": 4}, "n_teacher"),
]


@pytest.mark.parametrize("label,changes,field", BAD_INPUTS, ids=[b[0] + str(list(b[1].values())[0]) for b in BAD_INPUTS])
def test_bad_input_is_a_field_error_and_nothing_is_queued(auth_client, api_client, launch_inputs, label, changes, field):
    resp = auth_client.post(reverse("runs:launch"), form_data(launch_inputs, **changes))
    assert resp.status_code == 200
    errors = resp.context["form"].errors
    assert field in errors, (label, errors)
    api = api_client.post("/api/runs/", {**launch_inputs, **changes}, format="json")
    assert api.status_code == 400 and field in api.json(), api.json()
    assert Run.objects.count() == 0


def test_several_bad_values_are_reported_together(auth_client, launch_inputs):
    resp = auth_client.post(reverse("runs:launch"), form_data(launch_inputs, tau=2, lr=0, prompts_per_step=0))
    assert {"tau", "lr", "prompts_per_step"} <= set(resp.context["form"].errors)
    assert Run.objects.count() == 0


def test_model_dir_that_is_not_a_model(auth_client, launch_inputs, tiny_assets, settings):
    from pathlib import Path

    not_model = Path(settings.MODEL_ROOTS[0]) / "empty-dir"
    not_model.mkdir(parents=True, exist_ok=True)
    resp = auth_client.post(reverse("runs:launch"), form_data(launch_inputs, model=str(not_model)))
    assert "config.json" in " ".join(resp.context["form"].errors["model"])
    assert Run.objects.count() == 0


def test_defaults_follow_the_chosen_model(auth_client, settings):
    """The launch form asks for defaults scaled to the model it is given: small-model sizes for
    the tiny one, the paper's for a 1.5B-shaped config.json under the model roots; a path outside
    the roots is refused with the form's message, and only members get an answer."""
    import json
    from pathlib import Path

    url = reverse("runs:launch_defaults")
    tiny = auth_client.get(url, {"model": "tiny"}).json()
    assert tiny["small"] and tiny["defaults"]["lr"] == 1e-4 and tiny["defaults"]["max_response_len"] == 48
    big = Path(settings.MODEL_ROOTS[0]) / "qwen-1.5b-shaped"
    big.mkdir(parents=True, exist_ok=True)
    (big / "config.json").write_text(json.dumps({"hidden_size": 1536, "num_hidden_layers": 28,
                                                  "intermediate_size": 8960, "vocab_size": 151936}))
    body = auth_client.get(url, {"model": str(big)}).json()
    d = body["defaults"]
    assert not body["small"] and 1_000_000_000 < body["params"] < 2_000_000_000 and "model" not in d
    assert (d["lr"], d["tau"], d["max_response_len"], d["prompts_per_step"], d["mixed_precision"]) == (1e-6, 0.1, 2048, 128, "bf16")
    refused = auth_client.get(url, {"model": "/etc"})
    assert refused.status_code == 400 and "outside the allowed model roots" in refused.json()["error"]
    from django.test import Client

    assert Client().get(url, {"model": "tiny"}).status_code == 302  # anonymous: to the login page


@pytest.mark.parametrize("status", ["invalid", "uploaded"])
def test_dataset_that_did_not_pass_validation(auth_client, team, tiny_assets, launch_inputs, status):
    bad = make_dataset(team, tiny_assets, name=f"bad-{status}", validate=False, status=status)
    resp = auth_client.post(reverse("runs:launch"), form_data(launch_inputs, dataset=bad.pk))
    assert "did not pass validation" in " ".join(resp.context["form"].errors["dataset"])
    assert Run.objects.count() == 0


def test_other_teams_dataset_is_refused(auth_client, other_team, tiny_assets, launch_inputs):
    foreign = make_dataset(other_team, tiny_assets, name="theirs")
    resp = auth_client.post(reverse("runs:launch"), form_data(launch_inputs, dataset=foreign.pk))
    assert "dataset" in resp.context["form"].errors
    assert Run.objects.count() == 0


def test_viewer_cannot_launch_cancel_or_resume(client, team, launch_inputs, user):
    from django.contrib.auth import get_user_model

    viewer = get_user_model().objects.create_user("vera", password="vera-pass-123")
    Membership.objects.create(user=viewer, team=team, role=Membership.Role.VIEWER)
    run = launch.submit_run(team, user, launch_inputs)
    client.force_login(viewer)
    assert client.get(reverse("runs:launch")).status_code == 403
    assert client.post(reverse("runs:launch"), form_data(launch_inputs)).status_code == 403
    assert client.post(reverse("runs:cancel", args=[run.pk])).status_code == 403
    assert client.get(reverse("runs:logs", args=[run.pk])).status_code == 200  # viewers may read


def test_other_team_gets_404(other_client, team, user, launch_inputs):
    run = launch.submit_run(team, user, launch_inputs)
    for name in ("cancel", "resume", "logs"):
        assert other_client.get(reverse(f"runs:{name}", args=[run.pk])).status_code == 404
        assert other_client.post(reverse(f"runs:{name}", args=[run.pk])).status_code == 404
    assert other_client.get(reverse("runs:launch") + f"?clone={run.pk}").status_code == 404


def test_cancel_queued_run_then_resume(auth_client, team, user, launch_inputs):
    run = launch.submit_run(team, user, launch_inputs)
    first_task = run.celery_task_id
    assert auth_client.get(reverse("runs:cancel", args=[run.pk])).status_code == 405
    auth_client.post(reverse("runs:cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == "cancelled"
    auth_client.post(reverse("runs:resume", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == "queued" and run.celery_task_id != first_task


def test_clone_prefills_the_form_and_records_the_change(auth_client, team, user, launch_inputs):
    source = launch.submit_run(team, user, launch_inputs)
    page = auth_client.get(reverse("runs:launch") + f"?clone={source.pk}")
    form = page.context["form"]
    assert form["tau"].value() == 0.5 and form["model"].value() == launch_inputs["model"]
    assert form["dataset"].value() == source.dataset_id and form["eval_split"].value() == "none"
    assert b"Changes from run" in page.content
    data = {name: form[name].value() for name in form.fields}
    data.update(tau=0.7, clone=source.pk)
    resp = auth_client.post(reverse("runs:launch"), form_data(data))
    assert resp.status_code == 302, resp.context["form"].errors
    clone = Run.objects.exclude(pk=source.pk).get()
    assert clone.cloned_from == source
    assert config_diff(source.config, clone.config) == [("tau", [0.5, 0.7])]
    assert "tau 0.5 -> 0.7" in clone.events.first().message


def test_logs_page_shows_the_worker_log(auth_client, team, user, launch_inputs):
    run = launch.submit_run(team, user, launch_inputs)
    path = run.log_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("line one\nstep 3 loss 0.5\n")
    page = auth_client.get(reverse("runs:logs", args=[run.pk]))
    assert b"step 3 loss 0.5" in page.content


def test_generated_form_fields_carry_the_bounds_of_gft_core(auth_client, settings):
    """The launch form's settings come from gft_core.config.FIELDS: bounds on the inputs (HTML
    min/max), labels, help, choices with the method table's labels; values checked by check_field."""
    from gft_core.config import FIELDS, LAUNCH_FIELDS
    from gft_core.methods import METHODS

    page = auth_client.get(reverse("runs:launch"))
    form = page.context["form"]
    assert [n for n in form.fields if n in LAUNCH_FIELDS] == list(LAUNCH_FIELDS)
    for name in LAUNCH_FIELDS:
        spec, field = FIELDS[name], form.fields[name]
        assert (field.label, field.help_text, field.required) == (spec.label, spec.help, not spec.nullable and spec.type is not bool), name
        if spec.type in (int, float) and spec.choices is None:
            assert field.widget.attrs["max"] == spec.max and field.widget.attrs["min"] == spec.min, name
    assert dict(form.fields["method"].choices) == {m.name: m.label for m in METHODS.values()}
    html = page.content.decode()
    assert 'name="tau"' in html and 'max="1.0"' in html.split('name="tau"')[1].split(">")[0]
    assert 'max="1000000"' in html.split('name="max_steps"')[1].split(">")[0]
    assert form.fields["num_gpus"].widget.attrs["max"] == settings.MAX_GPUS_PER_RUN == 8
    assert [c for c, _ in form.fields["queue"].choices] == list(settings.TRAINING_QUEUES)
    # The bound for every method is gft_core's, worded as gft_core words it.
    bad = form_data({**{n: form[n].value() for n in form.fields}, "tau": 0, "max_steps": 2_000_000, "num_gpus": 9})
    errors = auth_client.post(reverse("runs:launch"), bad).context["form"].errors
    assert errors["tau"] == ["must be in (0, 1]"] and errors["max_steps"] == ["must be an integer in [1, 1000000]"]
    assert "num_gpus" in errors


def test_a_name_over_200_characters_is_a_field_error(auth_client, api_client, launch_inputs):
    resp = auth_client.post(reverse("runs:launch"), form_data(launch_inputs, name="x" * 201))
    assert "name" in resp.context["form"].errors
    assert api_client.post("/api/runs/", {**launch_inputs, "name": "x" * 201}, format="json").status_code == 400
    assert Run.objects.count() == 0


@pytest.mark.parametrize("method", ["sft", "sft_mix", "dft", "grpo", "gft", "gft_no_dcr", "gft_no_gal"])
def test_defaults_fit_every_method(auth_client, method, team, tiny_assets, toy_dataset, reward_config):
    """The defaults for a method divide its rollout (SFT: 4 prompts x 1 answer = 4 sequences, so
    the micro-batch is 4, not 8), and launching with them is valid."""
    body = auth_client.get(reverse("runs:launch_defaults"), {"model": "tiny", "method": method}).json()
    d = body["defaults"]
    assert body["method_fitted"] == ["sequences_per_update", "micro_batch_size"]
    from gft_core.config import GFTConfig

    cfg = GFTConfig(method=method, n_expert=d["n_expert"], n_teacher=d["n_teacher"], n_self=d["n_self"],
                    prompts_per_step=d["prompts_per_step"])
    assert cfg.sequences_per_rollout % d["micro_batch_size"] == 0
    if method == "sft":
        assert d["micro_batch_size"] == 4
    big = launch.build_config(team, {"model": str(tiny_assets["model"]), "method": method, "dataset": toy_dataset,
                                     "reward_config": reward_config, "n_teacher": 1})
    assert big.config["method"] == method


def test_sft_run_page_hides_what_sft_does_not_have(auth_client, team, user):
    """Method.charts decides: an SFT run has no advantage or rectification charts and no tau."""
    sft = Run.objects.create(team=team, created_by=user, name="s", method="sft", config={"tau": 0.3},
                             status=Run.Status.SUCCEEDED)
    gft = Run.objects.create(team=team, created_by=user, name="g", method="gft", config={"tau": 0.3},
                             status=Run.Status.SUCCEEDED)
    sft_page = auth_client.get(reverse("runs:detail", args=[sft.pk])).context
    groups = {c["group"] for c in sft_page["page"]["charts"]}
    assert "Group advantages" not in groups and "Coefficient rectification" not in groups and "Loss & optimisation" in groups
    assert sft_page["tau"] is None and sft_page["page"]["runs"][0]["tau"] is None
    gft_page = auth_client.get(reverse("runs:detail", args=[gft.pk])).context
    assert {"Group advantages", "Coefficient rectification"} <= {c["group"] for c in gft_page["page"]["charts"]}
    assert gft_page["tau"] == 0.3
    both = auth_client.get(reverse("runs:compare") + f"?runs={sft.pk},{gft.pk}").context
    assert any(c["id"] == "rectified" for c in both["page"]["charts"])


def test_sft_form_marks_the_fields_it_does_not_read(auth_client):
    html = auth_client.get(reverse("runs:launch")).content.decode()
    tau_div = html.split('data-field="tau"')[1].split(">")[0]
    assert 'data-used-by="gft gft_no_gal"' in tau_div
    teacher_div = html.split('data-field="n_teacher"')[1].split(">")[0]
    assert "sft_mix" in teacher_div and " sft " not in f" {teacher_div.split('=')[-1]} "


def test_launch_with_an_eval_suite(auth_client, api_client, team, user, other_team, tiny_assets, launch_inputs):
    """Issue 17: an optional eval suite is stored on the run and reaches gft_core as plain data
    (benchmark files, mappings, EvalSettings); another team's suite is a field error."""
    from tests.eval_support import make_benchmark
    from webapp.evaluations import services as evals
    from webapp.evaluations.models import EvalSuite

    bench = make_benchmark(team, tiny_assets, name="toy_bench")
    suite = evals.create_suite(team, user, name="math", benchmarks=[bench.pk], settings={"k": 2})
    resp = auth_client.post(reverse("runs:launch"), form_data(launch_inputs, eval_suite=suite.pk, eval_interval=2))
    assert resp.status_code == 302, resp.content.decode()[:3000]
    run = Run.objects.get()
    assert run.eval_suite == suite
    cfg = run.config["eval_suite"]
    assert cfg["suite_id"] == suite.pk and cfg["settings"]["k"] == 2
    assert cfg["benchmarks"] == [{"name": "toy_bench", "dataset_id": bench.pk, "path": str(bench.path),
                                  "mapping": bench.mapping}]
    assert launch.clone_initial(run)["eval_suite"] == suite.pk
    api = api_client.post("/api/runs/", {**launch_inputs, "eval_suite": suite.pk}, format="json")
    assert api.status_code == 201, api.json()
    assert api.json()["eval_suite"] == suite.pk and Run.objects.get(pk=api.json()["id"]).config["eval_suite"] == cfg
    # without a suite: none in the config
    api = api_client.post("/api/runs/", launch_inputs, format="json")
    assert api.status_code == 201 and Run.objects.get(pk=api.json()["id"]).config["eval_suite"] is None

    theirs = EvalSuite.objects.create(team=other_team, name="theirs", version=1, benchmarks=[bench.pk], settings={})
    before = Run.objects.count()
    resp = auth_client.post(reverse("runs:launch"), form_data(launch_inputs, eval_suite=theirs.pk))
    assert resp.status_code == 200 and "eval_suite" in resp.context["form"].errors
    api = api_client.post("/api/runs/", {**launch_inputs, "eval_suite": theirs.pk}, format="json")
    assert api.status_code == 400 and "eval_suite" in api.json(), api.json()
    # nor can the free-form config smuggle benchmark paths in
    api = api_client.post("/api/runs/", {**launch_inputs, "config": {"eval_suite": cfg}}, format="json")
    assert api.status_code == 400 and "config.eval_suite" in api.json(), api.json()
    assert Run.objects.count() == before


def test_recipe_gft_paper_through_the_api_and_the_form(auth_client, api_client, launch_inputs, toy_dataset):
    """`recipe: gft-paper` fills the paper's settings under the explicit inputs; an unknown recipe is
    a 400 naming `recipe`; the form shows the recipe as a diff against the defaults."""
    minimal = {k: launch_inputs[k] for k in ("model", "dataset", "reward_config", "eval_split")}
    resp = api_client.post("/api/runs/", {**minimal, "recipe": "gft-paper", "lr": 3e-6, "max_steps": 1}, format="json")
    assert resp.status_code == 201, resp.json()
    cfg = Run.objects.get(pk=resp.json()["id"]).config
    assert (cfg["tau"], cfg["n_expert"], cfg["n_teacher"], cfg["n_self"]) == (0.1, 1, 3, 4)
    assert (cfg["prompts_per_step"], cfg["max_response_len"], cfg["kl_coef"], cfg["max_grad_norm"]) == (128, 2048, 0.0, 1.0)
    assert cfg["lr"] == 3e-6 and cfg["data"]["use_chat_template"] is True  # the explicit lr wins
    # the recipe is stored on the run and returned by the API's run detail (issue 22)
    paper = Run.objects.get(pk=resp.json()["id"])
    assert paper.recipe == "gft-paper" and resp.json()["recipe"] == "gft-paper"
    assert api_client.get(f"/api/runs/{paper.pk}/").json()["recipe"] == "gft-paper"
    bad = api_client.post("/api/runs/", {**minimal, "recipe": "gft-papers"}, format="json")
    assert bad.status_code == 400 and "recipe" in bad.json() and Run.objects.count() == 1
    plain = api_client.post("/api/runs/", {**minimal, "max_steps": 1}, format="json")
    assert plain.status_code == 201 and plain.json()["recipe"] == "" and Run.objects.get(pk=plain.json()["id"]).recipe == ""
    from webapp.runs.charts import config_diff

    assert config_diff([paper, Run.objects.get(pk=plain.json()["id"])])[0] == ("recipe", ["gft-paper", "—"])
    Run.objects.filter(pk=plain.json()["id"]).delete()
    assert 'class="run-recipe"' in auth_client.get(reverse("runs:detail", args=[paper.pk])).content.decode()

    page = auth_client.get(reverse("runs:launch")).content.decode()
    assert 'data-recipe="gft-paper"' in page and "<td>tau</td><td>0.3</td><td><b>0.1</b></td>" in page
    initial = auth_client.get(reverse("runs:launch")).context["form"].initial
    # tau typed by hand stays; max_response_len left as the form offered it takes the recipe's
    posted = form_data(launch_inputs, recipe="gft-paper", tau=0.5, max_response_len=initial["max_response_len"])
    resp = auth_client.post(reverse("runs:launch"), posted)
    assert resp.status_code == 302, resp.context["form"].errors
    cfg = Run.objects.latest("pk").config
    assert cfg["tau"] == 0.5 and cfg["max_response_len"] == 2048 and Run.objects.latest("pk").recipe == "gft-paper"
    # a clone keeps the recipe and the run's own values (lr 3e-6 over the recipe's 1e-6)
    clone_form = auth_client.get(reverse("runs:launch") + f"?clone={paper.pk}").context["form"]
    assert clone_form.initial["recipe"] == "gft-paper"
    cloned = {name: clone_form[name].value() for name in clone_form.fields}
    resp = auth_client.post(reverse("runs:launch"), form_data({**cloned, "clone": paper.pk}))
    assert resp.status_code == 302, resp.context["form"].errors
    clone = Run.objects.latest("pk")
    assert clone.cloned_from_id == paper.pk and clone.recipe == "gft-paper" and clone.config["lr"] == 3e-6
    assert auth_client.post(reverse("runs:launch"), form_data(launch_inputs, recipe="nope")).context["form"].errors["recipe"]


def test_model_info_trainable_count_and_chat_template(auth_client, launch_inputs, tiny_assets, settings):
    """The form's model note: trainable parameters (LoRA settings applied) as PEFT counts them,
    whether the tokenizer has a chat template; shown on the run page too."""
    import json
    import shutil

    from gft_core.lora import apply_lora, trainable_parameters
    from gft_core.policy import load_policy

    url = reverse("runs:launch_defaults")
    model = str(tiny_assets["model"])
    body = auth_client.get(url, {"model": model, "lora_rank": "4", "lora_target_modules": "q_proj,v_proj"}).json()
    policy, _ = load_policy(model)
    trainable, total = trainable_parameters(apply_lora(policy, rank=4, alpha=16, dropout=0.0, targets="q_proj,v_proj"))
    assert body["trainable"] == trainable and body["chat_template"] is False  # the tiny tokenizer has none
    full = auth_client.get(url, {"model": model}).json()
    assert full["trainable"] == full["parameters"]  # full fine-tuning: every parameter (norms aside) trains
    assert abs(full["parameters"] - (total - trainable)) < 0.01 * total  # the base model's own
    bad = auth_client.get(url, {"model": model, "lora_rank": "-1"})
    assert bad.status_code == 400 and bad.json()["field"] == "lora_rank"
    for name, value in (("micro_batch_size", "x"), ("max_response_len", "0"), ("num_gpus", "0")):
        resp = auth_client.get(url, {"model": model, name: value})
        assert resp.status_code == 400 and resp.json()["field"] == name, (name, resp.json())
    small = auth_client.get(url, {"model": model, "micro_batch_size": "1"}).json()["memory"]
    large = auth_client.get(url, {"model": model, "micro_batch_size": "64", "max_response_len": "512"}).json()["memory"]
    assert 0 < small["peak_bytes"] < large["peak_bytes"] and "peak per device" in small["lines"][-1]
    chat = Path(settings.MODEL_ROOTS[0]) / "tiny-chat"
    shutil.copytree(model, chat, dirs_exist_ok=True)
    tc = json.loads((chat / "tokenizer_config.json").read_text())
    (chat / "tokenizer_config.json").write_text(json.dumps({**tc, "chat_template": "{{ messages[0]['content'] }}"}))
    assert auth_client.get(url, {"model": str(chat)}).json()["chat_template"] is True

    resp = auth_client.post(reverse("runs:launch"), form_data(launch_inputs, lora_rank=4, lora_target_modules="q_proj,v_proj"))
    assert resp.status_code == 302, resp.context["form"].errors
    page = auth_client.get(resp["Location"]).content.decode()
    assert 'class="trainable"' in page and f"{trainable:,}" in page


def test_a_launch_that_fits_no_gpu_worker_is_refused_with_the_numbers(auth_client, api_client, launch_inputs, settings,
                                                                        team, suite):
    """Workers publish their GPUs' free memory (workers/devices.py); a run whose memory plan fits
    none of the queue's GPU workers is a 400 naming memory_plan, with the numbers; a worker with
    room, or a CPU worker on the queue, lets it through. The report is written here as a worker
    writes it (no GPU on this machine); test_worker_publishes_its_devices checks the worker side."""
    import json

    import redis

    from gft_core.config import GFTConfig
    from gft_core.memory import Shape, activation_bytes, plan_memory
    from webapp.resources.devices import DEVICES_KEY_PREFIX
    from webapp.runs.launch import build_config
    from webapp.runs.views.launch import PLAN_FIELDS

    client = redis.Redis.from_url(settings.REDIS_URL)
    key = DEVICES_KEY_PREFIX + "gpu-box@test"

    def report(free_gib: float) -> None:
        client.set(key, json.dumps({"hostname": "gpu-box@test", "queues": ["gpu"], "at": 0, "devices": [
            {"index": 0, "name": "Tiny GPU", "total_bytes": 2 * 2**30, "free_bytes": int(free_gib * 2**30)}]}), ex=60)

    for stale in client.scan_iter(f"{DEVICES_KEY_PREFIX}*"):  # reports of earlier tests' workers (60 s TTL)
        client.delete(stale)
    try:
        report(0.001)  # ~1 MiB free: nothing fits
        resp = api_client.post("/api/runs/", launch_inputs, format="json")
        assert resp.status_code == 400 and "memory_plan" in resp.json(), resp.json()
        message = resp.json()["memory_plan"][0]
        assert "GiB on each of 1 GPU(s)" in message and "gpu-box@test: 1 GPU(s), free 0.0 GiB" in message
        page = auth_client.post(reverse("runs:launch"), form_data(launch_inputs))
        assert page.status_code == 200 and "no worker on queue" in page.content.decode()
        info = auth_client.get(reverse("runs:launch_defaults"), {"model": launch_inputs["model"], "queue": "gpu"}).json()
        assert info["memory"]["problem"].startswith("The memory plan needs")
        assert info["memory"]["workers"][0]["devices"] == ["Tiny GPU 0.0 of 2.0 GiB free"]
        assert Run.objects.count() == 0
        report(1.5)  # room enough for the small model's plan
        assert api_client.post("/api/runs/", launch_inputs, format="json").status_code == 201
        assert auth_client.get(reverse("runs:launch_defaults"), {"model": launch_inputs["model"], "queue": "gpu"}
                               ).json()["memory"]["strategy"] == "single"

        # Two GPUs whose free memory holds the model only sharded: accepted, planned as FSDP (bf16: the
        # gathered layers in half precision; a 2-layer model in float32 gathers all of it, no gain)
        two = {**launch_inputs, "num_gpus": 2, "mixed_precision": "bf16"}
        client.delete(key)
        gcfg = GFTConfig.from_dict(build_config(team, two).config)  # nothing reported: nothing refused
        shape = Shape.from_dir(gcfg.model_path)
        whole = plan_memory(shape, gcfg, num_gpus=2)
        sharded = whole.sharded(2, shape, activation_bytes(gcfg))
        assert sharded.need < whole.need and whole.strategy == "ddp" and sharded.strategy == "fsdp"

        def report2(free: int) -> None:
            client.set(key, json.dumps({"hostname": "gpu-box@test", "queues": ["gpu"], "at": 0, "devices": [
                {"index": i, "name": "Tiny GPU", "total_bytes": 2 * 2**30, "free_bytes": free} for i in (0, 1)]}), ex=60)

        plan_query = {"model": launch_inputs["model"], "queue": "gpu", "num_gpus": 2,
                      **{name: getattr(gcfg, name) for name in PLAN_FIELDS}}
        report2((whole.need + sharded.need) // 2)
        assert api_client.post("/api/runs/", two, format="json").status_code == 201
        # Benchmark evaluation during training runs the whole model on one process: not under FSDP.
        resp = api_client.post("/api/runs/", {**two, "eval_suite": suite.pk}, format="json")
        assert resp.status_code == 400 and "FSDP" in resp.json()["eval_suite"][0], resp.json()
        form_cfg = GFTConfig(**{name: getattr(gcfg, name) for name in PLAN_FIELDS})  # the form's other fields: defaults
        form_whole = plan_memory(shape, form_cfg, num_gpus=2)
        report2((form_whole.need + form_whole.sharded(2, shape, 2).need) // 2)
        info = auth_client.get(reverse("runs:launch_defaults"), plan_query).json()["memory"]
        assert info["strategy"] == "fsdp" and info["problem"] is None and "strategy FSDP" in info["lines"][-1], info
        report2(sharded.need - 1)  # not even sharded
        resp = api_client.post("/api/runs/", two, format="json")
        assert resp.status_code == 400 and "sharded with FSDP" in resp.json()["memory_plan"][0], resp.json()
        report2(max(whole.need, form_whole.need))  # the whole model fits each GPU: DDP
        assert auth_client.get(reverse("runs:launch_defaults"), plan_query).json()["memory"]["strategy"] == "ddp"
    finally:
        client.delete(key)

def test_models_by_name_the_demos_tiny_warm_included(auth_client, api_client, launch_inputs, tiny_assets):
    """The launch form offers the models under the roots by name; the form, the API and the
    defaults take a name ("tiny-warm", the demo's model) as well as a full path."""
    import shutil

    from stack.demo import demo_model_dir

    warm = demo_model_dir()
    if not (warm / "config.json").is_file():
        shutil.copytree(tiny_assets["model"], warm)
    page = auth_client.get(reverse("runs:launch")).content.decode()
    assert '<option value="tiny-warm">' in page and '<option value="tiny">' in page
    assert auth_client.get(reverse("runs:launch_defaults"), {"model": "tiny-warm"}).status_code == 200
    resp = auth_client.post(reverse("runs:launch"), form_data(launch_inputs, model="tiny-warm", name="by name"))
    assert resp.status_code == 302, resp.context["form"].errors if resp.context else resp
    api = api_client.post("/api/runs/", {**launch_inputs, "model": "tiny-warm", "name": "api by name",
                                          "sequences_per_update": 8}, format="json")
    assert api.status_code == 201, api.json()
    assert {r.config["model_path"] for r in Run.objects.all()} == {str(warm.resolve())}
    # An unknown name: a field error that names the models there are; nothing queued.
    api = api_client.post("/api/runs/", {**launch_inputs, "model": "tiny-hot"}, format="json")
    assert api.status_code == 400 and "No model called 'tiny-hot'" in api.json()["model"][0]
    assert "tiny-warm" in api.json()["model"][0] and Run.objects.count() == 2
    escape = api_client.post("/api/runs/", {**launch_inputs, "model": "../../etc"}, format="json")
    assert escape.status_code == 400 and "model" in escape.json()
