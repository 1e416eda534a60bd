"""Dataset validation: read every row of a dataset through gft_core and store the report.

Runs in a worker (the Celery task workers.data_tasks.validate_dataset calls `validate`); the web
process only checks the format and the first rows of an upload (services.QUICK_CHECK_ROWS). It
never lets an exception escape: a bad file ends as a report on the row (status invalid), so the
worker stays healthy whatever users upload.
"""
from __future__ import annotations

import logging
import re
import time
from array import array
from collections import Counter
from datetime import datetime
from pathlib import Path

from django.utils import timezone

from gft_core.data import ColumnMapping, DataError, iter_rows, split_eval, to_example

from .models import Dataset

log = logging.getLogger(__name__)

MAX_ERRORS = 20  # offending rows listed in a report
PREVIEW_ROWS = 10
PREVIEW_CHARS = 600
HIST_BINS = 40
TOKENIZE_BATCH = 512
# Hugging Face sets model_max_length to about 1e30 when a tokenizer does not know its maximum.
UNKNOWN_MAX_LENGTH = 10**9

VALIDATION_SOFT_TIME_LIMIT_S = 3600
VALIDATION_TIME_LIMIT_S = 3700  # hard limit of one validation; past it a "validating" row is stale


def _load_tokenizer(path: str):
    if not path:
        from gft_core.tiny import build_tokenizer

        return build_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def max_length(tokenizer) -> int | None:
    """The tokenizer's maximum sequence length (model_max_length), None if it has none."""
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and 0 < limit < UNKNOWN_MAX_LENGTH else None


class _Lengths:
    """Token lengths of a stream of texts, tokenized in batches, summarised as a histogram.

    Texts longer than `limit` tokens are recorded as (row number, tokens) in `too_long`.
    """

    def __init__(self, tokenizer, limit: int | None = None):
        self.tok = tokenizer
        self.limit = limit
        self.values = array("I")
        self.pending: list[str] = []
        self.pending_rows: list[int] = []
        self.too_long: list[tuple[int, int]] = []

    def add(self, text: str, row: int) -> None:
        self.pending.append(text)
        self.pending_rows.append(row)
        if len(self.pending) >= TOKENIZE_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.pending and self.tok is not None:
            ids = self.tok(self.pending, add_special_tokens=False, verbose=False)["input_ids"]
            lengths = [len(x) for x in ids]
            self.values.extend(lengths)
            if self.limit is not None:
                self.too_long += [(row, n) for row, n in zip(self.pending_rows, lengths) if n > self.limit]
        self.pending, self.pending_rows = [], []

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
            # p0..p100: the launch form's truncation warning reads any percentile and the share
            # longer than a run's max_response_len from it (webapp.runs.effective_group)
            "pct": [int(x) for x in np.percentile(v, range(101))],
            "hist": {"lo": 0.0, "hi": float(edges[-1]), "counts": [int(c) for c in counts]},
        }


_FIELD = re.compile(r"field (\w+):")


def clip(text: str | None, n: int = PREVIEW_CHARS) -> str | None:
    """`text` cut to `n` characters (marked with an ellipsis) for previews; a NUL character (which
    Postgres' JSON cannot store) shows as U+FFFD, as in workers/sink.py."""
    if text is None:
        return None
    text = text.replace("\x00", "\ufffd")
    return text if len(text) <= n else text[:n] + " …"


def _too_long(section: dict, lengths: dict[str, _Lengths], limit: int, label: str, unit: str) -> None:
    """Report the rows with a prompt or an answer longer than the tokenizer's maximum length.

    They stay usable (the trainer cuts prompts to max_prompt_len and answers to max_response_len)
    but are no longer passed over in silence: count, fields and the first rows go in the report.
    """
    by_row: dict[int, list[tuple[str, int]]] = {}
    for field, lens in lengths.items():
        for row, n in lens.too_long:
            by_row.setdefault(row, []).append((field, n))
    if not by_row:
        return
    fields: dict[str, int] = {}
    for row in by_row:
        for field, _ in by_row[row]:
            fields[field] = fields.get(field, 0) + 1
    examples = []
    for row in sorted(by_row)[:MAX_ERRORS]:
        field, n = max(by_row[row], key=lambda fn: fn[1])
        examples.append({"number": row, "field": field, "tokens": n, "message":
                         f"{label}, {unit} {row}: field {field}: {n} tokens, more than the tokenizer's maximum length {limit}"})
    section["too_long"] = {"limit": limit, "rows": len(by_row), "fields": fields, "examples": examples}


