"""Reward registry: math verifier on real GSM8K / MATH-500 rows, the other rewards, spec errors."""

import json
import re
import threading
import time
from pathlib import Path

import pytest
import torch

from gft_core.answers import answers_equal, extract_answer, last_boxed
from gft_core.data import PRESETS, load_examples
from gft_core.rewards import (MAX_DEPTH, REWARDS, PerResponse, RewardSpecError, build_reward, describe_rewards,
                              needs_ground_truth, register)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
GSM8K_TEST = DATA / "gsm8k" / "test.parquet"
MATH500 = DATA / "math_eval" / "math_oai.jsonl"
needs_data = pytest.mark.skipif(not (GSM8K_TEST.exists() and MATH500.exists()), reason=f"shared data not found under {DATA}")


def score(spec, responses, truths, prompts=None):
    return build_reward(spec)(responses, truths, prompts or [""] * len(responses))


# --- real data: every expert answer scores 1.0 against its own ground truth ------------------

@needs_data
def test_every_math500_expert_solution_verifies():
    examples = load_examples(MATH500, PRESETS["math"])
    assert len(examples) == 500
    rewards = score({"name": "math_verify"}, [e.expert for e in examples], [e.ground_truth for e in examples])
    failed = [(e.row, e.ground_truth) for e, r in zip(examples, rewards) if r != 1.0]
    assert failed == []


@needs_data
def test_math500_solutions_against_the_next_rows_answer():
    # A verifier that accepts everything would pass the test above; this one checks it rejects.
    examples = load_examples(MATH500, PRESETS["math"], limit=61)
    rewards = score({"name": "math_verify"}, [e.expert for e in examples[:60]], [e.ground_truth for e in examples[1:]])
    accepted = [(examples[i].ground_truth, examples[i + 1].ground_truth) for i, r in enumerate(rewards) if r]
    assert accepted == [("5", "x=5")]  # rows 23/24: the same value, once with its variable


@needs_data
@pytest.mark.parametrize("reward", ["gsm8k", "math_verify"])
def test_every_gsm8k_test_expert_answer_verifies(reward):
    examples = load_examples(GSM8K_TEST, PRESETS["gsm8k"])
    assert len(examples) == 1319
    rewards = score({"name": reward}, [e.expert for e in examples], [e.ground_truth for e in examples])
    failed = [(e.row, e.ground_truth) for e, r in zip(examples, rewards) if r != 1.0]
    assert failed == []


@needs_data
def test_gsm8k_answers_against_the_next_rows_answer():
    examples = load_examples(GSM8K_TEST, PRESETS["gsm8k"])
    truths = [e.ground_truth for e in examples]
    shifted = truths[1:] + truths[:1]
    rewards = score({"name": "gsm8k"}, [e.expert for e in examples], shifted)
    same_value = [float(a.replace(",", "")) == float(b.replace(",", "")) for a, b in zip(truths, shifted)]
    assert rewards == [1.0 if s else 0.0 for s in same_value]
    assert 0 < sum(rewards) < 50


# --- extraction ------------------------------------------------------------------------------

def test_last_boxed_nested_and_variants():
    assert last_boxed(r"first \boxed{1} then \boxed{\frac{a^{2}}{b}} end") == r"\frac{a^{2}}{b}"
    assert last_boxed(r"$\boxed 5$") == "5"
    assert last_boxed(r"\fbox{7}") == "7"
    assert last_boxed(r"\boxed{unbalanced") is None
    assert last_boxed("no box") is None


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"So \boxed{42}. The answer is 7", "42"),  # boxed wins
        ("Thus the answer is $\\frac{1}{2}$.\nDone 9", "\\frac{1}{2}"),
        ("the answer is 7.\nDone 9", "7"),  # the closing full stop is not part of it
        ("The Answer Is: 12", "12"),
        ("so the answer is $12$ because 3 * 4 = 12 and 7", "12"),
        ("We get 3 apples, then 1,234.5 pears", "1234.5"),  # last number, commas dropped
        ("x is -4", "-4"),
        ("no digits here", None),
        ("The answer is therefore 3.\n#### 3", "3"),  # a GSM8K-style last line, after filler words
        ("The answer is therefore 3.", "3"),
        ("So the answer is: thus, 42", "42"),
        ("the answer is 3.5.", "3.5"),
        ("#### Step 1\nadd them: the answer is 7", "7"),  # a heading is not a final "#### x" line
        ("\\boxed{4}\n#### 3", "4"),  # \boxed first, as the paper
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


