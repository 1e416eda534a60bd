"""The launch fields of the form and the API, generated from gft_core's one list of settings
(gft_core.config.FIELDS / LAUNCH_FIELDS: type, bounds, choices, label, help, nullability), plus
the web-only inputs (model, dataset, eval split, reward config, eval suite, GPUs, queue, name, tags), which
are defined once here. A new launch setting in gft_core appears on both without a change here.

Values are checked with gft_core.config.check_field, so the form, the API and the trainer
answer an out-of-range value with the same message.
"""
from __future__ import annotations

from typing import Any, Callable

from django.conf import settings

from gft_core.config import FIELDS, LAUNCH_FIELDS, ConfigError, FieldSpec, check_field
from gft_core.methods import METHODS as METHOD_TABLE


# Where the web-only inputs sit among the config sections: (before, after) the section's settings.
WEB_SECTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Run": (("name", "recipe"), ("model", "init_from_run", "init_from_step", "tags")),
    "Data and reward": ((), ("dataset", "eval_split", "eval_fraction", "reward_config")),
    "Length, evaluation, checkpoints": ((), ("eval_suite",)),
    "Hardware": ((), ("num_gpus", "queue")),
}
SECTION_ORDER = ("Run", "Data and reward", "Group", "Optimisation", "Length, evaluation, checkpoints", "LoRA",
                 "Hardware")
# Config keys the web sets itself; the API's free-form `config` may not override them.
WEB_CONTROLLED = frozenset({"method", "model_path", "output_dir", "data", "reward", "eval_suite"}) | {
    name for name in FIELDS if name.startswith("data.")}
NAME_MAX_LENGTH = 200  # Run.name
TAG_MAX_LENGTH = 50
MAX_ID = 2**31 - 1  # a Postgres integer key
INIT_FROM_RUN_HELP = ("Start from another run of your team instead of the model: its final model, or the "
                      "checkpoint of “start step”. The model field is then not used.")
INIT_FROM_STEP_HELP = "A checkpoint step of that run; blank = its final model."
RECIPE_HELP = ("A named preset of settings (gft_core.recipes) under the values you set yourself: “gft-paper” is "
               "the authors' setting for Qwen2.5-Math-1.5B.")


def recipe_choices() -> list[tuple[str, str]]:
    from gft_core.recipes import RECIPES

    return [(name, r.label) for name, r in RECIPES.items()]


def recipe_launch_values(name: str) -> dict[str, Any]:
    """The recipe's settings that are launch inputs (the form fields it fills)."""
    from gft_core.recipes import get_recipe

    return {k: v for k, v in get_recipe(name).settings.items() if k in LAUNCH_FIELDS}


def recipe_table() -> dict[str, dict[str, Any]]:
    """Per recipe: its description, the launch values it fills, and its diff against gft_core's
    defaults [(setting, default, recipe value)] (what the form shows when it is chosen)."""
    from gft_core.config import GFTConfig
    from gft_core.recipes import RECIPES, recipe_diff

    base = GFTConfig()
    current = {name: _dotted(base, name) for name in FIELDS}
    return {name: {"label": r.label, "description": r.description, "values": recipe_launch_values(name),
                   "diff": [list(row) for row in recipe_diff(name, current)]}
            for name, r in RECIPES.items()}


def _dotted(obj: Any, name: str) -> Any:
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def sections() -> list[tuple[str, list[str]]]:
    """(title, field names) of the launch form, in order: config settings by their FieldSpec
    section, web-only inputs where WEB_SECTIONS puts them."""
    by_section: dict[str, list[str]] = {title: [] for title in SECTION_ORDER}
    for name in LAUNCH_FIELDS:
        by_section.setdefault(FIELDS[name].section, []).append(name)
    out = []
    for title, names in by_section.items():
        before, after = WEB_SECTIONS.get(title, ((), ()))
        out.append((title, [*before, *names, *after]))
    return out


def choice_label(spec: FieldSpec, value: str) -> str:
    """How a choice is shown: a method by its label in the method table, others as they are."""
    if spec.name == "method":
        return METHOD_TABLE[value].label
    return value


def used_by_methods(spec: FieldSpec) -> list[str]:
    """The methods that read this setting (the launch form hides it for the others)."""
    return [m for m in METHOD_TABLE if spec.used_by_method(m)]


def checker(name: str, error: Callable[[str], Exception]) -> Callable[[Any], None]:
    """A field validator: gft_core's check_field, its message raised as `error` (Django's or DRF's
    ValidationError)."""
    def validate(value: Any) -> None:
        if value is None:  # blank is the field's own business (required / allow_null)
            return
        try:
            check_field(name, value)
        except ConfigError as e:
            raise error(e.message) from None

    validate.__name__ = f"check_{name}"
    return validate


def setting_field(spec: FieldSpec, *, choice: type, boolean: type, integer: type, number: type, text: type,
                  error: Callable[[str], Exception], **common: Any):
    """The input field of one gft_core setting, built from Django form or DRF field classes: its
    type, choices (labelled), bounds; the value checked by check_field (its message raised as
    `error`), which replaces the library's own min/max validators: same bounds, gft_core's wording,
    exclusive bounds included ("tau: must be in (0, 1]")."""
    if spec.choices is not None:
        field = choice(choices=[(c, choice_label(spec, c)) for c in spec.choices], **common)
    elif spec.type is bool:
        field = boolean(**common)
    elif spec.type in (int, float):
        field = (integer if spec.type is int else number)(**common, **bounds(spec))
    else:
        field = text(**common)
    field.validators = [checker(spec.name, error)]
    return field


def bounds(spec: FieldSpec) -> dict[str, Any]:
    """min_value / max_value for a numeric field (shown as HTML min/max and in the OpenAPI
    schema); exclusive bounds are enforced by check_field, which says so in its message."""
    if spec.type not in (int, float) or spec.choices is not None:
        return {}
    return {k: v for k, v in (("min_value", spec.min), ("max_value", spec.max)) if v is not None}


def gpu_bounds() -> dict[str, int]:
    return {"min_value": 1, "max_value": settings.MAX_GPUS_PER_RUN}


def gpu_help() -> str:
    return (f"GPUs of one worker machine, 1 to {settings.MAX_GPUS_PER_RUN}; more than 1 starts the trainer with "
            "accelerate launch.")


