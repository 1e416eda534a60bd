"""Teacher answers end to end (issue 18): `gft datasets teachers generate` against the ASGI server,
a real worker generates K answers per prompt with the small model as teacher, the new version
validates, a short run trains on it and the groups it stored hold those teacher answers."""
from __future__ import annotations

import json

import httpx
import pytest

from gft_core.data import ColumnMapping, load_examples
from tests.conftest import subprocess_env
from tests.e2e.test_cli import gft
from tests.runs_support import make_dataset, wait_for
from tests.web.test_teachers import no_teachers
from webapp.datasets.models import Dataset, TeacherJob
from webapp.runs import launch
from webapp.runs.models import GroupSample, Run

pytestmark = pytest.mark.django_db(transaction=True)


def test_generate_with_the_cli_then_train_on_the_new_version(celery_worker, live_server_url, api_token, team, user,
                                                               tiny_assets, launch_inputs, tmp_path):
    plain = no_teachers(make_dataset(team, tiny_assets, name="no-teachers", validate=False))
    assert plain.report["train"]["teachers"]["max"] == 0
    env = subprocess_env(GFT_URL=live_server_url, GFT_TOKEN=api_token)
    # The server loads its URLconf on the first request: on a loaded CI machine that can exceed the
    # CLI's 30 s timeout, which is not what this test is about.
    httpx.get(f"{live_server_url}/api/datasets/", headers={"Authorization": f"Bearer {api_token}"}, timeout=300)
    out = gft("datasets", "teachers", "generate", str(plain.pk), "--model", str(tiny_assets["model"]), "--k", "2",
              "--max-new-tokens", "8", "--temperature", "1.0", "--batch-size", "24", "--follow", "--interval", "0.5",
              env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr + celery_worker.log()[-3000:]
    assert "K=2, 48 prompts, queued" in out.stdout and "48/48 prompts" in out.stdout
    job = TeacherJob.objects.get(dataset=plain)
    assert (job.status, job.done, job.attempt) == ("succeeded", 48, 1)

    new = wait_for(lambda: Dataset.objects.filter(pk=job.result_id, status__in=("valid", "invalid")).first(),
                   timeout=120, what="the new version's validation", on_timeout=celery_worker.log)
    assert new.status == "valid", new.report
    assert (new.version, new.previous_id, new.report["train"]["teachers"]["max"]) == (2, plain.pk, 2)
    assert new.lineage["what"] == "2 answers per prompt from tiny-test, temperature 1"
    # the dataset's prompt format with the teacher's template (on by default; the tiny model has none)
    assert new.lineage["prompt_format"] == {"use_chat_template": True, "system_prompt": "", "instruction_suffix": "",
                                            "chat_template_applied": False}
    generated = {t for e in load_examples(new.path, ColumnMapping(**new.mapping)) for t in e.teachers}
    assert len(generated) > 10

    bad = gft("datasets", "teachers", "generate", str(plain.pk), "--model", "/etc", env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "outside the allowed model roots" in bad.stderr

    run = launch.submit_run(team, user, {**launch_inputs, "dataset": new.pk, "n_teacher": 2, "micro_batch_size": 5,
                                         "max_steps": 2, "checkpoint_interval": 0,
                                         "config": {"group_sample_interval": 1}})
    wait_for(lambda: Run.objects.get(pk=run.pk).status in Run.FINISHED, timeout=240, what="the run",
             on_timeout=celery_worker.log)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    responses = [r for g in GroupSample.objects.filter(run=run) for r in g.data["responses"]]
    teacher_texts = [r["text"] for r in responses if r["source"] == "teacher"]
    # The source version had no teacher answers: every teacher response of a group comes from the
    # generated ones. The stored text is the tokens decoded again (NUL shown as U+FFFD by the sink),
    # so it is compared by its start.
    shown = [g.replace("\x00", "\ufffd") for g in generated]
    matched = [t for t in teacher_texts if any(g.startswith(t[:4]) for g in shown)]
    assert teacher_texts and len(matched) * 2 >= len(teacher_texts), json.dumps([teacher_texts, shown[:20]])[:3000]
