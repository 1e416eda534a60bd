"""Teacher answers for a dataset (issue 18): generate them with a teacher model, or join answers
made elsewhere, into a new dataset file whose teacher column feeds GFT's group (expert + teachers
+ self samples, GFT.md).

Generation goes through the trainer's batched rollout engine (gft_core.rollout.generate_samples,
k samples of a prompt sharing its KV cache), like gft_core.benchmarks. Finished prompts are
appended to a partial JSONL (one line per prompt, keyed by the dataset row number) and flushed
after every batch, so a resumed job skips them and never duplicates an answer. A filter keeps
only answers the reward scores >= a threshold, retrying a prompt's missing answers a few rounds.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from gft_core.benchmarks import _float, _int, check_reward, settings_from_dict
from gft_core.data import ColumnMapping, DataError, Example, iter_rows, to_example
from gft_core.errors import ConfigError

MAX_K = 64
MAX_NEW_TOKENS = 32768
MAX_RETRIES = 16
TEACHER_COLUMN = "teacher_answers"
ROW_KEYS = ("row", "row_id")  # an import keyed by the dataset's 1-based row number
ANSWER_COLUMNS = ("answers", "answer", "response", "teacher")
EXAMPLES_SHOWN = 5


class TeacherStopped(Exception):
    """stop() returned true between two batches: the job was cancelled (finished prompts are kept)."""


@dataclass
class TeacherSettings:
    """How teacher answers are generated; invalid values raise ConfigError naming the field."""

    k: int = 4  # answers kept per prompt
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 1024
    use_chat_template: bool = True  # the teacher model's template, when it has one (as in training)
    reward: dict = field(default_factory=lambda: {"name": "math_verify", "params": {}})  # scores accuracy (and the filter)
    filter: bool = False  # keep only answers with reward >= threshold
    threshold: float = 1.0
    max_retries: int = 2  # extra rounds for prompts short of k kept answers (filter only)
    seed: int = 0
    batch_size: int = 16  # prompts per generation batch (x k sequences)
    max_prompt_len: int = 2048

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "TeacherSettings":
        _int("k", self.k, 1, MAX_K)
        self.temperature = _float("temperature", self.temperature, 0.0, 10.0)
        self.top_p = _float("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        _int("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        _int("max_retries", self.max_retries, 0, MAX_RETRIES)
        _int("seed", self.seed, 0, 2**32 - 1)
        _int("batch_size", self.batch_size, 1, 4096)
        _int("max_prompt_len", self.max_prompt_len, 1, 131072)
        self.threshold = _float("threshold", self.threshold, -1e6, 1e6)
        for name in ("use_chat_template", "filter"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "must be true or false")
        check_reward(self.reward)
        return self

    @classmethod
    def from_dict(cls, d: dict) -> "TeacherSettings":
        return settings_from_dict(cls, d, "teacher")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self, model: str) -> str:
        """The lineage line: "4 answers per prompt from <model>, temperature 0.7, kept if math_verify >= 1"."""
        text = f"{self.k} answer{'s' if self.k != 1 else ''} per prompt from {model}, temperature {self.temperature:g}"
        if self.top_p < 1:
            text += f", top-p {self.top_p:g}"
        if self.filter:
            text += f", kept if {self.reward.get('name', '?')} >= {self.threshold:g} ({self.max_retries} retries)"
        return text


# --- the partial file -------------------------------------------------------------------------

def read_partial(path: str | Path) -> dict[int, dict]:
    """Finished prompts of an earlier attempt: {row number: record}. A last line cut by a dying
    worker is dropped and the file truncated to the last whole line, so appending continues cleanly."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    done: dict[int, dict] = {}
    for line in data[:end].splitlines():
        if line.strip():
            rec = json.loads(line)
            done[int(rec["row"])] = rec
    return done


