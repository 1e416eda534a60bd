"""Writing metrics the way the worker's sink stores them (docs/INTERFACES.md), for web and browser
tests that need series without running a trainer: rows in MetricPoint/MetricHistogram and, when
asked, one XADD per step to the run's stream in the documented format."""
from __future__ import annotations

import json
import time

from webapp.runs import live
from webapp.runs.models import MetricHistogram, MetricKey, MetricPoint, Run


def key_id(name: str) -> int:
    return MetricKey.objects.get_or_create(name=name)[0].pk


def write_series(run: Run, name: str, steps, values, walls=None) -> None:
    """Bulk insert one series; Run.step follows, as the sink's flush keeps it."""
    kid = key_id(name)
    walls = walls if walls is not None else [1.7e9 + s for s in steps]
    MetricPoint.objects.bulk_create(
        [MetricPoint(run_id=run.pk, key_id=kid, step=int(s), value=float(v), wall_time=float(w))
         for s, v, w in zip(steps, values, walls)], batch_size=5000)
    if len(steps):
        Run.objects.filter(pk=run.pk, step__lt=max(steps)).update(step=int(max(steps)))


def write_step(run: Run, step: int, scalars: dict[str, float], *, histograms: dict | None = None,
               t: float | None = None, publish: bool = True) -> None:
    """One optimizer step: rows first, then the stream entry (the sink's order)."""
    t = time.time() if t is None else t
    MetricPoint.objects.bulk_create([MetricPoint(run_id=run.pk, key_id=key_id(k), step=step, value=v, wall_time=t)
                                     for k, v in scalars.items()])
    for k, h in (histograms or {}).items():
        MetricHistogram.objects.create(run_id=run.pk, key_id=key_id(k), step=step, lo=h["lo"], hi=h["hi"],
                                       counts=h["counts"])
    Run.objects.filter(pk=run.pk, step__lt=step).update(step=step)
    if publish:
        live.client().xadd(live.stream_key(run.pk),
                           {"data": json.dumps({"step": step, "t": t, "scalars": scalars, "histograms": histograms or {}})},
                           maxlen=live.STREAM_MAXLEN, approximate=True)


def group_record(group_id: int = 0, prompt: str = "What is 2+3?") -> dict:
    """A group record as the trainer logs it: advantages are (r - mean) / std of the group."""
    return {
        "group_id": group_id, "prompt": prompt, "ground_truth": "5",
        "responses": [
            {"source": "expert", "text": "2+3=5", "reward": 1.0, "advantage": 1.0,
             "tokens": ["▁2", "+", "3", "=", "5"], "pi": [0.9, 0.8, 0.05, 0.7, 0.02],
             "c": [1.0, 1.0, 0.5, 1.0, 0.2], "rectified": [False, False, True, False, True]},
            {"source": "self", "text": "2+3=6", "reward": 0.0, "advantage": -1.0,
             "tokens": ["▁2", "+", "3", "=", "6"], "pi": [0.95, 0.9, 0.9, 0.85, 0.4],
             "c": [1.0, 1.0, 1.0, 1.0, 1.0], "rectified": [False, False, False, False, False]},
        ],
    }
