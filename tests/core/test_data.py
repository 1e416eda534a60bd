"""Dataset loading: formats, column mappings, presets on the shared data, split, clear errors."""

import csv
import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gft_core.data import PRESETS, ColumnMapping, DataError, Example, iter_rows, load_examples, split_eval
from gft_core.tiny import toy_examples, write_jsonl

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
MATH_EVAL = DATA / "math_eval"
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"shared data not found under {DATA}")

ROWS = [
    {"q": "What is 1+1?", "sol": "1+1=2 #### 2", "t1": "Two. #### 2", "t2": "It is 2 #### 2", "gt": "2"},
    {"q": "What is 2*3?", "sol": "2*3=6 #### 6", "t1": "Six. #### 6", "t2": "It is 6 #### 6", "gt": "6"},
    {"q": "What is 9-4?", "sol": "9-4=5 #### 5", "t1": "Five. #### 5", "t2": "It is 5 #### 5", "gt": "5"},
]
MAPPING = ColumnMapping(prompt="q", expert="sol", teacher=["t1", "t2"], ground_truth="gt")


def write(path: Path, rows: list[dict]) -> Path:
    """Write rows in the format given by the path's extension (optionally .gz)."""
    gz = path.suffix == ".gz"
    ext = Path(path.stem).suffix if gz else path.suffix
    if ext == ".parquet":
        table = pa.Table.from_pylist(rows)
        raw = path.with_suffix("") if gz else path
        pq.write_table(table, raw, row_group_size=2)  # several row groups
        if gz:
            path.write_bytes(gzip.compress(raw.read_bytes()))
        return path
    if ext == ".csv":
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        text = buf.getvalue()
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# --- formats ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["d.jsonl", "d.json", "d.csv", "d.parquet", "d.jsonl.gz", "d.json.gz", "d.csv.gz", "d.parquet.gz"])
def test_every_format_gives_the_same_examples(tmp_path, name):
    examples = load_examples(write(tmp_path / name, ROWS), MAPPING)
    assert [e.prompt for e in examples] == [r["q"] for r in ROWS]
    assert [e.expert for e in examples] == [r["sol"] for r in ROWS]
    assert [e.teachers for e in examples] == [[r["t1"], r["t2"]] for r in ROWS]
    assert [e.ground_truth for e in examples] == ["2", "6", "5"]
    assert all(isinstance(e, Example) for e in examples)


def test_row_numbers(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n")  # blank line 2 is skipped
    assert [n for n, _ in iter_rows(jsonl)] == [1, 3]
    assert [n for n, _ in iter_rows(write(tmp_path / "d.csv", ROWS))] == [2, 3, 4]  # file lines; header is 1
    assert [n for n, _ in iter_rows(write(tmp_path / "d.parquet", ROWS))] == [1, 2, 3]  # across row groups
    assert [e.row for e in load_examples(jsonl, MAPPING)] == [1, 3]


def test_limit_stops_early(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]) + "\n{broken\n")
    assert [e.prompt for e in load_examples(path, MAPPING, limit=2)] == [ROWS[0]["q"], ROWS[1]["q"]]


def test_single_list_teacher_column_and_optional_fields(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"p": "x", "ts": ["a", "b", "c"]}) + "\n" + json.dumps({"p": "y", "ts": None}) + "\n")
    examples = load_examples(path, ColumnMapping(prompt="p", teacher="ts"))
    assert [(e.expert, e.teachers, e.ground_truth) for e in examples] == [(None, ["a", "b", "c"], None), (None, [], None)]


def test_toy_preset_reads_tiny_task(tmp_path):
    rows = toy_examples(5, seed=1)
    examples = load_examples(write_jsonl(rows, tmp_path / "toy.jsonl"), PRESETS["toy"])
    assert [e.ground_truth for e in examples] == [r["answer"] for r in rows]
    assert [e.teachers for e in examples] == [r["teachers"] for r in rows]


@pytest.mark.parametrize("extract, value, expected", [("gsm8k", "steps\n#### 1,080 ", "1,080"), ("boxed", r"so \boxed{\frac{1}{2}}.", r"\frac{1}{2}")])
def test_ground_truth_extraction(tmp_path, extract, value, expected):
    path = write(tmp_path / "d.jsonl", [{"p": "x", "a": value}])
    (e,) = load_examples(path, ColumnMapping(prompt="p", ground_truth="a", ground_truth_extract=extract))
    assert e.ground_truth == expected


