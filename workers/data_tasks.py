"""Default-queue tasks for datasets and rewards: validation and "test this reward".

Both read files through gft_core.data and score through gft_core.rewards; neither ever lets an
exception escape: a bad file or a bad spec ends as a report on the row (status invalid / failed),
so the worker stays healthy whatever users upload.
"""
from __future__ import annotations

import logging
import math
import random
import re
import time
from array import array
from pathlib import Path

from django.utils import timezone

from gft_core.data import ColumnMapping, DataError, Example, iter_rows, split_eval, to_example
# The project's app (not shared_task): a web process that queues these tasks must publish to the
# configured broker even if nothing else imported workers.celery yet.
from workers.celery import app

log = logging.getLogger(__name__)

MAX_ERRORS = 20  # offending rows listed in a report
PREVIEW_ROWS = 10
PREVIEW_CHARS = 600
HIST_BINS = 40
TOKENIZE_BATCH = 512
MAX_REWARD_SAMPLE = 1000


# --- validation ------------------------------------------------------------------------------

def _load_tokenizer(path: str):
    if not path:
        from gft_core.tiny import build_tokenizer

        return build_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


class _Lengths:
    """Token lengths of a stream of texts, tokenized in batches, summarised as a histogram."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.values = array("I")
        self.pending: list[str] = []

    def add(self, text: str) -> None:
        self.pending.append(text)
        if len(self.pending) >= TOKENIZE_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.pending and self.tok is not None:
            ids = self.tok(self.pending, add_special_tokens=False, verbose=False)["input_ids"]
            self.values.extend(len(x) for x in ids)
        self.pending = []

    def summary(self) -> dict | None:
        self.flush()
        if not self.values:
            return None
        import numpy as np

        v = np.frombuffer(self.values, dtype=np.uint32).astype(np.int64)
        hi = int(v.max())
        counts, edges = np.histogram(v, bins=min(HIST_BINS, max(hi, 1)), range=(0, max(hi, 1)))
        return {
            "n": int(v.size), "mean": round(float(v.mean()), 1), "min": int(v.min()), "max": hi,
            "p50": int(np.percentile(v, 50)), "p90": int(np.percentile(v, 90)), "p99": int(np.percentile(v, 99)),
            "hist": {"lo": 0.0, "hi": float(edges[-1]), "counts": [int(c) for c in counts]},
        }


_FIELD = re.compile(r"field (\w+):")


def _clip(text: str | None, n: int = PREVIEW_CHARS) -> str | None:
    if text is None:
        return None
    return text if len(text) <= n else text[:n] + " …"


def check_file(path: Path, label: str, mapping: ColumnMapping, tokenizer) -> dict:
    """Read every row of `path` through gft_core and summarise it (see the dataset page)."""
    unit = "row" if ".parquet" in [s.lower() for s in path.suffixes] else "line"
    section: dict = {"file": label, "unit": unit, "rows": 0, "valid_rows": 0, "invalid_rows": 0,
                     "missing": {}, "errors": [], "preview": [], "columns": [], "empty_expert": 0}
    lengths = {"prompt": _Lengths(tokenizer), "expert": _Lengths(tokenizer), "teacher": _Lengths(tokenizer)}
    teacher_counts = array("I")

    def error(number: int, message: str, field: str = "") -> None:
        section["invalid_rows"] += 1
        if field:
            section["missing"][field] = section["missing"].get(field, 0) + 1
        if len(section["errors"]) < MAX_ERRORS:
            section["errors"].append({"number": number, "field": field, "message": message})

    try:
        for number, row in iter_rows(path):
            section["rows"] += 1
            if not section["columns"]:
                section["columns"] = [str(c) for c in row]
            try:
                ex = to_example(row, number, mapping, label)
            except DataError as e:
                m = _FIELD.search(str(e))
                error(number, str(e).replace(str(path), label), m.group(1) if m else "")
                continue
            if not ex.prompt.strip():
                error(number, f"{label}, {unit} {number}: field prompt: the prompt is empty", "prompt")
                continue
            section["valid_rows"] += 1
            if mapping.expert is not None and not (ex.expert or "").strip():
                section["empty_expert"] += 1
            teacher_counts.append(len(ex.teachers))
            lengths["prompt"].add(ex.prompt)
            if ex.expert:
                lengths["expert"].add(ex.expert)
            for t in ex.teachers:
                lengths["teacher"].add(t)
            if len(section["preview"]) < PREVIEW_ROWS:
                section["preview"].append({
                    "number": number, "prompt": _clip(ex.prompt), "expert": _clip(ex.expert),
                    "teachers": [_clip(t, 200) for t in ex.teachers[:4]], "n_teachers": len(ex.teachers),
                    "ground_truth": _clip(ex.ground_truth, 200),
                })
    except DataError as e:  # the file itself stops being readable here (bad JSON, bad UTF-8, ...)
        section["fatal"] = str(e).replace(str(path), label)
    if teacher_counts:
        section["teachers"] = {"min": min(teacher_counts), "max": max(teacher_counts),
                               "mean": round(sum(teacher_counts) / len(teacher_counts), 2),
                               "rows_without": sum(1 for c in teacher_counts if c == 0)}
    section["lengths"] = {k: v.summary() for k, v in lengths.items()}
    if section["rows"] == 0 and "fatal" not in section:
        section["fatal"] = f"{label}: no rows."
    return section


def _section_ok(section: dict) -> bool:
    return "fatal" not in section and section["invalid_rows"] == 0 and section["valid_rows"] > 0


VALIDATION_TIME_LIMIT_S = 3700  # hard limit of one validation; past it a "validating" row is stale


@app.task(name="workers.data_tasks.validate_dataset", soft_time_limit=3600, time_limit=VALIDATION_TIME_LIMIT_S)
def validate_dataset(dataset_id: int) -> str:
    """Read every row of a dataset (and its eval file) and store the report; status valid/invalid."""
    from webapp.datasets.models import Dataset

    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is None:  # deleted while queued
        return "gone"
    Dataset.objects.filter(pk=dataset_id).update(status=Dataset.Status.VALIDATING,
                                                 report={"started_at": timezone.now().isoformat()})
    t0 = time.monotonic()
    report: dict = {"started_at": timezone.now().isoformat(), "tokenizer": dataset.tokenizer or "tiny"}
    try:
        try:
            tokenizer = _load_tokenizer(dataset.tokenizer)
        except Exception as e:  # lengths are a report, not a property of the data: warn and go on
            tokenizer = None
            report["tokenizer_error"] = f"cannot load tokenizer {dataset.tokenizer!r}: {e}"
        mapping = ColumnMapping(**dataset.mapping)
        report["train"] = check_file(dataset.path, dataset.original_filename, mapping, tokenizer)
        ok = _section_ok(report["train"])
        if dataset.eval_split == Dataset.EvalSplit.FILE and dataset.eval_path is not None:
            report["eval"] = check_file(dataset.eval_path, dataset.eval_original_filename or "eval file", mapping, tokenizer)
            ok = ok and _section_ok(report["eval"])
        elif dataset.eval_split == Dataset.EvalSplit.FRACTION and dataset.eval_fraction:
            n = report["train"]["valid_rows"]
            try:
                # split_eval only needs a sequence's length and order: the row indices stand in for Examples
                train, held_out = split_eval(range(n), dataset.eval_fraction, dataset.eval_seed)  # type: ignore[arg-type]
                report["split"] = {"train_rows": len(train), "eval_rows": len(held_out),
                                   "fraction": dataset.eval_fraction, "seed": dataset.eval_seed}
            except DataError as e:
                report["split"] = {"error": str(e)}
                ok = False
        status = Dataset.Status.VALID if ok else Dataset.Status.INVALID
    except Exception as e:  # never let a bad file take the task down without a report
        log.exception("validation of dataset %s failed", dataset_id)
        report["fatal"] = f"validation failed: {type(e).__name__}: {e}"
        status = Dataset.Status.INVALID
    report["seconds"] = round(time.monotonic() - t0, 2)
    report["finished_at"] = timezone.now().isoformat()
    Dataset.objects.filter(pk=dataset_id).update(status=status, report=report)
    return status


def fail_stale_validations(timeout_s: float = VALIDATION_TIME_LIMIT_S + 60) -> list[int]:
    """Mark invalid the datasets still "validating" longer than any validation may run: their
    worker was killed (a task past its hard time limit, or a machine gone) before it wrote a
    report. Without this sweep they would wait for the broker's visibility timeout (30 days)."""
    from datetime import datetime

    from webapp.datasets.models import Dataset

    now = timezone.now()
    failed = []
    for ds in Dataset.objects.filter(status=Dataset.Status.VALIDATING):
        try:
            started = datetime.fromisoformat(ds.report["started_at"])
        except (KeyError, TypeError, ValueError):
            continue  # not written by validate_dataset: leave it to a person
        silent = (now - started).total_seconds()
        if silent <= timeout_s:
            continue
        fatal = (f"Validation started at {started:%Y-%m-%d %H:%M} UTC and gave no result for {int(silent)} s "
                 f"(limit {int(timeout_s)} s): the worker was stopped or its machine is gone. Validate again.")
        # only if still validating: a late result that landed meanwhile wins
        if Dataset.objects.filter(pk=ds.pk, status=Dataset.Status.VALIDATING).update(
                status=Dataset.Status.INVALID, report={**ds.report, "fatal": fatal}):
            failed.append(ds.pk)
            log.warning("dataset %s: %s", ds.pk, fatal)
    return failed


