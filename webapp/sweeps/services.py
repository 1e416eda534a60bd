"""Sweep writes: create (checked, then the first `parallel` trials launched), advance (a trial run
ended: tell the study its value, ask for the next while the budget allows), prune, cancel.

Every trial run goes through webapp.runs.launch.submit_run, so quotas and validation apply as for
any launch. Progress is driven by webapp.runs.signals.run_status_changed (no polling): the
receiver runs in whichever process ended the run (a worker, the web, housekeeping); the sweep row
is locked while a trial is told and the next ones are asked, so two runs ending at once cannot
both launch the last trial of the budget.
"""
from __future__ import annotations

import logging
import math
import uuid
from typing import Any

from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone
from optuna.trial import TrialState

from gft_core.config import LAUNCH_FIELDS
from webapp.accounts import quotas
from webapp.runs import launch
from webapp.runs import services as run_services
from webapp.runs.models import MetricKey, MetricPoint, Run, RunStatus

from . import search, spaces
from .models import Sweep, SweepStatus, SweepTrial
from .spaces import SweepError

log = logging.getLogger(__name__)
MAX_CHECKED_POINTS = 50  # grid points built with build_config before anything is created


class SweepStateError(Exception):
    """An action the sweep's status does not allow (cancel of a finished sweep): 409."""


# ---------------------------------------------------------------------------- create
def create_sweep(team, user, data: dict[str, Any]) -> Sweep:
    """Check `data` (spaces.parse + build_config of the base with the parameters' values), then
    create the sweep, its Optuna study and its first trial runs. SweepError (400) or QuotaExceeded
    (429) leave nothing behind."""
    spec = spaces.parse(data)
    _check_launches(team, spec)
    study_name = f"sweep-{uuid.uuid4().hex[:16]}"
    search.create(study_name, spec.direction, spec.strategy, spec.params, spec.seed, spec.max_runs, spec.pruner)
    try:
        with transaction.atomic():
            sweep = Sweep.objects.create(
                team=team, created_by=user, name=spec.name, base=spec.base, strategy=spec.strategy,
                parameters={p.name: p.to_json() for p in spec.params}, max_runs=spec.max_runs,
                parallel=spec.parallel, target=spec.target, direction=spec.direction, target_mode=spec.target_mode,
                pruner=spec.pruner, seed=spec.seed, study_name=study_name)
            quotas.check_run_start(team)  # not even one trial may start: nothing is created
            _launch_more(sweep)
            if not sweep.trials.exists():
                raise SweepError.one("base", sweep.message or "No trial could be launched.")
    except BaseException:
        search.delete(study_name)
        raise
    return sweep


def _check_launches(team, spec: spaces.SweepSpec) -> None:
    """build_config of the trials' launch inputs: every grid point (up to MAX_CHECKED_POINTS), else
    the first and the last value of every parameter. A bad value names its parameter."""
    if spec.strategy == "grid":
        points = spec.grid_points()[:MAX_CHECKED_POINTS]
    else:
        points = [{p.name: p.corners()[i] for p in spec.params} for i in (0, 1)]
    for point in points:
        try:
            launch.build_config(team, trial_inputs(spec.base, point, spec.name, 0))
        except launch.LaunchError as e:
            errors = {}
            for field, messages in e.errors.items():
                key = f"parameters.{field}" if field in point else ("base" if field == "__all__" else f"base.{field}")
                where = ", ".join(f"{k}={v!r}" for k, v in point.items())
                errors.setdefault(key, []).extend(f"{m} (trial with {where})" for m in messages)
            raise SweepError(errors) from None


def trial_inputs(base: dict[str, Any], params: dict[str, Any], name: str, number: int) -> dict[str, Any]:
    """Launch inputs of one trial: the base with the parameters set (launch fields beside, other
    settings inside the API's `config`), named after the sweep and tagged with it."""
    inputs = dict(base)
    config = dict(inputs.get("config") or {})
    for key, value in params.items():
        if key in LAUNCH_FIELDS:
            inputs[key] = value
        else:
            config[key] = value
    if config:
        inputs["config"] = config
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
    inputs["name"] = f"{name} #{number} {shown}"[:200]
    return inputs


