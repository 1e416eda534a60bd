"""Dataset upload, validation report, versions, archive/delete, bad input and access (real Postgres).

Validation runs here in-process by calling the task function; tests/e2e/test_datasets_e2e.py runs
it through a real Celery worker. With the `db` fixture on_commit callbacks never fire, so nothing
is queued to Redis from these tests.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from webapp.accounts.models import Membership
from webapp.datasets import services
from webapp.datasets.models import Dataset
from webapp.resources.models import ImmutableVersionError
from webapp.runs.models import Run
from workers.data_tasks import validate_dataset

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TOY_MAPPING = {"prompt": "prompt", "expert": "expert", "teacher": "teachers", "ground_truth": "answer"}


def toy_rows(n: int = 5) -> list[dict]:
    return [{"prompt": f"What is {i} + {i}?", "expert": f"{i} + {i} = {2 * i}. The answer is {2 * i}.",
             "teachers": [f"The answer is {2 * i}.", f"{2 * i}"], "answer": str(2 * i)} for i in range(n)]


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def parquet_bytes(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def form_data(filename: str, content: bytes, *, name: str = "toy", mapping: dict | None = None, **extra) -> dict:
    m = TOY_MAPPING if mapping is None else mapping
    data = {"name": name, "file": SimpleUploadedFile(filename, content), "preset": "", "prompt": m.get("prompt", ""),
            "expert": m.get("expert") or "", "teacher": m.get("teacher") or "", "teacher_mode": "list",
            "ground_truth": m.get("ground_truth") or "", "ground_truth_extract": m.get("ground_truth_extract", "raw"),
            "ground_truth_fallback": "", "eval_split": "none", "eval_fraction": "", "eval_seed": "0", "tokenizer": ""}
    data.update(extra)
    return data


def stored_files(team) -> list[Path]:
    root = Path(settings.ARTIFACT_ROOT) / "datasets" / str(team.pk)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def upload(client, filename: str, content: bytes, **kw):
    return client.post(reverse("datasets:upload"), form_data(filename, content, **kw))


def queued_tasks(queue: str = "default") -> list[tuple[str, list]]:
    """(task name, args) of the messages waiting in a queue of the (test) Redis broker."""
    import base64

    import redis

    out = []
    for raw in redis.Redis.from_url(settings.CELERY_BROKER_URL).lrange(queue, 0, -1):
        msg = json.loads(raw)
        out.append((msg["headers"]["task"], json.loads(base64.b64decode(msg["body"]))[0]))
    return out


# ---------------------------------------------------------------- happy paths
def test_upload_jsonl_stores_by_hash_and_validates(auth_client, team):
    content = jsonl(toy_rows(7))
    r = upload(auth_client, "toy.jsonl", content)
    ds = Dataset.objects.get(team=team, name="toy")
    assert r.status_code == 302 and r["Location"] == reverse("datasets:detail", args=[ds.pk])
    sha = hashlib.sha256(content).hexdigest()
    assert (ds.sha256, ds.size_bytes, ds.file_format, ds.version) == (sha, len(content), "jsonl", 1)
    assert ds.file_path == f"datasets/{team.pk}/{sha[:2]}/{sha}.jsonl"
    assert ds.path.read_bytes() == content
    assert ds.status == Dataset.Status.UPLOADED and ds.mapping["teacher"] == "teachers"

    assert validate_dataset(ds.pk) == "valid"
    ds.refresh_from_db()
    train = ds.report["train"]
    assert ds.status == "valid" and ds.usable
    assert (train["rows"], train["valid_rows"], train["invalid_rows"]) == (7, 7, 0)
    assert train["teachers"] == {"min": 2, "max": 2, "mean": 2.0, "rows_without": 0, "rows_by_count": {"2": 7}}
    assert train["lengths"]["prompt"]["n"] == 7 and sum(train["lengths"]["prompt"]["hist"]["counts"]) == 7
    assert train["lengths"]["teacher"]["n"] == 14
    assert train["preview"][0]["ground_truth"] == "0" and train["preview"][0]["number"] == 1

    page = auth_client.get(reverse("datasets:detail", args=[ds.pk])).content.decode()
    assert "plotly/plotly.min.js" in page and 'id="hist-train"' in page and "What is 3 + 3?" in page
    assert auth_client.get(reverse("datasets:status", args=[ds.pk])).json()["status"] == "valid"
    assert "toy" in auth_client.get(reverse("datasets:list")).content.decode()


def test_upload_queues_the_validation_task_by_name(auth_client, team, django_capture_on_commit_callbacks):
    from webapp import dispatch

    with django_capture_on_commit_callbacks(execute=True):
        upload(auth_client, "toy.jsonl", jsonl(toy_rows()))
    ds = Dataset.objects.get()
    assert (dispatch.VALIDATE_DATASET, [ds.pk]) in queued_tasks()
    with django_capture_on_commit_callbacks(execute=True):
        auth_client.post(reverse("datasets:validate", args=[ds.pk]), {"tokenizer": ""})
    assert queued_tasks().count((dispatch.VALIDATE_DATASET, [ds.pk])) == 2


def test_plotly_is_served_locally(auth_client):
    from django.contrib.staticfiles import finders

    assert finders.find("plotly/plotly.min.js")


def test_upload_gzipped_csv_with_teacher_columns(auth_client, team):
    text = "question,solution,t1,t2,final\n" + "".join(
        f'"What is {i}*2?","{i}*2 = {2 * i}. So \\boxed{{{2 * i}}}",{2 * i},"It is {2 * i}",{2 * i}\n' for i in range(30))
    r = upload(auth_client, "train.csv.gz", gzip.compress(text.encode()), name="csvgz",
               mapping={"prompt": "question", "expert": "solution", "teacher": "t1, t2", "ground_truth": "final"})
    assert r.status_code == 302, r.content.decode()[:2000]
    ds = Dataset.objects.get(name="csvgz")
    assert ds.file_format == "csv.gz" and ds.mapping["teacher"] == ["t1", "t2"]
    assert validate_dataset(ds.pk) == "valid"
    ds.refresh_from_db()
    assert ds.report["train"]["rows"] == 30 and ds.report["train"]["teachers"]["mean"] == 2.0


def test_parquet_with_gsm8k_preset(auth_client, team):
    rows = [{"question": f"q{i}?", "answer": f"work\n#### {i}"} for i in range(12)]
    r = upload(auth_client, "g.parquet", parquet_bytes(rows), name="g", mapping={"prompt": ""}, preset="gsm8k")
    assert r.status_code == 302
    ds = Dataset.objects.get(name="g")
    assert ds.mapping["ground_truth_extract"] == "gsm8k"
    validate_dataset(ds.pk)
    ds.refresh_from_db()
    assert ds.status == "valid" and ds.report["train"]["unit"] == "row"
    assert ds.report["train"]["preview"][3]["ground_truth"] == "3"


def test_parquet_validation_reads_only_the_mapped_columns(auth_client, team):
    """An unmapped column is never decoded (nor held): here a timestamp that Python cannot
    represent, which stopped the validation when every column was read; the report still lists
    every column of the file (from its schema)."""
    rows = [{"question": f"q{i}?", "answer": f"work\n#### {i}"} for i in range(300)]
    table = pa.Table.from_pylist(rows).append_column("logged_at", pa.array([2**62] * 300, pa.timestamp("us")))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    r = upload(auth_client, "t.parquet", buf.getvalue(), name="t", mapping={"prompt": ""}, preset="gsm8k")
    assert r.status_code == 302, r.content.decode()[:2000]
    ds = Dataset.objects.get(name="t")
    validate_dataset(ds.pk)
    ds.refresh_from_db()
    assert ds.status == "valid", ds.report
    assert ds.report["train"]["rows"] == 300 and ds.report["train"]["columns"] == ["question", "answer", "logged_at"]


def test_duplicate_upload_links_existing(auth_client, team):
    content = jsonl(toy_rows())
    upload(auth_client, "a.jsonl", content, name="first")
    first = Dataset.objects.get(name="first")
    r = upload(auth_client, "copy.jsonl", content, name="second")
    page = r.content.decode()
    assert r.status_code == 200 and "identical (same sha256)" in page
    assert reverse("datasets:detail", args=[first.pk]) in page
    assert not Dataset.objects.filter(name="second").exists() and len(stored_files(team)) == 1
    r = upload(auth_client, "copy.jsonl", content, name="second", allow_duplicate="on")
    second = Dataset.objects.get(name="second")
    assert second.file_path == first.file_path and len(stored_files(team)) == 1


def test_eval_split_second_file_and_fraction(auth_client, team):
    r = upload(auth_client, "train.jsonl", jsonl(toy_rows(20)), name="withfile", eval_split="file",
               eval_file=SimpleUploadedFile("eval.jsonl", jsonl(toy_rows(4))))
    assert r.status_code == 302
    ds = Dataset.objects.get(name="withfile")
    assert ds.eval_original_filename == "eval.jsonl" and ds.eval_path.is_file()
    validate_dataset(ds.pk)
    ds.refresh_from_db()
    assert ds.status == "valid" and ds.report["eval"]["rows"] == 4
    assert services.data_config(ds) == {"path": str(ds.path), "mapping": ds.mapping, "eval_path": str(ds.eval_path)}

    rows = toy_rows(40)
    rows[0]["prompt"] = "different file"
    r = upload(auth_client, "t2.jsonl", jsonl(rows), name="withfraction", eval_split="fraction", eval_fraction="0.1",
               eval_seed="3")
    ds = Dataset.objects.get(name="withfraction")
    validate_dataset(ds.pk)
    ds.refresh_from_db()
    assert ds.report["split"] == {"train_rows": 36, "eval_rows": 4, "fraction": 0.1, "seed": 3}
    assert services.data_config(ds)["eval_fraction"] == 0.1


def test_eval_file_missing_is_a_form_error(auth_client, team):
    r = upload(auth_client, "train.jsonl", jsonl(toy_rows()), eval_split="file")
    assert r.status_code == 200 and "Choose the eval file" in r.content.decode()
    assert not Dataset.objects.exists()


# ---------------------------------------------------------------- bad input
def _bomb(ratio_bytes: int) -> bytes:
    """A valid first line, then megabytes of spaces: tiny compressed, huge decompressed."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as f:
        f.write(jsonl(toy_rows(1)))
        block = b" " * (1024 * 1024)
        for _ in range(ratio_bytes // len(block)):
            f.write(block)
    return buf.getvalue()


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100

BAD_UPLOADS = [
    ("empty", "data.jsonl", b"", None, "empty"),
    ("only blank lines", "data.jsonl", b"\n\n  \n", None, "only blank lines"),
    ("wrong extension", "data.txt", jsonl(toy_rows()), None, "unsupported file type"),
    ("no extension", "data", jsonl(toy_rows()), None, "unsupported file type"),
    ("parquet named jsonl", "data.jsonl", parquet_bytes(toy_rows()), None, "the content is a Parquet file"),
    ("jsonl named parquet", "data.parquet", jsonl(toy_rows()), None, "the name says Parquet"),
    ("png named csv", "data.csv", PNG, None, "the content is a PNG image"),
    ("json array named json", "data.json", json.dumps(toy_rows()).encode(), None, "JSON array"),
    ("csv named jsonl", "data.jsonl", b"prompt,expert\nq,a\n", None, "does not start with a JSON object"),
    ("invalid utf-8", "data.jsonl", jsonl(toy_rows(3)) + b'{"prompt": "caf\xe9", "expert": "x", "answer": "1"}\n', None,
     "invalid UTF-8 on line 4"),
    ("latin-1 csv", "data.csv", "prompt,expert,answer\nq\xe9,a,1\n".encode("latin-1"), {"prompt": "prompt"}, "invalid UTF-8 on line 2"),
    ("nul bytes", "data.jsonl", jsonl(toy_rows(2)) + b"\x00\x00\x00", None, "NUL bytes"),
    ("bad json line", "data.jsonl", jsonl(toy_rows(2)) + b'{"prompt": "x", oops}\n' + jsonl(toy_rows(2)), None,
     "line 3: bad JSON"),
    ("missing mapped column", "data.jsonl", jsonl(toy_rows()), {**TOY_MAPPING, "prompt": "question"},
     "column 'question' not found"),
    ("teacher is a string", "data.jsonl", jsonl([{**r, "teachers": "one answer"} for r in toy_rows()]), None,
     "must hold a list of strings"),
    ("teacher list holds numbers", "data.jsonl", jsonl([{**r, "teachers": [1, 2]} for r in toy_rows()]), None,
     "must hold a list of strings"),
    ("not gzip", "data.jsonl.gz", jsonl(toy_rows()), None, "the content is not gzip data"),
    ("truncated gzip", "data.jsonl.gz", gzip.compress(jsonl(toy_rows(50)))[:-30], None, "truncated"),
    ("gzip of a png", "data.csv.gz", gzip.compress(PNG), None, "the content is a PNG image"),
    ("gzip bomb", "data.jsonl.gz", _bomb(64 * 1024 * 1024), None, "gzip bomb"),
    ("empty gzip", "data.jsonl.gz", gzip.compress(b""), None, "the file is empty"),
    ("csv header only", "data.csv", b"prompt,expert,answer\n", {"prompt": "prompt"}, "empty file (no rows)"),
    ("csv row with extra field", "data.csv", b"prompt,expert\np,e\np,e,x\n", {"prompt": "prompt"}, "line 3: 3 fields but the header has 2"),
    ("corrupt parquet", "data.parquet", b"PAR1" + b"garbage" * 20 + b"PAR1", None, "cannot read Parquet file"),
    ("utf-16 csv", "data.csv", "prompt,expert\np,e\n".encode("utf-16"), {"prompt": "prompt"}, "UTF-16 text (save it as UTF-8)"),
    ("xlsx named csv", "data.csv", b"PK\x03\x04" + b"\x00" * 50, None, "ZIP archive (or an Excel/Word file)"),
    ("pretty-printed json", "data.json", json.dumps(toy_rows(1)[0], indent=2).encode(), None, "expected one JSON object per line"),
    ("null expert", "data.jsonl", jsonl([{**r, "expert": None} for r in toy_rows()]), None, "column 'expert' must hold a string"),
]


@pytest.mark.parametrize("case", BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS])
def test_bad_upload_is_rejected_and_leaves_nothing(auth_client, team, case):
    _, filename, content, mapping, message = case
    r = upload(auth_client, filename, content, mapping=mapping)
    page = r.content.decode()
    assert r.status_code == 200
    assert message in page.replace("&#x27;", "'"), page[page.find("error"):][:1500]
    assert not Dataset.objects.exists()
    assert stored_files(team) == []


