"""gft_core.teachers without a model: settings bounds, the lineage line, the partial file after a
cut write, writing the teacher column, and the import join's errors."""
from __future__ import annotations

import json

import pytest

from gft_core.data import ColumnMapping, DataError, load_examples
from gft_core.errors import ConfigError
from gft_core.teachers import TeacherSettings, join_teacher_file, read_partial, write_with_teachers


@pytest.mark.parametrize("bad", [{"k": 0}, {"k": 65}, {"max_new_tokens": 0}, {"top_p": 0.0}, {"filter": "yes"},
                                 {"reward": {"name": "nope"}}, {"unknown": 1}])
def test_settings_refuse_out_of_bounds_values_naming_the_field(bad):
    with pytest.raises(ConfigError) as e:
        TeacherSettings.from_dict(bad)
    assert e.value.field in {*bad, "name", "reward.name"}


def test_describe_is_the_lineage_line():
    s = TeacherSettings(k=4, temperature=0.7, filter=True, threshold=1.0, max_retries=2)
    assert s.describe("Qwen") == "4 answers per prompt from Qwen, temperature 0.7, kept if math_verify >= 1 (2 retries)"


def test_partial_file_drops_a_cut_last_line(tmp_path):
    p = tmp_path / "partial.jsonl"
    p.write_text(json.dumps({"row": 1, "answers": ["a"], "scores": [1.0], "generated": 1}) + '\n{"row": 2, "ans')
    assert list(read_partial(p)) == [1]
    assert p.read_text().endswith("\n")  # truncated: the next append starts a clean line


def test_write_and_join(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text("\n".join(json.dumps({"q": f"p{i}", "a": "x", "t": [f"old{i}"]}) for i in range(3)))
    mapping = ColumnMapping(prompt="q", expert="a", teacher="t")
    imp = tmp_path / "imp.jsonl"
    imp.write_text("\n".join(json.dumps(x) for x in [{"q": "p1", "answers": ["n1", "n2"]}, {"q": "zz", "answer": "?"}]))
    answers, report = join_teacher_file(src, mapping, imp)
    assert answers == {2: ["n1", "n2"]} and report["key"] == "q" and report["unmatched_examples"] == ["zz"]
    new_mapping, stats = write_with_teachers(src, mapping, answers, tmp_path / "out.jsonl")
    ex = load_examples(tmp_path / "out.jsonl", new_mapping)
    assert [e.teachers for e in ex] == [["old0"], ["old1", "n1", "n2"], ["old2"]]
    assert stats == {"rows": 3, "rows_with_new": 1, "existing": 3, "added": 2, "column": "teacher_answers"}
    imp.write_text(json.dumps({"question": "p1", "answer": "n"}))
    with pytest.raises(DataError, match="no key column: expected row, row_id, prompt, q; columns found: answer, question"):
        join_teacher_file(src, mapping, imp)