# --- "test this reward" ----------------------------------------------------------------------

def sample_examples(path: Path, mapping: ColumnMapping, n: int, seed: int) -> tuple[list[Example], int]:
    """A seeded uniform sample (reservoir) of n mappable rows in file order, and the rows seen."""
    rng = random.Random(seed)
    sample: list[Example] = []
    seen = 0
    for number, row in iter_rows(path):
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


def score_sample(spec: dict, examples: list[Example], response: str = "", response_ground_truth: str = "") -> dict:
    """Score the examples' expert and teacher answers (and a pasted response) with the reward `spec`."""
    from gft_core.rewards import build_reward

    fn = build_reward(spec)
    rows = []
    expert_idx = [i for i, e in enumerate(examples) if e.expert is not None]
    expert_scores = fn([examples[i].expert for i in expert_idx], [examples[i].ground_truth for i in expert_idx],
                       [examples[i].prompt for i in expert_idx]) if expert_idx else []
    by_row_expert = dict(zip(expert_idx, expert_scores))
    flat = [(i, t) for i, e in enumerate(examples) for t in e.teachers]
    teacher_scores = fn([t for _, t in flat], [examples[i].ground_truth for i, _ in flat],
                        [examples[i].prompt for i, _ in flat]) if flat else []
    by_row_teacher: dict[int, list[float]] = {}
    for (i, _), s in zip(flat, teacher_scores):
        by_row_teacher.setdefault(i, []).append(round(s, 4))
    for i, e in enumerate(examples):
        rows.append({
            "number": e.row, "ground_truth": _clip(e.ground_truth, 200), "prompt": _clip(e.prompt, 200),
            "expert_tail": (e.expert or "")[-240:], "expert": by_row_expert.get(i), "teachers": by_row_teacher.get(i, []),
        })
    # Failures first: what a user opens this panel to find.
    rows.sort(key=lambda r: (r["expert"] is None, r["expert"] if r["expert"] is not None else 0.0, r["number"]))
    result: dict = {"sources": {"expert": _summary(expert_scores), "teacher": _summary(teacher_scores)}, "rows": rows}
    if response.strip():
        gt = response_ground_truth.strip() or (examples[0].ground_truth if examples else None)
        prompt = examples[0].prompt if examples else ""
        result["pasted"] = {"score": fn([response], [gt], [prompt])[0], "ground_truth": gt}
    return result