@pytest.mark.parametrize("case", BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS])
def test_bad_upload_through_the_service(team, user, case):
    """The API calls the service directly (no form): same refusals, same clean-up."""
    _, filename, content, mapping, message = case
    with pytest.raises(services.UploadError) as exc:
        services.create_dataset_from_upload(team, user, io.BytesIO(content), name="x", filename=filename,
                                            mapping=mapping or TOY_MAPPING)
    assert message in str(exc.value)
    assert not Dataset.objects.exists() and stored_files(team) == []


def test_over_the_size_limit(auth_client, team, user, settings):
    settings.UPLOAD_MAX_BYTES = 2000
    content = jsonl(toy_rows(40))
    assert len(content) > 2000
    r = upload(auth_client, "big.jsonl", content)
    assert r.status_code == 200 and "larger than the upload limit of 2.0 KiB" in r.content.decode()
    with pytest.raises(services.UploadError, match="larger than the upload limit"):
        services.create_dataset_from_upload(team, user, io.BytesIO(content), name="x", filename="big.jsonl", mapping=TOY_MAPPING)
    assert not Dataset.objects.exists() and stored_files(team) == []


def test_gzip_decompressed_size_limit(team, user, settings):
    settings.UPLOAD_MAX_DECOMPRESSED_BYTES = 10_000
    content = gzip.compress(jsonl(toy_rows(400)))
    with pytest.raises(services.UploadError, match="decompresses to more than"):
        services.create_dataset_from_upload(team, user, io.BytesIO(content), name="x", filename="a.jsonl.gz", mapping=TOY_MAPPING)
    assert stored_files(team) == []


