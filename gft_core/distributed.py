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

FSDP_FLAGS = ["--use_fsdp", "--fsdp_version", "1", "--fsdp_sharding_strategy", "FULL_SHARD",
              "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP", "--fsdp_state_dict_type", "FULL_STATE_DICT",
              "--fsdp_backward_prefetch", "BACKWARD_PRE", "--fsdp_use_orig_params", "true",
              "--fsdp_sync_module_states", "true", "--fsdp_offload_params", "false"]


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
