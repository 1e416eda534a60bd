"""LoRA through PEFT: adapters on the policy, the base model as KL reference, adapter files.

A LoRA run trains only the adapter weights (`lora_rank > 0`). PEFT injects its layers into the
model in place, so the trainer keeps training and sampling the same transformers model object
(every fast path keeps working); the PeftModel wrapper is kept beside it for what only it does:
turning the adapters off (the reference model for GRPO's KL and the KL probe, without a second copy
of the weights), saving adapter-only checkpoints, and merging for export.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import torch

from gft_core.errors import ConfigError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# Target modules per model family (config.json `model_type`): attention and MLP projections, as
# LoRA recipes for these families use them.
TARGET_PRESETS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3"),
                    ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
}


def is_adapter_dir(path: str | Path) -> bool:
    """A directory holding a PEFT adapter (a LoRA run's checkpoint or adapter export)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The base model directory an adapter was trained on (PEFT records it in adapter_config.json)."""
    try:
        base = json.loads((Path(path) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as e:
        raise ConfigError("model_path", str(path), f"unreadable {ADAPTER_CONFIG}: {e}") from None
    if not base:
        raise ConfigError("model_path", str(path), f"{ADAPTER_CONFIG} names no base model")
    return base


def linear_module_names(model: Any) -> list[str]:
    """The distinct last names of the modules LoRA can adapt (linear layers and GPT-2's Conv1D)."""
    from transformers.pytorch_utils import Conv1D

    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules()
             if isinstance(m, (torch.nn.Linear, Conv1D)) and name}
    return sorted(names - {"lm_head", "score"})


def target_modules(model: Any, spec: str) -> list[str]:
    """The modules named by `lora_target_modules`: "auto" (the family preset, else every linear
    layer) or a comma-separated list; ConfigError naming the modules that exist if any matches nothing."""
    available = linear_module_names(model)
    if spec.strip() in ("", "auto"):
        preset = TARGET_PRESETS.get(getattr(model.config, "model_type", ""), ())
        chosen = [m for m in preset if m in available] or available
    else:
        chosen = [m.strip() for m in spec.split(",") if m.strip()]
        missing = [m for m in chosen if m not in available]
        if missing:
            raise ConfigError("lora_target_modules", spec,
                              f"{', '.join(missing)} match no module of this model; its modules: {', '.join(available)}")
    return chosen


def apply_lora(model: Any, *, rank: int, alpha: float, dropout: float, targets: str) -> Any:
    """Add LoRA adapters to `model` in place; returns the PeftModel wrapper (the base model object
    stays what callers use). Only the adapter weights require gradients afterwards."""
    from peft import LoraConfig, get_peft_model

    hidden = getattr(model.config, "hidden_size", None) or getattr(model.config, "n_embd", None)
    if hidden and rank > hidden:
        raise ConfigError("lora_rank", rank, f"must not exceed the model's hidden size ({hidden})")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules(model, targets),
                        task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, config)


def trainable_parameters(model: Any) -> tuple[int, int]:
    """(parameters that train, all parameters)."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


class AdaptersOff(torch.nn.Module):
    """The base model of a LoRA policy: the same weights, called with the adapters disabled.
    Stands in wherever the trainer wants a frozen start model (GRPO's reference, the KL probe)."""

    def __init__(self, peft_model: Any):
        super().__init__()
        object.__setattr__(self, "peft", peft_model)  # not a submodule: its weights are the policy's
        object.__setattr__(self, "runner", None)
        self.config = peft_model.get_base_model().config

    def run_through(self, wrapper: Any) -> None:
        """Call `wrapper` (the FSDP-wrapped base: its forward gathers the shards) instead of the base."""
        object.__setattr__(self, "runner", wrapper)

    def forward(self, *args, **kwargs):
        with torch.no_grad(), self.peft.disable_adapter():
            return (self.runner or self.peft.get_base_model())(*args, **kwargs)

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:  # for dtype/device probes
        return self.peft.get_base_model().parameters(recurse)


def load_adapter_weights(peft_model: Any, adapter_dir: Path) -> None:
    """Load an adapter checkpoint into a LoRA policy (resume)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(peft_model, load_file(str(adapter_dir / ADAPTER_WEIGHTS)))


def save_final_model(model: Any, tokenizer: Any, path: Path, *, peft: Any = None, merged: bool = True,
                     state: dict | None = None) -> None:
    """The final model with its tokenizer: full weights, or for a LoRA run (`peft`) the adapters
    merged into full weights or the adapter alone. Merging works on a copy: the policy stays as it is.
    `state`: the gathered full state dict of a full fine-tuning FSDP run (its modules hold only
    shards; a LoRA run under FSDP passes `unsharded_copy` as `peft` instead)."""
    import copy

    if peft is None:
        model.save_pretrained(path, **({"state_dict": state} if state is not None else {}))
    elif merged:
        copy.deepcopy(peft).merge_and_unload().save_pretrained(path)
    else:
        peft.save_pretrained(path)
    tokenizer.save_pretrained(path)


def peft_state(state: dict) -> dict:
    """A state dict of the model PEFT injected adapters into, under the PeftModel's names."""
    return {f"base_model.model.{k}": v for k, v in state.items()}


def unsharded_copy(peft: Any, state: dict, into: Any = None) -> Any:
    """A CPU PeftModel like `peft` (whose modules hold FSDP shards, and whose module names PEFT's
    own save would not match) holding the gathered `state` (peft_state names): `into` when given
    (a copy made before), else its base loaded again from the base model's directory."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    if into is None:
        config = peft.peft_config["default"]
        with _quiet():
            base = AutoModelForCausalLM.from_pretrained(config.base_model_name_or_path, dtype=torch.float32)
        into = get_peft_model(base, config)
    result = into.load_state_dict(state, strict=False)
    if result.missing_keys:  # every parameter is in a gathered state: a mismatch is a naming bug
        raise RuntimeError(f"the gathered state misses {result.missing_keys[:3]}")
    return into


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_adapter_model(path: str | Path, dtype: torch.dtype) -> Any:
    """A model from an adapter directory: its base, with the adapter merged in (for sampling and
    evaluation, where adapters only cost time)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with _quiet():
        base = AutoModelForCausalLM.from_pretrained(adapter_base(path), dtype=dtype)
        model = PeftModel.from_pretrained(base, str(path)).merge_and_unload()
    return model.requires_grad_(True)  # PEFT froze the base; a later stage trains every weight
