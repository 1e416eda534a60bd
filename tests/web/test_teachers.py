"""Teacher answers (issue 18): importing answers onto a dataset version (matched, unmatched,
duplicate keys; a file with no key column), bad input of the generation API, and a job whose
worker dies: failed by housekeeping, resumed by the real worker function without duplicates."""
from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from gft_core.data import ColumnMapping, load_examples
from tests.runs_support import make_dataset, tiny_assets, toy_dataset, validated  # noqa: F401
from webapp.datasets import teachers
from webapp.datasets.models import Dataset, TeacherJob

SMALL = {"k": 2, "max_new_tokens": 8, "batch_size": 8, "temperature": 1.0}


def no_teachers(ds: Dataset) -> Dataset:
    """`ds` mapped without its teacher column (like GSM8K or MATH as uploaded), validated."""
    Dataset.objects.filter(pk=ds.pk).update(mapping={**ds.mapping, "teacher": None})
    ds.refresh_from_db()
    return validated(ds)


def _upload(api_client, ds, lines: list[dict] | None = None, raw: bytes | None = None, name: str = "answers.jsonl"):
    body = raw if raw is not None else "\n".join(json.dumps(x) for x in lines).encode()
    f = io.BytesIO(body)
    f.name = name
    return api_client.post(f"/api/datasets/{ds.pk}/teacher-import/", {"file": f}, format="multipart")


def test_import_joins_answers_and_reports_unmatched_and_duplicates(api_client, auth_client, toy_dataset):
    prompts = [e.prompt for e in load_examples(toy_dataset.path, ColumnMapping(**toy_dataset.mapping))]
    lines = [{"prompt": prompts[0], "answers": ["A1", "A2"]}, {"prompt": prompts[1], "answer": "B1"},
             {"prompt": prompts[0], "answer": "again"}, {"prompt": "no such prompt", "answer": "x"},
             {"prompt": "another stranger", "answer": "y"}]
    r = _upload(api_client, toy_dataset, lines)
    assert r.status_code == 201, r.content
    rep = r.json()["report"]
    assert (rep["key"], rep["matched_rows"], rep["answers"]) == ("prompt", 2, 3)
    assert rep["unmatched"] == 2 and rep["unmatched_examples"] == ["no such prompt", "another stranger"]
    assert rep["duplicates"] == 1 and rep["duplicate_examples"] == [prompts[0]]
    new = validated(Dataset.objects.get(pk=r.json()["dataset"]))
    assert (new.name, new.version, new.previous_id) == (toy_dataset.name, 2, toy_dataset.pk)
    assert new.lineage["kind"] == "imported" and "3 imported answers for 2 rows" in new.lineage["what"]
    ex = load_examples(new.path, ColumnMapping(**new.mapping))
    assert ex[0].teachers[-2:] == ["A1", "A2"] and ex[1].teachers[-1] == "B1" and len(ex[2].teachers) == 3
    # the eval file is taken over, with the same (empty here) teacher column so the mapping fits it
    assert new.eval_split == "file" and new.report["eval"]["valid_rows"] == 8
    page = auth_client.get(f"/datasets/{new.pk}/").content.decode()
    assert f"v2 = <a href=\"/datasets/{toy_dataset.pk}/\">v1</a> + 3 imported answers for 2 rows from answers.jsonl" in page
    assert "2 unmatched keys (e.g. no such prompt, another stranger)" in page and "GFT trains on a <em>group</em>" in page
    # keyed by row number instead of the prompt
    r = _upload(api_client, toy_dataset, [{"row": 3, "answers": ["C"]}, {"row": 999, "answer": "z"}])
    assert r.status_code == 201 and r.json()["report"]["unmatched"] == 1
    page = api_client.get(f"/api/datasets/{r.json()['dataset']}/").json()
    assert page["version"] == 3


def test_import_without_a_key_column_names_the_columns_and_creates_nothing(api_client, toy_dataset):
    before = set(Dataset.objects.values_list("pk", flat=True))
    incoming = Path(toy_dataset.path).parents[2] / str(toy_dataset.team_id) / ".incoming"
    r = _upload(api_client, toy_dataset, [{"question": "q", "answer": "a"}])
    assert r.status_code == 400
    msg = r.json()["file"][0]
    assert "no key column" in msg and "columns found: answer, question" in msg and "answers.jsonl" in msg
    r = _upload(api_client, toy_dataset, [{"prompt": "nothing matches", "answer": "a"}])
    assert r.status_code == 400 and "matches a row" in r.json()["file"][0]
    r = _upload(api_client, toy_dataset, raw=b"not json\n")
    assert r.status_code == 400
    assert set(Dataset.objects.values_list("pk", flat=True)) == before
    assert not incoming.exists() or not [p for p in incoming.rglob("*") if p.is_file()]


