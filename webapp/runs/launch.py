"""Launching runs: launch inputs -> validated gft_core config -> queued Run -> Celery task.

Used by the launch form, the REST API and the `gft` client (through the API) alike:
- `build_config(team, data)` turns launch inputs (the fields of LAUNCH_FIELDS) into a gft_core
  config dict. gft_core's own `GFTConfig.validate()` checks every value; this module adds only
  what the web knows: the model must sit under settings.MODEL_ROOTS (or be the built-in tiny
  model), the dataset version must have passed validation and belong to the team, so must the
  reward config, and the teacher count must not exceed what the dataset's rows offer.
- `submit_run(team, user, data)` creates the queued Run and dispatches `workers.tasks.train_run`
  on the run's queue once the row is committed.
Errors are a LaunchError holding {field: [messages]}, with the launch form's field names.
"""
from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gft_core.config import METHODS, ConfigError, GFTConfig

from .models import MetricKey, MetricPoint, Run, RunEvent, RunStatus

log = logging.getLogger(__name__)

TINY_MODEL = "tiny"  # the launch value that picks the built-in tiny model
EVAL_SPLITS = (("dataset", "As set in the dataset version"), ("none", "No evaluation"),
               ("fraction", "Hold out a seeded fraction of the training rows"))
# The launch inputs, in form order. Names equal gft_core config fields where they map one to one.
CONFIG_FIELDS = (
    "method", "n_expert", "n_teacher", "n_self", "tau", "lr", "lr_schedule", "warmup_steps",
    "prompts_per_step", "sequences_per_update", "micro_batch_size", "max_prompt_len", "max_response_len",
    "temperature", "max_steps", "epochs", "seed", "eval_interval", "checkpoint_interval", "mixed_precision",
)
# Where a gft_core ConfigError field lands on the form.
_CONFIG_TO_FORM = {"model_path": "model", "data.path": "dataset", "data.eval_path": "dataset",
                   "data.mapping": "dataset", "data.eval_fraction": "eval_fraction", "reward": "reward_config"}


