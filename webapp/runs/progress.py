"""Where a run stands: its place in the queue, the time it has left (pages and API alike)."""
from __future__ import annotations

from .models import MetricKey, MetricPoint, Run, RunStatus


def queue_position(run: Run) -> int | None:
    """1-based place of a queued run among the queued runs of its queue (oldest first)."""
    if run.status != RunStatus.QUEUED:
        return None
    ahead = Run.objects.filter(status=RunStatus.QUEUED, queue=run.queue, queued_at__lt=run.queued_at).count()
    return ahead + 1


def eta_seconds(run: Run, window: int = 20) -> float | None:
    """Seconds left for a running run, from the wall times of its last `window` logged steps of
    this attempt (after a resume, the steps before the checkpoint were timed long ago)."""
    if run.status != RunStatus.RUNNING or not run.total_steps or run.step >= run.total_steps:
        return None
    key = MetricKey.objects.filter(name="loss").first()
    if key is None:
        return None
    points = MetricPoint.objects.filter(run_id=run.pk, key_id=key.pk, step__gt=run.step - window)
    if run.started_at is not None:
        points = points.filter(wall_time__gte=run.started_at.timestamp())
    rows = list(points.order_by("step").values_list("step", "wall_time"))
    if len(rows) < 2 or rows[-1][0] == rows[0][0]:
        return None
    per_step = (rows[-1][1] - rows[0][1]) / (rows[-1][0] - rows[0][0])
    return max(0.0, per_step * (run.total_steps - run.step))
