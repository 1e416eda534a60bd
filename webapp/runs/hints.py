"""Hints the run page gives about a run's own metrics (a selector: reads only)."""
from __future__ import annotations

from .models import MetricKey, MetricPoint, Run

RECTIFIED = "dcr/rectified_frac"
# As static/js/status.js (TAU_HINT_MIN, TAU_HINT_STEPS), which keeps the hint live.
TAU_HINT_MIN = 0.95
TAU_HINT_STEPS = 3


def tau_hint(run: Run) -> dict | None:
    """{"share": "97%"} when the run's last TAU_HINT_STEPS rectified shares are all >= TAU_HINT_MIN:
    nearly every token has pi < tau, so DCR rescales them all alike and tau changes nothing
    (the cold tiny model at tau 0.5 does this); None otherwise, or before enough steps."""
    key = MetricKey.objects.filter(name=RECTIFIED).values_list("pk", flat=True).first()
    if key is None:
        return None
    recent = list(MetricPoint.objects.filter(run_id=run.pk, key_id=key).order_by("-step")
                  .values_list("value", flat=True)[:TAU_HINT_STEPS])
    if len(recent) < TAU_HINT_STEPS or min(recent) < TAU_HINT_MIN:
        return None
    return {"share": f"{min(recent) * 100:.0f}%"}