def test_bad_rows_beyond_the_first_are_reported_with_line_numbers(auth_client, team):
    """The upload checks the first rows; validation reads all of them and lists the offenders."""
    rows = toy_rows(120)
    rows[79]["teachers"] = "not a list"
    del rows[99]["prompt"]
    content = jsonl(rows[:110]) + b'{"prompt": broken\n' + jsonl(rows[110:])
    assert upload(auth_client, "late.jsonl", content).status_code == 302
    ds = Dataset.objects.get()
    assert validate_dataset(ds.pk) == "invalid"
    ds.refresh_from_db()
    train = ds.report["train"]
    assert [e["number"] for e in train["errors"]] == [80, 100]
    assert train["missing"] == {"teacher": 1, "prompt": 1}
    assert "late.jsonl, line 111: bad JSON" in train["fatal"]
    assert str(ds.path) not in json.dumps(ds.report)  # messages name the user's file, not our storage
    assert not ds.usable
    page = auth_client.get(reverse("datasets:detail", args=[ds.pk])).content.decode()
    assert "line 111: bad JSON" in page and "must hold a list of strings" in page


def test_validation_survives_a_vanished_file(auth_client, team):
    upload(auth_client, "toy.jsonl", jsonl(toy_rows()))
    ds = Dataset.objects.get()
    ds.path.unlink()
    assert validate_dataset(ds.pk) == "invalid"
    ds.refresh_from_db()
    assert "file not found" in ds.report["train"]["fatal"]


