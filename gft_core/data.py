"""Datasets: stream rows from JSONL / Parquet / CSV (optionally .gz) and map columns to Examples.

A ColumnMapping says which column holds the prompt, the expert answer, the teacher answers (one
list-typed column or several string columns) and the ground truth. Every problem with a file is a
DataError whose message names the file, the line or row, the field and the value.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import math
import random
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from gft_core.answers import last_boxed

GroundTruthExtract = Literal["raw", "gsm8k", "boxed"]
EXTENSIONS: tuple[str, ...] = (".jsonl", ".json", ".parquet", ".csv")


def json_error(e: json.JSONDecodeError) -> str:
    """'Expecting value at column 5' from a JSONDecodeError; some of its messages end in "at"
    ("Unterminated string starting at"), which must not read "at at column"."""
    return f"{e.msg.removesuffix(' at')} at column {e.colno}"


class DataError(ValueError):
    """A dataset cannot be read or does not fit its column mapping."""


@dataclass(frozen=True)
class ColumnMapping:
    """Which columns of a dataset feed a group.

    teacher: None, one column holding a list of strings, or a list of string columns.
    ground_truth_extract: "raw" (the value as is), "gsm8k" (text after the last "####") or
    "boxed" (content of the last \\boxed{}).
    ground_truth_fallback: a column to take the last \\boxed{} from when the ground-truth column
    is absent or null in a row (MATH-style sets where only the solution holds the answer).
    """

    prompt: str
    expert: str | None = None
    teacher: str | list[str] | None = None
    ground_truth: str | None = None
    ground_truth_extract: GroundTruthExtract = "raw"
    ground_truth_fallback: str | None = None

    def columns(self) -> tuple[str, ...]:
        """Every column the mapping reads (what iter_rows(columns=...) needs)."""
        teacher = [self.teacher] if isinstance(self.teacher, str) else list(self.teacher or [])
        named = [self.prompt, self.expert, *teacher, self.ground_truth, self.ground_truth_fallback]
        return tuple(dict.fromkeys(c for c in named if isinstance(c, str)))


PRESETS: dict[str, ColumnMapping] = {
    # ../shared/data/gsm8k/*.parquet: the answer ends with "#### <number>"
    "gsm8k": ColumnMapping(prompt="question", expert="answer", ground_truth="answer", ground_truth_extract="gsm8k"),
    # ../shared/data/math_eval/*.jsonl: MATH-500 has "answer"; Minerva only a boxed solution
    "math": ColumnMapping(prompt="problem", expert="solution", ground_truth="answer", ground_truth_fallback="solution"),
    # gft_core.tiny's toy task
    "toy": ColumnMapping(prompt="prompt", expert="expert", teacher="teachers", ground_truth="answer"),
}


@dataclass
class Example:
    """One dataset row as the trainer sees it; `row` is the 1-based line/row number in the file."""

    prompt: str
    expert: str | None
    teachers: list[str]
    ground_truth: str | None
    row: int


# --- reading rows ----------------------------------------------------------------------------

def _format(path: Path) -> tuple[str, bool]:
    """(extension, gzipped) of a dataset file; DataError for anything we cannot read."""
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    ext = suffixes[-2] if gz and len(suffixes) >= 2 else (suffixes[-1] if suffixes and not gz else "")
    if ext not in EXTENSIONS:
        raise DataError(
            f"{path}: unknown file extension {''.join(path.suffixes) or '(none)'!r}; "
            f"expected one of {', '.join(EXTENSIONS)} (optionally .gz)"
        )
    return ext, gz


def _lines(path: Path, gz: bool, max_row_bytes: int) -> Iterator[tuple[int, str]]:
    """Decoded text lines with 1-based line numbers, streamed (gzip too) and each at most
    max_row_bytes long (a longer one is a DataError naming its line, read no further than that
    limit); invalid UTF-8 names its line."""
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as f:
            lineno = 0
            while raw := f.readline(max_row_bytes + 1):
                lineno += 1
                if len(raw) > max_row_bytes and not (len(raw) == max_row_bytes + 1 and raw.endswith(b"\n")):
                    raise DataError(f"{path}, line {lineno}: longer than {_size(max_row_bytes)} (the limit of one "
                                    f"row): {raw[:60]!r}...")
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}, line {lineno}: invalid UTF-8 at byte {e.start}: {raw[:60]!r}") from None
                yield lineno, line.lstrip("\ufeff") if lineno == 1 else line
    except (gzip.BadGzipFile, EOFError, OSError) as e:
        raise DataError(f"{path}: cannot read file: {e}") from None


def _size(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n} bytes"


def _json_rows(path: Path, gz: bool, columns: Sequence[str] | None, max_row_bytes: int) -> Iterator[tuple[int, dict]]:
    for lineno, line in _lines(path, gz, max_row_bytes):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}, line {lineno}: bad JSON ({json_error(e)}); expected one JSON object "
                f"per line: {line.strip()[:80]!r}"
            ) from None
        except RecursionError:
            raise DataError(f"{path}, line {lineno}: JSON nested too deeply: {line.strip()[:80]!r}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}: {line.strip()[:80]!r}")
        yield lineno, row


def _csv_rows(path: Path, gz: bool, columns: Sequence[str] | None, max_row_bytes: int) -> Iterator[tuple[int, dict]]:
    # A quoted field may span lines, and solutions can exceed the csv module's default 128 KiB
    # field limit; the size of one record is bounded below instead (max_row_bytes).
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    lines = _lines(path, gz, max_row_bytes)
    # Where the record being read starts and ends, and its size so far: constant state, however
    # long the file (blank lines and row numbers are not kept).
    record = {"first": 0, "last": 0, "chars": 0}

    def text() -> Iterator[str]:
        for lineno, line in lines:
            if record["chars"] == 0:
                record["first"] = lineno
            record["last"] = lineno
            record["chars"] += len(line)
            if record["chars"] > max_row_bytes:
                raise DataError(f"{path}, line {record['first']}: a row longer than {_size(max_row_bytes)} "
                                f"(the limit of one row; an unclosed quote?)")
            yield line

    reader = csv.reader(text())
    header = next(reader, None)
    if header is None:
        return
    record["chars"] = 0
    for values in reader:
        lineno = record["last"]
        record["chars"] = 0
        if not values:
            continue
        if len(values) != len(header):
            raise DataError(f"{path}, line {lineno}: {len(values)} fields but the header has {len(header)}")
        yield lineno, dict(zip(header, values))


PARQUET_BATCH_ROWS = 256  # rows decoded at a time


def _parquet_rows(path: Path, gz: bool, columns: Sequence[str] | None, max_row_bytes: int) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq  # here: reading JSONL or CSV need not import pyarrow

    try:
        with contextlib.ExitStack() as stack:
            if gz:  # Parquet needs random access: decompress to a temporary file, never into memory
                tmp = stack.enter_context(tempfile.TemporaryFile(prefix="gft-parquet-"))
                with gzip.open(path, "rb") as src:
                    shutil.copyfileobj(src, tmp, 1 << 20)
                tmp.seek(0)
                source = pq.ParquetFile(tmp)
            else:
                source = pq.ParquetFile(path)
            names = source.schema_arrow.names
            # Only the mapped columns are read; if one is missing, all are (the first row then
            # says which columns the file has, or the mapping falls back to another column).
            wanted = None if columns is None or any(c not in names for c in columns) else list(dict.fromkeys(columns))
            rowno = 0
            for batch in source.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted):
                for row in batch.to_pylist():
                    rowno += 1
                    yield rowno, row
    except (OSError, EOFError, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: cannot read Parquet file: {e}") from None


MAX_ROW_BYTES = 16 * 2**20  # one JSON line or CSV record; a whole row is held in memory to parse it


def iter_rows(path: str | Path, *, columns: Sequence[str] | None = None,
              max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[tuple[int, dict]]:
    """Stream (1-based line/row number, row dict) from .jsonl/.json (JSON lines), .parquet or .csv,
    each optionally gzipped. JSON and CSV numbers are file lines; Parquet numbers are rows.

    Memory stays bounded whatever the file's size: text is read line by line (a JSON line or CSV
    record over max_row_bytes is a DataError naming its line), Parquet in batches of rows and,
    given `columns` (e.g. ColumnMapping.columns()), only those columns."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if isinstance(max_row_bytes, bool) or not isinstance(max_row_bytes, int) or max_row_bytes < 1:
        raise DataError(f"max_row_bytes: must be an int >= 1, got {max_row_bytes!r}")
    ext, gz = _format(path)
    reader = {".jsonl": _json_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}[ext]
    n = 0
    for n, (number, row) in enumerate(reader(path, gz, columns, max_row_bytes), start=1):
        yield number, row
    if n == 0:
        raise DataError(f"{path}: empty file (no rows)")