def _file_columns(path: Path, first_row: dict) -> list[str]:
    """The columns the file has, for the report: a plain Parquet file's from its schema (metadata
    only; its rows hold the mapped columns alone), else the first row's."""
    if [s.lower() for s in path.suffixes][-1:] == [".parquet"]:
        try:
            import pyarrow.parquet as pq

            return [str(c) for c in pq.read_schema(path).names]
        except (OSError, ValueError):  # read_schema failed where the rows did not: show what was read
            pass
    return [str(c) for c in first_row]


def check_file(path: Path, label: str, mapping: ColumnMapping, tokenizer) -> dict:
    """Read every row of `path` through gft_core and summarise it (see the dataset page).

    A row is invalid when gft_core cannot map it or its prompt is empty; rows with a text longer
    than the tokenizer's maximum length (model_max_length) are reported apart (`too_long`).
    """
    unit = "row" if ".parquet" in [s.lower() for s in path.suffixes] else "line"
    section: dict = {"file": label, "unit": unit, "rows": 0, "valid_rows": 0, "invalid_rows": 0,
                     "missing": {}, "errors": [], "preview": [], "columns": [], "empty_expert": 0}
    limit = max_length(tokenizer)
    lengths = {k: _Lengths(tokenizer, limit) for k in ("prompt", "expert", "teacher")}
    teacher_counts = array("I")

    def error(number: int, message: str, field: str = "") -> None:
        section["invalid_rows"] += 1
        if field:
            section["missing"][field] = section["missing"].get(field, 0) + 1
        if len(section["errors"]) < MAX_ERRORS:
            section["errors"].append({"number": number, "field": field, "message": message})

    try:
        # Only the mapped columns (Parquet reads no other column; text formats parse a line at a
        # time whatever it holds), one row at a time: memory stays bounded whatever the file's size.
        for number, row in iter_rows(path, columns=mapping.columns()):
            section["rows"] += 1
            if not section["columns"]:
                section["columns"] = _file_columns(path, row)
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
            lengths["prompt"].add(ex.prompt, number)
            if ex.expert:
                lengths["expert"].add(ex.expert, number)
            for t in ex.teachers:
                lengths["teacher"].add(t, number)
            if len(section["preview"]) < PREVIEW_ROWS:
                section["preview"].append({
                    "number": number, "prompt": clip(ex.prompt), "expert": clip(ex.expert),
                    "teachers": [clip(t, 200) for t in ex.teachers[:4]], "n_teachers": len(ex.teachers),
                    "ground_truth": clip(ex.ground_truth, 200),
                })
    except DataError as e:  # the file itself stops being readable here (bad JSON, bad UTF-8, ...)
        section["fatal"] = str(e).replace(str(path), label)
    if teacher_counts:
        section["teachers"] = {"min": min(teacher_counts), "max": max(teacher_counts),
                               "mean": round(sum(teacher_counts) / len(teacher_counts), 2),
                               "rows_without": sum(1 for c in teacher_counts if c == 0),
                               # rows per teacher-answer count: the share of prompts whose group is short
                               "rows_by_count": {str(k): n for k, n in sorted(Counter(teacher_counts).items())}}
    section["lengths"] = {k: v.summary() for k, v in lengths.items()}  # flushes the last batches
    if limit is not None:
        _too_long(section, lengths, limit, label, unit)
    if section["rows"] == 0 and "fatal" not in section:
        section["fatal"] = f"{label}: no rows."
    return section


def _section_ok(section: dict) -> bool:
    return "fatal" not in section and section["invalid_rows"] == 0 and section["valid_rows"] > 0


def validate(dataset_id: int) -> str:
    """Read every row of a dataset (and its eval file) and store the report; status valid/invalid.

    Returns the new status, or "gone" if the dataset was deleted while the task was queued.
    """
    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is None:
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
    report. Without this sweep they would wait for the broker's visibility timeout (30 days).
    Called by housekeeping."""
    now = timezone.now()
    failed = []
    for ds in Dataset.objects.filter(status=Dataset.Status.VALIDATING):
        try:
            started = datetime.fromisoformat(ds.report["started_at"])
        except (KeyError, TypeError, ValueError):
            continue  # not written by validate(): leave it to a person
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