def test_validation_whose_worker_died_is_failed_by_housekeeping(auth_client, team):
    from datetime import timedelta

    from django.utils import timezone

    from webapp.datasets.validation import VALIDATION_TIME_LIMIT_S
    from workers.tasks import housekeeping

    upload(auth_client, "a.jsonl", jsonl(toy_rows()))
    upload(auth_client, "b.jsonl", jsonl(toy_rows(6)), name="other")
    dead, alive = Dataset.objects.order_by("pk")
    # what validate_dataset writes when it starts; the first one's worker never came back
    started = timezone.now() - timedelta(seconds=VALIDATION_TIME_LIMIT_S + 120)
    Dataset.objects.filter(pk=dead.pk).update(status=Dataset.Status.VALIDATING, report={"started_at": started.isoformat()})
    Dataset.objects.filter(pk=alive.pk).update(status=Dataset.Status.VALIDATING,
                                               report={"started_at": timezone.now().isoformat()})
    assert housekeeping()["datasets_failed"] == [dead.pk]
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.status == Dataset.Status.INVALID and "the worker was stopped" in dead.report["fatal"]
    assert alive.status == Dataset.Status.VALIDATING
    page = auth_client.get(reverse("datasets:detail", args=[dead.pk])).content.decode()
    assert "Validate again" in page
    assert housekeeping()["datasets_failed"] == []  # once


