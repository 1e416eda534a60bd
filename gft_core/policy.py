"""The policy model: loading a local Hugging Face directory, encoding prompts, seeding."""

from __future__ import annotations

import copy
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from a tuple of parts; stable across processes and Python versions."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def load_policy(path: str | Path, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from a local Hugging Face directory; float32 master weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from gft_core.lora import is_adapter_dir, load_adapter_model

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if is_adapter_dir(path):  # a LoRA run's adapter export: its base with the adapter merged in
        return load_adapter_model(path, dtype), tokenizer
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model, tokenizer


def prepare_training(model: Any, cfg: Any) -> Any | None:
    """Activation checkpointing and LoRA adapters as the config asks; the PeftModel wrapper of a
    LoRA run (None for full fine-tuning: every parameter trains)."""
    if cfg.gradient_checkpointing:
        # non-reentrant: works with frozen inputs (LoRA) and without use_cache tricks
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if not cfg.lora_rank:
        return None
    from gft_core.lora import apply_lora

    return apply_lora(model, rank=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                      targets=cfg.lora_target_modules)


def load_weights(model: Any, model_dir: Path) -> None:
    """Load a checkpoint's weights into an already built model (tied weights re-tied)."""
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(model_dir, dtype=next(model.parameters()).dtype)
    model.load_state_dict(saved.state_dict())
    del saved


def frozen_copy(model: Any, device: Any) -> Any:
    """An eval-mode copy of `model` without gradients (GRPO's reference, the KL probe's start model)."""
    ref = copy.deepcopy(model).to(device).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


@dataclass(frozen=True)
class PromptFormat:
    """How a dataset prompt becomes the model's input (docs/GFT.md: the paper's code always applies
    the chat template). `chat_template` applies the tokenizer's template when it has one; a
    tokenizer without one (the built-in tiny model) falls back to the plain prompt. The system
    prompt and the instruction suffix are dataset-level settings: the suffix follows the prompt
    on a new line; without a template the system prompt precedes it, separated by a blank line."""

    chat_template: bool = True
    system_prompt: str = ""
    instruction_suffix: str = ""

    def content(self, prompt: str) -> str:
        """The user turn: the prompt, then the instruction suffix on its own line."""
        return f"{prompt}\n{self.instruction_suffix}" if self.instruction_suffix else prompt

    def to_dict(self) -> dict:
        """The format under DataConfig's names (use_chat_template, system_prompt, instruction_suffix)."""
        return {"use_chat_template": self.chat_template, "system_prompt": self.system_prompt,
                "instruction_suffix": self.instruction_suffix}

    @classmethod
    def from_dict(cls, d: dict | None) -> "PromptFormat":
        """The format of a to_dict() or a `data` config section; what is missing takes the default."""
        return cls().override(**{k: (d or {}).get(k) for k in PROMPT_FORMAT_FIELDS})

    def override(self, **settings: Any) -> "PromptFormat":
        """This format with the settings given (by DataConfig's names) that are not None."""
        given = {k: v for k, v in settings.items() if v is not None}
        return PromptFormat(bool(given.get("use_chat_template", self.chat_template)),
                            str(given.get("system_prompt", self.system_prompt)),
                            str(given.get("instruction_suffix", self.instruction_suffix)))

    def describe(self, has_template: bool) -> dict:
        """to_dict() plus whether the chat template is applied to a model that has one or not
        (has_chat_template / model_has_chat_template): what an evaluation records."""
        return {**self.to_dict(), "chat_template_applied": bool(self.chat_template and has_template)}


# The prompt-format settings by DataConfig's (and EvalSettings') names.
PROMPT_FORMAT_FIELDS = ("use_chat_template", "system_prompt", "instruction_suffix")


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def model_has_chat_template(path: str | Path) -> bool:
    """Whether a local model directory's tokenizer carries a chat template (read from its files,
    without loading the tokenizer: tokenizer_config.json or chat_template.jinja / .json)."""
    p = Path(path)
    if (p / "chat_template.jinja").is_file() or (p / "chat_template.json").is_file():
        return True
    try:
        import json

        return bool(json.loads((p / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return False


PROMPT_FORMAT_FILE = "gft_prompt_format.json"  # written next to a run's final model


def saved_prompt_format(model_dir: str | Path) -> PromptFormat | None:
    """The format a run trained a model directory with: its final model's PROMPT_FORMAT_FILE, or a
    checkpoint's (step-N/model) run config in step-N/trainer_state.json; None for another model."""
    import json

    p = Path(model_dir)
    try:
        if (p / PROMPT_FORMAT_FILE).is_file():
            return PromptFormat.from_dict(json.loads((p / PROMPT_FORMAT_FILE).read_text()))
        if (p.parent / "trainer_state.json").is_file():
            data = (json.loads((p.parent / "trainer_state.json").read_text()).get("config") or {}).get("data")
            return PromptFormat.from_dict(data) if isinstance(data, dict) else None
    except (OSError, ValueError, AttributeError):
        return None
    return None


def format_prompt(tokenizer: Any, prompt: str, fmt: "PromptFormat | bool") -> tuple[str, bool]:
    """(the text the model sees, whether the chat template was applied)."""
    fmt = fmt if isinstance(fmt, PromptFormat) else PromptFormat(chat_template=bool(fmt))
    content = fmt.content(prompt)
    if fmt.chat_template and has_chat_template(tokenizer):
        messages = [{"role": "user", "content": content}]
        if fmt.system_prompt:
            messages.insert(0, {"role": "system", "content": fmt.system_prompt})
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - a template that refuses a system role
            text = None
        if text is None or (fmt.system_prompt and fmt.system_prompt not in text):
            # a template without a system role (it refuses or drops it): the system prompt joins the user turn
            messages = [{"role": "user", "content": f"{fmt.system_prompt}\n\n{content}"}]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, True
    return (f"{fmt.system_prompt}\n\n{content}" if fmt.system_prompt else content), False


def encode_prompt(tokenizer: Any, prompt: str, *, max_len: int, chat_template: "PromptFormat | bool") -> list[int]:
    """Prompt token ids in the given format (a PromptFormat, or a bool: chat template on/off with no
    system prompt or suffix); too long prompts keep their last max_len tokens. The chat template
    brings its own special tokens; the plain prompt gets the tokenizer's (e.g. BOS)."""
    text, templated = format_prompt(tokenizer, prompt, chat_template)
    ids = tokenizer(text, add_special_tokens=not templated)["input_ids"]
    return list(ids[-max_len:])
