""""Test this reward": score a sample of a dataset's expert and teacher answers with a reward spec.

Runs in a worker (the Celery task workers.data_tasks.test_reward calls `run_test`): a reward may
load a model or spend seconds per answer in time-limited sympy checks, so scoring stops after
settings.REWARD_TEST_MAX_S with a partial result that says so. It never lets an exception
escape: a bad spec, a missing ground truth or an unreadable file ends as an error on the test.
"""
from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from gft_core.data import ColumnMapping, DataError, Example, iter_rows, to_example
from gft_core.rewards import build_reward

from webapp.datasets.validation import clip

from .models import RewardTest
from .services import MAX_SAMPLE

log = logging.getLogger(__name__)

# Backstops of the Celery task; a test ends by itself after settings.REWARD_TEST_MAX_S of scoring.
TEST_SOFT_TIME_LIMIT_S = 900
TEST_TIME_LIMIT_S = 960


def sample_examples(path: Path, mapping: ColumnMapping, n: int, seed: int) -> tuple[list[Example], int]:
    """A seeded uniform sample (reservoir) of n mappable rows in file order, and the rows seen."""
    rng = random.Random(seed)
    sample: list[Example] = []
    seen = 0
    for number, row in iter_rows(path, columns=mapping.columns()):
        try:
            ex = to_example(row, number, mapping, path)
        except DataError:
            continue
        seen += 1
        if len(sample) < n:
            sample.append(ex)
        else:
            j = rng.randrange(seen)
            if j < n:
                sample[j] = ex
    sample.sort(key=lambda e: e.row)
    return sample, seen


def _summary(scores: list[float]) -> dict | None:
    if not scores:
        return None
    finite = [s for s in scores if math.isfinite(s)]
    return {"n": len(scores), "mean": round(sum(finite) / max(len(finite), 1), 4), "min": min(finite, default=None),
            "max": max(finite, default=None), "share_at_least_1": round(sum(s >= 1.0 for s in finite) / len(scores), 4),
            "values": [round(s, 4) for s in scores]}


def score_sample(spec: dict, examples: list[Example], response: str = "", response_ground_truth: str = "",
                 *, max_seconds: float | None = None) -> dict:
    """Score the examples' expert and teacher answers (and a pasted response) with the reward `spec`.

    One answer at a time (the pasted response first, then row by row), so that past `max_seconds`
    in all the test stops with what it has scored (`result["stopped"]` says how much): a reward
    whose every answer runs out of its per-answer budget then holds the worker for max_seconds
    plus at most one budget, not sample size x budget. `result["timeouts"]`: answers whose scoring
    ran over the reward's budget (scored 0).
    """
    fn = build_reward(spec)
    deadline = math.inf if max_seconds is None else time.monotonic() + max_seconds
    result: dict = {}
    if response.strip():
        gt = response_ground_truth.strip() or None  # its own: a sampled row's answer is another question's
        prompt = examples[0].prompt if examples else ""
        result["pasted"] = {"score": fn([response], [gt], [prompt])[0], "ground_truth": gt}
    answers = [(i, source, text) for i, e in enumerate(examples)
               for source, text in ([("expert", e.expert)] if e.expert is not None else []) + [("teacher", t) for t in e.teachers]]
    by_row_expert: dict[int, float] = {}
    by_row_teacher: dict[int, list[float]] = {}
    expert_scores: list[float] = []
    teacher_scores: list[float] = []
    for n, (i, source, text) in enumerate(answers):
        if time.monotonic() >= deadline:
            result["stopped"] = {"after_s": max_seconds, "scored": n, "answers": len(answers)}
            break
        e = examples[i]
        score = fn([text], [e.ground_truth], [e.prompt])[0]
        if source == "expert":
            by_row_expert[i] = score
            expert_scores.append(score)
        else:
            by_row_teacher.setdefault(i, []).append(round(score, 4))
            teacher_scores.append(score)
    reached = set(by_row_expert) | set(by_row_teacher)
    rows = [{"number": e.row, "ground_truth": clip(e.ground_truth, 200), "prompt": clip(e.prompt, 200),
             "expert_tail": (e.expert or "")[-240:], "expert": by_row_expert.get(i), "teachers": by_row_teacher.get(i, [])}
            for i, e in enumerate(examples) if i in reached or "stopped" not in result]
    # Failures first: what a user opens this panel to find.
    rows.sort(key=lambda r: (r["expert"] is None, r["expert"] if r["expert"] is not None else 0.0, r["number"]))
    result.update(sources={"expert": _summary(expert_scores), "teacher": _summary(teacher_scores)}, rows=rows,
                  timeouts=fn.timeouts)
    return result


def run_test(test_id: int) -> str:
    """Fill a RewardTest: sample the dataset, score expert/teacher answers and the pasted response.

    Returns the new status, or "gone" if the test was deleted while the task was queued.
    """
    test = RewardTest.objects.select_related("reward_config", "dataset").filter(pk=test_id).first()
    if test is None:
        return "gone"
    RewardTest.objects.filter(pk=test_id).update(status=RewardTest.Status.RUNNING)
    t0 = time.monotonic()
    dataset = test.dataset
    try:
        examples, seen = sample_examples(dataset.path, ColumnMapping(**dataset.mapping),
                                         min(test.sample_size, MAX_SAMPLE), test.seed)
        result = score_sample(test.reward_config.spec, examples, test.response, test.response_ground_truth,
                              max_seconds=settings.REWARD_TEST_MAX_S)
        result.update(sampled=len(examples), rows_seen=seen, seconds=round(time.monotonic() - t0, 2))
        status, error = RewardTest.Status.DONE, ""
    except Exception as e:  # a bad spec, a missing ground truth, an unreadable file: report, not crash
        log.info("reward test %s failed: %s", test_id, e)
        result, status = {"seconds": round(time.monotonic() - t0, 2)}, RewardTest.Status.FAILED
        error = f"{type(e).__name__}: {e}".replace(str(dataset.path), dataset.original_filename)
    RewardTest.objects.filter(pk=test_id).update(status=status, result=result, error=error, finished_at=timezone.now())
    return status