def test_tokenizer_outside_model_roots_is_refused(team, user):
    with pytest.raises(services.UploadError, match="MODEL_ROOTS"):
        services.create_dataset_from_upload(team, user, io.BytesIO(jsonl(toy_rows())), name="x", filename="a.jsonl",
                                            mapping=TOY_MAPPING, tokenizer="/etc")


def test_local_hf_tokenizer_under_model_roots(team, user, settings, tmp_path):
    from gft_core.tiny import build_tokenizer

    tok_dir = Path(settings.MODEL_ROOTS[0]) / "tiny-tok"
    build_tokenizer().save_pretrained(tok_dir)
    assert (str(tok_dir), "tiny-tok") in services.available_tokenizers()
    ds = services.create_dataset_from_upload(team, user, io.BytesIO(jsonl(toy_rows())), name="x", filename="a.jsonl",
                                             mapping=TOY_MAPPING, tokenizer=str(tok_dir))
    validate_dataset(ds.pk)
    ds.refresh_from_db()
    assert ds.report["tokenizer"] == str(tok_dir) and ds.report["train"]["lengths"]["prompt"]["n"] == 5


# ---------------------------------------------------------------- versions, archive, delete
def make_run(team, dataset=None, reward=None) -> Run:
    return Run.objects.create(team=team, name="r", method="gft", config={}, dataset=dataset, reward_config=reward)


def test_new_version_keeps_the_old_one(auth_client, team):
    upload(auth_client, "toy.jsonl", jsonl(toy_rows()))
    v1 = Dataset.objects.get()
    make_run(team, dataset=v1)
    data = form_data("x.jsonl", b"", mapping={**TOY_MAPPING, "teacher": ""})
    del data["file"], data["name"]
    r = auth_client.post(reverse("datasets:new_version", args=[v1.pk]), data)
    v2 = Dataset.objects.get(version=2)
    assert r.status_code == 302 and r["Location"] == reverse("datasets:detail", args=[v2.pk])
    assert v2.previous == v1 and v2.name == v1.name and v2.file_path == v1.file_path and v2.mapping["teacher"] is None
    v1.refresh_from_db()
    assert v1.mapping["teacher"] == "teachers"

    v3 = services.new_dataset_version(v2, None, fileobj=io.BytesIO(jsonl(toy_rows(9))), filename="more.jsonl")
    assert (v3.version, v3.previous, v3.original_filename) == (3, v2, "more.jsonl")
    assert v3.sha256 != v1.sha256 and v3.mapping == v2.mapping


def test_new_version_checks_the_mapping_against_the_kept_file(team, user):
    v1 = services.create_dataset_from_upload(team, user, io.BytesIO(jsonl(toy_rows())), name="t", filename="t.jsonl", mapping=TOY_MAPPING)
    with pytest.raises(services.UploadError, match="column 'nope' not found"):
        services.new_dataset_version(v1, user, mapping={"prompt": "nope"})
    assert Dataset.objects.count() == 1


