"""Datasets and rewards end to end: browser forms -> Postgres -> a real Celery worker (default queue).

Uploads the shared GSM8K train parquet and MATH-500 jsonl through the upload page, waits for the
worker's validation report, then runs the "test this reward" panel on both: every expert answer
must score 1.0. Broken files must end as reports while the same worker keeps serving.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from django.urls import reverse

from tests.browser.support import SHOTS, login
from webapp.datasets.models import Dataset
from webapp.rewards.models import RewardConfig, RewardTest

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
GSM8K_TRAIN = SHARED / "gsm8k" / "train.parquet"
MATH500 = SHARED / "math_eval" / "math_oai.jsonl"

pytestmark = pytest.mark.skipif(not (GSM8K_TRAIN.exists() and MATH500.exists()), reason="shared data not present")


def wait_for(fetch, done, timeout: float = 180.0):
    """Poll fetch() until done(value); generous deadline (a cold worker imports torch/transformers)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {value!r} after {timeout}s")
        time.sleep(0.5)


def dataset_status(pk: int):
    return lambda: Dataset.objects.get(pk=pk).status


def finished(status: str) -> bool:
    return status in (Dataset.Status.VALID, Dataset.Status.INVALID)


def upload(client, path: Path, name: str, preset: str, **extra) -> Dataset:
    with open(path, "rb") as f:
        data = {"name": name, "file": f, "preset": preset, "prompt": "", "teacher_mode": "list",
                "ground_truth_extract": "raw", "eval_split": "none", "eval_seed": "0", "tokenizer": "", **extra}
        r = client.post(reverse("datasets:upload"), data)
    assert r.status_code == 302, r.content.decode()[:3000]
    return Dataset.objects.get(name=name)


def run_reward_test(client, cfg: RewardConfig, ds: Dataset, sample_size: int, **extra) -> RewardTest:
    r = client.post(reverse("rewards:test", args=[cfg.pk]), {"dataset": ds.pk, "sample_size": sample_size, "seed": 0, **extra})
    assert r.status_code == 302
    test = RewardTest.objects.filter(reward_config=cfg, dataset=ds).latest("created_at")
    wait_for(lambda: RewardTest.objects.get(pk=test.pk).status, lambda s: s in ("done", "failed"))
    test.refresh_from_db()
    assert test.status == "done", test.error
    page = client.get(r["Location"]).content.decode()
    assert 'id="reward-hist"' in page
    return test


def test_shared_gsm8k_and_math500_upload_validate_and_score(celery_worker, client, user, team):
    client.force_login(user)
    gsm = upload(client, GSM8K_TRAIN, "gsm8k-train", "gsm8k")
    math = upload(client, MATH500, "math500", "math", eval_split="fraction", eval_fraction="0.1", eval_seed="7")
    assert gsm.file_format == "parquet" and gsm.size_bytes == GSM8K_TRAIN.stat().st_size

    detail = client.get(reverse("datasets:detail", args=[gsm.pk])).content.decode()
    assert "This page updates by itself" in detail or "Validated in" in detail

    for ds in (gsm, math):
        assert wait_for(dataset_status(ds.pk), finished) == "valid", Dataset.objects.get(pk=ds.pk).report
    gsm.refresh_from_db()
    math.refresh_from_db()
    train = gsm.report["train"]
    assert (train["rows"], train["valid_rows"], train["invalid_rows"], train["errors"]) == (7473, 7473, 0, [])
    assert train["columns"] == ["question", "answer"] and train["unit"] == "row"
    assert train["lengths"]["prompt"]["n"] == 7473 and train["lengths"]["expert"]["n"] == 7473
    assert train["lengths"]["teacher"] is None and train["teachers"]["max"] == 0
    assert train["preview"][0]["ground_truth"] == "72"
    assert math.report["train"]["rows"] == 500 and math.report["split"] == {"train_rows": 450, "eval_rows": 50, "fraction": 0.1, "seed": 7}

    page = client.get(reverse("datasets:detail", args=[gsm.pk])).content.decode()
    assert "Validated in" in page and 'id="hist-train"' in page and "Natalia sold clips" in page
    lengths = json.loads(page.split('<script id="lengths-train" type="application/json">', 1)[1].split("</script>", 1)[0])
    assert sum(lengths["prompt"]["hist"]["counts"]) == 7473

    r = client.post(reverse("rewards:create"), {
        "name": "math-verify", "description": "paper default", "spec_json": "", "terms-TOTAL_FORMS": "1",
        "terms-INITIAL_FORMS": "0", "terms-MIN_NUM_FORMS": "1", "terms-MAX_NUM_FORMS": "8",
        "terms-0-reward": "math_verify", "terms-0-weight": "1", "terms-0-math_verify__rel_tol": "0.0001",
        "terms-0-math_verify__percent": "on", "terms-0-math_verify__timeout_s": "3"})
    assert r.status_code == 302
    cfg = RewardConfig.objects.get(name="math-verify")

    test = run_reward_test(client, cfg, gsm, 300, response="She has 5 + 13 = 18 left.\n#### 18", response_ground_truth="18")
    assert test.result["sources"]["expert"]["n"] == 300 and test.result["sources"]["expert"]["min"] == 1.0
    assert test.result["pasted"]["score"] == 1.0
    test = run_reward_test(client, cfg, math, 1000)
    assert test.result["sources"]["expert"]["n"] == 500 and test.result["sources"]["expert"]["min"] == 1.0
    assert celery_worker.popen.poll() is None


