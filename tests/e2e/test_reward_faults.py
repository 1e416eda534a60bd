"""Faults in scoring with real processes (issue 16): a catastrophic regular expression and answers
whose checking never ends, in training and in "test this reward". The worker stays responsive and
the run carries on.

- Training (a real worker, the real trainer on the small model): a run rewarded by `regex_match`
  with `^(.+)+$!` (exponential for a backtracking engine on any answer of ~30 characters without a
  "!"; RE2 runs it in linear time), then a run rewarded by `math_verify` on a dataset whose ground
  truth is 10^(10^7) (sympy spends seconds on it: every answer with a number runs over the budget).
  Both succeed, their heartbeat never lapses, and `reward/timeouts` is stored at every step: 0 for
  the regex, > 0 for the budget; the run page charts it.
- "Test this reward" on the default queue: the catastrophic regex on 5,000-character answers ends
  in seconds; then a test whose every answer times out stops at REWARD_TEST_MAX_S with its partial
  result, and the same worker serves the next task at once.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db.models import F
from django.db.models.functions import Now
from django.urls import reverse

from tests.conftest import Proc, purge_queues, subprocess_env
from tests.e2e.test_faults import TIMEOUT_S, start_worker
from tests.runs_support import wait_for
from webapp.datasets.models import Dataset
from webapp.datasets.services import mapping_from
from webapp.rewards.models import RewardConfig, RewardTest
from webapp.runs.models import MetricKey, MetricPoint, Run

pytestmark = pytest.mark.django_db(transaction=True)

CATASTROPHIC = "^(.+)+$!"
SLOW_TRUTH = "10^{10^{7}}"  # sympy: ~8 s to compare an answer with it (a 10-million-digit integer)
REWARD_TEST_MAX_S = 3.0  # the default worker's limit of a reward test in these tests


def dataset_file(team, rows: list[dict], name: str) -> Dataset:
    """A validated toy-mapped Dataset holding `rows`."""
    from workers.data_tasks import validate_dataset

    root = Path(settings.ARTIFACT_ROOT)
    path = root / "datasets" / "tests" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = Dataset.objects.create(team=team, name=name, file_path=str(path.relative_to(root)),
                                original_filename=path.name, file_format="jsonl", sha256="0" * 64,
                                size_bytes=path.stat().st_size, mapping=mapping_from("toy"))
    validate_dataset(ds.pk)
    ds.refresh_from_db()
    assert ds.status == Dataset.Status.VALID, ds.report
    return ds


def slow_truth_dataset(team, tiny_assets) -> Dataset:
    """The toy rows with a ground truth that takes sympy seconds to compare with."""
    rows = [json.loads(line) for line in tiny_assets["train"].read_text().splitlines()[:16]]
    return dataset_file(team, [{**r, "answer": SLOW_TRUTH} for r in rows], "slow-truth")


def series(pk: int, name: str) -> list[tuple[int, float]]:
    key = MetricKey.objects.get(name=name)
    return list(MetricPoint.objects.filter(run_id=pk, key_id=key.pk).order_by("step").values_list("step", "value"))


# ---------------------------------------------------------------------------- training
def test_runs_with_a_catastrophic_regex_and_answers_over_the_budget_carry_on(
        transactional_db, tmp_path, api_client, auth_client, team, tiny_assets, launch_inputs):
    ds = slow_truth_dataset(team, tiny_assets)
    regex = RewardConfig.objects.create(team=team, name="regex", spec={"name": "regex_match",
                                                                       "params": {"pattern": CATASTROPHIC}})
    budget = RewardConfig.objects.create(team=team, name="budget", spec={"name": "math_verify",
                                                                         "params": {"timeout_s": 0.3}})
    total = 3
    base = {**launch_inputs, "dataset": ds.pk, "max_steps": total, "checkpoint_interval": 1000}
    purge_queues()
    worker = start_worker(tmp_path, "w1")
    try:
        pks = {}
        # Longer responses for the regex: whole expert and teacher answers (~60 characters).
        for name, cfg, extra in (("regex", regex, {"max_response_len": 48}), ("budget", budget, {})):
            resp = api_client.post("/api/runs/", {**base, **extra, "name": name, "reward_config": cfg.pk}, format="json")
            assert resp.status_code == 201, resp.json()
            pks[name] = resp.json()["id"]
        # Watch the heartbeats (on the database's clock) until both runs end.
        worst_age = 0.0
        deadline = time.monotonic() + 300
        while Run.objects.filter(pk__in=pks.values(), status__in=Run.ACTIVE).exists():
            assert time.monotonic() < deadline, f"runs still active\n{worker.log()[-4000:]}"
            ages = Run.objects.filter(pk__in=pks.values(), status="running", heartbeat_at__isnull=False).annotate(
                age=Now() - F("heartbeat_at")).values_list("age", flat=True)
            worst_age = max([worst_age, *(a.total_seconds() for a in ages)])
            time.sleep(0.2)
    finally:
        worker.stop()
    runs = {name: Run.objects.get(pk=pk) for name, pk in pks.items()}
    for run in runs.values():
        assert run.status == "succeeded", (run.name, run.error, run.log_tail)
        assert run.step == total and run.attempt == 1
    assert worst_age < TIMEOUT_S, worst_age  # it beats every 0.5 s; housekeeping fails a run at 2 s

    regex_timeouts = series(runs["regex"].pk, "reward/timeouts")
    assert regex_timeouts == [(s, 0.0) for s in range(1, total + 1)]
    assert max(v for _, v in series(runs["regex"].pk, "time/reward")) < 5  # linear time, not exponential
    budget_timeouts = series(runs["budget"].pk, "reward/timeouts")
    assert [s for s, _ in budget_timeouts] == list(range(1, total + 1))
    # Every expert and teacher answer holds a number (cut to 12 tokens: "First 8 * 9 = 72"): 4 a step.
    assert all(v >= 4 for _, v in budget_timeouts), budget_timeouts

    # The run page charts it, and its series come back.
    pk = runs["budget"].pk
    page = auth_client.get(reverse("runs:detail", args=[pk])).content.decode()
    assert "reward_timeouts" in page and "Responses whose scoring timed out" in page
    data = auth_client.get(reverse("runs:series"), {"runs": str(pk), "keys": "reward/timeouts"}).json()
    assert "reward/timeouts" in json.dumps(data["series"])


# ---------------------------------------------------------------------------- test this reward
def start_default_worker(tmp_path: Path) -> Proc:
    """A production-like worker on the default queue, with a short limit on reward tests."""
    args = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "default", "-n", "d1@%h",
            "--concurrency", "1", "--prefetch-multiplier", "1", "--max-tasks-per-child", "1",
            "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    proc = Proc(args, tmp_path / "worker-d1.log", subprocess_env(REWARD_TEST_MAX_S=str(REWARD_TEST_MAX_S)))
    proc.wait_for_log("ready.", timeout=120)
    return proc


def reward_test(client, cfg: RewardConfig, ds: Dataset, worker: Proc, sample_size: int) -> tuple[RewardTest, float]:
    """POST the panel's form, wait for the worker's result; (the test, seconds from submit to result)."""
    t0 = time.monotonic()
    r = client.post(reverse("rewards:test", args=[cfg.pk]), {"dataset": ds.pk, "sample_size": sample_size, "seed": 0})
    assert r.status_code == 302
    test = RewardTest.objects.filter(reward_config=cfg, dataset=ds).latest("created_at")
    wait_for(lambda: RewardTest.objects.get(pk=test.pk).status in ("done", "failed"), timeout=120,
             what=f"reward test {test.pk}", on_timeout=lambda: worker.log()[-4000:])
    took = time.monotonic() - t0
    test.refresh_from_db()
    assert test.status == "done", test.error
    return test, took


def test_reward_tests_with_a_catastrophic_regex_or_endless_checks_keep_the_default_worker_serving(
        transactional_db, tmp_path, auth_client, team, tiny_assets):
    long_answers = dataset_file(team, [
        {"prompt": f"Say a lot ({i}).", "expert": "a" * 5000, "teachers": ["b" * 5000, "ab" * 2500], "answer": "a"}
        for i in range(20)], "long-answers")
    slow = slow_truth_dataset(team, tiny_assets)
    regex = RewardConfig.objects.create(team=team, name="regex", spec={"name": "regex_match",
                                                                       "params": {"pattern": CATASTROPHIC}})
    budget = RewardConfig.objects.create(team=team, name="budget", spec={"name": "math_verify",
                                                                         "params": {"timeout_s": 1.0}})
    purge_queues()
    worker = start_default_worker(tmp_path)
    try:
        test, took = reward_test(auth_client, regex, long_answers, worker, 20)
        result = test.result
        assert result["sources"]["expert"]["n"] == 20 and result["sources"]["teacher"]["n"] == 40
        assert result["sources"]["expert"]["max"] == 0.0 and result["timeouts"] == 0 and "stopped" not in result
        assert result["seconds"] < 2, result["seconds"]  # 60 answers of 5,000 characters, linear time
        assert took < 30, took  # queue + a fresh pool process + scoring

        # Every answer runs over its 1 s budget: 16 rows x 4 answers would hold the worker ~64 s.
        test, took = reward_test(auth_client, budget, slow, worker, 16)
        stopped = test.result["stopped"]
        assert stopped["after_s"] == REWARD_TEST_MAX_S and 1 <= stopped["scored"] < stopped["answers"] == 64
        assert test.result["timeouts"] == stopped["scored"]
        assert test.result["seconds"] < REWARD_TEST_MAX_S + 1.0 + 2, test.result["seconds"]  # + one budget
        assert took < 30, took

        # The same worker serves the next task at once.
        test, took = reward_test(auth_client, regex, long_answers, worker, 5)
        assert test.result["sources"]["expert"]["n"] == 5 and took < 30, took
        assert worker.popen.poll() is None
    finally:
        worker.stop()
    page = auth_client.get(reverse("rewards:detail", args=[budget.pk]) + "?test=" + str(
        RewardTest.objects.filter(reward_config=budget).latest("created_at").pk)).content.decode()
    assert 'id="test-stopped"' in page
