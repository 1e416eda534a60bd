"""System metrics of a training run, sampled by the worker (issue 20, item 4).

SystemSampler: a background thread of the worker's training process that, every
settings.SYSTEM_METRICS_INTERVAL_S, reads CPU percent, RAM used and the training process' RSS
(psutil; the process and its children: reward scorers, an `accelerate launch` child tree) and per
GPU of the run its utilisation and memory used (NVML through workers.devices; no GPU keys without
NVML or GPUs), and logs them into the run's sink under gft_core.metric_names.system_metric_names().

Keyed by the run's latest stored step (sink.last_step), at most one sample per step: a point never
claims a step whose training metrics are not stored, and live charts and Postgres hold the same
point (the stored series has one point per (key, step)). The training thread never waits for it:
the sink's log() only appends to its buffer. Fencing is the sink's: once the attempt is superseded
its log() raises AttemptSuperseded and the sampler stops, writing nothing more.

describe_device(num_gpus): the device a run trains on, for its log and its start event
("NVIDIA H100 80GB HBM3 x1", "CPU: AMD EPYC 7B13, 2 cores").
"""
from __future__ import annotations

import logging
import os
import platform
import threading
from collections import Counter
from typing import Any, Protocol

import psutil

from gft_core.metric_names import GPU_METRIC_FORMATS

from .devices import device_name, nvml_handles

log = logging.getLogger(__name__)
GIB = 1024**3


class StepSink(Protocol):
    """What the sampler needs of a sink (PostgresRedisSink)."""

    last_step: int

    @property
    def started(self) -> bool: ...
    @property
    def superseded(self) -> bool: ...
    def log(self, step: int, scalars: dict[str, float], histograms: dict | None = None) -> None: ...


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_cores() -> int:
    """Cores this process may run on (its affinity, e.g. a container's cpuset), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def describe_device(num_gpus: int) -> str:
    """The run's device: its GPUs by name ("NVIDIA H100 80GB HBM3 x1"; mixed models listed), or the CPU."""
    with nvml_handles() as handles:
        names = [device_name(h) for _, h in handles[:max(1, num_gpus)]]
    if names:
        return ", ".join(f"{name} x{n}" for name, n in Counter(names).items())
    cores = cpu_cores()
    return f"CPU: {cpu_model()}, {cores} core{'s' if cores != 1 else ''}"


def process_tree_rss(proc: psutil.Process) -> int:
    """RSS of a process and its descendants, in bytes (those that exit meanwhile are skipped)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def read_system(proc: psutil.Process, gpus: list[Any]) -> dict[str, float]:
    """One sample: CPU percent (since the previous call), RAM used, the process tree's RSS, and per
    GPU handle (in CUDA device order) utilisation and memory used."""
    out = {"system/cpu_percent": psutil.cpu_percent(interval=None),
           "system/ram_used_gb": psutil.virtual_memory().used / GIB,
           "system/rss_gb": process_tree_rss(proc) / GIB}
    if gpus:
        import pynvml

        util_key, mem_key = GPU_METRIC_FORMATS
        for i, handle in enumerate(gpus):
            try:
                out[util_key.format(i=i)] = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                out[mem_key.format(i=i)] = pynvml.nvmlDeviceGetMemoryInfo(handle).used / GIB
            except pynvml.NVMLError as exc:  # a device that stops answering loses its keys, not the sample
                log.debug("GPU %s not read: %s", i, exc)
    return out


class SystemSampler:
    """`with SystemSampler(sink, pid=..., num_gpus=...):` samples while the block runs (see the module
    docstring); interval None: settings.SYSTEM_METRICS_INTERVAL_S (<= 0: no sampling)."""

    def __init__(self, sink: StepSink, *, pid: int | None = None, num_gpus: int = 1, interval: float | None = None,
                 run_label: str = ""):
        if interval is None:
            from django.conf import settings

            interval = float(settings.SYSTEM_METRICS_INTERVAL_S)
        self.sink, self.pid, self.num_gpus, self.interval = sink, pid or os.getpid(), max(1, num_gpus), interval
        self.run_label = run_label
        self.samples = 0  # logged into the sink
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_step: int | None = None

    def set_pid(self, pid: int) -> None:
        """Sample another process from now on (an `accelerate launch` child once it started)."""
        self.pid = pid

    def __enter__(self) -> SystemSampler:
        if self.interval > 0:
            self._thread = threading.Thread(target=self._run, name=f"system-metrics{self.run_label}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        try:
            with nvml_handles() as handles:
                gpus = [h for _, h in handles[:self.num_gpus]]
                psutil.cpu_percent(interval=None)  # the first reading only starts the measurement
                # Until the first sample, look often: the sink starts after the model loads, and a
                # short run must still get its sample at the start step before it ends.
                while not self._stop.wait(self.interval if self._last_step is not None else min(self.interval, 0.02)):
                    if not self.sample_once(gpus):
                        return
        except Exception:  # noqa: BLE001 - system metrics are advice: training goes on without them
            log.exception("system metrics%s stopped", self.run_label)

    def sample_once(self, gpus: list[Any]) -> bool:
        """Log one sample at the sink's latest stored step unless that step has one; False once the
        sink refuses writes (superseded attempt, failed writer): the sampler then stops."""
        from .sink import AttemptSuperseded, SinkError

        if self.sink.superseded:
            return False  # fenced off: nothing more is written
        step = self.sink.last_step
        if not self.sink.started or step == self._last_step:
            return True
        try:
            proc = psutil.Process(self.pid)
            scalars = read_system(proc, gpus)
        except psutil.NoSuchProcess:
            return True  # a child not started yet or gone: the next sample tries again
        try:
            self.sink.log(step, scalars)
        except (AttemptSuperseded, SinkError) as exc:
            log.info("system metrics%s stop: %s", self.run_label, exc)
            return False
        self._last_step = step
        self.samples += 1
        return True
