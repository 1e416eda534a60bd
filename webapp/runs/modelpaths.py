"""Which models a run may train: the built-in tiny model or a directory under settings.MODEL_ROOTS,
by full path or by name (its path under a root: "tiny-warm", the demo's warm-started model)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from django.conf import settings

TINY_MODEL = "tiny"  # the launch value that picks the built-in tiny model


class ModelPathError(ValueError):
    """A launch model value that is refused; the message says why (shown on the model field)."""


def tiny_model_dir() -> Path:
    return Path(settings.ARTIFACT_ROOT) / "models" / "tiny"


def ensure_tiny_model() -> Path:
    """The built-in tiny model directory, created once (atomically: built aside, then renamed)."""
    target = tiny_model_dir()
    if (target / "config.json").is_file():
        _drop_old_tiny_template(target)
        return target
    from gft_core.tiny import make_tiny_model

    tmp = target.with_name(f".tiny-{id(target)}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    make_tiny_model(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process won the race: its copy is identical (seeded)
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _drop_old_tiny_template(target: Path) -> None:
    """A tiny model built before the tiny tokenizer lost its chat template: remove it, so the
    default prompt format (chat template on when there is one) keeps its prompts plain."""
    from gft_core.tiny import CHAT_TEMPLATE

    old = target / "chat_template.jinja"
    try:
        if old.read_text() == CHAT_TEMPLATE:
            old.unlink()
    except OSError:  # none (the usual case), or another process removed it first
        pass


def resolve_model(value: str) -> str:
    """The model directory for a launch value: "tiny", or a path under one of settings.MODEL_ROOTS.

    Raises ModelPathError for a blank value, a path outside the roots or one the OS cannot take
    (a NUL byte, say)."""
    value = (value or "").strip()
    if not value:
        raise ModelPathError("Choose a model: the built-in tiny model or a directory under the model roots.")
    if value == TINY_MODEL:
        return str(ensure_tiny_model())
    if "\x00" in value:
        raise ModelPathError("A model path cannot contain a NUL character.")
    named = None if Path(value).is_absolute() else _by_name(value)  # "tiny-warm", "org/model" under a root
    if named is not None:
        return named
    try:
        path = Path(value).resolve()
    except (OSError, RuntimeError) as exc:  # e.g. a symlink loop
        raise ModelPathError(f"{value} is not a usable path ({exc}).") from None
    roots = [Path(r).resolve() for r in settings.MODEL_ROOTS]
    if not any(path.is_relative_to(r) for r in roots) and path != tiny_model_dir().resolve():
        if not Path(value).is_absolute():
            known = [v for v, _ in model_choices() if not Path(v).is_absolute()]
            raise ModelPathError(f"No model called {value!r} under the model roots ({', '.join(map(str, roots))}); "
                                 f"by name: {', '.join(known[:20])}{', …' if len(known) > 20 else ''}.")
        raise ModelPathError(f"{value} is outside the allowed model roots ({', '.join(map(str, roots))}).")
    return str(path)


def _by_name(name: str) -> str | None:
    """The model directory called `name` under the first root that has it (its config.json there)."""
    for root in settings.MODEL_ROOTS:
        root = Path(root).resolve()
        try:
            path = (root / name).resolve()
        except (OSError, RuntimeError):
            return None
        if path.is_relative_to(root) and path != root and (path / "config.json").is_file():
            return str(path)
    return None


def launch_value(model_path: str) -> str:
    """The launch value that picks `model_path` again ("tiny" for the built-in model)."""
    return TINY_MODEL if model_path and Path(model_path) == tiny_model_dir() else model_path


def model_choices() -> list[tuple[str, str]]:
    """(value, label): the built-in tiny model, then each model directory found under MODEL_ROOTS,
    offered by name (its path under the root, e.g. the demo's "tiny-warm"; resolve_model takes it);
    a name that two roots share is offered by full path for the later one."""
    choices = [(TINY_MODEL, "Built-in tiny model (gft_core.tiny, a few million parameters)")]
    seen = {TINY_MODEL}
    for root in settings.MODEL_ROOTS:
        root = Path(root)
        if root.is_dir():
            for cfg in sorted(list(root.glob("*/config.json")) + list(root.glob("*/*/config.json"))):
                name = cfg.parent.relative_to(root).as_posix()
                choices.append((name, str(cfg.parent)) if name not in seen else (str(cfg.parent), str(cfg.parent)))
                seen.add(name)
    return choices


def estimate_params(model: str) -> int | None:
    """Rough parameter count of a model directory from its config.json (None when unknown)."""
    if model == TINY_MODEL:
        return 3_000_000
    try:
        c = json.loads((Path(model) / "config.json").read_text())
        h, n, v = int(c["hidden_size"]), int(c["num_hidden_layers"]), int(c.get("vocab_size", 32000))
        ff = int(c.get("intermediate_size", 4 * h))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return n * (4 * h * h + 3 * h * ff) + v * h


def model_info(value: str, *, settings: dict | None = None, num_gpus: int = 1, queue: str = "") -> dict:
    """What the launch form says about a model (raises ModelPathError like resolve_model):
    `chat_template` (whether its tokenizer has one: else prompts are sent plain), `trainable` and
    `parameters` (gft_core.memory's counts from its config.json, the LoRA settings in `settings`
    applied), and `memory`: the memory plan of `settings` (GFTConfig fields; the others at their
    defaults) on `num_gpus` GPUs beside the GPU workers' reports, with the strategy (single, DDP,
    FSDP) the queue's workers would run it with, or why it fits none of `queue`'s. The counts and plan are None when the config cannot be read (a LoRA adapter dir)."""
    from gft_core.config import GFTConfig
    from gft_core.memory import GIB, Shape, activation_bytes, plan_memory
    from gft_core.policy import model_has_chat_template
    from webapp.resources.devices import fit, worker_reports

    path = Path(resolve_model(value))
    out: dict = {"chat_template": model_has_chat_template(path), "trainable": None, "parameters": None,
                 "memory": None}
    try:
        shape = Shape.from_dir(path)
    except (OSError, ValueError, KeyError, TypeError):
        return out
    cfg = GFTConfig(**(settings or {}))
    out.update(parameters=shape.params, trainable=shape.trainable(cfg.lora_rank, cfg.lora_target_modules))
    plan = plan_memory(shape, cfg, num_gpus=num_gpus)
    sharded = plan.sharded(num_gpus, shape, activation_bytes(cfg))
    reports = worker_reports()
    strategy, problem = fit(plan, num_gpus, queue, reports, sharded) if queue else (None, None)
    if strategy == "fsdp":  # the queue's workers hold it only sharded: that is the plan they will run
        plan = sharded
    out["memory"] = {
        "peak_bytes": plan.peak, "peak_gib": round(plan.peak / GIB, 2), "need_gib": round(plan.need / GIB, 2),
        "strategy": strategy or plan.strategy, "lines": plan.lines(),
        "workers": [{"hostname": r.get("hostname"), "queues": r.get("queues"),
                     "devices": [f"{d.get('name')} {d.get('free_bytes', 0) / GIB:.1f} of "
                                 f"{d.get('total_bytes', 0) / GIB:.1f} GiB free" for d in r["devices"]]}
                    for r in reports],
        "problem": problem}
    return out


def config_trainable(config: dict) -> dict | None:
    """{trainable, parameters} of a run's gft_core config (its model's config.json through
    gft_core.memory, its LoRA settings applied), or None when the model's config cannot be read."""
    from gft_core.memory import Shape

    try:
        shape = Shape.from_dir(config["model_path"])
        rank = int(config.get("lora_rank") or 0)
        return {"trainable": shape.trainable(rank, config.get("lora_target_modules") or "auto"),
                "parameters": shape.params, "lora_rank": rank}
    except (OSError, ValueError, KeyError, TypeError):
        return None