# --- presets on the shared data --------------------------------------------------------------

@needs_data
@pytest.mark.parametrize("split, n", [("test", 1319), ("train", 7473)])
def test_gsm8k_preset(split, n):
    path = DATA / "gsm8k" / f"{split}.parquet"
    examples = load_examples(path, PRESETS["gsm8k"])
    assert len(examples) == n
    answers = pq.read_table(path, columns=["answer"]).column("answer").to_pylist()
    assert [e.ground_truth for e in examples] == [a.split("####")[-1].strip() for a in answers]
    assert examples[0].expert == answers[0] and examples[0].teachers == []


@needs_data
@pytest.mark.parametrize("name, n", [("math_oai", 500), ("aime24", 30), ("minerva_math", 272)])
def test_math_preset(name, n):
    examples = load_examples(MATH_EVAL / f"{name}.jsonl", PRESETS["math"])
    assert len(examples) == n
    assert all(isinstance(e.ground_truth, str) and e.ground_truth for e in examples)
    if name == "math_oai":  # the answer column, verbatim
        assert examples[0].ground_truth == r"\left( 3, \frac{\pi}{2} \right)"
    if name == "minerva_math":  # no answer column: the last \boxed{} of the solution
        first = json.loads((MATH_EVAL / "minerva_math.jsonl").open().readline())
        assert "answer" not in first and f"\\boxed{{{examples[0].ground_truth}}}" in first["solution"]


@needs_data
def test_amc23_float_answers_become_strings():
    # amc23 has no solution column and stores answers as floats (27.0)
    examples = load_examples(MATH_EVAL / "amc23.jsonl", ColumnMapping(prompt="problem", ground_truth="answer"))
    assert len(examples) == 40
    assert examples[0].ground_truth == "27"
    assert all(isinstance(e.ground_truth, str) and not e.ground_truth.endswith(".0") for e in examples)
    with pytest.raises(DataError, match=r"amc23.jsonl, line 1: field expert: column 'solution' not found"):
        load_examples(MATH_EVAL / "amc23.jsonl", PRESETS["math"])


# --- split -----------------------------------------------------------------------------------

def test_split_eval():
    examples = [Example(prompt=str(i), expert=None, teachers=[], ground_truth=None, row=i + 1) for i in range(20)]
    train, held_out = split_eval(examples, 0.25, seed=3)
    assert len(held_out) == 5 and len(train) == 15
    assert sorted(e.row for e in train + held_out) == list(range(1, 21))
    assert [e.row for e in train] == sorted(e.row for e in train)  # file order kept
    assert split_eval(examples, 0.25, seed=3) == (train, held_out)
    assert split_eval(examples, 0.25, seed=4)[1] != held_out
    assert split_eval(examples, 0.0, seed=3) == (examples, [])
    assert len(split_eval(examples, 0.01, seed=3)[1]) == 1  # a positive fraction gives at least one
    with pytest.raises(DataError, match="eval fraction"):
        split_eval(examples, 1.0, seed=0)
    with pytest.raises(DataError, match="no training examples"):
        split_eval(examples[:1], 0.5, seed=0)


# --- bad input: one clear error naming file, line/row, field and value -----------------------

def jsonl(tmp_path: Path, *lines: str, name: str = "d.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope.jsonl: file not found"):
        load_examples(tmp_path / "nope.jsonl", MAPPING)
    with pytest.raises(DataError, match="not a file"):
        load_examples(tmp_path, MAPPING)


@pytest.mark.parametrize("name, content", [("e.jsonl", b""), ("e.jsonl", b"\n  \n"), ("e.csv", b"q,sol\n"), ("e.jsonl.gz", gzip.compress(b""))])
def test_empty_file(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=rf"{name}: empty file"):
        load_examples(tmp_path / name, MAPPING)


def test_empty_parquet(tmp_path):
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"q": pa.array([], pa.string())}), path)
    with pytest.raises(DataError, match="e.parquet: empty file"):
        load_examples(path, MAPPING)


def test_bad_json_line(tmp_path):
    path = jsonl(tmp_path, json.dumps(ROWS[0]), json.dumps(ROWS[1]), '{"q": "broken', json.dumps(ROWS[2]))
    with pytest.raises(DataError, match=r"d.jsonl, line 3: bad JSON .*'\{\"q\": \"broken'"):
        load_examples(path, MAPPING)