# --- equivalence -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "pred, truth",
    [
        (r"\frac{1}{2}", "0.5"),
        (r"\dfrac{14}{3}", r"\frac{14}{3}"),
        (r"\frac12", r"\frac{1}{2}"),
        ("50\\%", "0.5"),  # percentage: truth x100
        ("0.5", "50"),  # truth /100
        ("1,000", "1000"),
        (r"\$18.90", "18.9"),
        (r"90^\circ", "90"),
        (r"5 \text{ cm}", "5"),
        (r"\text{Evelyn}", "Evelyn"),
        ("x=5", "5"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
        (r"(1, \frac12)", "(1,0.5)"),
        (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}"),  # symbolic
        (r"2\pi", r"\pi \cdot 2"),
        ("x^2+2x+1", "(x+1)^2"),
        (r"\sqrt{2}", "1.41421"),  # symbolic constant, numeric within rel_tol
        ("6+9i", "9i+6"),
        (r"\sqrt[3]{8}", "2"),
        (r"x \in [-2,7]", "[-2, 7]"),
        (r"(0,9) \cup (9,36)", r"(0, 9)\cup(9, 36)"),
        ("C", r"\text{(C)}"),
    ],
)
def test_equivalent_answers(pred, truth):
    assert answers_equal(pred, truth)


@pytest.mark.parametrize(
    "pred, truth",
    [
        ("3", "4"),
        ("0.5001", "0.5"),
        ("(1,2)", "[1,2]"),  # open vs closed interval
        ("(1,2)", "(1,2,3)"),
        ("Evenly", "Evelyn"),  # words are not products of symbols
        ("x^2", "y^2"),
        (r"\sqrt{2}", "1.4"),
        ("", "1"),
        (r"(0,9) \cup (9,36)", r"(0,9) \cup (9,37)"),
        ("B", r"\text{(C)}"),
    ],
)
def test_different_answers(pred, truth):
    assert not answers_equal(pred, truth)


def test_rel_tol_param():
    assert score({"name": "math_verify", "params": {"rel_tol": 1e-2}}, [r"\boxed{3.14}"], [r"\pi"]) == [1.0]
    assert score({"name": "math_verify"}, [r"\boxed{3.14}"], [r"\pi"]) == [0.0]
    assert score({"name": "math_verify", "params": {"percent": False}}, [r"\boxed{50}"], ["0.5"]) == [0.0]


def test_symbolic_check_runs_under_the_budget():
    # sympy would try to build a 10^10-digit integer; the forked child is killed instead
    fn = build_reward({"name": "math_verify", "params": {"timeout_s": 0.5}})
    t0 = time.monotonic()
    assert fn([r"\boxed{1}", r"\boxed{10^{10^{10}}}", r"\boxed{2}"], ["1", "1", "2"], ["", "", ""]) == [1.0, 0.0, 1.0]
    assert time.monotonic() - t0 < 5
    assert fn.timeouts == 1


def test_math_verify_on_float_ground_truth_from_amc23(tmp_path):
    from gft_core.data import ColumnMapping

    path = tmp_path / "amc.jsonl"
    path.write_text(json.dumps({"problem": "p", "answer": 27.0}) + "\n")
    (ex,) = load_examples(path, ColumnMapping(prompt="problem", ground_truth="answer"))
    assert ex.ground_truth == "27"
    assert score({"name": "math_verify"}, [r"It is \boxed{27}."], [ex.ground_truth]) == [1.0]


def test_math_verify_scores_a_gsm8k_style_ending():
    responses = ["The answer is therefore 3.\n#### 3", "The answer is therefore 3.", "The answer is therefore 4.\n#### 4"]
    assert score({"name": "math_verify"}, responses, ["3", "3", "3"]) == [1.0, 1.0, 0.0]
    # A GSM8K ground truth (its solution ending "#### 72") is its last line's number.
    assert score({"name": "math_verify"}, ["so 72"], ["48/2 = 24 clips, 48+24 = 72\n#### 72"]) == [1.0]


