"""Launching runs: launch inputs -> validated gft_core config -> queued Run -> train task.

Used by the launch form, the REST API and the `gft` client (through the API) alike:
- `build_config(team, data)` turns launch inputs into a LaunchPlan: the gft_core config dict and
  the Run's own fields. gft_core's `GFTConfig.validate()` checks every value; this module adds
  only what the web knows: the model must sit under settings.MODEL_ROOTS (or be the built-in tiny
  model), the dataset version must have passed validation and belong to the team, so must the
  reward config, and the teacher count must not exceed what the dataset's rows offer.
- Team quotas (webapp.accounts.quotas) are checked in the transaction that queues a run (launch,
  clone, resume): QuotaExceeded leaves nothing behind.
- `submit_run(team, user, plan_or_data)` creates the queued Run from a plan (built once: the form
  builds it in clean()) and sends the train task by name (webapp.dispatch) once the row commits.
Errors are a LaunchError holding {field: [messages]}, with the launch form's field names.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gft_core.checkpoints import CHECKPOINT_PREFIX, checkpoint_steps, is_complete
from gft_core.config import LAUNCH_FIELDS, METHODS, ConfigError, GFTConfig, check_field, config_diff
from webapp import dispatch
from webapp.accounts import quotas

from . import services
from .defaults import SMALL_MODEL_EXTRA, defaults, fit_batches, is_small
from .effective_group import PREVIEW_FIELDS, dataset_group
from .launchfields import WEB_CONTROLLED
from .modelpaths import TINY_MODEL, ModelPathError, estimate_params, launch_value, resolve_model
from .models import Run, RunEvent, RunStatus

log = logging.getLogger(__name__)

# Where a gft_core ConfigError field lands on the form.
_CONFIG_TO_FORM = {"model_path": "model", "data.path": "dataset", "data.eval_path": "dataset",
                   "data.mapping": "dataset", "data.eval_fraction": "eval_fraction", "reward": "reward_config",
                   "eval_suite": "eval_suite"}


class LaunchError(Exception):
    """Invalid launch inputs: `errors` maps form field names ("__all__" for the whole) to messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))

    @classmethod
    def one(cls, field: str, message: str) -> "LaunchError":
        return cls({field: [message]})


class SourceRunNotFound(LaunchError):
    """`init_from_run` names no run of the team (the API answers 404: another team's run is not found)."""


@dataclass(frozen=True)
class LaunchPlan:
    """What build_config validated: the gft_core config (output_dir set at submit) and the Run's
    own fields (name, method, dataset, reward_config, eval_suite, queue, num_gpus, tags, effective_group)."""

    config: dict[str, Any]
    fields: dict[str, Any]


def queue_choices() -> list[str]:
    """The queues a run may train on (settings.TRAINING_QUEUES; the first is the default)."""
    return list(settings.TRAINING_QUEUES)


