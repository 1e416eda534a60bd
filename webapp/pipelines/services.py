"""Pipeline writes: create (every stage validated first, nothing created on a bad one), advance on
webapp.runs.signals.run_status_changed, cancel.

Stages go through the one launch path (webapp.runs.launch.build_config / submit_run). Stage 1
starts from the pipeline's model (or `init_from_run`); stage k+1 from stage k's final model, so
later stages may not name a model of their own. A later stage is validated at create time
against stage 1's starting model (the weights it will load have the same shape) and validated
again when it is queued, against the real final model.
"""
from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from webapp.accounts.quotas import QuotaExceeded
from webapp.runs import services as run_services
from webapp.runs.launch import LaunchError, LaunchPlan, SourceRunNotFound, build_config, submit_run
from webapp.runs.models import Run, RunStatus

from .models import Pipeline, PipelineStage

log = logging.getLogger(__name__)

MAX_STAGES = 10
START_KEYS = ("model", "init_from_run", "init_from_step")  # where stage 1 starts; later stages: the previous one


class PipelineError(Exception):
    """A pipeline action that is not possible now (cancel a finished pipeline)."""


def _stage_field(index: int, field: str) -> str:
    return f"stages.{index}" + ("" if field == "__all__" else f".{field}")


def plan_stages(team, stages: list[dict[str, Any]]) -> list[LaunchPlan]:
    """Validate every stage (all errors at once, named "stages.<i>.<field>"); LaunchError if any is
    bad, SourceRunNotFound if stage 1 starts from a run outside the team."""
    if not isinstance(stages, list) or not 1 <= len(stages) <= MAX_STAGES:
        raise LaunchError.one("stages", f"Give 1 to {MAX_STAGES} stages.")
    errors: dict[str, list[str]] = {}
    plans: list[LaunchPlan] = []
    start = {k: stages[0].get(k) for k in START_KEYS if stages[0].get(k) not in (None, "")}
    for i, stage in enumerate(stages):
        data = dict(stage)
        if i > 0:
            for key in START_KEYS:
                if data.get(key) not in (None, ""):
                    errors.setdefault(_stage_field(i, key), []).append(
                        f"Stage {i + 1} starts from stage {i}'s final model; only stage 1 names where it starts.")
            data.update(start)
        try:
            plan = build_config(team, data)
        except SourceRunNotFound:
            raise
        except LaunchError as e:
            for field, messages in e.errors.items():
                errors.setdefault(_stage_field(i, field), []).extend(messages)
            continue
        if i < len(stages) - 1 and not plan.config.get("save_final", True):
            errors.setdefault(_stage_field(i, "config.save_final"), []).append(
                "The next stage starts from this stage's final model: it must be saved.")
        plans.append(plan)
    if errors:
        raise LaunchError(errors)
    return plans


def _storable(stage: dict[str, Any]) -> dict[str, Any]:
    """Launch inputs as JSON (model instances, e.g. the form's dataset, by id)."""
    return {k: (v.pk if isinstance(v, Model) else v) for k, v in stage.items() if v is not None}


def create_pipeline(team, user, *, name: str, stages: list[dict[str, Any]]) -> Pipeline:
    """Validate all stages, create the pipeline and queue stage 1 (QuotaExceeded/LaunchError: nothing created)."""
    plans = plan_stages(team, stages)
    name = (name or "").strip() or " -> ".join(p.fields["method"].upper() for p in plans)
    if len(name) > Pipeline._meta.get_field("name").max_length:
        raise LaunchError.one("name", f"At most {Pipeline._meta.get_field('name').max_length} characters.")
    with transaction.atomic():
        pipeline = Pipeline.objects.create(team=team, name=name, created_by=user, status=RunStatus.RUNNING)
        rows = [PipelineStage.objects.create(pipeline=pipeline, index=i, method=plan.fields["method"],
                                             inputs=_storable(stage))
                for i, (stage, plan) in enumerate(zip(stages, plans))]
        _submit(pipeline, rows[0], plans[0])
    return pipeline