def test_which_specs_need_a_ground_truth():
    assert needs_ground_truth({"name": "math_verify"}) and not needs_ground_truth({"name": "length_penalty"})
    mixed = {"name": "weighted_sum", "params": {"terms": [{"name": "regex_match", "params": {"pattern": "x"}},
                                                          {"name": "gsm8k", "weight": 0.5}]}}
    assert needs_ground_truth(mixed) and not needs_ground_truth({"name": "no such reward"})


def test_math_verify_needs_a_ground_truth():
    with pytest.raises(ValueError, match=r"ground_truths\[0\]"):
        score({"name": "math_verify"}, ["1"], [None])


# --- other rewards ---------------------------------------------------------------------------

def test_gsm8k_reward():
    spec = {"name": "gsm8k"}
    responses = [
        "3 + 4 = 7\n#### 1,080",
        "#### $18.00",
        "so the result is \\boxed{18}",  # no ####: math_verify's extraction
        "#### 17",
        "no answer at all",
        "#### 18\nthen I changed my mind\n#### 19",  # the last #### counts
    ]
    truths = ["1080", "18", "18", "18", "18", "18"]
    assert score(spec, responses, truths) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_exact_match_params():
    assert score({"name": "exact_match"}, [" Paris ", "paris"], ["Paris", "Paris"]) == [1.0, 0.0]
    spec = {"name": "exact_match", "params": {"case_sensitive": False}}
    assert score(spec, ["paris"], ["Paris"]) == [1.0]
    spec = {"name": "exact_match", "params": {"strip": False}}
    assert score(spec, [" Paris"], ["Paris"]) == [0.0]


def test_regex_match():
    spec = {"name": "regex_match", "params": {"pattern": r"\\boxed\{\d+\}", "reward": 0.5}}
    assert score(spec, [r"so \boxed{12}", "12"], [None, None]) == [0.5, 0.0]


def test_length_penalty_chars_and_tokens(tmp_path):
    spec = {"name": "length_penalty", "params": {"max_len": 5, "penalty": 0.5}}
    assert score(spec, ["abc", "abcdefgh"], [None, None]) == [0.0, -1.5]

    from gft_core.tiny import build_tokenizer

    tok = build_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    text = "First 2 + 3 = 5. Then 5 * 4 = 20."
    n = len(tok.encode(text, add_special_tokens=False))
    spec = {"name": "length_penalty", "params": {"max_len": n - 2, "penalty": 1, "unit": "tokens", "tokenizer": str(tmp_path / "tok")}}
    assert score(spec, [text], [None]) == [-2.0]


def test_weighted_sum():
    spec = {
        "name": "weighted_sum",
        "params": {
            "terms": [
                {"name": "math_verify", "weight": 1.0},
                {"name": "length_penalty", "weight": 2.0, "params": {"max_len": 10, "penalty": 0.1}},
            ]
        },
    }
    responses = [r"\boxed{4}", r"a long answer \boxed{5}"]
    # 1 + 2 * 0 ; 0 + 2 * (-0.1 * (23 - 10))
    assert score(spec, responses, ["4", "4"]) == pytest.approx([1.0, -2.6])


def test_reward_model_from_local_directory(tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from gft_core.tiny import CHAT_TEMPLATE, build_tokenizer

    tok = build_tokenizer()
    tok.chat_template = CHAT_TEMPLATE  # a chat RM: scored on the templated conversation
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, num_labels=2, pad_token_id=tok.pad_token_id,
    )
    model = LlamaForSequenceClassification(cfg).eval()
    model.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")

    prompts = ["What is 2 + 3?", "What is 4 * 5?", "Compute 1 + 1"]
    responses = ["The answer is 5", "20", "First 1 + 1 = 2. The answer is \\boxed{2}"]
    spec = {"name": "reward_model", "params": {"path": str(tmp_path / "rm"), "label_index": 1, "batch_size": 2}}
    got = score(spec, responses, [None] * 3, prompts)

    expected = []
    for p, r in zip(prompts, responses):  # one at a time: no padding
        text = tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False)
        with torch.no_grad():
            expected.append(model(**tok(text, return_tensors="pt")).logits[0, 1].item())
    assert got == pytest.approx(expected, abs=1e-5)

    spec["params"]["transform"] = "sigmoid"
    assert score(spec, responses, [None] * 3, prompts) == pytest.approx(torch.sigmoid(torch.tensor(expected)).tolist(), abs=1e-5)

    spec["params"]["label_index"] = 2
    with pytest.raises(RewardSpecError, match="label_index"):
        build_reward(spec)


