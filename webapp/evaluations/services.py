"""Writes of the evaluation app: suites (versioned through webapp.resources' lifecycle), submitting,
cancelling and resuming evaluations, and what the worker (workers/eval_tasks.py) records.

Errors for the user are EvalError(field, message): the API answers 400 {field: [message]}.
Every status change goes through `jobs.transition` (webapp.resources.jobs: the state machine of runs).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from webapp import dispatch
from webapp.datasets.models import Dataset
from webapp.resources import services as lifecycle
from webapp.resources.jobs import JobLifecycle, TransitionError
from webapp.runs import live
from webapp.runs.modelpaths import ModelPathError, resolve_model
from webapp.runs.models import Artifact, Run

from .models import EvalResult, EvalStatus, EvalSuite, Evaluation

log = logging.getLogger(__name__)

MAX_BENCHMARKS = 50  # per suite
RESPONSES_KEPT = 4  # sampled responses stored per problem (the rest are counted, not kept)
STEP_CHOICES = ("latest", "final")

# Re-exported: the suite lifecycle is the shared one of every versioned team resource.
InUseError = lifecycle.InUseError
archive = lifecycle.archive
delete = lifecycle.delete


class EvalError(ValueError):
    """Bad input; `field` names the input it is about."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# ---------------------------------------------------------------------------- suites