# ---------------------------------------------------------------------------- advance
def on_run_status_changed(sender, run_id: int, status: str, previous: str, message: str = "", **_) -> None:
    """run_status_changed receiver: a trial run that ended is told to its study."""
    if status not in Run.FINISHED:
        return
    trial = SweepTrial.objects.filter(run_id=run_id).values_list("pk", flat=True).first()
    if trial is not None:
        finish_trial(trial)
    else:  # another run of the team ended: a sweep waiting on the team's quota may go on
        team_id = Run.objects.filter(pk=run_id).values_list("team_id", flat=True).first()
        for sweep_id in Sweep.objects.filter(team_id=team_id, status=SweepStatus.RUNNING).values_list("pk", flat=True):
            with transaction.atomic():
                sweep = Sweep.objects.select_for_update().get(pk=sweep_id)
                _launch_more(sweep)
                _maybe_finish(sweep)


def finish_trial(trial_pk: int) -> None:
    """Tell the study how the trial's run ended, then launch more trials or end the sweep."""
    with transaction.atomic():
        trial = SweepTrial.objects.select_related("run").get(pk=trial_pk)
        sweep = Sweep.objects.select_for_update().get(pk=trial.sweep_id)
        trial = SweepTrial.objects.select_for_update().select_related("run").get(pk=trial_pk)
        if trial.state == SweepTrial.State.RUNNING and trial.run.status in Run.FINISHED:
            _tell(sweep, trial)
        _launch_more(sweep)
        _maybe_finish(sweep)


def _tell(sweep: Sweep, trial: SweepTrial) -> None:
    run = trial.run
    value = target_value(sweep, run)
    if run.status == RunStatus.SUCCEEDED and value is not None:
        state = TrialState.COMPLETE
    elif run.status == RunStatus.CANCELLED and trial.pruned_step is not None:
        state = TrialState.PRUNED
    else:
        state = TrialState.FAIL
    study = search.load(sweep)
    try:
        study.tell(trial.number, value if state == TrialState.COMPLETE else None, state=state)
    except (ValueError, RuntimeError) as exc:  # told already (a redelivered signal)
        log.warning("%s trial %s: %s", sweep, trial.number, exc)
    trial.state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}.get(state, "failed")
    trial.value = value
    trial.save(update_fields=["state", "value"])


def _launch_more(sweep: Sweep) -> None:
    """Ask the study for trials while the sweep runs, the budget allows and fewer than `parallel`
    trial runs are active; each is launched through submit_run. The caller holds the sweep row."""
    if sweep.status != SweepStatus.RUNNING:
        return
    active = sweep.trials.filter(run__status__in=Run.ACTIVE).count()
    while sweep.asked < budget(sweep) and active < sweep.parallel:
        try:
            quotas.check_run_start(sweep.team)
        except quotas.QuotaExceeded as e:  # goes on when a run of the team ends (on_run_status_changed)
            _note(sweep, f"Waiting for the team's quota: {e}")
            return
        study = search.load(sweep)
        trial = study.ask(search.distributions([spaces.Param.from_json(n, d) for n, d in sweep.parameters.items()]))
        sweep.asked += 1
        sweep.save(update_fields=["asked"])
        try:
            with transaction.atomic():
                run = launch.submit_run(sweep.team, sweep.created_by,
                                        trial_inputs(sweep.base, trial.params, sweep.name, trial.number))
                SweepTrial.objects.create(sweep=sweep, run=run, number=trial.number, trial_id=trial._trial_id,
                                          params=trial.params)
        except (launch.LaunchError, quotas.QuotaExceeded) as e:
            study.tell(trial, state=TrialState.FAIL)
            _note(sweep, f"Trial {trial.number} ({trial.params}) could not be launched: {e}")
            continue
        active += 1