@app.task(name="workers.data_tasks.test_reward", soft_time_limit=900, time_limit=960)
def test_reward(test_id: int) -> str:
    """Fill a RewardTest: sample the dataset, score expert/teacher answers and the pasted response."""
    from webapp.rewards.models import RewardTest

    test = RewardTest.objects.select_related("reward_config", "dataset").filter(pk=test_id).first()
    if test is None:
        return "gone"
    RewardTest.objects.filter(pk=test_id).update(status=RewardTest.Status.RUNNING)
    t0 = time.monotonic()
    dataset = test.dataset
    try:
        examples, seen = sample_examples(dataset.path, ColumnMapping(**dataset.mapping),
                                         min(test.sample_size, MAX_REWARD_SAMPLE), test.seed)
        result = score_sample(test.reward_config.spec, examples, test.response, test.response_ground_truth)
        result.update(sampled=len(examples), rows_seen=seen, seconds=round(time.monotonic() - t0, 2))
        status, error = RewardTest.Status.DONE, ""
    except Exception as e:  # a bad spec, a missing ground truth, an unreadable file: report, not crash
        log.info("reward test %s failed: %s", test_id, e)
        result, status = {"seconds": round(time.monotonic() - t0, 2)}, RewardTest.Status.FAILED
        error = f"{type(e).__name__}: {e}".replace(str(dataset.path), dataset.original_filename)
    RewardTest.objects.filter(pk=test_id).update(status=status, result=result, error=error, finished_at=timezone.now())
    return status
