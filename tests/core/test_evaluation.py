"""Benchmark evaluation (issue 17): pass@k, maj@k, truncation, per-problem results, stop(),
benchmarks on disk, the second checker's disagreements, thousands separators in answers."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest

from gft_core.answers import answers_equal, extract_answer, gsm8k_number
from gft_core.data import DataError
from gft_core.errors import ConfigError
from gft_core.evaluation import (
    BENCHMARK_PRESETS,
    BenchmarkResult,
    EvalSettings,
    EvaluationStopped,
    ProblemResult,
    evaluate_benchmark,
    load_benchmark,
    pass_at_k,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"shared data not found under {DATA}")


# --- pass@k -----------------------------------------------------------------------------------

def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_the_binomial_formula(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(exact_pass_at_k(n, c, k)), abs=1e-12), (n, c, k)


def test_pass_at_k_edge_cases():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 1, 10) == 1.0  # k = n: any correct sample is drawn
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 4, 2) == 1.0  # n - c < k


def test_pass_at_k_is_stable_for_large_n():
    # C(1000, 500) has ~300 digits: a float binomial overflows; the product form does not.
    for c, k in [(1, 1), (10, 100), (500, 500), (3, 997), (999, 1), (0, 1000), (1000, 1000)]:
        got = pass_at_k(1000, c, k)
        assert 0.0 <= got <= 1.0
        assert got == pytest.approx(float(exact_pass_at_k(1000, c, k)), abs=1e-9), (c, k)


@pytest.mark.parametrize("args", [(3, 1, 4), (3, 4, 1), (-1, 0, 0), (3, -1, 1), (3, 1, -1), (3.0, 1, 1), (True, 1, 1)])
def test_pass_at_k_refuses_bad_arguments(args):
    with pytest.raises(ValueError):
        pass_at_k(*args)


# --- maj@k and the summary --------------------------------------------------------------------

def problem(index, extracted, correct, truncated=None, lengths=None, disagree=None) -> ProblemResult:
    k = len(correct)
    return ProblemResult(index=index, prompt=f"p{index}", ground_truth="1", responses=[f"r{j}" for j in range(k)],
                         correct=list(correct), extracted=list(extracted), truncated=truncated or [False] * k,
                         lengths=lengths or [10] * k, disagree=disagree or [False] * k)


def test_maj_at_k_votes_on_normalised_answers_and_breaks_ties_by_first_answer():
    from gft_core.benchmarks import summarize

    cases = [
        problem(0, ["1", "2", "2", None], [True, False, False, False]),  # 2 wins: wrong
        problem(1, ["1{,}000", "1000", "7", "7"], [True, True, False, False]),  # tie 2-2, "1000" first: right
        problem(2, ["7", "7", "1", "1"], [False, False, True, True]),  # tie, "7" first: wrong
        problem(3, [None, None, None, None], [False] * 4),  # no answer: wrong
        problem(4, ["3", None, None, None], [True, False, False, False]),  # one vote: right
    ]
    r = summarize("t", 4, cases)
    assert r.maj_at_k == pytest.approx(2 / 5)
    assert r.avg_at_k == pytest.approx(6 / 20)
    assert r.pass_at_k[1] == pytest.approx(r.avg_at_k)
    assert r.pass_at_k[4] == pytest.approx(4 / 5)
    assert set(r.pass_at_k) == {1, 2, 3, 4}


def test_truncation_and_lengths_are_counted():
    from gft_core.benchmarks import summarize

    r = summarize("t", 2, [problem(0, ["1", "1"], [True, False], truncated=[True, False], lengths=[8, 2]),
                           problem(1, ["1", "1"], [True, True], truncated=[True, True], lengths=[8, 8])])
    assert r.truncation_rate == pytest.approx(3 / 4)
    assert r.mean_response_len == pytest.approx(26 / 4)
    assert r.summary()["pass_at_k"] == {"1": 0.75, "2": 1.0}
    json.dumps(r.to_dict())
    assert "problems" not in r.summary() and len(r.to_dict()["problems"]) == 2


# --- settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [("k", 0), ("k", 1025), ("temperature", -0.1), ("temperature", 11),
                                         ("top_p", 0.0), ("top_p", 1.5), ("max_new_tokens", 0),
                                         ("use_chat_template", "yes"), ("seed", -1), ("batch_size", 0),
                                         ("k", True), ("temperature", "hot")])
def test_settings_name_the_bad_field(field, value):
    with pytest.raises(ConfigError) as e:
        EvalSettings.from_dict({field: value})
    assert e.value.field == field


def test_settings_round_trip_and_refuse_unknown_keys_and_bad_rewards():
    s = EvalSettings(k=8, temperature=0.0, reward={"name": "gsm8k", "params": {}})
    assert EvalSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ConfigError) as e:
        EvalSettings.from_dict({"samples": 3})
    assert e.value.field == "samples"
    with pytest.raises(ConfigError) as e:
        EvalSettings.from_dict({"reward": {"name": "nope"}})
    assert e.value.field == "reward.name"


# --- benchmarks on disk -----------------------------------------------------------------------

@needs_data
@pytest.mark.parametrize("name", list(BENCHMARK_PRESETS))
def test_presets_load_the_shared_files(name):
    preset = BENCHMARK_PRESETS[name]
    examples = load_benchmark(DATA / preset["path"], preset["mapping"])
    assert len(examples) == preset["rows"]
    assert all(e.prompt and e.ground_truth and e.ground_truth.strip() for e in examples)
    assert all(e.expert is None and e.teachers == [] for e in examples)


@needs_data
def test_preset_ground_truths_are_the_answers():
    math500 = load_benchmark(DATA / "math_eval/math_oai.jsonl", "math")
    assert math500[0].ground_truth == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert load_benchmark(DATA / "math_eval/amc23.jsonl", "math")[0].ground_truth == "27"
    assert load_benchmark(DATA / "gsm8k/test.parquet", "gsm8k")[0].ground_truth == "18"
    minerva = load_benchmark(DATA / "math_eval/minerva_math.jsonl", "math", limit=3)  # from the boxed solution
    assert len(minerva) == 3 and all(e.ground_truth for e in minerva)


def test_a_row_without_ground_truth_is_an_error_naming_its_line(tmp_path):
    mapping = {"prompt": "problem", "ground_truth": "answer"}
    path = tmp_path / "b.jsonl"
    path.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2", "answer": null}\n')
    with pytest.raises(DataError, match=r"line 2.*ground_truth"):
        load_benchmark(path, mapping)
    path.write_text('{"problem": "1+1", "answer": "2"}\n\n{"problem": "2+2", "answer": "  "}\n')
    with pytest.raises(DataError, match=r"line 3.*ground_truth.*empty"):
        load_benchmark(path, mapping)
    path.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2"}\n')
    with pytest.raises(DataError, match=r"line 2.*'answer' not found"):
        load_benchmark(path, mapping)
    with pytest.raises(DataError, match="ground-truth column"):
        load_benchmark(path, {"prompt": "problem"})


# --- the evaluation on the tiny model ---------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from gft_core.policy import load_policy

    return load_policy(tiny_model_dir)


def toy_examples(n: int):
    from gft_core.data import Example

    return [Example(prompt=f"{i} + {i} =", expert=None, teachers=[], ground_truth=str(2 * i), row=i + 1)
            for i in range(n)]


def test_evaluate_benchmark_per_problem_results_and_truncation(tiny):
    model, tokenizer = tiny
    settings = EvalSettings(k=3, temperature=1.0, top_p=1.0, max_new_tokens=6, batch_size=2, seed=1)
    calls = []
    r = evaluate_benchmark(model, tokenizer, toy_examples(5), settings, name="toy",
                           progress=lambda done, total: calls.append((done, total)))
    assert isinstance(r, BenchmarkResult)
    assert calls == [(2, 5), (4, 5), (5, 5)]  # per batch of 2 prompts
    assert r.benchmark == "toy" and r.n_problems == 5 and r.k == 3
    assert [p.index for p in r.problems] == list(range(5))
    for p in r.problems:
        assert len(p.responses) == len(p.correct) == len(p.extracted) == len(p.truncated) == len(p.lengths) == 3
        assert len(p.disagree) == 3
        assert all(1 <= n <= 6 for n in p.lengths)
        assert all(t == (n == 6) or not t for t, n in zip(p.truncated, p.lengths))
    flags = [t for p in r.problems for t in p.truncated]
    assert r.truncation_rate == pytest.approx(sum(flags) / 15) and sum(flags) > 0  # a random model rambles on
    assert r.mean_response_len == pytest.approx(sum(n for p in r.problems for n in p.lengths) / 15)
    assert r.avg_at_k == pytest.approx(sum(p.n_correct for p in r.problems) / 15)
    assert set(r.pass_at_k) == {1, 2, 3}
    json.dumps(r.to_dict())
    # seeded: the same settings give the same samples
    again = evaluate_benchmark(model, tokenizer, toy_examples(5), settings, name="toy")
    assert [p.responses for p in again.problems] == [p.responses for p in r.problems]


def test_evaluate_benchmark_honours_stop(tiny):
    model, tokenizer = tiny
    done = []
    # a batch's scores land while the next one generates: stop() is seen before the third batch
    with pytest.raises(EvaluationStopped, match="after 4 of 8"):
        evaluate_benchmark(model, tokenizer, toy_examples(8), {"k": 2, "max_new_tokens": 4, "batch_size": 2},
                           name="toy", progress=lambda d, t: done.append(d), stop=lambda: bool(done))
    assert done == [2]


# --- the second checker -----------------------------------------------------------------------

def test_disagreements_with_math_verify_are_counted_with_examples():
    from gft_core.benchmarks import compare, summarize
    from gft_core.hf_checker import CORRECT, WRONG, HFChecker, hf_verdict
    from gft_core.rewards import build_reward

    responses = ["so \\boxed{0.5}", "the answer is \\boxed{1{,}000}", "\\boxed{7}", "\\boxed{\\frac{1}{2}}"]
    truths = ["50", "1000", "8", "0.5"]
    # ours accepts a percentage written as a fraction (0.5 for 50), Math-Verify does not
    assert hf_verdict(responses[0], truths[0], "") == WRONG
    assert hf_verdict(responses[3], truths[3], "") == CORRECT
    checker = HFChecker(budget_s=10.0)
    try:
        ours = build_reward({"name": "math_verify", "params": {}})(responses, truths, [""] * 4)
        correct, disagree = compare(ours, checker(responses, truths, [""] * 4))
    finally:
        checker.close()
    assert correct == [True, True, False, True]
    assert disagree == [True, False, False, False]
    p = ProblemResult(index=0, prompt="p", ground_truth="50", responses=responses, correct=correct,
                      extracted=[extract_answer(x) for x in responses], truncated=[False] * 4, lengths=[5] * 4,
                      disagree=disagree)
    r = summarize("t", 4, [p])
    assert r.disagreements == 1
    assert r.disagreement_examples == [{"problem": 0, "sample": 0, "response_tail": "so \\boxed{0.5}",
                                        "extracted": "0.5", "ours": True, "theirs": False, "ground_truth": "50"}]


# --- answers: thousands separators ------------------------------------------------------------

@pytest.mark.parametrize("pred,truth", [
    ("1{,}000", "1000"), ("1000", "1{,}000"), ("1,000", "1000"), ("1\\,000", "1000"), ("1\\!000", "1000"),
    ("1{,}000{,}000", "1000000"), ("1,000,000", "1{,}000{,}000"), ("10{,}080.5", "10080.5"),
    ("\\$1{,}000", "1000"), ("-2{,}500", "-2500"), ("10,\\!080", "10080"),
])
def test_thousands_separators_are_read_as_one_number(pred, truth):
    assert answers_equal(pred, truth)


@pytest.mark.parametrize("pred,truth", [("1{,}00", "100"), ("(1,2)", "12"), ("1{,}000", "1")])
def test_commas_that_are_not_thousands_separators_stay(pred, truth):
    assert not answers_equal(pred, truth)


def test_thousands_separators_in_extraction_and_gsm8k():
    assert extract_answer("so the total is $1{,}000$ dollars") == "1000"
    assert extract_answer("We get 1\\,000 apples") == "1000"
    assert extract_answer("about 2{,}000{,}000 people") == "2000000"
    assert gsm8k_number("1{,}000") == 1000.0
    assert gsm8k_number("$1,080.00") == 1080.0


# --- the command line -------------------------------------------------------------------------

def test_cli_eval_prints_a_table_and_writes_json(tmp_path, tiny_model_dir):
    from gft_core.cli import main

    bench = tmp_path / "mini.jsonl"
    bench.write_text("".join(json.dumps({"problem": f"{i}+{i}=", "answer": str(2 * i)}) + "\n" for i in range(3)))
    out = tmp_path / "r.json"
    assert main(["eval", "--model", str(tiny_model_dir), "--benchmark", str(bench), "--k", "2",
                 "--max-new-tokens", "4", "--temperature", "0.7", "--top-p", "0.9", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["settings"]["k"] == 2 and saved["settings"]["top_p"] == 0.9
    [result] = saved["results"]
    assert result["benchmark"] == "mini" and result["n_problems"] == 3 and set(result["pass_at_k"]) == {"1", "2"}
    assert len(result["problems"]) == 3 and all(len(p["responses"]) == 2 for p in result["problems"])


def test_cli_eval_bad_input_is_one_line_and_exit_2(tiny_model_dir, capsys):
    from gft_core.cli import main

    assert main(["eval", "--model", str(tiny_model_dir), "--benchmark", "math500"]) == 2
    assert "data_root" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_model_dir), "--benchmark", "nope.jsonl"]) == 2
    assert "benchmark" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_model_dir), "--benchmark", "math500", "--data-root", "/x",
                 "--k", "0"]) == 2
    assert "k: must be in 1..1024" in capsys.readouterr().err


@pytest.mark.parametrize("pred", ["(1", "1+", "x**", "é", "2۰", "\\sqrt{}"])
def test_an_answer_sympy_cannot_read_is_wrong_not_an_error(pred):
    """Found by the MATH-500 benchmark: a response ending in "۰" (U+06F0) raised SyntaxError in the
    math_verify reward, which stopped the whole evaluation (and would stop a training run)."""
    assert answers_equal(pred, "2") is False
