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


def fit(plan: Any, num_gpus: int, queue: str, reports: list[dict[str, Any]],
        sharded: Any = None) -> tuple[str | None, str | None]:
    """(strategy, problem) of a run with memory plan `plan` (gft_core.memory.MemoryPlan: `need` bytes
    on each of `num_gpus` GPUs) or its FSDP plan `sharded` (each GPU a 1/num_gpus share): the
    strategy a fitting worker of `queue` would run ("single" on one GPU, "ddp" when the whole model
    fits each GPU, "fsdp" when only the sharded plan does; None when nothing is known), and why no
    worker fits, with the numbers. No problem when the queue has a worker without GPUs (it trains
    on its CPU) or no worker has reported."""
    on_queue = [r for r in reports if queue in (r.get("queues") or [])]
    if not on_queue or any(not r["devices"] for r in on_queue):
        return None, None
    seen, strategies = [], []
    for r in on_queue:
        free = sorted((int(d.get("free_bytes") or 0) for d in r["devices"]), reverse=True)
        if len(free) >= num_gpus and free[num_gpus - 1] >= plan.need:
            strategies.append(plan.strategy)
        elif len(free) >= num_gpus and sharded is not None and num_gpus > 1 and free[num_gpus - 1] >= sharded.need:
            strategies.append("fsdp")
        seen.append(f"{r.get('hostname', '?')}: {len(free)} GPU(s), free "
                    + ", ".join(f"{b / GIB:.1f}" for b in free) + " GiB")
    if strategies:  # a worker that holds the whole model is preferred: no gathers
        return min(strategies, key=lambda s: s == "fsdp"), None
    shard = (f", or ~{sharded.need / GIB:.1f} GiB each sharded with FSDP" if sharded is not None and num_gpus > 1
             else "")
    return None, (f"The memory plan needs ~{plan.need / GIB:.1f} GiB on each of {num_gpus} GPU(s){shard}; no "
                  f"worker on queue {queue!r} has that free ({'; '.join(seen)}). Lower the micro-batch or the "
                  "lengths, turn on LoRA or activation checkpointing, use more GPUs, or pick another queue.")