def test_used_dataset_is_immutable_and_only_archivable(auth_client, team):
    upload(auth_client, "toy.jsonl", jsonl(toy_rows()))
    ds = Dataset.objects.get()
    path = ds.path
    make_run(team, dataset=ds)
    ds.mapping = {"prompt": "expert"}
    with pytest.raises(ImmutableVersionError):
        ds.save()
    ds.refresh_from_db()
    ds.status = "valid"
    ds.save()  # status/report are not content: a used dataset can be re-validated

    r = auth_client.post(reverse("datasets:delete", args=[ds.pk]), follow=True)
    assert "cannot be deleted. Archive it instead." in r.content.decode()
    assert Dataset.objects.filter(pk=ds.pk).exists() and path.exists()

    auth_client.post(reverse("datasets:archive", args=[ds.pk]), {"archived": "1"})
    ds.refresh_from_db()
    assert ds.archived and not ds.usable
    link = f'href="{reverse("datasets:detail", args=[ds.pk])}"'
    assert link not in auth_client.get(reverse("datasets:list")).content.decode()
    assert link in auth_client.get(reverse("datasets:list") + "?archived=1").content.decode()
    auth_client.post(reverse("datasets:archive", args=[ds.pk]), {"archived": "0"})
    ds.refresh_from_db()
    assert not ds.archived


def test_delete_unused_removes_row_and_unshared_file(auth_client, team, user):
    upload(auth_client, "toy.jsonl", jsonl(toy_rows()))
    v1 = Dataset.objects.get()
    v2 = services.new_dataset_version(v1, user, mapping={**TOY_MAPPING, "teacher": None})
    with_capture = auth_client.post(reverse("datasets:delete", args=[v2.pk]))
    assert with_capture.status_code == 302 and not Dataset.objects.filter(pk=v2.pk).exists()
    assert v1.path.exists()  # still used by v1


@pytest.mark.django_db(transaction=True)
def test_delete_last_user_of_a_file_removes_it(client, user, team):
    client.force_login(user)
    ds = services.create_dataset_from_upload(team, user, io.BytesIO(jsonl(toy_rows())), name="t", filename="t.jsonl",
                                             mapping=TOY_MAPPING, eval_split="file", eval_fileobj=io.BytesIO(jsonl(toy_rows(3))),
                                             eval_filename="e.jsonl")
    paths = [ds.path, ds.eval_path]
    services.delete(ds, user)
    assert not any(p.exists() for p in paths)


# ---------------------------------------------------------------- access
def dataset_urls(pk: int) -> list[tuple[str, str]]:
    return [("get", reverse("datasets:detail", args=[pk])), ("get", reverse("datasets:status", args=[pk])),
            ("get", reverse("datasets:new_version", args=[pk])), ("post", reverse("datasets:new_version", args=[pk])),
            ("post", reverse("datasets:validate", args=[pk])), ("post", reverse("datasets:archive", args=[pk])),
            ("post", reverse("datasets:delete", args=[pk]))]


def test_other_team_gets_404_everywhere(other_client, team, user):
    ds = services.create_dataset_from_upload(team, user, io.BytesIO(jsonl(toy_rows())), name="secret", filename="t.jsonl",
                                             mapping=TOY_MAPPING)
    for method, url in dataset_urls(ds.pk):
        assert getattr(other_client, method)(url).status_code == 404, url
    assert "secret" not in other_client.get(reverse("datasets:list")).content.decode()
    ds.refresh_from_db()
    assert not ds.archived and Dataset.objects.filter(pk=ds.pk).exists()


def test_anonymous_is_sent_to_login(client, team, user):
    ds = services.create_dataset_from_upload(team, user, io.BytesIO(jsonl(toy_rows())), name="t", filename="t.jsonl",
                                             mapping=TOY_MAPPING)
    urls = dataset_urls(ds.pk) + [("get", reverse("datasets:list")), ("get", reverse("datasets:upload")),
                                  ("post", reverse("datasets:upload"))]
    for method, url in urls:
        r = getattr(client, method)(url)
        assert r.status_code == 302 and r["Location"].startswith(reverse("login")), url


def test_viewer_can_look_but_not_change(client, team, user):
    from django.contrib.auth import get_user_model

    ds = services.create_dataset_from_upload(team, user, io.BytesIO(jsonl(toy_rows())), name="t", filename="t.jsonl",
                                             mapping=TOY_MAPPING)
    viewer = get_user_model().objects.create_user("vic", password="vic-pass-123")
    Membership.objects.create(user=viewer, team=team, role=Membership.Role.VIEWER)
    client.force_login(viewer)
    assert client.get(reverse("datasets:detail", args=[ds.pk])).status_code == 200
    assert client.get(reverse("datasets:upload")).status_code == 403
    assert client.post(reverse("datasets:delete", args=[ds.pk])).status_code == 403
    assert Dataset.objects.filter(pk=ds.pk).exists()


