"""The memory plan: parameter counts from config.json, and the plan against measured peaks."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gft_core.config import GFTConfig
from gft_core.memory import Shape, plan_memory


def _count(config) -> int:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_the_models():
    from transformers import LlamaConfig, Qwen2Config

    tied = LlamaConfig(vocab_size=745, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True)
    # Qwen2.5-1.5B's shape: grouped-query attention, untied head (q/k/v biases: 0.02% more, ignored)
    qwen = Qwen2Config(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                       num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=False)
    for config, tolerance in ((tied, 0), (qwen, 0.001)):
        planned, real = Shape.from_config(config.to_dict()).params, _count(config)
        assert abs(planned - real) <= tolerance * real, (planned, real)


def test_lora_count_matches_peft(tiny_model_dir):
    from gft_core.lora import apply_lora, trainable_parameters
    from gft_core.policy import load_policy

    model, _ = load_policy(tiny_model_dir)
    trainable, _ = trainable_parameters(apply_lora(model, rank=8, alpha=16, dropout=0.0, targets="auto"))
    assert Shape.from_dir(tiny_model_dir).lora_params(8) == trainable
    model, _ = load_policy(tiny_model_dir)  # named modules: the count follows them
    trainable, total = trainable_parameters(apply_lora(model, rank=4, alpha=16, dropout=0.0, targets="q_proj, v_proj"))
    shape = Shape.from_dir(tiny_model_dir)
    assert shape.trainable(4, "q_proj, v_proj") == trainable and shape.trainable(0) == shape.params


def test_plan_parts_follow_the_settings(tiny_cfg):
    shape = Shape.from_config({"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
                               "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151936,
                               "tie_word_embeddings": True})
    full = plan_memory(shape, tiny_cfg(max_prompt_len=1024, max_response_len=2048, micro_batch_size=4))
    lora = plan_memory(shape, tiny_cfg(max_prompt_len=1024, max_response_len=2048, micro_batch_size=4, lora_rank=16))
    ckpt = plan_memory(shape, tiny_cfg(max_prompt_len=1024, max_response_len=2048, micro_batch_size=4,
                                       gradient_checkpointing=True))
    assert full.optimizer == 2 * full.gradients == 8 * shape.params
    assert lora.optimizer < full.optimizer / 50 and lora.weights > full.weights
    assert ckpt.activations < full.activations / 5 and ckpt.logits == full.logits
    assert "peak per device" in full.lines()[-1]


def test_config_with_lora_is_planned_with_adapters(tiny_cfg):
    cfg: GFTConfig = tiny_cfg(lora_rank=4)
    plan = plan_memory(Shape.from_dir(cfg.model_path), cfg)
    assert plan.trainable == Shape.from_dir(cfg.model_path).lora_params(4)


@pytest.fixture(scope="module")
def measured_model(tmp_path_factory) -> Path:
    """A tiny Llama wide enough that its tensors, not fixed buffers, make the peak (~2.5M parameters)."""
    from gft_core.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("memory") / "model", hidden_size=256, num_layers=2, seed=0)


@pytest.mark.parametrize("overrides", [
    {"micro_batch_size": 4},  # full fine-tuning, two micro-batches per step: gradients beside activations
    {"gradient_checkpointing": True},  # one micro-batch of 8
    {"lora_rank": 16},
], ids=["full-accumulating", "checkpointing", "lora"])
def test_plan_within_25_percent_of_the_measured_peak(measured_model, toy_data, tmp_path, overrides):
    """The plan's tensors against the peak tensor memory of two real training steps on CPU (the
    profiler's allocator events: exact, unlike RSS); bench/memory.py has more settings."""
    from gft_core.memory import measure_peak
    from gft_core.trainer import Trainer

    cfg = GFTConfig.from_dict({
        "method": "gft", "model_path": str(measured_model), "output_dir": str(tmp_path / "run"),
        "data": {"path": str(toy_data["train"]), "mapping": "toy"}, "n_expert": 1, "n_teacher": 1, "n_self": 2,
        "tau": 0.5, "prompts_per_step": 2, "micro_batch_size": 8, "max_prompt_len": 16, "max_response_len": 32,
        "max_steps": 2, "eval_max_prompts": None, "kl_interval": 0, "checkpoint_interval": 0, "save_final": False,
        "group_sample_interval": 0, "eval_batch_size": 4, **overrides})
    cfg.reward_fn()
    plan = plan_memory(Shape.from_dir(measured_model), cfg)
    measured = measure_peak(lambda: Trainer(cfg).train())
    assert plan.accumulates == ("micro_batch_size" in overrides)
    assert abs(plan.peak / measured - 1) <= 0.25, (plan.lines(), measured)
