"""Named presets of run settings (`recipe: gft-paper`): one table that the CLI's YAML, the launch
form and the API read. A recipe's values sit under the user's explicit ones: a setting given by
hand wins. Keys are GFTConfig settings; `data.*` keys are DataConfig settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gft_core.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    name: str
    label: str
    description: str
    settings: dict[str, Any] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe(
        "gft-paper", "GFT paper (Qwen2.5-Math-1.5B)",
        "The authors' settings for Qwen2.5-Math-1.5B (docs/GFT.md section 7): tau 0.1, 1 expert + 3 teachers "
        "+ 4 self samples, lr 1e-6 constant, 128 prompts per step, 2,048 response tokens, chat template on, "
        "no KL and no entropy bonus (the trainer has none), gradient clipping 1.0.",
        {"method": "gft", "tau": 0.1, "n_expert": 1, "n_teacher": 3, "n_self": 4, "lr": 1e-6,
         "lr_schedule": "constant", "weight_decay": 0.01, "prompts_per_step": 128, "max_response_len": 2048,
         "max_prompt_len": 1024, "temperature": 1.0, "kl_coef": 0.0, "max_grad_norm": 1.0,
         "data.use_chat_template": True},
    ),
)}


def get_recipe(name: Any, field_name: str = "recipe") -> Recipe:
    """The recipe called `name`; ConfigError naming `field_name` (and the known recipes) otherwise."""
    if not isinstance(name, str) or name not in RECIPES:
        raise ConfigError(field_name, name, f"unknown recipe; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def apply_recipe(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A nested config dict (as read from YAML) with the recipe's settings under its own values."""
    recipe = get_recipe(name)
    out = dict(config)
    data = out.get("data")
    data = {"path": data} if isinstance(data, str) else dict(data or {}) if isinstance(data, dict) else data
    for key, value in recipe.settings.items():
        if key.startswith("data."):
            if isinstance(data, dict):
                data.setdefault(key[5:], value)
        else:
            out.setdefault(key, value)
    if isinstance(data, dict):
        out["data"] = data
    return out


def recipe_diff(name: str, current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """[(setting, current value, recipe value)] for the recipe's settings that differ from
    `current` (flat: data settings dotted), in the table's order: what choosing it changes."""
    return [(key, current.get(key), value) for key, value in get_recipe(name).settings.items()
            if current.get(key) != value]