# ---------------------------------------------------------------- who may archive and delete
def team_member(team, name: str, role: str):
    """A user of `team` with `role`, and an API client holding a token of theirs."""
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    from webapp.accounts.models import ApiToken

    u = get_user_model().objects.create_user(name, password=f"{name}-pass-123")
    Membership.objects.create(user=u, team=team, role=role)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(u, 't')[1]}")
    return u, api


def test_members_manage_their_own_datasets_admins_any(client, team, user, api_client):
    """Issue 16: a member could archive or delete another member's dataset. Now only its creator
    or a team admin may (pages and API alike); other members get 403 saying who can."""
    ds = services.create_dataset_from_upload(team, user, io.BytesIO(jsonl(toy_rows())), name="alices",
                                             filename="t.jsonl", mapping=TOY_MAPPING)
    carol, carol_api = team_member(team, "carol", Membership.Role.MEMBER)
    client.force_login(carol)
    page = client.get(reverse("datasets:detail", args=[ds.pk])).content.decode()
    assert reverse("datasets:delete", args=[ds.pk]) not in page and "its creator or a team admin" in page
    for name in ("archive", "delete"):
        r = client.post(reverse(f"datasets:{name}", args=[ds.pk]))
        assert r.status_code == 403 and "Only the member who created alices v1 (alice)" in r.content.decode()
    r = carol_api.post(f"/api/datasets/{ds.pk}/archive/", {"archived": True}, format="json")
    assert r.status_code == 403 and "or an admin of team Alpha" in r.json()["detail"]
    assert carol_api.delete(f"/api/datasets/{ds.pk}/").status_code == 403
    with pytest.raises(PermissionDenied):
        services.delete(ds, carol)
    ds.refresh_from_db()
    assert not ds.archived and ds.path.exists()
    assert client.post(reverse("datasets:new_version", args=[ds.pk]), {}).status_code == 200  # members still edit

    # the creator, through the API: archive, restore; a run makes delete a 409
    r = api_client.post(f"/api/datasets/{ds.pk}/archive/", {"archived": True}, format="json")
    assert r.status_code == 200 and r.json()["archived"] is True
    assert api_client.post(f"/api/datasets/{ds.pk}/archive/", {"archived": False}, format="json").json()["archived"] is False
    run = make_run(team, dataset=ds)
    r = api_client.delete(f"/api/datasets/{ds.pk}/")
    assert r.status_code == 409 and "Archive it instead" in r.json()["detail"]
    run.delete()

    # an admin manages anyone's
    dave, _ = team_member(team, "dave", Membership.Role.ADMIN)
    client.force_login(dave)
    assert reverse("datasets:delete", args=[ds.pk]) in client.get(reverse("datasets:detail", args=[ds.pk])).content.decode()
    assert client.post(reverse("datasets:archive", args=[ds.pk])).status_code == 302
    assert client.post(reverse("datasets:delete", args=[ds.pk])).status_code == 302
    assert not Dataset.objects.filter(pk=ds.pk).exists()


def test_api_archive_and_delete_of_another_team_are_404(other_user, team, user):
    from rest_framework.test import APIClient

    from webapp.accounts.models import ApiToken

    ds = services.create_dataset_from_upload(team, user, io.BytesIO(jsonl(toy_rows())), name="t", filename="t.jsonl",
                                             mapping=TOY_MAPPING)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.issue(other_user, 't')[1]}")
    assert api.post(f"/api/datasets/{ds.pk}/archive/", {}, format="json").status_code == 404
    assert api.delete(f"/api/datasets/{ds.pk}/").status_code == 404
    ds.refresh_from_db()
    assert not ds.archived


