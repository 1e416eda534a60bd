"""Evaluation and teacher generation build a row's prompt exactly as training does (issue 22): one
function (gft_core.policy.encode_prompt) with the run's / dataset's PromptFormat, for a tokenizer
with a chat template and for the plain tiny one."""

from __future__ import annotations

import json
import shutil

import pytest

from gft_core.benchmarks import EvalSettings, evaluate_benchmark
from gft_core.config import GFTConfig
from gft_core.evaluation import SuiteEvaluation
from gft_core.policy import PromptFormat, saved_prompt_format
from gft_core.teachers import generate_teacher_answers
from gft_core.trainer import Trainer

SYSTEM, SUFFIX = "Be exact.", "Put the final answer within \\boxed{}."


@pytest.fixture
def chat_model_dir(tiny_model_dir, tmp_path):
    """The tiny model with a chat template on its tokenizer ("Question: ...\\nAnswer:")."""
    from gft_core.tiny import CHAT_TEMPLATE

    chat = tmp_path / "chat-model"
    shutil.copytree(tiny_model_dir, chat)
    tc = json.loads((chat / "tokenizer_config.json").read_text())
    (chat / "tokenizer_config.json").write_text(json.dumps({**tc, "chat_template": CHAT_TEMPLATE}))
    return chat


@pytest.fixture
def generated_prompts(monkeypatch):
    """The prompt ids every generate_samples call receives (the real engine still generates)."""
    import gft_core.rollout as rollout

    seen: list[list[int]] = []
    real = rollout.generate_samples

    def spy(model, tokenizer, prompt_ids, **kw):
        seen.extend(list(p) for p in prompt_ids)
        return real(model, tokenizer, prompt_ids, **kw)

    monkeypatch.setattr(rollout, "generate_samples", spy)
    return seen


@pytest.mark.parametrize("templated", [True, False], ids=["chat-template", "plain-tiny"])
def test_evaluation_and_teacher_prompts_equal_the_training_prompt(templated, chat_model_dir, tiny_model_dir, tiny_cfg,
                                                                 tmp_path, generated_prompts):
    cfg = tiny_cfg(model_path=str(chat_model_dir if templated else tiny_model_dir),
                   data={"system_prompt": SYSTEM, "instruction_suffix": SUFFIX}).validate()
    trainer = Trainer(cfg)
    trainer.setup()
    model, tokenizer = trainer.accelerator.unwrap_model(trainer.model), trainer.tokenizer
    ex = trainer.train_examples[0]
    train_ids = list(trainer.build_groups([ex], 0)[0].prompt_ids)
    text = tokenizer.decode(train_ids, skip_special_tokens=True)
    assert text == (f"Question: {SYSTEM}\n\n{ex.prompt}\n{SUFFIX}\nAnswer:" if templated
                    else f"{SYSTEM}\n\n{ex.prompt}\n{SUFFIX}")

    # a suite that leaves the format unset evaluates a run's model with the run's format (as the
    # trainer's own suite evaluation and the web's evaluation of a checkpoint do, from its config)
    suite = {"settings": {"k": 1, "max_new_tokens": 2}, "benchmarks": [{"name": "toy", "path": "-", "mapping": "toy"}]}
    fmt = SuiteEvaluation(suite, cfg.data.prompt_format).prompt_format
    assert fmt == cfg.data.prompt_format == PromptFormat.from_dict(cfg.to_dict()["data"])
    generated_prompts.clear()
    result = evaluate_benchmark(model, tokenizer, [ex], suite["settings"], name="toy", prompt_format=fmt)
    assert generated_prompts == [train_ids]
    assert result.prompt_format == {"use_chat_template": True, "system_prompt": SYSTEM, "instruction_suffix": SUFFIX,
                                    "chat_template_applied": templated}
    assert result.summary()["prompt_format"] == result.prompt_format

    # teacher generation: the dataset's system prompt and suffix, the teacher model's template
    generated_prompts.clear()
    generate_teacher_answers(model, tokenizer, [ex], {"k": 1, "max_new_tokens": 2}, tmp_path / "partial.jsonl",
                             prompt_format=PromptFormat(system_prompt=SYSTEM, instruction_suffix=SUFFIX))
    assert generated_prompts == [train_ids]

    # the suite's own settings win over the run's
    off = EvalSettings(use_chat_template=False, instruction_suffix="").prompt_format(cfg.data.prompt_format)
    assert off == PromptFormat(False, SYSTEM, "")


def test_defaults_match_training_and_the_final_model_carries_its_format(tiny_cfg, tmp_path):
    """A base model is evaluated with training's defaults (template on, no system prompt or suffix);
    a run's final model and checkpoints say which format they were trained with."""
    assert EvalSettings().prompt_format() == GFTConfig().data.prompt_format == PromptFormat()
    assert EvalSettings().use_chat_template is None  # unset: the model's own
    with pytest.raises(Exception, match="use_chat_template"):
        EvalSettings(use_chat_template="yes")
    with pytest.raises(Exception, match="instruction_suffix"):
        EvalSettings(instruction_suffix=3)

    cfg = tiny_cfg(max_steps=1, checkpoint_interval=1, eval_interval=0, kl_interval=0,
                   data={"instruction_suffix": SUFFIX}).validate()
    trainer = Trainer(cfg)
    result = trainer.train()
    expected = PromptFormat(True, "", SUFFIX)
    assert saved_prompt_format(result.final_dir) == expected
    assert saved_prompt_format(tmp_path / "run" / "checkpoints" / "step-1" / "model") == expected
    assert saved_prompt_format(tmp_path) is None  # not a run's model: the caller's defaults apply