def test_broken_files_end_as_reports_and_the_worker_keeps_serving(celery_worker, client, user, team, tmp_path):
    client.force_login(user)
    rows = [{"prompt": f"What is {i}+1?", "expert": f"\\boxed{{{i + 1}}}", "teachers": [f"{i + 1}"], "answer": str(i + 1)}
            for i in range(200)]
    rows[150]["teachers"] = [1, 2]
    bad = tmp_path / "late-errors.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines[170] = '{"prompt": "unterminated'
    bad.write_text("\n".join(lines) + "\n")
    broken = upload(client, bad, "late-errors", "toy")
    assert wait_for(dataset_status(broken.pk), finished) == "invalid"
    broken.refresh_from_db()
    assert [e["number"] for e in broken.report["train"]["errors"]] == [151]
    assert "late-errors.jsonl, line 171: bad JSON" in broken.report["train"]["fatal"]
    page = client.get(reverse("datasets:detail", args=[broken.pk])).content.decode()
    assert "line 171: bad JSON" in page and "Reading stopped" in page

    # A file gone from storage under a queued validation: a report, not a crashed worker.
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps(r) for r in rows[:100]) + "\n")
    vanished = upload(client, good, "vanished", "toy")
    wait_for(dataset_status(vanished.pk), finished)
    vanished.path.unlink()
    client.post(reverse("datasets:validate", args=[vanished.pk]), {"tokenizer": ""})
    assert wait_for(dataset_status(vanished.pk), finished) == "invalid"
    assert "file not found" in Dataset.objects.get(pk=vanished.pk).report["train"]["fatal"]

    # The same worker still validates a good file.
    fine = tmp_path / "fine.jsonl"
    fine.write_text("\n".join(json.dumps(r) for r in rows[:50]) + "\n")
    ok = upload(client, fine, "fine", "toy")
    assert wait_for(dataset_status(ok.pk), finished) == "valid"
    assert Dataset.objects.get(pk=ok.pk).report["train"]["teachers"] == {"min": 1, "max": 1, "mean": 1.0, "rows_without": 0,
                                                                       "rows_by_count": {"1": 50}}
    assert celery_worker.popen.poll() is None


# ---------------------------------------------------------------- in a real browser
@pytest.fixture
def browser_page(live_server_url, chromium, user):
    """A page of the uvicorn-served app, logged in as `user`, and the page errors it records."""
    page = login(chromium, live_server_url, "alice", "alice-pass-123", width=1400)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page, live_server_url, errors


def test_in_a_browser_upload_validate_and_test_a_reward(celery_worker, browser_page, tmp_path):
    page, base, errors = browser_page
    page.goto(f"{base}/datasets/")
    page.click("text=Upload a dataset")
    page.fill("#id_name", "gsm8k-train")
    page.set_input_files("#id_file", str(GSM8K_TRAIN))
    page.select_option("#id_preset", "gsm8k")
    assert page.input_value("#id_prompt") == "question" and page.input_value("#id_ground_truth_extract") == "gsm8k"
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/datasets/*/")
    page.wait_for_selector("#dataset-status[data-status=valid]", timeout=180_000)  # the page polls, then reloads
    page.wait_for_selector("#hist-train .main-svg")  # Plotly drew the length histograms
    assert "7473" in page.inner_text(".stats") and "Natalia sold clips" in page.inner_text(".preview")
    page.screenshot(path=str(SHOTS / "dataset-valid.png"), full_page=True)

    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"prompt": "1+1?", "expert": "2", "teachers": [], "answer": "2"}\n{"prompt": oops}\n')
    page.goto(f"{base}/datasets/upload/")
    page.fill("#id_name", "broken")
    page.set_input_files("#id_file", str(bad))
    page.select_option("#id_preset", "toy")
    page.click("button[type=submit]")
    assert "broken.jsonl, line 2: bad JSON" in page.inner_text(".error-box")
    page.screenshot(path=str(SHOTS / "dataset-upload-error.png"), full_page=True)
    assert not Dataset.objects.filter(name="broken").exists()

    page.goto(f"{base}/rewards/new/")
    page.fill("#id_name", "verify+length")
    page.select_option("#id_terms-0-reward", "math_verify")
    page.click("#add-term")
    page.select_option("#id_terms-1-reward", "length_penalty")
    page.fill("#id_terms-1-weight", "0.5")
    page.fill("#id_terms-1-length_penalty__max_len", "4000")
    assert page.is_hidden("#id_terms-1-math_verify__rel_tol") and page.is_visible("#id_terms-1-length_penalty__penalty")
    page.screenshot(path=str(SHOTS / "reward-form.png"), full_page=True)
    page.click("#reward-form button[type=submit]")
    page.wait_for_url(f"{base}/rewards/*/")
    assert "1 × math_verify" in page.inner_text("main") and "0.5 × length_penalty(max_len=4000" in page.inner_text("main")

    page.select_option("#id_dataset", label="gsm8k-train v1")
    page.fill("#id_sample_size", "200")
    page.fill("#id_response", "18 - 5 = 13, so the answer is 13.")
    page.fill("#id_response_ground_truth", "13")
    page.click("#test button[type=submit]")
    page.wait_for_selector("#test-result[data-status=done]", timeout=120_000)
    page.wait_for_selector("#reward-hist .main-svg")
    assert page.inner_text("tr[data-source=expert] .mean") == "1.0"
    assert page.inner_text("tr[data-source=pasted] .mean").startswith("1.0")
    assert "Every sampled expert and teacher answer scored at least 1." in page.inner_text("#test-result")
    page.screenshot(path=str(SHOTS / "reward-test.png"), full_page=True)
    assert errors == []
    print(f"screenshots in {SHOTS}")