# ---------------------------------------------------------------- rows longer than the tokenizer's maximum
def test_rows_longer_than_the_tokenizers_maximum_are_reported(auth_client, team, user, settings):
    """Issue 16: a row whose prompt or answer exceeds model_max_length passed without a word. It
    stays usable (training cuts it), but the report counts such rows and names the first ones."""
    from gft_core.tiny import build_tokenizer

    tok = build_tokenizer()
    tok.model_max_length = 40
    tok_dir = Path(settings.MODEL_ROOTS[0]) / "short-tok"
    tok.save_pretrained(tok_dir)
    rows = toy_rows(12)
    rows[3]["prompt"] = "What is " + " + ".join(["1"] * 60) + "?"
    rows[7]["teachers"] = rows[7]["teachers"] + [" ".join(["step"] * 80)]
    ds = services.create_dataset_from_upload(team, user, io.BytesIO(jsonl(rows)), name="long", filename="long.jsonl",
                                             mapping=TOY_MAPPING, tokenizer=str(tok_dir))
    assert validate_dataset(ds.pk) == "valid"
    ds.refresh_from_db()
    train = ds.report["train"]
    too_long = train["too_long"]
    assert (too_long["limit"], too_long["rows"], too_long["fields"]) == (40, 2, {"prompt": 1, "teacher": 1})
    assert [(e["number"], e["field"]) for e in too_long["examples"]] == [(4, "prompt"), (8, "teacher")]
    assert all(e["tokens"] > 40 for e in too_long["examples"])
    assert "more than the tokenizer's maximum length 40" in too_long["examples"][0]["message"]
    page = auth_client.get(reverse("datasets:detail", args=[ds.pk])).content.decode()
    assert 'id="too-long-train"' in page and "2 rows above 40 tokens" in page and "line 4: prompt of" in page

    # with the tiny tokenizer's 2048 tokens nothing is too long
    services.start_validation(ds, tokenizer="")
    assert validate_dataset(ds.pk) == "valid"
    ds.refresh_from_db()
    assert "too_long" not in ds.report["train"]


def test_broker_down_marks_the_validation_not_queued(auth_client, team, django_capture_on_commit_callbacks, monkeypatch):
    """webapp.dispatch hands the failure to start_validation, which says so instead of a page
    waiting forever for a worker."""
    from celery import Celery

    from webapp import dispatch

    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")  # nothing listens there (Celery reads the env first)
    down = Celery("down", set_as_current=False)
    down.conf.update(dispatch.celery_config(), broker_transport_options={"max_retries": 0})
    monkeypatch.setattr(dispatch, "_app", down)
    with django_capture_on_commit_callbacks(execute=True):
        upload(auth_client, "toy.jsonl", jsonl(toy_rows()))
    ds = Dataset.objects.get()
    assert ds.status == Dataset.Status.INVALID and "could not be queued" in ds.report["fatal"]
    assert "Validate again" in auth_client.get(reverse("datasets:detail", args=[ds.pk])).content.decode()


SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."


def test_prompt_format_is_a_dataset_setting_shown_and_used_by_runs(auth_client, api_client, team, user):
    """System prompt and instruction suffix: set at upload (form and API), kept by a new version,
    shown on the dataset page with the first prompt as sent, and carried into a run's config."""
    r = upload(auth_client, "toy.jsonl", jsonl(toy_rows()), system_prompt="You are a careful solver.",
               instruction_suffix=SUFFIX)
    ds = Dataset.objects.get(team=team, name="toy")
    assert r.status_code == 302 and ds.prompt_format == {"system_prompt": "You are a careful solver.",
                                                         "instruction_suffix": SUFFIX}
    page = auth_client.get(reverse("datasets:detail", args=[ds.pk])).content.decode()
    assert 'id="prompt-format"' in page and "You are a careful solver." in page
    assert "What is 0 + 0?\nPlease reason step by step" in page
    assert services.data_config(ds)["instruction_suffix"] == SUFFIX
    v2 = services.new_dataset_version(ds, user, eval_split="none")
    assert v2.prompt_format == ds.prompt_format  # kept unless changed
    form = auth_client.get(reverse("datasets:new_version", args=[ds.pk])).content.decode()
    assert "You are a careful solver." in form  # the new-version form starts from it

    up = api_client.post("/api/datasets/", {"name": "api", "file": SimpleUploadedFile("a.jsonl", jsonl(toy_rows(3))),
                                            "mapping": json.dumps(TOY_MAPPING),
                                            "prompt_format": json.dumps({"instruction_suffix": SUFFIX})},
                         format="multipart")
    assert up.status_code == 201 and up.json()["prompt_format"] == {"instruction_suffix": SUFFIX}, up.json()
    for bad in ({"suffix": "x"}, {"system_prompt": "x" * 5000}, ["x"]):
        resp = api_client.post("/api/datasets/", {"name": "bad", "file": SimpleUploadedFile("b.jsonl", jsonl(toy_rows(2))),
                                                  "mapping": json.dumps(TOY_MAPPING), "prompt_format": json.dumps(bad)},
                               format="multipart")
        assert resp.status_code == 400 and "prompt_format" in resp.json(), resp.json()
    assert not Dataset.objects.filter(name="bad").exists()