# ---------------------------------------------------------------------------- config
def build_config(team, data: dict[str, Any]) -> LaunchPlan:
    """Validate launch inputs for `team`; return the LaunchPlan.

    `data` holds the launch fields (missing ones take `defaults(model, method)`), `dataset` and
    `reward_config` (and the optional `eval_suite`: evaluated during training) as model instances or
    ids, and optionally `config`: extra gft_core settings the
    form does not show (e.g. kl_interval) for the API and the CLI. Raises LaunchError.
    """
    from webapp.datasets.models import Dataset
    from webapp.datasets.services import data_config
    from webapp.evaluations.models import EvalSuite
    from webapp.evaluations.services import EvalError, suite_config
    from webapp.rewards.models import RewardConfig

    model_value = data.get("model") or TINY_MODEL
    errors: dict[str, list[str]] = {}

    def err(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    source, source_step = None, None
    if data.get("init_from_run") not in (None, ""):
        try:
            source, source_step, model_path = resolve_init(team, data["init_from_run"], data.get("init_from_step"))
            model_value = model_path  # the source's weights: defaults are scaled to their size
        except SourceRunNotFound:
            raise
        except LaunchError as e:
            errors.update(e.errors)
            model_path = ""
    elif data.get("init_from_step") is not None:
        err("init_from_step", "Give init_from_run too: the run whose checkpoint this step is.")
        model_path = ""
    else:
        try:
            model_path = resolve_model(model_value)
        except ModelPathError as e:
            err("model", str(e))
            model_path = ""
    recipe = _recipe(data.get("recipe"), err)
    method = data.get("method") or (recipe.settings.get("method") if recipe else None) or "gft"
    base = defaults(model_value if model_path else TINY_MODEL, method if method in METHODS else "gft")
    if recipe is not None:  # the recipe's settings under the explicit inputs
        base.update({k: v for k, v in recipe.settings.items() if k in LAUNCH_FIELDS})
        base.update(fit_batches(base))
    merged = {**base,
              **{k: v for k, v in data.items() if v is not None or k in ("max_steps", "sequences_per_update")}}
    if merged.get("method") not in METHODS:
        err("method", f"Choose one of {', '.join(METHODS)}.")
    dataset = _team_object(Dataset, team, merged.get("dataset"))
    if dataset is None:
        err("dataset", "Choose a dataset version of your team.")
    elif dataset.is_benchmark:
        err("dataset", f"{dataset} is a benchmark (marked for evaluation); choose a training dataset.")
    elif not dataset.usable:
        err("dataset", f"{dataset} did not pass validation (status: {dataset.get_status_display()}"
                       f"{', archived' if dataset.archived else ''}); pick a valid version.")
    reward = _team_object(RewardConfig, team, merged.get("reward_config"))
    if reward is None:
        err("reward_config", "Choose a reward config of your team.")
    elif reward.archived:
        err("reward_config", f"{reward} is archived; pick a current version.")
    suite, suite_data = _team_object(EvalSuite, team, merged.get("eval_suite")), None
    if merged.get("eval_suite") not in (None, "") and suite is None:
        err("eval_suite", "Choose an evaluation suite of your team.")
    elif suite is not None and suite.archived:
        err("eval_suite", f"{suite} is archived; pick a current version.")
    elif suite is not None:
        try:
            suite_data = suite_config(suite)
        except EvalError as e:
            err("eval_suite", str(e))
    num_gpus = merged.get("num_gpus")
    if not isinstance(num_gpus, int) or isinstance(num_gpus, bool) or not 1 <= num_gpus <= settings.MAX_GPUS_PER_RUN:
        err("num_gpus", f"Must be a whole number from 1 to {settings.MAX_GPUS_PER_RUN} (MAX_GPUS_PER_RUN).")
    if merged.get("queue") not in queue_choices():
        err("queue", f"Choose one of the queues: {', '.join(queue_choices())}.")
    name = (merged.get("name") or "").strip()
    if len(name) > Run._meta.get_field("name").max_length:
        err("name", f"At most {Run._meta.get_field('name').max_length} characters (got {len(name)}).")
    if dataset is not None and merged.get("method") in METHODS and isinstance(merged.get("n_teacher"), int):
        teachers = GFTConfig(method=merged["method"], n_teacher=merged["n_teacher"]).group_counts()["teacher"]
        offered = ((dataset.report or {}).get("train") or {}).get("teachers", {}).get("max", 0)
        if teachers > offered:
            err("n_teacher", f"{teachers} teacher answers per prompt, but no row of {dataset} offers more "
                             f"than {offered} (dataset validation report).")
    extra = _checked_extra_config(merged.get("config"), err)
    if not model_path or dataset is None or reward is None:
        raise LaunchError(errors)

    cfg: dict[str, Any] = {name: merged[name] for name in LAUNCH_FIELDS if name in merged}
    if is_small(estimate_params(model_value)):
        cfg.update(SMALL_MODEL_EXTRA)
    cfg.update(extra)
    cfg.update(model_path=model_path, output_dir="runs/pending", reward=reward.spec, eval_suite=suite_data)
    cfg["data"] = _data_section(dataset, merged, data_config)
    if recipe is not None:
        cfg["data"].update({k[5:]: v for k, v in recipe.settings.items() if k.startswith("data.")})
    gcfg = _validate(cfg, base, errors)
    if problem := memory_problem(gcfg, num_gpus, merged["queue"]):
        raise LaunchError.one(*problem)
    fields = {"name": name or f"{gcfg.method} on {dataset}", "method": gcfg.method,
              "dataset": dataset, "reward_config": reward, "eval_suite": suite, "queue": merged["queue"], "num_gpus": num_gpus,
              "init_from_run": source, "init_from_step": source_step, "recipe": recipe.name if recipe else "",
              "tags": [t for t in (merged.get("tags") or []) if t],
              "effective_group": dataset_group(dataset, {name: getattr(gcfg, name) for name in ("method", *PREVIEW_FIELDS)})}
    return LaunchPlan(gcfg.to_dict(), fields)


def memory_problem(gcfg: GFTConfig, num_gpus: int, queue: str) -> tuple[str, str] | None:
    """(field, why) when the run's memory plan (gft_core.memory from the model's config.json), whole
    on each GPU or sharded with FSDP over its num_gpus, fits no GPU worker of `queue` as the workers
    report their free memory (webapp.resources.devices): `memory_plan`; or when it fits only with
    FSDP and asks for benchmark evaluation during training, which needs the whole model on one
    process: `eval_suite`. None when it can run."""
    from gft_core.memory import Shape, activation_bytes, plan_memory
    from webapp.resources.devices import fit, worker_reports

    try:
        shape = Shape.from_dir(gcfg.model_path)
    except (OSError, ValueError, KeyError, TypeError):  # e.g. a LoRA adapter directory: not planned
        return None
    plan = plan_memory(shape, gcfg, num_gpus=num_gpus)
    strategy, problem = fit(plan, num_gpus, queue, worker_reports(),
                            sharded=plan.sharded(num_gpus, shape, activation_bytes(gcfg)))
    if problem:
        return "memory_plan", problem
    if strategy == "fsdp" and gcfg.eval_suite:
        return "eval_suite", ("This run fits its GPUs only sharded with FSDP, and benchmark evaluation during "
                              "training needs the whole model on one process: leave the suite out and evaluate "
                              "the final model (Evaluate on the run page), or use GPUs that hold the whole model.")
    return None


def _recipe(value: Any, err):
    """The gft_core recipe named by the `recipe` input (None when blank); an unknown one is an error
    naming `recipe` and the known ones."""
    if value in (None, ""):
        return None
    from gft_core.recipes import get_recipe

    try:
        return get_recipe(value)
    except ConfigError as e:
        err("recipe", f"Unknown recipe {value!r}; known: {e.message.split('known: ', 1)[-1]}.")
        return None


def resolve_init(team, run_value: Any, step: Any) -> tuple[Run, int | None, str]:
    """(source run, checkpoint step or None for the final model, model directory the trainer loads)
    for "start from another run": its final model (RUN_DIR/final) or one checkpoint
    (RUN_DIR/checkpoints/step-N/model). SourceRunNotFound for a run outside `team`; LaunchError
    naming init_from_run / init_from_step for an unfinished run or a model that is not on disk."""
    source = _team_object(Run, team, run_value)
    if source is None:
        raise SourceRunNotFound.one("init_from_run", f"No run {run_value!r} in this team.")
    if source.status in Run.ACTIVE:
        raise LaunchError.one("init_from_run", f"Run #{source.pk} is {source.status}; start from a finished run.")
    if step in (None, ""):
        path = source.directory / "final"
        if source.status != RunStatus.SUCCEEDED or not (path / "config.json").is_file():
            raise LaunchError.one("init_from_run", f"Run #{source.pk} ({source.status}) has no final model; "
                                                   "pick one of its checkpoints (init_from_step).")
        return source, None, str(path)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise LaunchError.one("init_from_step", "Must be a checkpoint step (a whole number >= 1).")
    path = source.directory / "checkpoints" / f"{CHECKPOINT_PREFIX}{step}"
    if not is_complete(path):
        have = checkpoint_steps(source.directory / "checkpoints")
        raise LaunchError.one("init_from_step", f"Run #{source.pk} has no checkpoint at step {step} "
                                                f"(it has: {', '.join(map(str, have)) or 'none'}).")
    return source, step, str(path / "model")


def _checked_extra_config(extra: Any, err) -> dict[str, Any]:
    """The API's free-form `config` (settings the form does not show), every key checked with
    gft_core.config.check_field; errors are named "config.<key>". Keys the launch inputs set
    (model_path, output_dir, data, reward, method) and the launch fields themselves, which have
    their own inputs, are refused rather than merged."""
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        err("config", "Must be a mapping of gft_core settings.")
        return {}
    checked = {}
    for key, value in extra.items():
        if key in WEB_CONTROLLED:
            err(f"config.{key}", f"{key} is set from the launch inputs (model, dataset, reward config, "
                                 "method); it cannot be given in config.")
        elif key in LAUNCH_FIELDS:
            err(f"config.{key}", f"{key} is a launch field: give it beside config, not inside.")
        else:
            try:
                checked[key] = check_field(key, value)
            except ConfigError as e:
                err(f"config.{key}", e.message)
    return checked


def _validate(cfg: dict[str, Any], fallback: dict[str, Any], errors: dict[str, list[str]]) -> GFTConfig:
    """GFTConfig.validate(), collecting every bad value rather than the first only.

    validate() stops at the first ConfigError; the offending launch field is then set back to its
    default and validation runs again, so the form shows all its errors at once. `errors` holds
    the web-level errors found before; LaunchError carries both.
    """
    for _ in range(len(LAUNCH_FIELDS) + 1):
        try:
            gcfg = GFTConfig.from_dict(cfg).validate()
        except ConfigError as e:
            errors.setdefault(_form_field(e.field), []).append(e.message)
            name = e.field.split(".", 1)[0]
            if name not in LAUNCH_FIELDS or cfg.get(name) == fallback.get(name):
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
    except (TypeError, ValueError, OverflowError):
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
    return config_field if config_field in LAUNCH_FIELDS else "__all__"


# ---------------------------------------------------------------------------- submit
def submit_run(team, user, plan: LaunchPlan | dict[str, Any], *, cloned_from: Run | None = None) -> Run:
    """Create the Run (queued) from a LaunchPlan, or from launch inputs validated here, and send
    its train task. A plan built earlier is checked once more for what may have changed since
    (the dataset or reward config archived meanwhile)."""
    if not isinstance(plan, LaunchPlan):
        plan = build_config(team, plan)
    config, fields = plan.config, plan.fields
    with transaction.atomic():
        _still_usable(fields)
        quotas.check_run_start(team)  # QuotaExceeded: nothing is created
        # A new run is born queued (there is no earlier state to transition from): its creation is
        # logged as the first RunEvent, and every later change goes through services.transition.
        run = Run.objects.create(team=team, created_by=user, config=dict(config), cloned_from=cloned_from,
                                 status=RunStatus.QUEUED, queued_at=timezone.now(), **fields)
        run.output_dir = str(Path(settings.ARTIFACT_ROOT) / "runs" / str(run.pk))
        run.config["output_dir"] = run.output_dir
        run.save(update_fields=["output_dir", "config"])
        message = f"Submitted by {user}" if user else "Submitted"
        if cloned_from is not None:
            changes = config_diff(cloned_from.config, run.config)
            message += f"; cloned from #{cloned_from.pk}" + (
                f", changed: {', '.join(f'{k} {a!r} -> {b!r}' for k, (a, b) in changes)}" if changes else ", unchanged")
        RunEvent.objects.create(run=run, kind="status", to_status=RunStatus.QUEUED, message=message)
        send_train_task(run)
        transaction.on_commit(lambda: _announce_new_run(run))
    run.refresh_from_db()
    return run


def _announce_new_run(run: Run) -> None:
    from . import live

    try:
        live.announce_new_run(run.team_id, run.pk)
    except Exception as exc:  # noqa: BLE001 - open run tables show it on their next load
        log.warning("could not announce run %s to its team's run tables: %s", run.pk, exc)


def _still_usable(fields: dict[str, Any]) -> None:
    dataset, reward = fields["dataset"], fields["reward_config"]
    dataset.refresh_from_db(fields=["status", "archived"])
    reward.refresh_from_db(fields=["archived"])
    errors: dict[str, list[str]] = {}
    if not dataset.usable:
        errors["dataset"] = [f"{dataset} can no longer be used (status: {dataset.get_status_display()}"
                             f"{', archived' if dataset.archived else ''}); pick a valid version."]
    if reward.archived:
        errors["reward_config"] = [f"{reward} was archived meanwhile; pick a current version."]
    if errors:
        raise LaunchError(errors)


def send_train_task(run: Run) -> None:
    """Send the train task of `run` on its queue once the current transaction commits.

    The task id is chosen here and stored with the run in the same transaction: the task starts
    only the run's current task id, so a stale message of an earlier attempt does nothing.
    """
    task_id = str(uuid.uuid4())
    Run.objects.filter(pk=run.pk).update(celery_task_id=task_id)
    run.celery_task_id = task_id
    run_id = run.pk

    def broker_unreachable(exc: Exception) -> None:  # the run cannot start; say so instead of waiting forever
        try:
            services.transition(run_id, RunStatus.FAILED, message="Could not reach the task broker.",
                                error=f"Could not queue the run: the task broker is unreachable ({exc}).")
        except services.TransitionError:
            pass

    dispatch.send(dispatch.TRAIN_RUN, [run_id], queue=run.queue, task_id=task_id, on_error=broker_unreachable)


def resume_run(run: Run, user=None) -> Run:
    """Queue a failed or cancelled run again (same id); its task continues from the latest checkpoint."""
    with transaction.atomic():
        status = Run.objects.select_for_update().values_list("status", flat=True).get(pk=run.pk)
        if status not in (RunStatus.FAILED, RunStatus.CANCELLED):  # running -> queued is a stopping worker's
            raise services.TransitionError(f"Run {run.pk} is {status}; only failed or cancelled runs can be resumed.")
        quotas.check_run_start(run.team)  # QuotaExceeded: the run stays as it was
        services.transition(run, RunStatus.QUEUED, message=f"Resumed{f' by {user}' if user else ''}.")
        send_train_task(run)
    run.refresh_from_db()
    return run


# ---------------------------------------------------------------------------- clone
def clone_initial(run: Run) -> dict[str, Any]:
    """Launch inputs that reproduce `run` (the launch form's initial values for "clone")."""
    cfg = run.config
    initial: dict[str, Any] = {name: cfg[name] for name in LAUNCH_FIELDS if name in cfg}
    initial["model"] = launch_value(cfg.get("model_path", ""))
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
                   eval_suite=run.eval_suite_id, queue=run.queue, num_gpus=run.num_gpus, tags=list(run.tags),
                   init_from_run=run.init_from_run_id, init_from_step=run.init_from_step, recipe=run.recipe)
    return initial
