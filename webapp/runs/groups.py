"""Group inspector data (issue 8): the groups the trainer sampled, as stored by the worker's sink.

Records are in the format of docs/INTERFACES.md ("Group records"); this module only selects
them and adds per-source summaries, never recomputes what the loss used.
"""
from __future__ import annotations

from typing import Any

from . import charts
from .models import GroupSample, Run


def steps(run: Run) -> list[int]:
    """Steps that have sampled groups, ascending."""
    return list(GroupSample.objects.filter(run=run).order_by("step").values_list("step", flat=True).distinct())


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def source_summary(record: dict) -> dict[str, dict[str, Any]]:
    """Per source: responses, mean reward, mean advantage, mean C over its tokens, rectified share."""
    out: dict[str, dict[str, Any]] = {}
    for src in charts.SOURCES:
        resp = [r for r in record.get("responses", []) if r.get("source") == src]
        if not resp:
            continue
        cs = [c for r in resp for c in (r.get("c") or [])]
        rect = [bool(x) for r in resp for x in (r.get("rectified") or [])]
        out[src] = {"n": len(resp), "mean_reward": _mean([float(r.get("reward", 0.0)) for r in resp]),
                    "mean_advantage": _mean([float(r.get("advantage", 0.0)) for r in resp]),
                    "mean_c": _mean(cs), "rectified_frac": _mean([1.0 if x else 0.0 for x in rect])}
    return out


def at_step(run: Run, step: int | None) -> dict[str, Any]:
    """The groups of `run` at `step` (the nearest sampled step at or before it; latest when None)."""
    all_steps = steps(run)
    chosen = None
    if all_steps:
        if step is None:
            chosen = all_steps[-1]
        else:
            earlier = [s for s in all_steps if s <= step]
            chosen = earlier[-1] if earlier else all_steps[0]
    groups = []
    if chosen is not None:
        for gs in GroupSample.objects.filter(run=run, step=chosen).order_by("group_index"):
            record = dict(gs.data or {})
            record["group_index"] = gs.group_index
            record["sources"] = source_summary(record)
            groups.append(record)
    return {"run": run.pk, "step": chosen, "steps": all_steps, "tau": charts.tau_of(run), "groups": groups}
