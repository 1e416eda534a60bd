"""Pipeline reads: the team's pipelines, and the stages' metrics joined on one step axis."""
from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from webapp.accounts.scoping import scoped
from webapp.runs.series import load_series

from .models import Pipeline

JOINED_KEYS = ("reward/mean", "loss", "eval/accuracy", "policy/entropy", "response_len/mean")


def team_pipelines(user, team=None) -> QuerySet:
    qs = scoped(user, Pipeline.objects.select_related("created_by"))
    return qs.filter(team=team) if team is not None else qs


def joined_series(pipeline: Pipeline, keys: tuple[str, ...] = JOINED_KEYS, max_points: int = 500) -> dict[str, Any]:
    """Each stage's series shifted to continue where the previous stage ended (stage k+1's step s is
    drawn at offset_k + s, offset_k = the steps of the stages before): {"boundaries": [{"step",
    "label"}] (where each stage starts), "series": {key: [{"stage", "run", "label", "step", "value"}]}}
    (keys no stage logged are left out)."""
    stages = [s for s in pipeline.stages.select_related("run").order_by("index") if s.run is not None]
    data = load_series([s.run_id for s in stages], list(keys), max_points=max_points) if stages else {}
    offset, boundaries, out = 0, [], {}
    for s in stages:
        label = f"{s.index + 1}. {s.method.upper()} #{s.run_id}"
        boundaries.append({"step": offset, "label": label})
        for key, one in (data.get(s.run_id) or {}).items():
            out.setdefault(key, []).append({"stage": s.index, "run": s.run_id, "label": label,
                                            "step": [offset + st for st in one["step"]], "value": one["value"]})
        offset += s.run.step
    return {"boundaries": boundaries, "series": {k: out[k] for k in keys if k in out}, "end": offset}
