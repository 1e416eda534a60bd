"""System metrics (workers/system.py): the sampler writes real points through the real
PostgresRedisSink into Postgres and the run's Redis stream, one sample per stored step, stops when
the attempt is superseded, and the run page shows a System section only for a run that has them."""
from __future__ import annotations

import json
import os
import time

import pytest
from django.urls import reverse

from gft_core.metric_names import SYSTEM_METRIC_NAMES, gpu_metric_names
from tests.runs_support import wait_for
from webapp.runs import live
from webapp.runs.models import MetricKey, MetricPoint, Run, RunEvent
from workers.devices import probe_devices
from workers.sink import PostgresRedisSink
from workers.system import SystemSampler, describe_device

pytestmark = pytest.mark.django_db(transaction=True)


def stored(run_id: int) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for name, step, value in (MetricPoint.objects.filter(run_id=run_id, key__name__startswith="system/")
                              .order_by("step").values_list("key__name", "step", "value")):
        out.setdefault(name, []).append((step, value))
    return out


def test_sampler_writes_system_points_through_the_sink_once_per_step(team):
    run = Run.objects.create(team=team, name="sys", method="gft", config={}, status="running", attempt=1)
    sink = PostgresRedisSink(run.pk, attempt=1, flush_interval=0.05)
    sampler = SystemSampler(sink, pid=os.getpid(), num_gpus=1, interval=0.05)
    with sampler:
        time.sleep(0.3)  # before start(): nothing is sampled (the sink would not store it)
        assert sampler.samples == 0
        sink.start(total_steps=3, start_step=0, config={})
        wait_for(lambda: sampler.samples == 1, timeout=20, what="the first sample, at the start step")
        for step in (1, 2, 3):
            sink.log(step, {"loss": 1.0 / step})
            wait_for(lambda: sink.last_step == step and sampler.samples >= step + 1, timeout=20,
                     what=f"a system sample at step {step}")
            time.sleep(0.2)  # more intervals at the same step add no sample
            assert sampler.samples == step + 1
    sink.close()
    points = stored(run.pk)
    gpus = len(probe_devices()[:1])
    assert set(points) == set(SYSTEM_METRIC_NAMES + gpu_metric_names(gpus))
    assert [s for s, _ in points["system/rss_gb"]] == [0, 1, 2, 3]
    assert all(0 < v < 1024 for _, v in points["system/rss_gb"])  # this test process, in GiB
    assert all(0 <= v <= 100 for _, v in points["system/cpu_percent"])
    assert all(v > 0 for _, v in points["system/ram_used_gb"])
    assert MetricPoint.objects.filter(run_id=run.pk, key__name="loss").count() == 3
    run.refresh_from_db()
    assert run.step == 3 and run.summary["system/rss_gb"] > 0  # the run table's final:system/... column
    live_steps = [json.loads(f[b"data"])["step"] for _, f in live.client().xrange(live.stream_key(run.pk))
                  if b"data" in f and "system/rss_gb" in json.loads(f[b"data"])["scalars"]]
    assert live_steps == [0, 1, 2, 3]  # the live charts get the same points


def test_sampler_stops_when_the_attempt_is_superseded(team):
    run = Run.objects.create(team=team, name="sys", method="gft", config={}, status="running", attempt=1)
    sink = PostgresRedisSink(run.pk, attempt=1, flush_interval=0.05)
    sink.start(total_steps=3, start_step=0, config={})
    sampler = SystemSampler(sink, num_gpus=1, interval=0.05)
    with sampler:
        wait_for(lambda: stored(run.pk), timeout=20, what="the first system sample")
        Run.objects.filter(pk=run.pk).update(attempt=2)  # another attempt owns the run now
        sink.log(1, {"loss": 1.0})
        wait_for(lambda: sink.superseded, timeout=20, what="the sink to be fenced off")
        wait_for(lambda: sampler._thread is None or not sampler._thread.is_alive(), timeout=20,
                 what="the sampler to stop")
    assert list(stored(run.pk)) and {s for v in stored(run.pk).values() for s, _ in v} == {0}


def test_device_is_described_by_name():
    device = describe_device(1)
    gpus = probe_devices()
    if gpus:
        assert device == f"{gpus[0]['name']} x1"
    else:
        assert device.startswith("CPU: ") and device.endswith((" cores", " core")) and "unknown" not in device


def test_run_page_has_a_system_section_only_with_system_metrics(auth_client, team):
    run = Run.objects.create(team=team, name="sys", method="gft", config={}, status="running", attempt=1)
    RunEvent.objects.create(run=run, kind="status", from_status="queued", to_status="running",
                            message="Started on w1: CPU: Test CPU, 2 cores", data={"device": "CPU: Test CPU, 2 cores"})
    page = auth_client.get(reverse("runs:detail", args=[run.pk]))
    assert page.status_code == 200
    system = [c for c in page.context["page"]["charts"] if c["group"] == "System"]
    assert system and all(c["until_data"] for c in system)  # live: hidden until the first sample arrives
    assert b"CPU: Test CPU, 2 cores" in page.content  # the device in the header
    done = Run.objects.create(team=team, name="old", method="gft", config={}, status="succeeded")
    page = auth_client.get(reverse("runs:detail", args=[done.pk]))
    assert not [c for c in page.context["page"]["charts"] if c["group"] == "System"]  # ended without samples: none

    sink = PostgresRedisSink(run.pk, attempt=1, flush_interval=0.05)
    sink.start(total_steps=2, start_step=0, config={})
    sink.log(1, {"system/cpu_percent": 12.0, "system/ram_used_gb": 3.0, "system/rss_gb": 0.5,
                 "system/gpu0_util": 90.0, "system/gpu0_mem_gb": 40.0, "system/gpu1_util": 80.0,
                 "system/gpu1_mem_gb": 41.0})
    sink.close()
    page = auth_client.get(reverse("runs:detail", args=[run.pk]))
    system = {c["id"]: c for c in page.context["page"]["charts"] if c["group"] == "System"}
    assert set(system) == {"system_cpu", "system_memory", "system_gpu_util", "system_gpu_mem"}
    Run.objects.filter(pk=run.pk).update(status="succeeded")
    page = auth_client.get(reverse("runs:detail", args=[run.pk]))
    system = {c["id"]: c for c in page.context["page"]["charts"] if c["group"] == "System"}
    assert set(system) == {"system_cpu", "system_memory", "system_gpu_util", "system_gpu_mem"}
    assert not any(c.get("until_data") for c in system.values())
    assert system["system_gpu_util"]["keys"] == ["system/gpu0_util", "system/gpu1_util"]
    assert system["system_memory"]["keys"] == ["system/ram_used_gb", "system/rss_gb"]
    series = auth_client.get(reverse("runs:series"), {"runs": run.pk, "keys": ",".join(system["system_gpu_mem"]["keys"])})
    assert series.json()["series"][str(run.pk)]["system/gpu1_mem_gb"]["value"] == [41.0]
    assert MetricKey.objects.filter(name="system/gpu1_mem_gb").exists()
