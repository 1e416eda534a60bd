"""The tiny tokenizer, model and toy task."""

from __future__ import annotations

import json

import pytest

from gft_core.data import PRESETS, load_examples
from gft_core.rewards import build_reward
from gft_core.tiny import build_tokenizer, toy_examples


@pytest.mark.parametrize("text", [
    "What is 3 + 4 * 2?",
    "First 4 * 2 = 8. Then 3 + 8 = 11. The answer is \\boxed{11}",
    "unknown wörds, 日本 and\n  two  spaces",
])
def test_tokenizer_round_trip(text):
    tok = build_tokenizer()
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_tokens_and_save(tmp_path):
    from transformers import AutoTokenizer

    tok = build_tokenizer()
    assert tok.convert_ids_to_tokens(tok("The answer", add_special_tokens=False)["input_ids"]) == ["▁The", "▁answer"]
    assert [tok.convert_ids_to_tokens(i) for i in tok("12", add_special_tokens=False)["input_ids"]][-2:] == ["1", "2"]
    assert {tok.pad_token, tok.bos_token, tok.eos_token} == {"<pad>", "<s>", "</s>"}
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("What is 1 + 2?")["input_ids"] == tok("What is 1 + 2?")["input_ids"]
    assert again.padding_side == "left"


def test_tiny_model_is_an_hf_directory(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert model.config.vocab_size == len(tok)
    out = model(torch.tensor([tok("What is 1 + 2?")["input_ids"]]))
    assert out.logits.shape[-1] == len(tok)


def test_default_tiny_model_has_a_few_million_params(tmp_path):
    from gft_core.tiny import count_parameters, make_tiny_model

    n = count_parameters(make_tiny_model(tmp_path / "m"))
    assert 1_000_000 < n < 10_000_000


def test_tiny_model_is_seeded(tmp_path):
    from safetensors.torch import load_file

    from gft_core.tiny import make_tiny_model

    kw = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    a = load_file(str(make_tiny_model(tmp_path / "a", seed=3, **kw) / "model.safetensors"))
    b = load_file(str(make_tiny_model(tmp_path / "b", seed=3, **kw) / "model.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)


def test_toy_rows_are_verifiable():
    reward = build_reward({"name": "math_verify"})
    rows = toy_examples(200, seed=1)
    experts = reward([r["expert"] for r in rows], [r["answer"] for r in rows], [r["prompt"] for r in rows])
    assert experts == [1.0] * len(rows)
    wrong = 0
    for r in rows:
        assert len(r["teachers"]) == 3
        scores = reward(r["teachers"], [r["answer"]] * 3, [r["prompt"]] * 3)
        for t, s in zip(r["teachers"], scores):
            assert s == (0.0 if t.startswith("From left to right") else 1.0)
            wrong += s == 0.0
    assert 0 < wrong < len(rows)  # some rows carry a wrong teacher answer, most do not


def test_toy_splits_are_disjoint_and_seeded():
    train = toy_examples(300, split="train", seed=0)
    held_out = toy_examples(100, split="eval", seed=0)
    assert not {r["expression"] for r in train} & {r["expression"] for r in held_out}
    assert toy_examples(20, seed=5) == toy_examples(20, seed=5)
    assert toy_examples(20, seed=5) != toy_examples(20, seed=6)


def test_toy_data_loads_with_the_toy_preset(toy_data):
    rows = [json.loads(line) for line in toy_data["train"].read_text().splitlines()]
    assert len(rows) == 64 and set(rows[0]) >= {"prompt", "expert", "teachers", "answer"}
    examples = load_examples(toy_data["eval"], PRESETS["toy"])
    assert len(examples) == 8 and examples[0].teachers and examples[0].ground_truth


def test_easy_toy_variant_has_two_operations_small_operands_and_no_parentheses(tmp_path):
    from gft_core.cli import main
    from gft_core.tiny import EASY_FORMS

    assert main(["make-toy-data", str(tmp_path), "--n-train", "50", "--n-eval", "10", "--easy"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 50
    for r in rows:
        tokens = r["expression"].split()
        assert "(" not in tokens and len(tokens) == 5
        assert all(1 <= int(t) <= 6 for t in tokens[::2])
        assert " ".join("abc"[i // 2] if i % 2 == 0 else t for i, t in enumerate(tokens)) in EASY_FORMS


def test_prompt_format_defaults_keep_the_tiny_prompts_plain(tiny_model_dir):
    """The chat template is on by default (as the paper's code); the tiny tokenizer has none, so
    its prompts are what they always were: the plain prompt with BOS (README recipe unchanged)."""
    from transformers import AutoTokenizer

    from gft_core.config import GFTConfig
    from gft_core.policy import PromptFormat, encode_prompt, format_prompt, has_chat_template

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    fmt = GFTConfig().data.prompt_format
    assert fmt == PromptFormat(chat_template=True) and not has_chat_template(tok)
    prompt = "What is 3 + 4?"
    assert encode_prompt(tok, prompt, max_len=64, chat_template=fmt) == tok(prompt)["input_ids"]
    assert encode_prompt(tok, prompt, max_len=64, chat_template=True) == tok(prompt)["input_ids"]
    suffix = "Please reason step by step, and put your final answer within \\boxed{}."
    assert format_prompt(tok, prompt, PromptFormat(True, "Be brief.", suffix)) == (
        f"Be brief.\n\n{prompt}\n{suffix}", False)


def test_prompt_format_with_a_chat_template():
    from gft_core.policy import PromptFormat, encode_prompt, format_prompt
    from gft_core.tiny import CHAT_TEMPLATE

    tok = build_tokenizer()
    tok.chat_template = CHAT_TEMPLATE  # "Question: ...\nAnswer:"; no system role: it joins the user turn
    fmt = PromptFormat(True, "", "Put the answer in \\boxed{}.")
    text, templated = format_prompt(tok, "What is 2 + 2?", fmt)
    assert templated and text == "Question: What is 2 + 2?\nPut the answer in \\boxed{}.\nAnswer:"
    assert encode_prompt(tok, "What is 2 + 2?", max_len=500, chat_template=fmt) == tok(text, add_special_tokens=False)["input_ids"]
    assert format_prompt(tok, "Hi", PromptFormat(True, "Sys", ""))[0] == "Question: Sys\n\nHi\nAnswer:"
    assert format_prompt(tok, "Hi", PromptFormat(False, "", "")) == ("Hi", False)
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert format_prompt(tok, "Hi", PromptFormat(True, "Sys", "Go."))[0] == "<|system|>Sys\n<|user|>Hi\nGo.\n<|assistant|>"