def check_settings(data: dict | None) -> dict:
    """gft_core EvalSettings from `data` (defaults for what is left out), as a dict; EvalError
    naming `settings.<field>` when a value is out of bounds."""
    from gft_core.benchmarks import EvalSettings
    from gft_core.errors import ConfigError

    try:
        return EvalSettings.from_dict(dict(data or {})).to_dict()
    except ConfigError as exc:
        raise EvalError(f"settings.{exc.field}", str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise EvalError("settings", str(exc)) from None


def check_benchmarks(team, ids: list) -> list[int]:
    """The ids of the team's benchmark datasets, checked: known, marked for evaluation, not archived."""
    if not isinstance(ids, (list, tuple)) or not ids:
        raise EvalError("benchmarks", "Choose at least one benchmark dataset.")
    if len(ids) > MAX_BENCHMARKS:
        raise EvalError("benchmarks", f"At most {MAX_BENCHMARKS} benchmarks per suite.")
    if len(set(ids)) != len(ids):
        raise EvalError("benchmarks", "A benchmark is listed twice.")
    found = Dataset.objects.in_bulk([i for i in ids if isinstance(i, int)])
    for i in ids:
        d = found.get(i) if isinstance(i, int) else None
        if d is None or d.team_id != team.pk:
            raise EvalError("benchmarks", f"No dataset {i} in team {team}.")
        if not d.is_benchmark:
            raise EvalError("benchmarks", f"{d} is a training dataset; mark it for evaluation first.")
        if d.archived:
            raise EvalError("benchmarks", f"{d} is archived.")
    return list(ids)


def create_suite(team, user, *, name: str, benchmarks: list[int], settings: dict | None = None,
                 description: str = "") -> EvalSuite:
    """Version 1 of a new suite of the team."""
    name = (name or "").strip()
    if not name:
        raise EvalError("name", "Give the suite a name.")
    if len(name) > EvalSuite._meta.get_field("name").max_length:
        raise EvalError("name", "The name is too long.")
    if EvalSuite.objects.filter(team=team, name=name).exists():
        raise EvalError("name", f"Team {team} already has a suite named {name!r}; make a new version of it.")
    ids = check_benchmarks(team, benchmarks)
    cfg = check_settings(settings)
    return EvalSuite.objects.create(team=team, name=name, version=1, benchmarks=ids, settings=cfg,
                                    description=description or "", created_by=user)


def new_suite_version(suite: EvalSuite, user, *, benchmarks: list[int] | None = None, settings: dict | None = None,
                      description: str | None = None) -> EvalSuite:
    """The next version of `suite`'s (team, name): what is not given is taken over."""
    ids = check_benchmarks(suite.team, benchmarks) if benchmarks is not None else list(suite.benchmarks)
    cfg = check_settings({**suite.settings, **settings} if settings is not None else suite.settings)
    with transaction.atomic():
        version = lifecycle.next_version(EvalSuite, suite.team, suite.name)
        return EvalSuite.objects.create(team=suite.team, name=suite.name, version=version, previous=suite,
                                        benchmarks=ids, settings=cfg, created_by=user,
                                        description=suite.description if description is None else description)


# ---------------------------------------------------------------------------- submitting
def model_dir(path: Path) -> Path | None:
    """The Hugging Face model directory of a checkpoint (step-N/model) or final model, if complete."""
    for p in (path / "model", path):
        if (p / "config.json").is_file():
            return p
    return None


def run_checkpoints(run: Run) -> list[tuple[int, str, str]]:
    """(step, kind, model directory) of every checkpoint and final model of `run` still on disk."""
    out = []
    for art in run.artifacts.filter(kind__in=(Artifact.Kind.CHECKPOINT, Artifact.Kind.FINAL_MODEL)):
        d = model_dir(Path(art.path))
        if d is not None:
            out.append((art.step, art.kind, str(d)))
    return sorted(out, key=lambda t: (t[0], t[1] == Artifact.Kind.FINAL_MODEL))


def resolve_checkpoint(run: Run, step: str | int) -> tuple[int, str]:
    """(checkpoint step, model directory) of `step` = "latest" | "final" | a step number (0 = the
    run's base model); EvalError("step") when there is no such checkpoint on disk."""
    if isinstance(step, str) and step.isdigit():
        step = int(step)
    if step == 0:
        return 0, base_model_of(run)
    have = run_checkpoints(run)
    if step == "final":
        finals = [c for c in have if c[1] == Artifact.Kind.FINAL_MODEL]
        if not finals:
            raise EvalError("step", f"Run #{run.pk} has no final model (it is {run.status}).")
        return finals[-1][0], finals[-1][2]
    if step == "latest":
        if not have:
            raise EvalError("step", f"Run #{run.pk} has no checkpoint on disk yet.")
        return have[-1][0], have[-1][2]
    if isinstance(step, int) and not isinstance(step, bool):
        found = [c for c in have if c[0] == step]
        if not found:
            steps = ", ".join(str(c[0]) for c in have) or "none"
            raise EvalError("step", f"Run #{run.pk} has no checkpoint of step {step} on disk (steps: {steps}).")
        return step, found[-1][2]
    raise EvalError("step", 'Use "latest", "final" or a step number.')


def base_model_of(run: Run) -> str:
    path = str((run.config or {}).get("model_path") or "")
    if not path or not Path(path).is_dir():
        raise EvalError("step", f"The base model of run #{run.pk} ({path or 'unknown'}) is not on disk.")
    return path


def usable_benchmarks(suite: EvalSuite, field: str) -> list[Dataset]:
    """The suite's benchmark datasets; EvalError(field, ...) when none is left or one is not validated."""
    datasets = suite.benchmark_datasets()
    if not datasets:
        raise EvalError(field, f"{suite} has no benchmark left.")
    for d in datasets:
        if not d.usable:
            raise EvalError(field, f"Benchmark {d} is {d.status}{' (archived)' if d.archived else ''}; "
                                   "only validated benchmarks can be evaluated.")
    return datasets


def resolve_prompt_format(suite: EvalSuite, model_dir: str, run: Run | None = None,
                          override: dict | None = None) -> dict:
    """How an evaluation builds its prompts, as stored on it: `override` (the request's settings),
    then the suite's, over the run's training settings (its config's `data`) for a run's
    checkpoint or, for a base model, gft_core's defaults (chat template on, as in training).
    EvalError("prompt_format.<field>") on a bad override."""
    from gft_core.benchmarks import EvalSettings
    from gft_core.errors import ConfigError
    from gft_core.policy import PROMPT_FORMAT_FIELDS, PromptFormat, model_has_chat_template

    override = {} if override is None else override
    if not isinstance(override, dict):
        raise EvalError("prompt_format", "Expected a mapping of " + ", ".join(PROMPT_FORMAT_FIELDS) + ".")
    for key in override:
        if key not in PROMPT_FORMAT_FIELDS:
            raise EvalError(f"prompt_format.{key}", f"Unknown setting; known: {', '.join(PROMPT_FORMAT_FIELDS)}.")
    override = {k: v for k, v in override.items() if v is not None}
    try:
        EvalSettings(**override)  # bounds and types, by gft_core
    except ConfigError as exc:
        raise EvalError(f"prompt_format.{exc.field}", str(exc)) from None
    settings = EvalSettings.from_dict(check_settings(suite.settings))
    base = PromptFormat.from_dict((run.config or {}).get("data")) if run is not None else None
    fmt = settings.prompt_format(base).override(**override)
    set_by_suite = [k for k in PROMPT_FORMAT_FIELDS if getattr(settings, k) is not None and k not in override]
    return {**fmt.describe(model_has_chat_template(model_dir)),
            "source": f"run #{run.pk}" if run is not None else "defaults",
            "set_by_suite": set_by_suite, "set_by_request": sorted(override)}


def submit_evaluation(team, user, *, suite: EvalSuite, run: Run | None = None, step: str | int = "latest",
                      model: str | None = None, prompt_format: dict | None = None) -> Evaluation:
    """Queue an evaluation of a run's checkpoint (`step`: "latest", "final", N; 0 = its base model)
    or of a model (`model`: "tiny" or a directory under MODEL_ROOTS, evaluated as step 0). Its
    prompts are built as resolve_prompt_format says (`prompt_format`: the request's settings)."""
    if suite.team_id != team.pk:
        raise EvalError("suite", f"No suite {suite.pk} in team {team}.")
    if suite.archived:
        raise EvalError("suite", f"{suite} is archived.")
    if (run is None) == (model is None):
        raise EvalError("run", "Give either a run (with a step) or a model.")
    datasets = usable_benchmarks(suite, "suite")
    if run is not None:
        if run.team_id != team.pk:
            raise EvalError("run", f"No run {run.pk} in team {team}.")
        checkpoint_step, path = resolve_checkpoint(run, step)
        base_path = base_model_of(run) if checkpoint_step == 0 else str((run.config or {}).get("model_path") or "")
        fields = dict(run=None if checkpoint_step == 0 else run, model_path=base_path)
    else:
        try:
            path = resolve_model(model or "")
        except ModelPathError as exc:
            raise EvalError("model", str(exc)) from None
        if not (Path(path) / "config.json").is_file():
            raise EvalError("model", f"{path} is not a model directory (no config.json).")
        checkpoint_step, fields = 0, dict(run=None, model_path=path)
    fmt = resolve_prompt_format(suite, path, fields["run"], prompt_format)
    total = sum(int(((d.report or {}).get("train") or {}).get("valid_rows") or 0) for d in datasets)
    return jobs.submit(team=team, suite=suite, checkpoint_step=checkpoint_step, checkpoint_path=path, total=total,
                       created_by=user, prompt_format=fmt, **fields)


# ---------------------------------------------------------------------------- lifecycle
# The shared one of GPU jobs (webapp.resources.jobs): an evaluation moves like a run, every status
# change goes through jobs.transition; SIGTERM on its worker queues it again (jobs.requeue).
jobs = JobLifecycle(Evaluation, label="Evaluation", key="eval", task=dispatch.EVALUATE)
request_cancel, cancel_requested = jobs.request_cancel, jobs.cancel_requested
start, finish = jobs.start, jobs.finish  # what the worker records (with record_progress, store_result)


def resume_evaluation(ev: Evaluation) -> Evaluation:
    """Queue a failed or cancelled evaluation again; benchmarks already scored are kept."""
    if ev.checkpoint_path and not Path(ev.checkpoint_path).is_dir():
        raise TransitionError(f"{ev.checkpoint_path} is gone (pruned?): submit a new evaluation instead.")
    return jobs.resume(ev)


# ---------------------------------------------------------------------------- what the worker records
def record_progress(ev: Evaluation, done: int, total: int, benchmark: str) -> bool:
    """Progress after a batch (`done` problems scored of `total`, over all benchmarks)."""
    return jobs.heartbeat(ev, done=done, total=total, current_benchmark=benchmark[:120])


def _text(value: Any) -> Any:
    """A string as Postgres' jsonb can store it: a model may sample NUL, which jsonb refuses."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def problem_record(p: dict) -> dict:
    """What is kept of one gft_core ProblemResult: counts, the first RESPONSES_KEPT responses."""
    correct = list(p.get("correct") or [])
    keep = RESPONSES_KEPT
    return {"index": p["index"], "prompt": _text(p.get("prompt", "")), "ground_truth": _text(p.get("ground_truth")),
            "k": len(correct), "correct": sum(bool(c) for c in correct),
            "responses": [_text(r) for r in list(p.get("responses") or [])[:keep]], "response_correct": correct[:keep],
            "extracted": [_text(x) for x in list(p.get("extracted") or [])[:keep]],
            "truncated": sum(bool(t) for t in p.get("truncated") or []),
            "mean_length": (sum(p.get("lengths") or []) / len(p["lengths"])) if p.get("lengths") else 0.0,
            "disagree": sum(bool(d) for d in p.get("disagree") or [])}


def prompt_format_of(ev: Evaluation):
    """The gft_core PromptFormat `ev` builds its prompts with; resolved and stored first for an
    evaluation queued before it was recorded at submit."""
    from gft_core.policy import PromptFormat

    if not ev.prompt_format:
        ev.prompt_format = resolve_prompt_format(ev.suite, ev.checkpoint_path, ev.run)
        Evaluation.objects.filter(pk=ev.pk).update(prompt_format=ev.prompt_format)
    return PromptFormat.from_dict(ev.prompt_format)


def store_result(ev: Evaluation, dataset: Dataset, result: dict) -> EvalResult | None:
    """Store gft_core's BenchmarkResult.to_dict() for (evaluation, benchmark), fenced by the attempt.
    The result's prompt format (what the library applied with the model's tokenizer) is the
    evaluation's from then on."""
    problems = [problem_record(p) for p in result.get("problems") or []]
    metrics = {k: v for k, v in result.items() if k != "problems"}
    with transaction.atomic():
        if not Evaluation.objects.select_for_update().filter(pk=ev.pk, attempt=ev.attempt,
                                                             status=EvalStatus.RUNNING).exists():
            return None
        res, _ = EvalResult.objects.update_or_create(
            evaluation=ev, benchmark=dataset,
            defaults={"benchmark_name": dataset.name, "metrics": metrics, "problems": problems})
        if result.get("prompt_format"):
            ev.prompt_format = {**ev.prompt_format, **result["prompt_format"]}
            Evaluation.objects.filter(pk=ev.pk).update(prompt_format=ev.prompt_format)
    return res


