"""Sweep reads for the page, the API and the CLI: trials with their runs, the best trial, the
seed groups (trials that differ only in seed: one row, mean +/- std of the target) and the data of
the parallel-coordinates and scatter plots."""
from __future__ import annotations

import statistics
from typing import Any

from django.db.models import Count, QuerySet

from webapp.runs.models import Run

from .models import Sweep, SweepTrial
from .services import budget


def trials(sweep: Sweep) -> QuerySet[SweepTrial]:
    return sweep.trials.select_related("run").order_by("number")


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
        g["seeds"].append(t.params.get("seed", (t.run.config or {}).get("seed")))
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
    """What static/js/sweep_page.js draws: parameter names (and which are categorical), the target
    and one record per trial (number, run, state, params, value; value None while unknown)."""
    categorical = [n for n, d in sweep.parameters.items() if "values" in d and
                   not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in d["values"])]
    return {"params": list(sweep.parameters), "categorical": categorical, "target": sweep.target,
            "direction": sweep.direction,
            "trials": [{"number": t.number, "run": t.run_id, "state": t.state, "params": t.params, "value": t.value,
                        "status": t.run.status} for t in rows]}