# --- mapping rows to examples ----------------------------------------------------------------

def _where(path: Path, number: int) -> str:
    unit = "row" if ".parquet" in [s.lower() for s in path.suffixes] else "line"
    return f"{path}, {unit} {number}"


def _column(row: dict, column: str, field: str, where: str) -> Any:
    if column not in row:
        raise DataError(f"{where}: field {field}: column {column!r} not found; columns are {sorted(row)}")
    return row[column]


def _string(value: Any, column: str, field: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field}: column {column!r} must hold a string, got {type(value).__name__} {value!r}")
    return value


def _as_text(value: Any) -> str:
    """Ground truth as a string: 27.0 -> "27", 0.5 -> "0.5" (amc23 stores answers as floats)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _teachers(row: dict, mapping: ColumnMapping, where: str) -> list[str]:
    if mapping.teacher is None:
        return []
    if isinstance(mapping.teacher, str):
        value = _column(row, mapping.teacher, "teacher", where)
        if value is None:
            return []
        if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
            raise DataError(
                f"{where}: field teacher: column {mapping.teacher!r} must hold a list of strings, got "
                f"{type(value).__name__} {str(value)[:80]!r} (for one string per column, map a list of columns)"
            )
        return list(value)
    teachers = []
    for column in mapping.teacher:
        value = _column(row, column, "teacher", where)
        if value is not None and value != "":
            teachers.append(_string(value, column, "teacher", where))
    return teachers


def _ground_truth(row: dict, mapping: ColumnMapping, where: str) -> str | None:
    if mapping.ground_truth is None:
        return None
    value = row.get(mapping.ground_truth)
    if value is None and mapping.ground_truth_fallback is not None:
        solution = _string(_column(row, mapping.ground_truth_fallback, "ground_truth_fallback", where),
                           mapping.ground_truth_fallback, "ground_truth_fallback", where)
        boxed = last_boxed(solution)
        if boxed is None:
            raise DataError(f"{where}: field ground_truth_fallback: no \\boxed{{}} in column "
                            f"{mapping.ground_truth_fallback!r}: {solution[-80:]!r}")
        return boxed.strip()
    value = _column(row, mapping.ground_truth, "ground_truth", where)
    if value is None:
        raise DataError(f"{where}: field ground_truth: column {mapping.ground_truth!r} is null")
    text = _as_text(value)
    if mapping.ground_truth_extract == "gsm8k":
        if "####" not in text:
            raise DataError(f"{where}: field ground_truth: no '####' in column {mapping.ground_truth!r}: {text[-80:]!r}")
        return text.rsplit("####", 1)[1].strip()
    if mapping.ground_truth_extract == "boxed":
        boxed = last_boxed(text)
        if boxed is None:
            raise DataError(f"{where}: field ground_truth: no \\boxed{{}} in column {mapping.ground_truth!r}: {text[-80:]!r}")
        return boxed.strip()
    return text


def _check_mapping(mapping: ColumnMapping) -> None:
    if not isinstance(mapping.prompt, str) or not mapping.prompt:
        raise DataError(f"column mapping: field prompt must name a column, got {mapping.prompt!r}")
    if mapping.ground_truth_extract not in ("raw", "gsm8k", "boxed"):
        raise DataError(
            f"column mapping: field ground_truth_extract must be raw, gsm8k or boxed, got {mapping.ground_truth_extract!r}"
        )
    teacher = mapping.teacher
    if teacher is not None and not isinstance(teacher, str) and not (
        isinstance(teacher, (list, tuple)) and all(isinstance(c, str) for c in teacher)
    ):
        raise DataError(f"column mapping: field teacher must be a column name or a list of them, got {teacher!r}")


def to_example(row: dict, number: int, mapping: ColumnMapping, path: str | Path = "<rows>") -> Example:
    """Map one row (as yielded by iter_rows) to an Example."""
    where = _where(Path(path), number)
    prompt = _string(_column(row, mapping.prompt, "prompt", where), mapping.prompt, "prompt", where)
    expert = None
    if mapping.expert is not None:
        expert = _string(_column(row, mapping.expert, "expert", where), mapping.expert, "expert", where)
    return Example(
        prompt=prompt,
        expert=expert,
        teachers=_teachers(row, mapping, where),
        ground_truth=_ground_truth(row, mapping, where),
        row=number,
    )


def load_examples(path: str | Path, mapping: ColumnMapping, *, limit: int | None = None,
                  max_row_bytes: int = MAX_ROW_BYTES) -> list[Example]:
    """Read a dataset file into Examples (the first `limit` rows if given), reading only the
    mapped columns."""
    _check_mapping(mapping)
    if limit is not None and limit < 1:
        raise DataError(f"limit: must be >= 1 or None, got {limit!r}")
    examples = []
    for number, row in iter_rows(path, columns=mapping.columns(), max_row_bytes=max_row_bytes):
        examples.append(to_example(row, number, mapping, path))
        if limit is not None and len(examples) >= limit:
            break
    return examples


def split_eval(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Random (train, eval) split; eval gets round(fraction * n) examples (at least 1 if fraction > 0).
    Both keep the file order, and the same seed gives the same split."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"eval fraction: must be in [0, 1), got {fraction!r}")
    n = len(examples)
    n_eval = max(1, round(fraction * n)) if fraction > 0 else 0
    if n_eval >= n and n_eval > 0:
        raise DataError(f"eval fraction: {fraction!r} of {n} examples leaves no training examples")
    eval_idx = set(random.Random(seed).sample(range(n), n_eval))
    train = [e for i, e in enumerate(examples) if i not in eval_idx]
    held_out = [e for i, e in enumerate(examples) if i in eval_idx]
    return train, held_out