# --- registry and spec errors ----------------------------------------------------------------

def test_registry_names_and_description():
    names = ["math_verify", "gsm8k", "exact_match", "regex_match", "length_penalty", "weighted_sum", "reward_model"]
    assert list(REWARDS) == names
    described = describe_rewards()
    assert [d["name"] for d in described] == names
    for d in described:
        assert d["description"]
        for p in d["params"]:
            assert set(p) >= {"name", "type", "default", "help"}
    regex = next(d for d in described if d["name"] == "regex_match")
    assert regex["params"][0] == {"name": "pattern", "type": "str", "default": None, "required": True, "min": None, "max": None,
                                  "help": "RE2 regular expression (linear time: no backreferences or lookaround)."}
    timeout = next(p for p in described[0]["params"] if p["name"] == "timeout_s")
    assert (timeout["min"], timeout["max"]) == (0.0, 60.0)


@pytest.mark.parametrize(
    "spec, field, value",
    [
        ({"name": "math_verfy"}, "reward.name", "math_verfy"),
        ("math_verify", "reward", "math_verify"),
        ({"name": "math_verify", "params": {"tol": 0.1}}, "reward.params.tol", 0.1),
        ({"name": "math_verify", "params": {"rel_tol": "small"}}, "reward.params.rel_tol", "small"),
        ({"name": "math_verify", "params": {"rel_tol": -1}}, "reward.params.rel_tol", -1.0),
        ({"name": "math_verify", "params": [1]}, "reward.params", [1]),
        ({"name": "exact_match", "params": {"strip": 1}}, "reward.params.strip", 1),
        ({"name": "regex_match"}, "reward.params.pattern", None),
        ({"name": "regex_match", "params": {"pattern": "(unclosed"}}, "reward.params.pattern", "(unclosed"),
        ({"name": "length_penalty", "params": {"max_len": 3, "unit": "words"}}, "reward.params.unit", "words"),
        ({"name": "length_penalty", "params": {"max_len": 3, "unit": "tokens"}}, "reward.params.tokenizer", ""),
        ({"name": "length_penalty", "params": {"max_len": True}}, "reward.params.max_len", True),
        ({"name": "weighted_sum", "params": {"terms": []}}, "reward.params.terms", []),
        (
            {"name": "weighted_sum", "params": {"terms": [{"name": "gsm8k"}, {"name": "nope", "weight": 1}]}},
            "reward.params.terms[1].name",
            "nope",
        ),
        ({"name": "weighted_sum", "params": {"terms": [{"name": "gsm8k", "weight": "x"}]}}, "reward.params.terms[0].weight", "x"),
        ({"name": "reward_model", "params": {"path": "/nonexistent/rm"}}, "reward.params.path", "/nonexistent/rm"),
        ({"name": "gsm8k", "extra": 1}, "reward.extra", 1),
        # bounds and types (issue 16): every one names its field, none is a 500
        ({"name": ["math_verify"]}, "reward.name", ["math_verify"]),
        ({"name": "weighted_sum", "params": [1]}, "reward.params", [1]),
        ({"name": "math_verify", "params": {"timeout_s": 61}}, "reward.params.timeout_s", 61.0),
        ({"name": "math_verify", "params": {"timeout_s": 0}}, "reward.params.timeout_s", 0.0),
        ({"name": "math_verify", "params": {"rel_tol": float("inf")}}, "reward.params.rel_tol", float("inf")),
        ({"name": "regex_match", "params": {"pattern": "x", "reward": 1e9}}, "reward.params.reward", 1e9),
        ({"name": "regex_match", "params": {"pattern": "x" * 1001}}, "reward.params.pattern", "x" * 100 + "..."),
        ({"name": "length_penalty", "params": {"max_len": 10**12}}, "reward.params.max_len", 10**12),
        ({"name": "length_penalty", "params": {"max_len": 1, "tokenizer": "t" * 5000}}, "reward.params.tokenizer", "t" * 100 + "..."),
        ({"name": "weighted_sum", "params": {"terms": [{"name": "gsm8k"}] * 17}}, "reward.params.terms", [{"name": "gsm8k"}] * 17),
        ({"name": "weighted_sum", "params": {"terms": [{"name": "gsm8k", "weight": 1e9}]}}, "reward.params.terms[0].weight", 1e9),
        ({"name": "weighted_sum", "params": {"terms": [{"name": "gsm8k", "weight": None}]}}, "reward.params.terms[0].weight", None),
        ({"name": "weighted_sum", "params": {"terms": [{"name": "gsm8k", "params": {"x": 1}}]}}, "reward.params.terms[0].params.x", 1),
    ],
)
def test_bad_specs_name_field_and_value(spec, field, value):
    with pytest.raises(RewardSpecError) as info:
        build_reward(spec)
    assert info.value.field == field
    assert info.value.value == value
    assert str(info.value).startswith(f"{field}={value!r}")