def _submit(pipeline: Pipeline, stage: PipelineStage, plan: LaunchPlan) -> Run:
    fields = dict(plan.fields)
    if not (stage.inputs.get("name") or "").strip():
        fields["name"] = f"{pipeline.name}: stage {stage.index + 1} ({stage.method})"[:200]
    fields["tags"] = [*fields["tags"], f"pipeline:{pipeline.pk}"]
    run = submit_run(pipeline.team, pipeline.created_by, LaunchPlan(plan.config, fields))
    stage.run = run
    stage.save(update_fields=["run"])
    return run


def on_run_status_changed(sender, *, run_id: int, status: str, previous: str, message: str, **kwargs) -> None:
    """The receiver of run_status_changed: advance the pipeline whose stage this run is, if any."""
    stage = PipelineStage.objects.filter(run_id=run_id).values_list("pipeline_id", "index").first()
    if stage is not None:
        advance(stage[0], stage[1], status, previous, message)


def advance(pipeline_id: int, index: int, status: str, previous: str = "", message: str = "") -> Pipeline:
    """Stage `index` reached `status`: queue the next stage from its final model, finish the
    pipeline, or stop it (failure or cancel: which stage and why). Locked, so a repeated signal
    queues nothing twice."""
    with transaction.atomic():
        pipeline = Pipeline.objects.select_for_update().get(pk=pipeline_id)
        stages = list(pipeline.stages.select_related("run").order_by("index"))
        stage, n = stages[index], len(stages)
        label = f"Stage {index + 1} ({stage.method}, run #{stage.run_id})"
        if status == RunStatus.SUCCEEDED and pipeline.status == RunStatus.RUNNING:
            if index + 1 == n:
                _finish(pipeline, RunStatus.SUCCEEDED, f"All {n} stages succeeded.")
            elif stages[index + 1].run_id is None:
                nxt = stages[index + 1]
                try:
                    plan = build_config(pipeline.team, {**nxt.inputs, "init_from_run": stage.run_id})
                    _submit(pipeline, nxt, plan)
                except (LaunchError, QuotaExceeded) as e:
                    _finish(pipeline, RunStatus.FAILED, f"Stage {index + 2} ({nxt.method}) could not start "
                                                        f"from run #{stage.run_id}: {e}")
        elif status in (RunStatus.FAILED, RunStatus.CANCELLED) and pipeline.status == RunStatus.RUNNING:
            why = (stage.run.error if stage.run else "") or message or status
            rest = f"; stages {index + 2}-{n} not started" if index + 1 < n else ""
            _finish(pipeline, status, f"{label} {status}: {why}{rest}.")
        elif (status == RunStatus.QUEUED and previous in (RunStatus.FAILED, RunStatus.CANCELLED)
              and pipeline.status in (RunStatus.FAILED, RunStatus.CANCELLED)
              and all(s.run_id is None for s in stages[index + 1:])):
            # The stopped stage was resumed: the pipeline carries on from it.
            pipeline.status, pipeline.message, pipeline.finished_at = RunStatus.RUNNING, f"{label} resumed.", None
            pipeline.save(update_fields=["status", "message", "finished_at"])
    return pipeline


def _finish(pipeline: Pipeline, status: str, message: str) -> None:
    pipeline.status, pipeline.message, pipeline.finished_at = status, message, timezone.now()
    pipeline.save(update_fields=["status", "message", "finished_at"])
    log.info("pipeline %s %s: %s", pipeline.pk, status, message)


def cancel_pipeline(pipeline: Pipeline, user=None) -> Pipeline:
    """Stop the pipeline: no further stage starts, the active stage's run is cancelled."""
    by = user.get_username() if user else ""
    with transaction.atomic():
        locked = Pipeline.objects.select_for_update().get(pk=pipeline.pk)
        if not locked.is_active:
            raise PipelineError(f"Pipeline #{locked.pk} is {locked.status}; only a running pipeline can be cancelled.")
        active = locked.stages.filter(run__status__in=Run.ACTIVE).select_related("run").first()
        where = f" during stage {active.index + 1} ({active.method}, run #{active.run_id})" if active else ""
        _finish(locked, RunStatus.CANCELLED, f"Cancelled{f' by {by}' if by else ''}{where}.")
    if active is not None:
        try:
            run_services.request_cancel(active.run, by=by)
        except run_services.TransitionError:  # it finished meanwhile; the pipeline stays cancelled
            pass
    pipeline.refresh_from_db()
    return pipeline
