"""How a run on several GPUs is launched: the `accelerate launch` flags of a strategy the memory plan
chose (gft_core.memory.choose_strategy), as a pure function the worker and the tests share.

- "ddp": every GPU holds the whole model (`--multi_gpu`).
- "fsdp": FSDP (version 1) full shard, one unit per decoder layer (`--fsdp_transformer_layer_cls_to_wrap`,
  the model's own no-split class: LlamaDecoderLayer, Qwen2DecoderLayer, ...), full state dicts, so
  gft_core.checkpoints writes the same Hugging Face directory as without FSDP and a resume loads it
  into the unwrapped model before accelerate's prepare; `use_orig_params` keeps the parameters'
  names and allows frozen and trainable parameters in one unit (LoRA).
- without CUDA (the tests' CPU workers): `--cpu`, several processes on gloo, no FSDP.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FSDP_FLAGS = ["--use_fsdp", "--fsdp_version", "1", "--fsdp_sharding_strategy", "FULL_SHARD",
              "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_state_dict_type", "FULL_STATE_DICT",
              "--fsdp_backward_prefetch", "BACKWARD_PRE", "--fsdp_use_orig_params", "true",
              "--fsdp_sync_module_states", "true", "--fsdp_offload_params", "false",
              # every rank loads the whole model (a resume loads its weights before prepare, on every rank)
              "--fsdp_cpu_ram_efficient_loading", "false"]


def accelerate_flags(*, num_gpus: int, mixed_precision: str, strategy: str, cuda: bool,
                     layer_class: str | None = None) -> list[str]:
    """The flags of `accelerate launch` (before the script) for `num_gpus` processes on one machine."""
    flags = ["--num_processes", str(num_gpus), "--num_machines", "1", "--mixed_precision", mixed_precision or "no"]
    if not cuda:
        return flags + ["--cpu"]
    if strategy == "fsdp":
        if not layer_class:
            raise ValueError("FSDP wraps each decoder layer: the model's layer class is needed")
        return flags + FSDP_FLAGS + ["--fsdp_transformer_layer_cls_to_wrap", layer_class]
    return flags + ["--multi_gpu"]


def decoder_layer_class(model_dir: str | Path) -> str | None:
    """The class name FSDP wraps: the first of the model class's `_no_split_modules` (transformers'
    own list of the blocks that must stay whole), from config.json's architectures; None if unknown."""
    import transformers

    try:
        arch = json.loads((Path(model_dir) / "config.json").read_text())["architectures"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    names = getattr(getattr(transformers, arch, None), "_no_split_modules", None) or []
    return names[0] if names else None


def launch_plan(cfg: Any, *, num_gpus: int, free_bytes: int | None, cuda: bool) -> tuple[list[str], Any]:
    """(accelerate flags, memory plan or None) of run config `cfg` (a GFTConfig) on `num_gpus` GPUs
    of which the smallest has `free_bytes` free (None: unknown): the plan chooses the strategy
    (gft_core.memory.plan_for); without CUDA it is DDP on CPU processes; a model without a
    readable config.json (an adapter directory) is not planned and runs DDP."""
    from gft_core.memory import Shape, plan_for

    try:
        plan = plan_for(Shape.from_dir(cfg.model_path), cfg, num_gpus, free_bytes if cuda else None)
    except (OSError, ValueError, KeyError, TypeError):
        plan = None
    strategy = plan.strategy if plan is not None else "ddp"
    layer = decoder_layer_class(cfg.model_path) if strategy == "fsdp" else None
    return accelerate_flags(num_gpus=num_gpus, mixed_precision=cfg.mixed_precision, strategy=strategy, cuda=cuda,
                            layer_class=layer), plan
