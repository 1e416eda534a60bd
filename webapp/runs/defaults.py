"""Launch defaults: GFT.md section 7's settings, scaled for the model and fitted to the method."""
from __future__ import annotations

import math
from typing import Any

from django.conf import settings

from gft_core.config import LAUNCH_FIELDS, METHODS, ConfigError, GFTConfig
from gft_core.methods import get_method

from .modelpaths import TINY_MODEL, estimate_params, resolve_model

SMALL_MODEL_PARAMS = 100_000_000  # below this, sizes are scaled down so a run ends in minutes on a CPU
# Settings the launch form does not show, for small models: evaluation stays quick.
SMALL_MODEL_EXTRA = {"eval_samples": 2, "eval_max_prompts": 16, "eval_batch_size": 32, "kl_probe_size": 4}
EVAL_SPLITS = (("dataset", "As set in the dataset version"), ("none", "No evaluation"),
               ("fraction", "Hold out a seeded fraction of the training rows"))
DEFAULT_METHOD = "gft"
# The defaults a method owns: choosing another method refits them to its rollout (fit_batches).
METHOD_FITTED = ("sequences_per_update", "micro_batch_size")


def is_small(params: int | None) -> bool:
    return params is not None and params < SMALL_MODEL_PARAMS


def defaults(model: str = TINY_MODEL, method: str = DEFAULT_METHOD) -> dict[str, Any]:
    """Launch defaults from GFT.md section 7, scaled for the model and fitted to the method.

    Paper: lr 1e-6 constant, 1 expert + 3 teacher + 4 self, temperature 1.0, 128 prompts per step,
    mini-batches of 256 sequences, prompt/response 1,024 / 2,048 tokens, eval every few steps;
    tau 0.1 for ~1.5B models and 0.3 for ~7B in the authors' scripts. Small models (the built-in
    tiny one) get sizes that end in minutes on a CPU and a larger lr: a few million parameters
    learn nothing at 1e-6 in a handful of steps. The batch sizes are then fitted to the method's
    rollout (see fit_batches): SFT's groups hold one answer, not eight.
    """
    base = GFTConfig()
    d: dict[str, Any] = {name: getattr(base, name) for name in LAUNCH_FIELDS}
    d.update(method=method, lr=1e-6, lr_schedule="constant", n_expert=1, n_teacher=3, n_self=4, temperature=1.0,
             eval_split="dataset", eval_fraction=0.1, num_gpus=1, queue=settings.TRAINING_QUEUES[0], model=model, mixed_precision="no")
    params = estimate_params(model)
    if is_small(params):
        d.update(tau=0.3, lr=1e-4, prompts_per_step=4, micro_batch_size=8, max_prompt_len=64, max_response_len=48,
                 max_steps=20, eval_interval=10, checkpoint_interval=10)
    else:
        d.update(tau=0.1 if params is not None and params < 4_000_000_000 else 0.3, prompts_per_step=128,
                 sequences_per_update=256, micro_batch_size=4, max_prompt_len=1024, max_response_len=2048,
                 max_steps=None, epochs=1.0, eval_interval=10, checkpoint_interval=10, mixed_precision="bf16")
    if method in METHODS:
        d.update(fit_batches(d))
    return d


def fit_batches(values: dict[str, Any]) -> dict[str, Any]:
    """sequences_per_update and micro_batch_size shrunk (to a common divisor) so that they divide
    the method's rollout of prompts_per_step x group size sequences, as GFTConfig.validate asks."""
    cfg = GFTConfig(method=values["method"], n_expert=values["n_expert"], n_teacher=values["n_teacher"],
                    n_self=values["n_self"], prompts_per_step=values["prompts_per_step"])
    rollout = cfg.sequences_per_rollout
    if rollout <= 0:
        return {}
    per_update = values.get("sequences_per_update")
    if per_update:
        per_update = math.gcd(per_update, rollout)
    micro = math.gcd(values["micro_batch_size"], per_update or rollout)
    return {"sequences_per_update": per_update, "micro_batch_size": micro}


def defaults_for(value: str, method: str = DEFAULT_METHOD) -> tuple[dict[str, Any], int | None]:
    """(launch defaults, estimated parameters) for a launch model value and method, as the form
    offers them when either is chosen: "tiny", or a directory under MODEL_ROOTS (its config.json
    is read only there; ModelPathError says why another path is refused). An unknown size gets
    the large-model defaults. ValueError names an unknown method."""
    try:
        get_method(method)
    except ConfigError as e:
        raise ValueError(f"Unknown method {method!r}: {e.message}.") from None
    value = (value or "").strip()
    model = TINY_MODEL if value == TINY_MODEL else resolve_model(value)  # "tiny" is not built here
    return defaults(model, method), estimate_params(model)

