"""The worker's device heartbeat: its GPUs and their free memory, read through NVML (the parent
process never touches CUDA), published to Redis every DEVICES_INTERVAL_S under
webapp.resources.devices.DEVICES_KEY_PREFIX + hostname with a TTL. A machine without NVML or GPUs
publishes no devices (it trains on its CPU)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from typing import Any, Iterator

from django.conf import settings

from webapp.resources.devices import DEVICES_KEY_PREFIX, DEVICES_TTL_S

log = logging.getLogger(__name__)
DEVICES_INTERVAL_S = 15.0
_state: dict[str, Any] = {}


@contextlib.contextmanager
def nvml_handles() -> Iterator[list[tuple[int, Any]]]:
    """NVML initialised for the block: [(NVML index, handle)] of the GPUs this process may use
    (CUDA_VISIBLE_DEVICES as indices, in its order), [] without NVML or GPUs."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver / no library: no GPUs to offer
        yield []
        return
    try:
        count = pynvml.nvmlDeviceGetCount()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        indices = list(range(count))
        if visible is not None:
            try:
                indices = [int(i) for i in visible.split(",") if i.strip()]
            except ValueError:  # GPU UUIDs: report every device
                pass
        yield [(i, pynvml.nvmlDeviceGetHandleByIndex(i)) for i in indices if 0 <= i < count]
    finally:
        pynvml.nvmlShutdown()


def device_name(handle: Any) -> str:
    import pynvml

    name = pynvml.nvmlDeviceGetName(handle)
    return name.decode() if isinstance(name, bytes) else str(name)


def probe_devices() -> list[dict[str, Any]]:
    """[{index, name, total_bytes, free_bytes}] of the GPUs this process may use
    (CUDA_VISIBLE_DEVICES as indices), [] without NVML or GPUs."""
    out = []
    with nvml_handles() as handles:
        import pynvml  # imported by nvml_handles when there is any handle

        for i, handle in handles:
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out.append({"index": i, "name": device_name(handle), "total_bytes": int(mem.total),
                        "free_bytes": int(mem.free)})
    return out


def publish(client: Any, hostname: str, queues: list[str]) -> dict[str, Any]:
    report = {"hostname": hostname, "queues": queues, "devices": probe_devices(), "at": time.time()}
    client.set(DEVICES_KEY_PREFIX + hostname, json.dumps(report), ex=DEVICES_TTL_S)
    return report


def _loop(hostname: str, queues: list[str], stop: threading.Event) -> None:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    while not stop.is_set():
        try:
            publish(client, hostname, queues)
        except Exception as exc:  # noqa: BLE001 - Redis down: the next beat tries again
            log.warning("device heartbeat not stored: %s", exc)
        stop.wait(DEVICES_INTERVAL_S)
    try:  # a worker that stops is gone from the launch checks at once, not after the TTL
        client.delete(DEVICES_KEY_PREFIX + hostname)
    except Exception:  # noqa: BLE001 - Redis down: the TTL removes it
        pass


def remember(hostname: str, queues: list[str]) -> None:
    _state.update(hostname=hostname, queues=queues)


def start() -> None:
    """Start the heartbeat thread (once, in the worker's parent process; workers/celery.py's signals)."""
    if "hostname" not in _state or "thread" in _state:
        return
    stop_event = threading.Event()
    thread = threading.Thread(target=_loop, args=(_state["hostname"], _state["queues"], stop_event),
                              name="device-heartbeat", daemon=True)
    _state.update(thread=thread, stop=stop_event)
    thread.start()


def stop() -> None:
    if "stop" in _state:
        _state["stop"].set()
        _state["thread"].join(timeout=3)  # its report deleted before the process exits