# --- rewards cannot hang anything (issue 16) -------------------------------------------------

def _nested_sum(depth: int) -> dict:
    spec = {"name": "gsm8k"}
    for _ in range(depth):
        spec = {"name": "weighted_sum", "params": {"terms": [spec]}}
    return spec


def test_nesting_is_bounded_without_recursion_errors():
    assert build_reward(_nested_sum(MAX_DEPTH))(["#### 3"], ["3"], [""]) == [1.0]
    for depth in (MAX_DEPTH + 1, 5000):  # 5000 levels would overflow the stack if built recursively
        with pytest.raises(RewardSpecError) as info:
            build_reward(_nested_sum(depth))
        assert info.value.field == "reward" + ".params.terms[0]" * MAX_DEPTH + ".name"
        assert "nested more than" in str(info.value)


@pytest.mark.parametrize("pattern, reason", [
    (r"(\w+)\1", "invalid escape sequence"),  # backreferences need backtracking: RE2 has none
    ("(?=x)", "invalid perl operator"),
    ("(unclosed", "missing )"),
    ("a{1000}{1000}", "bad repetition operator"),
])
def test_regex_patterns_re2_cannot_compile_are_refused(pattern, reason):
    with pytest.raises(RewardSpecError) as info:
        build_reward({"name": "regex_match", "params": {"pattern": pattern}})
    assert info.value.field == "reward.params.pattern"
    assert f"invalid regular expression (RE2): {reason}" in str(info.value)


def test_catastrophic_regex_runs_in_linear_time():
    # With Python's re, ^(.+)+$! on 30 characters takes minutes; RE2 is linear in the text.
    fn = build_reward({"name": "regex_match", "params": {"pattern": "^(.+)+$!", "reward": 2.0}})
    t0 = time.monotonic()
    assert fn(["a" * 100_000, "b" * 30], [None, None], ["", ""]) == [0.0, 0.0]
    assert time.monotonic() - t0 < 2 and fn.timeouts == 0
    huge = build_reward({"name": "regex_match", "params": {"pattern": "a{4294967296}"}})  # RE2 reads it as text
    assert huge(["a{4294967296}", "aaaa"], [None, None], ["", ""]) == [1.0, 0.0]


@pytest.fixture
def test_rewards():
    """Test-only rewards: one stuck in C code holding the GIL on "hang", one raising on "boom"."""

    @register("test_gil_hog", "Test only: catastrophic backtracking in Python's re on 'hang'.")
    def gil_hog(*, _field):
        def score(response, ground_truth, prompt):
            if response == "hang":  # 2^40 steps inside re's C loop, which never releases the GIL
                re.fullmatch(r"(a+)+$", "a" * 40 + "!")
            return 1.0

        return PerResponse(score, budget_s=0.5)

    @register("test_raises", "Test only: raises on 'boom'.")
    def raises(*, _field):
        def score(response, ground_truth, prompt):
            if response == "boom":
                raise ValueError("boom in the scorer")
            return float(len(response))

        return PerResponse(score)

    yield
    del REWARDS["test_gil_hog"], REWARDS["test_raises"]