def _append(path: Path, records: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


# --- generation ---------------------------------------------------------------------------------

def generate_teacher_answers(model: Any, tokenizer: Any, examples: Sequence[Example], settings: TeacherSettings | dict,
                             partial_path: str | Path, *, progress: Callable[[int, int], Any] | None = None,
                             stop: Callable[[], bool] | None = None, prompt_format: Any = None) -> dict[int, dict]:
    """Up to k answers for every example not yet in `partial_path`, appended there batch by batch
    (records {row, answers, scores, generated}); returns every record, earlier ones included.
    `progress(done, total)` after each batch, `stop()` before each (TeacherStopped when true).
    Prompts are encoded as in training (policy.encode_prompt) with `prompt_format`: the dataset's
    system prompt and suffix (PromptFormat); its chat_template is settings.use_chat_template."""
    import torch

    from gft_core.policy import PromptFormat, derive_seed, encode_prompt
    from gft_core.rewards import build_reward
    from gft_core.rollout import generate_samples

    s = settings if isinstance(settings, TeacherSettings) else TeacherSettings.from_dict(settings)
    partial_path = Path(partial_path)
    partial_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_partial(partial_path)
    todo = [e for e in examples if e.row not in done]
    total = len(examples)
    if progress is not None:
        progress(total - len(todo), total)
    if not todo:
        return done
    reward = build_reward(s.reward)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    # Seeded by the rows still to do: a resumed job draws fresh samples, a rerun the same ones.
    generator.manual_seed(derive_seed(s.seed, "teachers", len(done)))
    fmt = (prompt_format or PromptFormat()).override(use_chat_template=s.use_chat_template)
    ids = {e.row: encode_prompt(tokenizer, e.prompt, max_len=s.max_prompt_len, chat_template=fmt) for e in todo}
    todo.sort(key=lambda e: len(ids[e.row]))  # similar lengths share a batch: little left padding
    try:
        for start in range(0, len(todo), s.batch_size):
            if stop is not None and stop():
                raise TeacherStopped(f"stopped after {len(done)} of {total} prompts")
            batch = todo[start:start + s.batch_size]
            kept: dict[int, list[tuple[str, float]]] = {e.row: [] for e in batch}
            generated = {e.row: 0 for e in batch}
            rounds = 1 + (s.max_retries if s.filter else 0)
            for _ in range(rounds):
                short = [e for e in batch if len(kept[e.row]) < s.k]
                if not short:
                    break
                samples = generate_samples(model, tokenizer, [ids[e.row] for e in short], n=s.k,
                                           max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                                           top_p=s.top_p, batch_size=len(short) * s.k, generator=generator)
                texts = [x.text for ss in samples for x in ss]
                truths = [e.ground_truth for e in short for _ in range(s.k)]
                prompts = [e.prompt for e in short for _ in range(s.k)]
                scores = reward(texts, truths, prompts) if any(t is not None for t in truths) or s.filter else [None] * len(texts)
                for i, e in enumerate(short):
                    generated[e.row] += s.k
                    for text, score in zip(texts[i * s.k:(i + 1) * s.k], scores[i * s.k:(i + 1) * s.k]):
                        if len(kept[e.row]) < s.k and (not s.filter or (score is not None and score >= s.threshold)):
                            kept[e.row].append((text, score))
            records = [{"row": e.row, "answers": [t for t, _ in kept[e.row]], "scores": [sc for _, sc in kept[e.row]],
                        "generated": generated[e.row]} for e in batch]
            _append(partial_path, records)
            done.update((r["row"], r) for r in records)
            if progress is not None:
                progress(len(done), total)
    finally:
        close = getattr(getattr(reward, "scorer", None), "close", None)
        if close is not None:
            close()
    return done


def teacher_stats(records: dict[int, dict], *, filtered: bool) -> dict:
    """What the lineage shows: answers kept, prompts without any, accuracy of the generated answers
    (share scoring >= 1; before the filter when one was used)."""
    kept = sum(len(r["answers"]) for r in records.values())
    scored = [sc for r in records.values() for sc in r["scores"] if sc is not None]
    return {"prompts": len(records), "answers": kept, "generated": sum(r["generated"] for r in records.values()),
            "prompts_without": sum(1 for r in records.values() if not r["answers"]),
            "accuracy": (sum(1 for sc in scored if sc >= 1) / len(scored)) if scored and not filtered else None,
            "keep_rate": (kept / max(1, sum(r["generated"] for r in records.values()))) if filtered else None}


# --- writing the new dataset file ------------------------------------------------------------------

def teacher_column(columns: Sequence[str]) -> str:
    """A column name for the joined answers that the file does not use yet."""
    name, n = TEACHER_COLUMN, 1
    while name in columns:
        n += 1
        name = f"{TEACHER_COLUMN}_{n}"
    return name


def write_with_teachers(source: str | Path, mapping: ColumnMapping, answers: dict[int, list[str]],
                        out_path: str | Path, *, column: str | None = None) -> tuple[ColumnMapping, dict]:
    """Write every row of `source` (all its columns) to `out_path` (JSONL) with one list column of
    teacher answers: the row's existing teachers (per `mapping`), then answers[row number].
    `column` names it (default: a name the file does not use). Returns the new mapping (teacher =
    that column) and {"rows", "rows_with_new", "existing", "added", "column"}."""
    source, out_path = Path(source), Path(out_path)
    rows = list(iter_rows(source))  # bounded per row; datasets are held in memory by the trainer too
    column = column or teacher_column(list(rows[0][1]) if rows else [])
    stats = {"rows": 0, "rows_with_new": 0, "existing": 0, "added": 0, "column": column}
    tmp = out_path.with_name(out_path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for number, row in rows:
            existing = to_example(row, number, mapping, source).teachers
            new = list(answers.get(number) or [])
            stats["rows"] += 1
            stats["existing"] += len(existing)
            stats["added"] += len(new)
            stats["rows_with_new"] += bool(new)
            f.write(json.dumps({**row, column: existing + new}, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, out_path)
    return dataclasses.replace(mapping, teacher=column), stats


# --- importing answers made elsewhere -------------------------------------------------------------

def _answers_of(row: dict, where: str) -> list[str]:
    column = next((c for c in ANSWER_COLUMNS if c in row), None)
    if column is None:
        raise DataError(f"{where}: no answer column ({', '.join(ANSWER_COLUMNS)}); columns found: {', '.join(sorted(row))}")
    value = row[column]
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(a, str) for a in value):
        return list(value)
    raise DataError(f"{where}: column {column!r} must hold a string or a list of strings, got {type(value).__name__}")


def join_teacher_file(source: str | Path, mapping: ColumnMapping, import_path: str | Path) -> tuple[dict[int, list[str]], dict]:
    """Match an import file's answers to the rows of `source`. Its key column is `row`/`row_id`
    (the dataset's 1-based row number) or `prompt` / the mapping's prompt column (the exact prompt);
    its answers `answers` (a list) or `answer` / `response` / `teacher` (one string).

    Returns ({row number: answers}, report) with counts and examples of unmatched keys and of keys
    given on several lines (the first line wins); DataError naming the columns found when the file
    has no key or answer column, or when no key matches."""
    import_path = Path(import_path)
    it = iter_rows(import_path)
    first_number, first = next(it)
    columns = sorted(first)
    key = next((c for c in (*ROW_KEYS, "prompt", mapping.prompt) if c in first), None)
    answer_col = next((c for c in ANSWER_COLUMNS if c in first), None)
    if key is None:
        raise DataError(f"{import_path.name}: no key column: expected {', '.join(dict.fromkeys((*ROW_KEYS, 'prompt', mapping.prompt)))}; "
                        f"columns found: {', '.join(columns)}")
    if answer_col is None:
        raise DataError(f"{import_path.name}: no answer column: expected {', '.join(ANSWER_COLUMNS)}; columns found: {', '.join(columns)}")
    by_key: dict[Any, int] = {}
    prompt_rows: dict[str, list[int]] = {}
    for number, row in iter_rows(source, columns=[mapping.prompt]):
        prompt_rows.setdefault(row.get(mapping.prompt), []).append(number)
        by_key[number] = number
    answers: dict[int, list[str]] = {}
    seen: set = set()
    unmatched: list = []
    duplicates: list = []
    lines = 0

    def take(number: int, row: dict) -> None:
        nonlocal lines
        lines += 1
        where = f"{import_path.name}, line {number}"
        if key not in row:
            raise DataError(f"{where}: key column {key!r} missing; columns found: {', '.join(sorted(row))}")
        k = row[key]
        if key in ROW_KEYS:
            try:
                k = int(k)
            except (TypeError, ValueError):
                raise DataError(f"{where}: column {key!r} must hold a row number, got {k!r}") from None
        if k in seen:
            duplicates.append(k)
            return
        seen.add(k)
        targets = ([k] if k in by_key else []) if key in ROW_KEYS else prompt_rows.get(k, [])
        if not targets:
            unmatched.append(k)
            return
        new = _answers_of(row, where)
        for t in targets:
            answers.setdefault(t, []).extend(new)

    take(first_number, first)
    for number, row in it:
        take(number, row)
    report = {"key": key, "answer_column": answer_col, "lines": lines, "matched_rows": len(answers),
              "answers": sum(len(a) for a in answers.values()), "dataset_rows": len(by_key),
              "unmatched": len(unmatched), "unmatched_examples": [str(u)[:120] for u in unmatched[:EXAMPLES_SHOWN]],
              "duplicates": len(duplicates), "duplicate_examples": [str(d)[:120] for d in duplicates[:EXAMPLES_SHOWN]],
              "ambiguous_prompts": sum(1 for rows in prompt_rows.values() if len(rows) > 1) if key not in ROW_KEYS else 0}
    if not answers:
        raise DataError(f"{import_path.name}: none of its {lines} keys ({key!r}) matches a row of the dataset; "
                        f"unmatched e.g. {', '.join(report['unmatched_examples'])}")
    return answers, report
