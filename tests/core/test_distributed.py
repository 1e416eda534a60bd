"""The strategy the memory plan chooses for a run on several GPUs, and the exact `accelerate launch`
flags built for it (pure functions: no GPU, no launch). The real FSDP step is in
tests/core/test_fsdp_gpu.py (CUDA only)."""
from __future__ import annotations

import os

import pytest

from gft_core.distributed import FSDP_FLAGS, accelerate_flags, decoder_layer_class, launch_plan
from gft_core.memory import GIB, Shape, activation_bytes, choose_strategy, plan_for, plan_memory

# Qwen2.5-7B's shape: 7.6B parameters, 28 layers
QWEN7B = Shape.from_config({"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
                            "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064,
                            "tie_word_embeddings": False})


def test_sharded_estimate_divides_the_state_and_adds_the_gathered_layers(tiny_cfg):
    cfg = tiny_cfg(max_prompt_len=512, max_response_len=1024, micro_batch_size=1, mixed_precision="bf16",
                   gradient_checkpointing=True, prompts_per_step=8)
    whole = plan_memory(QWEN7B, cfg, num_gpus=4)
    sharded = whole.sharded(4, QWEN7B, activation_bytes(cfg))
    assert whole.strategy == "ddp" and sharded.strategy == "fsdp" and sharded.devices == 4
    for part in ("weights", "gradients", "optimizer"):
        assert getattr(sharded, part) == -(-getattr(whole, part) // 4)
    assert (sharded.activations, sharded.logits, sharded.rollout) == (whole.activations, whole.logits, whole.rollout)
    root = QWEN7B.params - QWEN7B.layers * QWEN7B.layer_params  # embeddings, head, final norm
    assert sharded.gathered == 2 * (root + 2 * QWEN7B.layer_params) * 2  # bf16 params and their gradients
    # 7.6B parameters x 16 bytes (weights, gradients, 2 moments) ~ 113 GiB whole; ~ 1/4 of that sharded
    assert whole.peak > 110 * GIB and sharded.peak < 40 * GIB
    assert "each 1/4, FSDP" in sharded.lines()[0] and "strategy FSDP" in sharded.lines()[-1]
    assert whole.sharded(1, QWEN7B).strategy == "single"
    lora = plan_memory(QWEN7B, tiny_cfg(max_prompt_len=512, max_response_len=1024, micro_batch_size=1,
                                        mixed_precision="bf16", prompts_per_step=8, lora_rank=16), num_gpus=4)
    assert lora.sharded(4, QWEN7B, 2).gathered == sharded.gathered // 2  # frozen: no unsharded gradients


def test_strategy_follows_what_fits_one_gpu(tiny_cfg):
    cfg = tiny_cfg(max_prompt_len=512, max_response_len=1024, micro_batch_size=1, mixed_precision="bf16",
                   gradient_checkpointing=True, prompts_per_step=8)
    whole = plan_memory(QWEN7B, cfg, num_gpus=4)
    h100 = 80 * GIB
    assert choose_strategy(whole, 1, h100) == "single"
    assert choose_strategy(whole, 4, None) == "ddp"  # nothing known: as before
    assert choose_strategy(whole, 4, h100) == "fsdp"  # 7B full fine-tuning does not fit 80 GiB whole
    assert choose_strategy(whole, 4, whole.need) == "ddp"
    assert plan_for(QWEN7B, cfg, 4, h100).strategy == "fsdp" and plan_for(QWEN7B, cfg, 4, h100).need < h100
    lora = tiny_cfg(max_prompt_len=512, max_response_len=1024, micro_batch_size=1, mixed_precision="bf16",
                    gradient_checkpointing=True, prompts_per_step=8, lora_rank=16)
    assert plan_for(QWEN7B, lora, 4, h100).strategy == "ddp"  # LoRA's 7B fits one GPU: no sharding


def test_accelerate_flags_for_each_strategy():
    base = ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "bf16"]
    assert accelerate_flags(num_gpus=2, mixed_precision="bf16", strategy="ddp", cuda=True) == base + ["--multi_gpu"]
    assert accelerate_flags(num_gpus=2, mixed_precision="bf16", strategy="fsdp", cuda=False) == base + ["--cpu"]
    fsdp = accelerate_flags(num_gpus=2, mixed_precision="bf16", strategy="fsdp", cuda=True,
                            layer_class="Qwen2DecoderLayer")
    assert fsdp == base + [
        "--use_fsdp", "--fsdp_version", "1", "--fsdp_sharding_strategy", "FULL_SHARD",
        "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_state_dict_type", "FULL_STATE_DICT",
        "--fsdp_backward_prefetch", "BACKWARD_PRE", "--fsdp_use_orig_params", "true",
        "--fsdp_sync_module_states", "true", "--fsdp_offload_params", "false",
        "--fsdp_cpu_ram_efficient_loading", "false", "--fsdp_transformer_layer_cls_to_wrap", "Qwen2DecoderLayer"]
    with pytest.raises(ValueError):
        accelerate_flags(num_gpus=2, mixed_precision="no", strategy="fsdp", cuda=True)