def test_bad_json_message_reads_well(tmp_path):
    with pytest.raises(DataError) as caught:
        load_examples(jsonl(tmp_path, '{"q": "never closed'), MAPPING)
    # json's message ends in "at" here ("Invalid control character at"): one "at", then the column.
    assert "bad JSON (Invalid control character at column 20)" in str(caught.value)
    assert "at at" not in str(caught.value)


def test_json_line_not_an_object(tmp_path):
    with pytest.raises(DataError, match=r"line 1: expected a JSON object, got list"):
        load_examples(jsonl(tmp_path, "[1, 2]"), MAPPING)


def test_invalid_utf8(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(ROWS[0]).encode() + b'\n{"q": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"d.jsonl, line 2: invalid UTF-8"):
        load_examples(path, MAPPING)
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(b"q,sol\nok,fine\n\xff\xfe,x\n")
    with pytest.raises(DataError, match=r"d.csv, line 3: invalid UTF-8"):
        load_examples(csv_path, ColumnMapping(prompt="q", expert="sol"))


def test_missing_mapped_column(tmp_path):
    path = write(tmp_path / "d.parquet", ROWS)
    with pytest.raises(DataError, match=r"d.parquet, row 1: field expert: column 'solution' not found; columns are \['gt', 'q', "):
        load_examples(path, ColumnMapping(prompt="q", expert="solution"))
    with pytest.raises(DataError, match=r"line 2: field teacher: column 't3' not found"):
        load_examples(write(tmp_path / "d.csv", ROWS), ColumnMapping(prompt="q", teacher=["t1", "t3"]))


@pytest.mark.parametrize("value, shown", [("just one answer", "str 'just one answer'"), (["ok", 3], "list \"\\['ok', 3\\]\""), ({"a": "b"}, "dict")])
def test_teacher_column_not_a_list_of_strings(tmp_path, value, shown):
    path = jsonl(tmp_path, json.dumps({"q": "x", "ts": ["fine"]}), json.dumps({"q": "y", "ts": value}))
    with pytest.raises(DataError, match=rf"d.jsonl, line 2: field teacher: column 'ts' must hold a list of strings, got {shown}"):
        load_examples(path, ColumnMapping(prompt="q", teacher="ts"))


def test_teacher_list_column_in_csv_explains_the_fix(tmp_path):
    with pytest.raises(DataError, match="map a list of columns"):
        load_examples(write(tmp_path / "d.csv", ROWS), ColumnMapping(prompt="q", teacher="t1"))


@pytest.mark.parametrize("name", ["d.txt", "d.gz", "d", "d.jsonl.zip"])
def test_unknown_extension(tmp_path, name):
    (tmp_path / name).write_text("{}\n")
    with pytest.raises(DataError, match=r"unknown file extension .*expected one of .jsonl, .json, .parquet, .csv"):
        load_examples(tmp_path / name, MAPPING)


def test_bad_values(tmp_path):
    path = jsonl(tmp_path, json.dumps({"q": 12, "a": "x"}))
    with pytest.raises(DataError, match=r"line 1: field prompt: column 'q' must hold a string, got int 12"):
        load_examples(path, ColumnMapping(prompt="q"))
    path = jsonl(tmp_path, json.dumps({"q": "x", "a": None}))
    with pytest.raises(DataError, match=r"line 1: field ground_truth: column 'a' is null"):
        load_examples(path, ColumnMapping(prompt="q", ground_truth="a"))
    path = jsonl(tmp_path, json.dumps({"q": "x", "a": "no marker"}))
    with pytest.raises(DataError, match=r"line 1: field ground_truth: no '####' in column 'a': 'no marker'"):
        load_examples(path, ColumnMapping(prompt="q", ground_truth="a", ground_truth_extract="gsm8k"))
    with pytest.raises(DataError, match=r"line 1: field ground_truth_fallback: no \\boxed\{\} in column 'a'"):
        load_examples(path, ColumnMapping(prompt="q", ground_truth="answer", ground_truth_fallback="a"))


def test_bad_mapping_and_limit(tmp_path):
    path = write(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(DataError, match="ground_truth_extract must be raw, gsm8k or boxed, got 'last'"):
        load_examples(path, ColumnMapping(prompt="q", ground_truth="gt", ground_truth_extract="last"))
    with pytest.raises(DataError, match="field teacher must be a column name or a list of them, got 3"):
        load_examples(path, ColumnMapping(prompt="q", teacher=3))
    with pytest.raises(DataError, match="limit: must be >= 1"):
        load_examples(path, MAPPING, limit=0)


def test_corrupt_files(tmp_path):
    (tmp_path / "d.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"d.jsonl.gz: cannot read file"):
        load_examples(tmp_path / "d.jsonl.gz", MAPPING)
    (tmp_path / "d.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(DataError, match=r"d.parquet: cannot read Parquet file"):
        load_examples(tmp_path / "d.parquet", MAPPING)
    (tmp_path / "d.csv").write_text("q,sol\na,b,c\n")
    with pytest.raises(DataError, match=r"d.csv, line 2: 3 fields but the header has 2"):
        load_examples(tmp_path / "d.csv", ColumnMapping(prompt="q"))


# --- bounded memory (issue 16): rows have a size limit, files are streamed --------------------

@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.gz"])
def test_a_row_longer_than_the_limit_names_its_line(tmp_path, name):
    rows = [json.dumps(ROWS[0]), json.dumps({**ROWS[1], "sol": "x" * 5000}), json.dumps(ROWS[2])]
    data = "".join(r + "\n" for r in rows).encode()
    (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(DataError, match=rf"{name}, line 2: longer than 1000 bytes \(the limit of one row\)"):
        load_examples(tmp_path / name, MAPPING, max_row_bytes=1000)
    assert len(load_examples(tmp_path / name, MAPPING, max_row_bytes=len(rows[1]))) == 3  # the newline is not counted


def test_a_50_mb_line_is_refused_without_reading_it_whole(tmp_path):
    import tracemalloc

    path = tmp_path / "big.jsonl"
    with open(path, "wb") as f:
        f.write(json.dumps(ROWS[0]).encode() + b"\n")
        f.write(b'{"q": "' + b"x" * (50 * 2**20) + b'"}\n')
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"big.jsonl, line 2: longer than 16 MiB"):
            load_examples(path, MAPPING)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 * 2**20, peak  # one row's limit, not the 50 MB line (nor its decoded copies)


def test_csv_record_limit_and_constant_state(tmp_path):
    import tracemalloc

    path = tmp_path / "d.csv"
    path.write_text('q,sol\nok,fine\n"never closed,x\n' + "more text\n" * 500)
    with pytest.raises(DataError, match=r"d.csv, line 3: a row longer than 1000 bytes"):
        load_examples(path, ColumnMapping(prompt="q"), max_row_bytes=1000)
    path.write_text("q,sol\n" + "a,b\n\n" * 150_000)  # 300k lines, half of them blank
    tracemalloc.start()
    try:
        for last, _ in iter_rows(path):
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert last == 300_000
    assert peak < 2 * 2**20, peak  # nothing kept per line (a list of 300k line numbers was ~10 MB)


@pytest.mark.parametrize("name", ["d.parquet", "d.parquet.gz"])
def test_parquet_reads_only_the_mapped_columns(tmp_path, name):
    rows = [{**r, "unused": "u" * 1000} for r in ROWS]
    path = write(tmp_path / name, rows)
    assert [sorted(row) for _, row in iter_rows(path, columns=["q", "gt"])] == [["gt", "q"]] * 3
    assert sorted(next(iter_rows(path))[1]) == sorted(rows[0])  # no columns given: all of them
    assert [e.ground_truth for e in load_examples(path, MAPPING)] == ["2", "6", "5"]
    mapping = ColumnMapping(prompt="q", ground_truth="answer", ground_truth_fallback="sol", ground_truth_extract="raw")
    with pytest.raises(DataError, match=r"no \\boxed\{\} in column 'sol'"):  # a missing optional column still falls back
        load_examples(path, mapping)


def test_mapping_columns():
    assert MAPPING.columns() == ("q", "sol", "t1", "t2", "gt")
    assert PRESETS["math"].columns() == ("problem", "solution", "answer")
    assert PRESETS["toy"].columns() == ("prompt", "expert", "teachers", "answer")


def test_deeply_nested_json_is_a_data_error(tmp_path):
    path = jsonl(tmp_path, '{"q": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(DataError, match="line 1: JSON nested too deeply"):
        load_examples(path, MAPPING)