class LaunchError(Exception):
    """Invalid launch inputs: `errors` maps form field names ("__all__" for the whole) to messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))

    @classmethod
    def one(cls, field: str, message: str) -> "LaunchError":
        return cls({field: [message]})


# ---------------------------------------------------------------------------- defaults
SMALL_MODEL_PARAMS = 100_000_000  # below this, sizes are scaled down so a run ends in minutes on a CPU
# Settings the launch form does not show, for small models: evaluation stays quick.
_SMALL_EXTRA = {"eval_samples": 2, "eval_max_prompts": 16, "eval_batch_size": 32, "kl_probe_size": 4}


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


def defaults(model: str = TINY_MODEL) -> dict[str, Any]:
    """Launch defaults from GFT.md section 7, scaled for the model.

    Paper: lr 1e-6 constant, 1 expert + 3 teacher + 4 self, temperature 1.0, 128 prompts per step,
    mini-batches of 256 sequences, prompt/response 1,024 / 2,048 tokens, eval every few steps;
    tau 0.1 for ~1.5B models and 0.3 for ~7B in the authors' scripts. Small models (the built-in
    tiny one) get sizes that end in minutes on a CPU and a larger lr: a few million parameters
    learn nothing at 1e-6 in a handful of steps.
    """
    base = GFTConfig()
    d: dict[str, Any] = {name: getattr(base, name) for name in CONFIG_FIELDS}
    d.update(method="gft", lr=1e-6, lr_schedule="constant", n_expert=1, n_teacher=3, n_self=4, temperature=1.0,
             eval_split="dataset", eval_fraction=0.1, num_gpus=1, queue="gpu", model=model, mixed_precision="no")
    params = estimate_params(model)
    if params is not None and params < SMALL_MODEL_PARAMS:
        d.update(tau=0.3, lr=1e-4, prompts_per_step=4, micro_batch_size=8, max_prompt_len=64, max_response_len=48,
                 max_steps=20, eval_interval=10, checkpoint_interval=10)
    else:
        d.update(tau=0.1 if params is not None and params < 4_000_000_000 else 0.3, prompts_per_step=128,
                 sequences_per_update=256, micro_batch_size=4, max_prompt_len=1024, max_response_len=2048,
                 max_steps=None, epochs=1.0, eval_interval=10, checkpoint_interval=10, mixed_precision="bf16")
    return d


def defaults_for(value: str) -> tuple[dict[str, Any], int | None]:
    """(launch defaults, estimated parameters) for a launch model value, as the form offers them
    when a model is chosen or typed: "tiny", or a directory under MODEL_ROOTS (its config.json is
    read only there; a LaunchError says why another path is refused). An unknown size gets the
    large-model defaults."""
    value = (value or "").strip()
    model = TINY_MODEL if value == TINY_MODEL else resolve_model(value)  # "tiny" is not built here
    return defaults(model), estimate_params(model)


# ---------------------------------------------------------------------------- model paths
def tiny_model_dir() -> Path:
    return Path(settings.ARTIFACT_ROOT) / "models" / "tiny"


def ensure_tiny_model() -> Path:
    """The built-in tiny model directory, created once (atomically: built aside, then renamed)."""
    target = tiny_model_dir()
    if (target / "config.json").is_file():
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


def resolve_model(value: str) -> str:
    """The model directory for a launch value: "tiny", or a path under one of settings.MODEL_ROOTS."""
    value = (value or "").strip()
    if not value:
        raise LaunchError.one("model", "Choose a model: the built-in tiny model or a directory under the model roots.")
    if value == TINY_MODEL:
        return str(ensure_tiny_model())
    path = Path(value).resolve()
    roots = [Path(r).resolve() for r in settings.MODEL_ROOTS]
    if not any(path.is_relative_to(r) for r in roots) and path != tiny_model_dir().resolve():
        raise LaunchError.one("model", f"{value} is outside the allowed model roots ({', '.join(map(str, roots))}).")
    return str(path)


def model_choices() -> list[tuple[str, str]]:
    """(value, label): the built-in tiny model, then each model directory found under MODEL_ROOTS."""
    choices = [(TINY_MODEL, "Built-in tiny model (gft_core.tiny, a few million parameters)")]
    for root in settings.MODEL_ROOTS:
        root = Path(root)
        if root.is_dir():
            for cfg in sorted(list(root.glob("*/config.json")) + list(root.glob("*/*/config.json"))):
                choices.append((str(cfg.parent), str(cfg.parent.relative_to(root))))
    return choices


def queue_choices() -> list[str]:
    from workers.celery import app

    return [q.name for q in app.conf.task_queues]


# ---------------------------------------------------------------------------- config
def build_config(team, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate launch inputs for `team`; return (gft_core config dict, run fields).

    `data` holds the launch fields (missing ones take `defaults(model)`), `dataset` and
    `reward_config` as model instances or ids, and optionally `config`: extra gft_core settings the
    form does not show (e.g. kl_interval) for the API and the CLI. Raises LaunchError.
    """
    from webapp.datasets.models import Dataset
    from webapp.datasets.services import data_config
    from webapp.rewards.models import RewardConfig

    model_value = data.get("model") or TINY_MODEL
    errors: dict[str, list[str]] = {}

    def err(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    try:
        model_path = resolve_model(model_value)
    except LaunchError as e:
        errors.update(e.errors)
        model_path = ""
    base = defaults(model_value if model_path else TINY_MODEL)
    merged = {**base,
              **{k: v for k, v in data.items() if v is not None or k in ("max_steps", "sequences_per_update")}}
    if merged.get("method") not in METHODS:
        err("method", f"Choose one of {', '.join(METHODS)}.")
    dataset = _team_object(Dataset, team, merged.get("dataset"))
    if dataset is None:
        err("dataset", "Choose a dataset version of your team.")
    elif not dataset.usable:
        err("dataset", f"{dataset} did not pass validation (status: {dataset.get_status_display()}"
                       f"{', archived' if dataset.archived else ''}); pick a valid version.")
    reward = _team_object(RewardConfig, team, merged.get("reward_config"))
    if reward is None:
        err("reward_config", "Choose a reward config of your team.")
    elif reward.archived:
        err("reward_config", f"{reward} is archived; pick a current version.")
    num_gpus = merged.get("num_gpus")
    if not isinstance(num_gpus, int) or isinstance(num_gpus, bool) or num_gpus < 1:
        err("num_gpus", "Must be a whole number >= 1.")
    if merged.get("queue") not in queue_choices():
        err("queue", f"Choose one of the queues: {', '.join(queue_choices())}.")
    if dataset is not None and merged.get("method") in METHODS and isinstance(merged.get("n_teacher"), int):
        teachers = GFTConfig(method=merged["method"], n_teacher=merged["n_teacher"]).group_counts()["teacher"]
        offered = ((dataset.report or {}).get("train") or {}).get("teachers", {}).get("max", 0)
        if teachers > offered:
            err("n_teacher", f"{teachers} teacher answers per prompt, but no row of {dataset} offers more "
                             f"than {offered} (dataset validation report).")
    if not model_path or dataset is None or reward is None:
        raise LaunchError(errors)

    cfg: dict[str, Any] = {name: merged[name] for name in CONFIG_FIELDS if name in merged}
    if (estimate_params(model_value) or SMALL_MODEL_PARAMS) < SMALL_MODEL_PARAMS:
        cfg.update(_SMALL_EXTRA)
    cfg.update(merged.get("config") or {})
    cfg.update(model_path=model_path, output_dir="runs/pending", reward=reward.spec)
    cfg["data"] = _data_section(dataset, merged, data_config)
    gcfg = _validate(cfg, base, errors)
    fields = {"name": (merged.get("name") or "").strip() or f"{gcfg.method} on {dataset}", "method": gcfg.method,
              "dataset": dataset, "reward_config": reward, "queue": merged["queue"], "num_gpus": num_gpus,
              "tags": [t for t in (merged.get("tags") or []) if t]}
    return gcfg.to_dict(), fields


def _validate(cfg: dict[str, Any], fallback: dict[str, Any], errors: dict[str, list[str]]) -> GFTConfig:
    """GFTConfig.validate(), collecting every bad value rather than the first only.

    validate() stops at the first ConfigError; the offending launch field is then set back to its
    default and validation runs again, so the form shows all its errors at once. `errors` holds
    the web-level errors found before; LaunchError carries both.
    """
    for _ in range(len(CONFIG_FIELDS) + 1):
        try:
            gcfg = GFTConfig.from_dict(cfg).validate()
        except ConfigError as e:
            errors.setdefault(_form_field(e.field), []).append(e.message)
            name = e.field.split(".", 1)[0]
            if name not in CONFIG_FIELDS or cfg.get(name) == fallback.get(name):
                break
            cfg = {**cfg, name: fallback.get(name)}
            continue
        if not errors:
            return gcfg
        break
    raise LaunchError(errors)


def _team_object(model, team, value):
    if value is None or value == "":
        return None
    if isinstance(value, model):
        return value if value.team_id == team.pk else None
    try:
        return model.objects.filter(team=team, pk=int(value)).first()
    except (TypeError, ValueError):
        return None


def _data_section(dataset, merged: dict, data_config) -> dict:
    section = data_config(dataset)
    split = merged.get("eval_split", "dataset")
    if split == "none":
        section.pop("eval_path", None)
        section["eval_fraction"] = 0.0
    elif split == "fraction":
        section.pop("eval_path", None)
        section["eval_fraction"] = merged.get("eval_fraction")
    return section


def _form_field(config_field: str) -> str:
    if config_field in _CONFIG_TO_FORM:
        return _CONFIG_TO_FORM[config_field]
    head = config_field.split(".", 1)[0]
    if head in _CONFIG_TO_FORM:
        return _CONFIG_TO_FORM[head]
    return config_field if config_field in CONFIG_FIELDS else "__all__"


# ---------------------------------------------------------------------------- submit
def submit_run(team, user, data: dict[str, Any], *, cloned_from: Run | None = None) -> Run:
    """Validate, create the Run (queued, through the state machine) and dispatch its task."""
    config, fields = build_config(team, data)
    with transaction.atomic():
        # A new run is born queued (there is no earlier state to transition from): its creation is
        # logged as the first RunEvent, and every later change goes through services.transition.
        run = Run.objects.create(team=team, created_by=user, config=config, cloned_from=cloned_from,
                                 status=RunStatus.QUEUED, queued_at=timezone.now(), **fields)
        run.output_dir = str(Path(settings.ARTIFACT_ROOT) / "runs" / str(run.pk))
        run.config["output_dir"] = run.output_dir
        run.save(update_fields=["output_dir", "config"])
        message = f"Submitted by {user}" if user else "Submitted"
        if cloned_from is not None:
            changes = config_diff(cloned_from.config, run.config)
            message += f"; cloned from #{cloned_from.pk}" + (
                f", changed: {', '.join(f'{k} {a!r} -> {b!r}' for k, a, b in changes)}" if changes else ", unchanged")
        RunEvent.objects.create(run=run, kind="status", to_status=RunStatus.QUEUED, message=message)
        dispatch(run)
    run.refresh_from_db()
    return run


def dispatch(run: Run) -> None:
    """Send train_run for `run` on its queue once the current transaction commits.

    The task id is chosen here and stored with the run in the same transaction: train_run starts
    only the run's current task, so a stale message of an earlier attempt does nothing.
    """
    from workers.tasks import train_run

    task_id = str(uuid.uuid4())
    Run.objects.filter(pk=run.pk).update(celery_task_id=task_id)
    run.celery_task_id = task_id
    run_id, queue = run.pk, run.queue

    def send() -> None:
        try:
            train_run.apply_async(args=[run_id], queue=queue, task_id=task_id)
        except Exception as exc:  # broker down: the run cannot start; say so instead of waiting forever
            log.exception("could not queue run %s", run_id)
            from . import services

            try:
                services.transition(run_id, RunStatus.FAILED, message="Could not reach the task broker.",
                                    error=f"Could not queue the run: the task broker is unreachable ({exc}).")
            except services.TransitionError:
                pass

    transaction.on_commit(send)


def resume_run(run: Run, user=None) -> Run:
    """Queue a failed or cancelled run again (same id); train_run continues from its latest checkpoint."""
    from . import services

    with transaction.atomic():
        status = Run.objects.select_for_update().values_list("status", flat=True).get(pk=run.pk)
        if status not in (RunStatus.FAILED, RunStatus.CANCELLED):  # running -> queued is a stopping worker's
            raise services.TransitionError(f"Run {run.pk} is {status}; only failed or cancelled runs can be resumed.")
        services.transition(run, RunStatus.QUEUED, message=f"Resumed{f' by {user}' if user else ''}.")
        dispatch(run)
    run.refresh_from_db()
    return run


# ---------------------------------------------------------------------------- clone, diff
def clone_initial(run: Run) -> dict[str, Any]:
    """Launch inputs that reproduce `run` (the launch form's initial values for "clone")."""
    cfg = run.config
    initial: dict[str, Any] = {name: cfg[name] for name in CONFIG_FIELDS if name in cfg}
    model_path = cfg.get("model_path", "")
    initial["model"] = TINY_MODEL if Path(model_path) == tiny_model_dir() else model_path
    data = cfg.get("data") or {}
    if run.dataset is not None:
        from webapp.datasets.services import data_config

        same = {k: v for k, v in data.items() if k in ("eval_path", "eval_fraction") and v} == \
            {k: v for k, v in data_config(run.dataset).items() if k in ("eval_path", "eval_fraction") and v}
    else:
        same = False
    if same:
        initial["eval_split"] = "dataset"
    elif data.get("eval_fraction"):
        initial.update(eval_split="fraction", eval_fraction=data["eval_fraction"])
    else:
        initial["eval_split"] = "none"
    initial.update(name=f"{run.name} (clone)", dataset=run.dataset_id, reward_config=run.reward_config_id,
                   queue=run.queue, num_gpus=run.num_gpus, tags=list(run.tags))
    return initial


def config_diff(a: dict, b: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every setting that differs; output_dir is ignored."""
    out: list[tuple[str, Any, Any]] = []
    for key in sorted(set(a) | set(b)):
        if key == "output_dir":
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append((f"{prefix}{key}", va, vb))
    return out


# ---------------------------------------------------------------------------- progress, files
def run_dir(run: Run) -> Path:
    return Path(run.output_dir) if run.output_dir else Path(settings.ARTIFACT_ROOT) / "runs" / str(run.pk)


def log_path(run: Run) -> Path:
    """The run's worker log (every attempt appends to it)."""
    return run_dir(run) / "worker.log"



def queue_position(run: Run) -> int | None:
    """1-based place of a queued run among the queued runs of its queue (oldest first)."""
    if run.status != RunStatus.QUEUED:
        return None
    ahead = Run.objects.filter(status=RunStatus.QUEUED, queue=run.queue, queued_at__lt=run.queued_at).count()
    return ahead + 1


def eta_seconds(run: Run, window: int = 20) -> float | None:
    """Seconds left for a running run, from the wall times of its last `window` logged steps of
    this attempt (after a resume, the steps before the checkpoint were timed long ago)."""
    if run.status != RunStatus.RUNNING or not run.total_steps or run.step >= run.total_steps:
        return None
    key = MetricKey.objects.filter(name="loss").first()
    if key is None:
        return None
    points = MetricPoint.objects.filter(run_id=run.pk, key_id=key.pk, step__gt=run.step - window)
    if run.started_at is not None:
        points = points.filter(wall_time__gte=run.started_at.timestamp())
    rows = list(points.order_by("step").values_list("step", "wall_time"))
    if len(rows) < 2 or rows[-1][0] == rows[0][0]:
        return None
    per_step = (rows[-1][1] - rows[0][1]) / (rows[-1][0] - rows[0][0])
    return max(0.0, per_step * (run.total_steps - run.step))
