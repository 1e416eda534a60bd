"""Sweep reads for the page, the API and the CLI: trials with their runs, the best trial, the
seed groups (trials that differ only in seed: one row, mean +/- std of the target) and the data of
the parallel-coordinates and scatter plots."""
from __future__ import annotations

import statistics
from typing import Any

from django.db.models import Count, F, QuerySet

from webapp.runs.models import Run

from .models import Sweep, SweepTrial
from .services import budget


def trials(sweep: Sweep) -> QuerySet[SweepTrial]:
    """The trials with their runs, less the runs' large JSON (a 500-trial page decoded 500 full
    configs for one seed each): `config_seed` is the run's config seed."""
    return (sweep.trials.select_related("run")
            .defer("run__config", "run__summary", "run__metric_range", "run__effective_group", "run__log_tail")
            .annotate(config_seed=F("run__config__seed")).order_by("number"))


def best_trial(sweep: Sweep, rows: list[SweepTrial] | None = None) -> SweepTrial | None:
    """The complete trial with the best target value (max or min, as the sweep's direction)."""
    done = [t for t in (rows if rows is not None else trials(sweep)) if t.state == "complete" and t.value is not None]
    if not done:
        return None
    return (max if sweep.direction == "max" else min)(done, key=lambda t: t.value)


def progress(sweep: Sweep) -> dict[str, Any]:
    """{budget, asked, complete, pruned, failed, running, active (queued or running runs)}."""
    states = dict(sweep.trials.values_list("state").annotate(n=Count("id")))
    active = sweep.trials.filter(run__status__in=Run.ACTIVE).count()
    total = budget(sweep)
    return {"budget": total, "asked": sweep.asked, "active": active, "fraction": round(sweep.asked / total, 4) if total else 0,
            **{s: states.get(s, 0) for s in ("running", "complete", "pruned", "failed")}}


def seed_groups(sweep: Sweep, rows: list[SweepTrial]) -> list[dict[str, Any]]:
    """Trials grouped by their parameters other than `seed`: n, mean and std of the complete
    trials' values, the run ids. One group per trial when seed is not a parameter."""
    groups: dict[str, dict[str, Any]] = {}
    for t in rows:
        params = {k: v for k, v in t.params.items() if k != "seed"}
        key = repr(sorted(params.items()))
        g = groups.setdefault(key, {"params": params, "seeds": [], "runs": [], "values": []})
        g["seeds"].append(t.params["seed"] if "seed" in t.params else getattr(t, "config_seed", None))
        g["runs"].append(t.run_id)
        if t.state == "complete" and t.value is not None:
            g["values"].append(t.value)
    out = []
    for g in groups.values():
        vals = g.pop("values")
        g.update(n=len(vals), mean=statistics.fmean(vals) if vals else None,
                 std=statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None))
        out.append(g)
    return out


def plot_data(sweep: Sweep, rows: list[SweepTrial]) -> dict[str, Any]:
    """What static/js/sweep_page.js draws (the plots and the runs table): parameter names (which are
    categorical, which on a log scale), the target and one record per trial (number, run, state,
    params, value: None while unknown; the run's name, status, step, total steps)."""
    categorical = [n for n, d in sweep.parameters.items() if "values" in d and
                   not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in d["values"])]
    return {"params": list(sweep.parameters), "categorical": categorical, "target": sweep.target,
            "log": [n for n, d in sweep.parameters.items() if d.get("log")],
            "direction": sweep.direction,
            "trials": [{"number": t.number, "run": t.run_id, "state": t.state, "params": t.params, "value": t.value,
                        "status": t.run.status, "status_label": t.run.get_status_display(), "name": t.run.name,
                        "step": t.run.step, "total": t.run.total_steps, "pruned_step": t.pruned_step}
                       for t in rows]}