def test_generation_bad_input(api_client, toy_dataset, other_team, tiny_assets, tmp_path):
    from webapp.runs.models import Run

    url = f"/api/datasets/{toy_dataset.pk}/teacher-answers/"
    model = str(tiny_assets["model"])
    r = api_client.post(url, {"model": str(tmp_path), "k": 2}, format="json")
    assert r.status_code == 400 and "outside the allowed model roots" in r.json()["model"][0]
    for bad in ({"k": 0}, {"k": 10_000}, {"max_new_tokens": 0}, {"max_new_tokens": 10**9}, {"top_p": 0}):
        r = api_client.post(url, {"model": model, **bad}, format="json")
        assert r.status_code == 400 and set(r.json()) == set(bad), (bad, r.content)
    r = api_client.post(url, {}, format="json")
    assert r.status_code == 400 and "model" in r.json()
    other_ds = make_dataset(other_team, tiny_assets, name="theirs", validate=False)
    assert api_client.post(f"/api/datasets/{other_ds.pk}/teacher-answers/", {"model": model}, format="json").status_code == 404
    their_run = Run.objects.create(team=other_team, name="theirs", method="gft", config={}, status="succeeded")
    r = api_client.post(url, {"run": their_run.pk}, format="json")
    assert r.status_code == 404
    assert api_client.post(f"/api/datasets/{other_ds.pk}/teacher-import/", {}, format="multipart").status_code == 404
    assert not TeacherJob.objects.exists()
    # a good one is queued, listed under the dataset, with its options
    r = api_client.post(url, {"model": model, **SMALL, "filter": True, "threshold": 1.0}, format="json")
    assert r.status_code == 201, r.content
    job = r.json()
    assert job["status"] == "queued" and job["total"] == 48 and job["options"]["k"] == 2 and job["options"]["filter"]
    assert [j["id"] for j in api_client.get(url).json()] == [job["id"]]
    assert api_client.get(f"/api/teacher-jobs/{job['id']}/").json()["status"] == "queued"
    assert api_client.post(f"/api/teacher-jobs/{job['id']}/cancel/").json()["status"] == "cancelled"


@pytest.mark.django_db(transaction=True)
def test_dead_worker_is_failed_by_housekeeping_and_resume_adds_no_duplicates(team, user, tiny_assets, auth_client):
    from gft_core.policy import load_policy
    from gft_core.teachers import generate_teacher_answers, read_partial
    from workers.teacher_tasks import TeacherExecution

    ds = no_teachers(make_dataset(team, tiny_assets, name="plain", validate=False))
    job = teachers.submit_generation(team, user, ds, model=str(tiny_assets["model"]),
                                     options={**SMALL, "max_new_tokens": 4, "batch_size": 16})
    job = teachers.start(job.pk, job.celery_task_id, "w-dead")
    assert job.status == "running" and job.attempt == 1

    # the first attempt answers 16 of 48 prompts (one batch), then its worker dies mid-write
    class Died(Exception):
        pass

    calls = []

    def dies() -> bool:
        calls.append(1)
        if len(calls) > 1:
            raise Died
        return False

    model, tok = load_policy(job.model_path)
    examples = load_examples(ds.path, ColumnMapping(**ds.mapping))
    with pytest.raises(Died):
        generate_teacher_answers(model, tok, examples, job.options, job.partial_path, stop=dies)
    with open(job.partial_path, "a") as f:
        f.write('{"row": 47, "answers": ["cut')  # a line cut by the dying process
    assert len(read_partial(job.partial_path)) == 16

    TeacherJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=600))
    assert teachers.fail_stale_jobs(timeout_s=60) == [job.pk]
    job.refresh_from_db()
    assert job.status == "failed" and "No heartbeat from worker w-dead" in job.error

    job = teachers.resume(job)
    job = teachers.start(job.pk, job.celery_task_id, "w-live")
    assert TeacherExecution(job).execute() == "succeeded"
    job.refresh_from_db()
    assert (job.status, job.done, job.total, job.attempt) == ("succeeded", 48, 48, 2)
    rows = [json.loads(line)["row"] for line in job.partial_path.read_text().splitlines()]
    assert sorted(rows) == list(range(1, 49))  # every prompt once: none answered twice
    new = validated(job.result)
    ex = load_examples(new.path, ColumnMapping(**new.mapping))
    assert all(len(e.teachers) == 2 for e in ex)
    assert new.lineage["kind"] == "generated" and new.lineage["what"].startswith("2 answers per prompt from tiny-test")
    assert new.report["train"]["teachers"]["max"] == 2
    # the lineage says how the prompts were built: the dataset's format, the teacher's template (none here)
    assert new.lineage["prompt_format"]["chat_template_applied"] is False
    page = auth_client.get(f"/datasets/{new.pk}/").content.decode()
    assert '<td id="teacher-prompt-format">plain (the model has no chat template)</td>' in page
