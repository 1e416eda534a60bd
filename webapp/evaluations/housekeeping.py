"""Housekeeping of evaluations (called by the workers' housekeeping task with the runs' one):
an evaluation whose worker died (no heartbeat for RUN_HEARTBEAT_TIMEOUT_S) fails, and a queued one
whose task message vanished from the broker is sent again (the shared sweeps of webapp.resources.jobs)."""
from __future__ import annotations

from .services import jobs


def _stale_reason(ev, silent_s: int, timeout_s: int) -> str:
    return (f"No heartbeat from worker {ev.worker or '?'} for {silent_s} s (limit {timeout_s} s): the worker "
            "process was killed or its machine is gone. Resume continues with the benchmarks not scored yet.")


def fail_stale_evaluations(timeout_s: float | None = None) -> list[int]:
    return jobs.fail_stale(timeout_s, _stale_reason)


def redispatch_lost_evaluations() -> list[int]:
    return jobs.redispatch_lost()


def housekeeping() -> dict[str, list[int]]:
    """Both sweeps, for the housekeeping task."""
    return {"evaluations_failed": fail_stale_evaluations(), "evaluations_redispatched": redispatch_lost_evaluations()}