# ---------------------------------------------------------------------------- evaluations during training
def suite_config(suite: EvalSuite) -> dict:
    """The suite as gft_core's GFTConfig.eval_suite (plain data the trainer reads: benchmark files,
    mappings, EvalSettings); EvalError("eval_suite", ...) when a benchmark cannot be evaluated."""
    datasets = usable_benchmarks(suite, "eval_suite")
    return {"suite_id": suite.pk, "name": str(suite), "settings": check_settings(suite.settings),
            "benchmarks": [{"name": d.name, "dataset_id": d.pk, "path": str(d.path), "mapping": d.mapping}
                           for d in datasets]}


def record_run_evaluation(run_id: int, suite_id: int, step: int, benchmark: str, result: dict, *,
                          attempt: int | None = None) -> EvalResult | None:
    """Store one benchmark's result of a suite evaluated by the run's own trainer at `step`: one
    succeeded Evaluation per (run, suite, step) (no task of its own: celery_task_id stays blank),
    one EvalResult per benchmark; then a live event on the run's stream. Fenced like the run's
    sink: with `attempt`, None (nothing written) unless the run is running that attempt."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        if run is None or (attempt is not None and (run.attempt != attempt or run.status != EvalStatus.RUNNING)):
            return None
        suite = EvalSuite.objects.filter(pk=suite_id, team_id=run.team_id).first()
        if suite is None:
            raise EvalError("eval_suite", f"No suite {suite_id} in the team of run #{run_id}.")
        dataset = next((d for d in suite.benchmark_datasets() if d.name == benchmark), None)
        now = timezone.now()
        ev, _ = Evaluation.objects.get_or_create(
            run=run, suite=suite, checkpoint_step=step, celery_task_id="", status=EvalStatus.SUCCEEDED,
            defaults=dict(team_id=run.team_id, model_path=str((run.config or {}).get("model_path") or ""),
                          checkpoint_path="", created_by_id=run.created_by_id, queued_at=now, started_at=now,
                          finished_at=now, worker=run.worker))
        n = int(result.get("n_problems") or 0)
        ev.done, ev.total, ev.finished_at = ev.done + n, ev.total + n, now
        # the trainer's own format (its data settings under the suite's): what the library recorded
        ev.prompt_format = {**dict(result.get("prompt_format") or {}), "source": f"run #{run.pk} (during training)"}
        ev.save(update_fields=["done", "total", "finished_at", "prompt_format"])
        res, _ = EvalResult.objects.update_or_create(
            evaluation=ev, benchmark=dataset, benchmark_name=benchmark[:120],
            defaults={"metrics": {k: v for k, v in result.items() if k != "problems"},
                      "problems": [problem_record(p) for p in result.get("problems") or []]})
        payload = {"evaluation": ev.pk, "suite": suite.pk, "step": step, "benchmark": benchmark,
                   "avg_at_k": result.get("avg_at_k")}
        transaction.on_commit(lambda: _publish(run_id, payload))
    return res


def _publish(run_id: int, payload: dict) -> None:
    try:
        live.publish_event(run_id, {"kind": "evaluation", **payload})
    except Exception as exc:  # noqa: BLE001 - the page polls too; the rows are stored
        log.warning("run %s: evaluation event not published: %s", run_id, exc)


def evaluated_benchmarks(ev: Evaluation) -> set[int]:
    """Benchmark dataset ids already scored (a resumed evaluation skips them)."""
    return set(ev.results.values_list("benchmark_id", flat=True))