def test_a_hung_response_scores_zero_within_the_budget_and_the_gil_stays_free(test_rewards):
    ticks, stop = [], threading.Event()

    def heartbeat():  # what the trainer's heartbeat thread does, at 100 Hz
        while not stop.wait(0.01):
            ticks.append(time.monotonic())

    fn = build_reward({"name": "test_gil_hog"})
    fn(["warm"], [None], [""])  # the child is forked on the first batch
    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        t0 = time.monotonic()
        scores = fn(["ok", "hang", "ok", "hang"], [None] * 4, [""] * 4)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        thread.join()
    assert scores == [1.0, 0.0, 1.0, 0.0]
    assert fn.timeouts == 2
    assert elapsed < 2 * 0.5 + 2.0
    during = [t for t in ticks if t0 <= t <= t0 + elapsed]
    assert len(during) >= elapsed / 0.01 / 4, (len(during), elapsed)  # the heartbeat kept ticking
    assert fn(["hang"], [None], [""]) == [0.0] and fn.timeouts == 3  # cumulative
    assert fn(["ok"], [None], [""]) == [1.0]


def test_timeouts_of_a_weighted_sum_are_its_terms(test_rewards):
    fn = build_reward({"name": "weighted_sum", "params": {"terms": [
        {"name": "test_gil_hog", "weight": 2.0}, {"name": "test_raises", "weight": 0.5}]}})
    assert fn(["hang", "ok"], [None, None], ["", ""]) == [0.5 * 4, 2.0 + 0.5 * 2]
    assert fn.timeouts == 1
    for spec in ({"name": "gsm8k"}, {"name": "exact_match"}, {"name": "regex_match", "params": {"pattern": "x"}}):
        assert build_reward(spec).timeouts == 0


def test_an_exception_in_the_child_is_raised_in_the_caller(test_rewards):
    fn = build_reward({"name": "test_raises"})
    with pytest.raises(ValueError, match="boom in the scorer") as info:
        fn(["a", "bb", "boom", "c"], [None] * 4, [""] * 4)
    assert "responses[2]" in " ".join(info.value.__notes__)
    assert fn(["abc"], [None], [""]) == [3.0] and fn.timeouts == 0  # the same child goes on


def test_large_batches_are_scored_in_chunks():
    fn = build_reward({"name": "exact_match"})
    n = 10_000  # more than one shared-memory chunk
    scores = fn([str(i % 3) for i in range(n)], ["1"] * n, [""] * n)
    assert scores == [1.0 if i % 3 == 1 else 0.0 for i in range(n)]


def test_reward_model_builds_without_loading_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"],
                                                      "id2label": {"0": "bad", "1": "good"}}))
    fn = build_reward({"name": "reward_model", "params": {"path": str(tmp_path), "label_index": 1}})  # no weights there
    assert fn.timeouts == 0
    with pytest.raises(RewardSpecError) as info:
        build_reward({"name": "reward_model", "params": {"path": str(tmp_path), "label_index": 2}})
    assert info.value.field == "reward.params.label_index" and "2 labels" in str(info.value)
    with pytest.raises(RewardSpecError) as info:
        build_reward({"name": "reward_model", "params": {"path": str(tmp_path), "device": "cuda; rm -rf /"}})
    assert info.value.field == "reward.params.device"
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RewardSpecError, match="unreadable config.json"):
        build_reward({"name": "reward_model", "params": {"path": str(tmp_path)}})


@pytest.mark.parametrize("pred, truth, same", [
    ("3", "\\infty", False), ("-5", "\\infty", False), ("3", "2^{2^{20}}", False),
    ("\\infty", "\\infty", True), ("2^{2^{20}}", "2^{2^{20}}", True),
])
def test_a_number_is_not_close_to_infinity(pred, truth, same):
    """A non-finite value equals only itself (before, inf - 3 <= rel_tol * inf credited any number)."""
    assert answers_equal(pred, truth) is same
