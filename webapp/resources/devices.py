"""GPU workers' devices as they report them: each worker publishes its GPUs and their free memory
(workers/devices.py) under DEVICES_KEY_PREFIX + hostname, with a TTL, so a worker that stops
drops out. The launch reads them to refuse a run that fits no worker (webapp.runs.launch)."""
from __future__ import annotations

import json
from typing import Any

from django.conf import settings

DEVICES_KEY_PREFIX = "worker:devices:"
DEVICES_TTL_S = 60  # a report older than this is gone: the worker stopped
GIB = 1024**3


def worker_reports() -> list[dict[str, Any]]:
    """[{hostname, queues, devices: [{index, name, total_bytes, free_bytes}], at}] of the live
    workers ([] when Redis cannot be read: nothing is known, nothing is refused)."""
    import redis

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        keys = sorted(client.scan_iter(f"{DEVICES_KEY_PREFIX}*", count=100))
        values = client.mget(keys) if keys else []
    except redis.RedisError:
        return []
    out = []
    for raw in values:
        try:
            report = json.loads(raw) if raw else None
        except ValueError:
            continue
        if isinstance(report, dict) and isinstance(report.get("devices"), list):
            out.append(report)
    return out


def fit_problem(peak_bytes: int, num_gpus: int, queue: str, reports: list[dict[str, Any]]) -> str | None:
    """Why a run needing `peak_bytes` on each of `num_gpus` GPUs fits no worker of `queue`, with the
    numbers; None when one fits, or when the queue has a worker without GPUs (it trains on its CPU)
    or no worker has reported (nothing is known)."""
    on_queue = [r for r in reports if queue in (r.get("queues") or [])]
    if not on_queue or any(not r["devices"] for r in on_queue):
        return None
    seen = []
    for r in on_queue:
        free = sorted((int(d.get("free_bytes") or 0) for d in r["devices"]), reverse=True)
        if len(free) >= num_gpus and free[num_gpus - 1] >= peak_bytes:
            return None
        seen.append(f"{r.get('hostname', '?')}: {len(free)} GPU(s), free "
                    + ", ".join(f"{b / GIB:.1f}" for b in free) + " GiB")
    return (f"The memory plan needs ~{peak_bytes / GIB:.1f} GiB on each of {num_gpus} GPU(s); no worker on "
            f"queue {queue!r} has that free ({'; '.join(seen)}). Lower the micro-batch or the lengths, "
            "turn on LoRA or activation checkpointing, or pick another queue.")
