"""A two-stage pipeline end to end (issue 19, item 2): a real Celery worker trains stage 1 (SFT) on
the small model; its success (run_status_changed, sent in the worker's process) queues stage 2
(GFT) from stage 1's final model, which the trainer loads; the pipeline ends succeeded and its
page joins both stages on one step axis. Submitted and followed with `gft pipelines submit
pipeline.yaml --follow` (the client in a subprocess against the ASGI server), then `gft runs
compare` of three runs."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from django.urls import reverse

from tests.conftest import subprocess_env
from webapp.pipelines.models import Pipeline
from webapp.runs.models import MetricKey, MetricPoint, Run

pytestmark = pytest.mark.django_db(transaction=True)


def gft(*args: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "client", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=420)


def test_two_stage_pipeline_second_stage_trains_from_the_first_ones_final_model(
        celery_worker, live_server_url, api_token, api_client, auth_client, launch_inputs, tmp_path):
    common = {k: v for k, v in launch_inputs.items() if k not in ("model", "name", "method")}
    common.update(max_steps=2, checkpoint_interval=0, micro_batch_size=2)
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({"name": "sft then gft", "common": common, "stages": [
        {"method": "sft", "model": launch_inputs["model"]}, {"method": "gft"}]}))
    env = subprocess_env(GFT_URL=live_server_url, GFT_TOKEN=api_token, XDG_CONFIG_HOME=str(tmp_path / "config"))
    submit = gft("pipelines", "submit", "pipeline.yaml", "--follow", "--interval", "1", env=env, cwd=tmp_path)
    assert submit.returncode == 0, submit.stdout + submit.stderr + celery_worker.log()[-4000:]
    pk = int(submit.stdout.split("#")[1].split()[0])
    assert "stage 2/2 GFT" in submit.stdout and f"Pipeline #{pk} succeeded: All 2 stages succeeded." in submit.stdout

    pipeline = Pipeline.objects.get(pk=pk)
    stages = list(pipeline.stages.select_related("run").order_by("index"))
    assert pipeline.status == "succeeded", (pipeline.message, [s.run and s.run.error for s in stages])
    first, second = stages[0].run, stages[1].run
    assert first.status == second.status == "succeeded" and first.method == "sft" and second.method == "gft"
    assert second.init_from_run_id == first.pk
    assert second.config["model_path"] == str(first.directory / "final")
    loss = MetricKey.objects.get(name="loss")
    assert list(MetricPoint.objects.filter(run_id=second.pk, key=loss).values_list("step", flat=True)) == [1, 2]

    page = auth_client.get(reverse("pipelines:detail", args=[pk]))
    joined = page.context["joined"]
    assert [b["step"] for b in joined["boundaries"]] == [0, 2]
    assert [s["step"] for s in joined["series"]["loss"]] == [[1, 2], [3, 4]]  # stage 2 continues at step 3

    # A third run to compare, as a row only: the worker stays free (it stops quickly at teardown).
    third = Run.objects.create(team=second.team, name="third", method="gft", status="cancelled",
                               config={**second.config, "seed": 5})
    compare = gft("runs", "compare", str(first.pk), str(second.pk), str(third.pk), env=env, cwd=tmp_path)
    assert compare.returncode == 0, compare.stderr
    lines = compare.stdout.splitlines()
    method_row = next(line for line in lines if line.startswith("method"))
    assert method_row.split()[1:] == ["sft", "gft", "gft"], compare.stdout
    assert any(line.startswith("seed") for line in lines) and not any("output_dir" in line for line in lines)
    assert f"#{third.pk}" in lines[0] and "loss" in compare.stdout