def _maybe_finish(sweep: Sweep) -> None:
    if sweep.status != SweepStatus.RUNNING or sweep.trials.filter(state=SweepTrial.State.RUNNING).exists():
        return
    if sweep.asked >= budget(sweep):
        sweep.status, sweep.finished_at = SweepStatus.SUCCEEDED, timezone.now()
        sweep.save(update_fields=["status", "finished_at"])


def _note(sweep: Sweep, message: str) -> None:
    sweep.message = message[:2000]
    sweep.save(update_fields=["message"])


def budget(sweep: Sweep) -> int:
    """Trials the sweep may ask for: max_runs, and for a grid at most its number of points."""
    if sweep.strategy == "grid":
        return min(sweep.max_runs, math.prod(len(d["values"]) for d in sweep.parameters.values()))
    return sweep.max_runs


# ---------------------------------------------------------------------------- target
def target_value(sweep: Sweep, run: Run) -> float | None:
    """The run's target: a metric's last value (final) or best value, or an evaluation result
    `eval:<benchmark>/<metric>` of the run's evaluations during training (latest or best step)."""
    pick = max if sweep.direction == "max" else min
    if sweep.target.startswith("eval:"):
        from webapp.evaluations.models import EvalResult

        bench, metric = sweep.target[5:].split("/", 1)
        rows = EvalResult.objects.filter(evaluation__run=run, evaluation__status="succeeded", benchmark_name=bench) \
            .order_by("evaluation__checkpoint_step").values_list("metrics", flat=True)
        values = [v for v in (_eval_metric(m, metric) for m in rows) if v is not None]
        if not values:
            return None
        return values[-1] if sweep.target_mode == "final" else pick(values)
    if sweep.target_mode == "final":
        value = (run.summary or {}).get(sweep.target)
    else:
        key = MetricKey.objects.filter(name=sweep.target).first()
        agg = (Max if sweep.direction == "max" else Min)("value")
        value = MetricPoint.objects.filter(run_id=run.pk, key_id=key.pk).aggregate(v=agg)["v"] if key else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _eval_metric(metrics: dict, name: str) -> float | None:
    """avg_at_k, maj_at_k, pass@N (BenchmarkResult.summary(): pass_at_k keyed by str(N)); percent."""
    if name.startswith("pass@"):
        value = (metrics.get("pass_at_k") or {}).get(name[5:])
    else:
        value = metrics.get(name)
    return float(value) * 100 if isinstance(value, (int, float)) else None


# ---------------------------------------------------------------------------- prune, cancel
def prune(trial_pk: int, step: int) -> None:
    """The pruner said stop: cancel the trial's run with the reason (shown in its events)."""
    trial = SweepTrial.objects.select_related("run", "sweep").get(pk=trial_pk)
    SweepTrial.objects.filter(pk=trial_pk).update(pruned_step=step)
    try:
        run_services.request_cancel(trial.run, by=f"sweep #{trial.sweep_id}: pruned at step {step}")
    except run_services.TransitionError:
        pass  # it ended meanwhile


def cancel_sweep(sweep: Sweep, user=None) -> Sweep:
    """Stop launching trials and cancel the sweep's queued and running runs."""
    with transaction.atomic():
        locked = Sweep.objects.select_for_update().get(pk=sweep.pk)
        if locked.status != SweepStatus.RUNNING:
            raise SweepStateError(f"Sweep {sweep.pk} is {locked.status}; only a running sweep can be cancelled.")
        locked.status, locked.finished_at = SweepStatus.CANCELLED, timezone.now()
        locked.message = f"Cancelled{f' by {user}' if user else ''}."
        locked.save(update_fields=["status", "finished_at", "message"])
    for trial in sweep.trials.filter(run__status__in=Run.ACTIVE).select_related("run"):
        try:
            run_services.request_cancel(trial.run, by=f"{user or 'someone'} (sweep #{sweep.pk} cancelled)")
        except run_services.TransitionError:
            pass
    sweep.refresh_from_db()
    return sweep