def test_fsdp_flags_become_the_environment_accelerates_fsdp_plugin_reads(monkeypatch):
    """accelerate's own parser and launcher env: the flags mean what the docstring says."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    flags = accelerate_flags(num_gpus=2, mixed_precision="bf16", strategy="fsdp", cuda=True,
                             layer_class="LlamaDecoderLayer")
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(flags + ["-m", "workers.train_child"]))
    assert args.use_fsdp and not args.cpu
    env = prepare_multi_gpu_env(args)
    assert {k: env[k] for k in ("ACCELERATE_USE_FSDP", "FSDP_VERSION", "FSDP_SHARDING_STRATEGY", "FSDP_AUTO_WRAP_POLICY",
                                "FSDP_TRANSFORMER_CLS_TO_WRAP", "FSDP_STATE_DICT_TYPE", "FSDP_USE_ORIG_PARAMS",
                                "FSDP_CPU_RAM_EFFICIENT_LOADING", "ACCELERATE_MIXED_PRECISION")} == {
        "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1", "FSDP_SHARDING_STRATEGY": "FULL_SHARD",
        "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP", "FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer",
        "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT", "FSDP_USE_ORIG_PARAMS": "true",
        "FSDP_CPU_RAM_EFFICIENT_LOADING": "false", "ACCELERATE_MIXED_PRECISION": "bf16"}
    assert set(FSDP_FLAGS) <= set(flags)


def test_launch_plan_of_a_run(tiny_cfg, tiny_model_dir):
    """The worker's call: the tiny model's plan; FSDP when the GPUs' free memory holds it only
    sharded, the model's decoder layer class wrapped; DDP on CPU processes without CUDA."""
    assert decoder_layer_class(tiny_model_dir) == "LlamaDecoderLayer"
    cfg = tiny_cfg(mixed_precision="bf16", prompts_per_step=2)
    shape = Shape.from_dir(tiny_model_dir)
    whole = plan_memory(shape, cfg, num_gpus=2)
    between = (whole.need + whole.sharded(2, shape, 2).need) // 2
    flags, plan = launch_plan(cfg, num_gpus=2, free_bytes=between, cuda=True)
    assert plan.strategy == "fsdp" and flags[-2:] == ["--fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer"]
    flags, plan = launch_plan(cfg, num_gpus=2, free_bytes=whole.need, cuda=True)
    assert plan.strategy == "ddp" and flags[-1] == "--multi_gpu"
    flags, plan = launch_plan(cfg, num_gpus=2, free_bytes=between, cuda=False)
    assert plan.strategy == "ddp" and flags[-1] == "--cpu"
    flags, plan = launch_plan(tiny_cfg(model_path=os.devnull), num_gpus=2, free_bytes=0, cuda=True)
    assert plan is None and flags[-1] == "--multi_gpu"
