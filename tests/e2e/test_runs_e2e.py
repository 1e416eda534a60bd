"""Runs end to end with a real Celery worker, the real trainer on a small model, Postgres and Redis.

Submit through the form and the API, metrics in Postgres and on the Redis stream, cancel,
kill -9 of the worker then housekeeping then resume with a continuous series.
"""
from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from gft_core.metric_names import system_metric_names
from tests.conftest import start_worker
from tests.runs_support import stream_steps, wait_for
from webapp.runs import live
from webapp.runs.models import Artifact, MetricKey, MetricPoint, Run
from webapp.runs.housekeeping import fail_stale_runs
from workers.devices import probe_devices
from workers.system import describe_device

pytestmark = pytest.mark.django_db(transaction=True)


def run_state(pk: int) -> Run:
    return Run.objects.get(pk=pk)


def wait_status(pk: int, statuses: tuple[str, ...], worker, timeout: float = 240) -> Run:
    return wait_for(lambda: run_state(pk).status in statuses and run_state(pk), timeout=timeout,
                    what=f"run {pk} to be {statuses}",
                    on_timeout=lambda: f"run: {run_state(pk).__dict__}\nworker log:\n{worker.log()[-4000:]}")


def loss_steps(pk: int) -> list[int]:
    key = MetricKey.objects.get(name="loss")
    return list(MetricPoint.objects.filter(run_id=pk, key_id=key.pk).order_by("step").values_list("step", flat=True))


def test_form_run_trains_metrics_reach_postgres_and_redis(celery_worker, auth_client, launch_inputs):
    data = {**launch_inputs, "tags": "e2e"}
    resp = auth_client.post(reverse("runs:launch"), data)
    assert resp.status_code == 302
    run = Run.objects.get()
    run = wait_status(run.pk, ("succeeded", "failed"), celery_worker)
    assert run.status == "succeeded", (run.error, run.log_tail)
    assert run.step == run.total_steps == 4 and run.worker.startswith("w1@")
    assert loss_steps(run.pk) == [1, 2, 3, 4]
    assert stream_steps(run.pk) == [1, 2, 3, 4]
    events = [json.loads(f[b"event"])["status"] for _, f in live.client().xrange(live.stream_key(run.pk)) if b"event" in f]
    assert events[-1] == "succeeded"
    assert "loss" in run.summary and "reward/mean" in run.summary
    kinds = set(Artifact.objects.filter(run=run).values_list("kind", flat=True))
    assert kinds == {"checkpoint", "final_model", "log"}
    log_art = Artifact.objects.get(run=run, kind="log")
    log_text = open(log_art.path).read()
    assert "ends succeeded" in log_text and run.log_tail
    # System metrics (SYSTEM_METRICS_INTERVAL_S is short under tests/pytest_env.py): sampled into the
    # run's metrics at stored steps, and the device named in the log and the start event.
    device = describe_device(1)
    assert f": gft on {device}" in log_text and "GPU(s)" not in log_text
    assert run.events.get(to_status="running").data == {"device": device}
    system = set(MetricPoint.objects.filter(run=run, key__name__startswith="system/").values_list("key__name", flat=True))
    assert system == set(system_metric_names(len(probe_devices()[:1])))
    sampled = set(MetricPoint.objects.filter(run=run, key__name="system/rss_gb").values_list("step", flat=True))
    assert sampled and sampled <= {0, 1, 2, 3, 4}
    # One line per stored training step, in order, before the end (workers/steplog.py).
    step_lines = re.findall(r"INFO gft\.run\.\d+: (step (\d+)/4 loss=\S+ reward=\S+ step_time=[\d.]+s lr=\S+)\n", log_text)
    assert [int(n) for _, n in step_lines] == [1, 2, 3, 4], log_text
    assert log_text.index(step_lines[-1][0]) < log_text.index("ends succeeded")
    assert log_art.size_bytes == os.path.getsize(log_art.path)  # recorded at the end, not "0 bytes"
    page = auth_client.get(reverse("runs:logs", args=[run.pk]))
    assert b"ends succeeded" in page.content and b"step 4/4 loss=" in page.content
    final = Artifact.objects.get(run=run, kind="final_model")
    tar = auth_client.get(reverse("runs:artifact_download", args=[run.pk, final.pk]))
    with tarfile.open(fileobj=io.BytesIO(b"".join(tar))) as archive:  # the real final model, streamed as a tar
        names = {m.name.split("/", 1)[-1] for m in archive.getmembers() if m.isfile()}
    assert "config.json" in names and len(names) == sum(1 for p in Path(final.path).rglob("*") if p.is_file())


def test_api_cancel_keeps_checkpoint_and_resume_continues_the_series(celery_worker, api_client, launch_inputs):
    resp = api_client.post("/api/runs/", {**launch_inputs, "max_steps": 40, "checkpoint_interval": 2}, format="json")
    assert resp.status_code == 201, resp.json()
    pk = resp.json()["id"]
    wait_for(lambda: run_state(pk).step >= 3, what="3 steps", on_timeout=celery_worker.log)
    cancel = api_client.post(f"/api/runs/{pk}/cancel/")
    assert cancel.status_code == 200 and cancel.json()["cancel_requested"]
    run = wait_status(pk, ("cancelled", "failed", "succeeded"), celery_worker)
    assert run.status == "cancelled", (run.error, run.log_tail)
    stopped_at = run.step
    assert 3 <= stopped_at < 40
    assert Artifact.objects.filter(run=run, kind="checkpoint", step=stopped_at).exists()
    assert loss_steps(pk) == list(range(1, stopped_at + 1))

    resp = api_client.patch(f"/api/runs/{pk}/", {"status": "queued"}, format="json")
    assert resp.status_code == 400 and "status" in resp.json()  # only name, tags and notes change after launch
    resumed = api_client.post(f"/api/runs/{pk}/resume/")
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    wait_for(lambda: run_state(pk).step >= stopped_at + 2, what="steps after resume", on_timeout=celery_worker.log)
    api_client.post(f"/api/runs/{pk}/cancel/")
    run = wait_status(pk, ("cancelled", "failed", "succeeded"), celery_worker)
    assert run.status == "cancelled" and run.attempt == 2
    assert loss_steps(pk) == list(range(1, run.step + 1))  # continuous: no gap, no duplicate
    detail = api_client.get(f"/api/runs/{pk}/").json()
    assert detail["step"] == run.step and detail["queue_position"] is None
    metrics = api_client.get(f"/api/runs/{pk}/metrics/?keys=loss,reward/mean").json()["metrics"]
    assert metrics["loss"]["step"] == list(range(1, run.step + 1))


def test_two_process_run_through_accelerate_launch_cancel_and_resume(celery_worker, api_client, launch_inputs):
    """num_gpus=2 starts `accelerate launch` (CPU processes here); rank 0's JSONL is tailed into the sink."""
    resp = api_client.post("/api/runs/", {**launch_inputs, "num_gpus": 2, "max_steps": 30, "checkpoint_interval": 1,
                                          "micro_batch_size": 4}, format="json")
    assert resp.status_code == 201, resp.json()
    pk = resp.json()["id"]
    wait_for(lambda: run_state(pk).step >= 2, what="2 steps", on_timeout=celery_worker.log)
    api_client.post(f"/api/runs/{pk}/cancel/")
    run = wait_status(pk, ("cancelled", "failed", "succeeded"), celery_worker)
    assert run.status == "cancelled", (run.error, run.log_tail)
    assert loss_steps(pk) == list(range(1, run.step + 1))
    run_log = open(Artifact.objects.get(run=run, kind="log").path).read()
    assert "accelerate" in run_log and "strategy ddp on 2 CPU processes; memory plan: weights" in run_log
    # System samples of the child process tree, through the same sink as the tailed metrics.
    rss = MetricPoint.objects.filter(run=run, key__name="system/rss_gb").values_list("step", "value")
    assert rss and all(0 <= step <= run.step and value > 0 for step, value in rss)
    stopped_at = run.step
    api_client.post(f"/api/runs/{pk}/resume/")
    wait_for(lambda: run_state(pk).status == "running" and run_state(pk).step > stopped_at, what="resumed steps",
             on_timeout=celery_worker.log)
    api_client.post(f"/api/runs/{pk}/cancel/")
    run = wait_status(pk, ("cancelled", "failed", "succeeded"), celery_worker)
    assert run.status == "cancelled" and loss_steps(pk) == list(range(1, run.step + 1))


# Last: it starts workers of its own, so the tests above share one `celery_worker` (tests/conftest.py).
def test_killed_worker_is_failed_by_housekeeping_then_resume_completes(transactional_db, tmp_path, api_client,
                                                                        launch_inputs, settings):
    from tests.conftest import purge_queues

    purge_queues()
    # Long enough that the run cannot finish between the poll that sees step 3 and the kill: the
    # sink flushes every 0.5 s, and on a quiet machine 10 tiny steps fit in one flush.
    total = 40
    first = start_worker(tmp_path, name="doomed")
    try:
        resp = api_client.post("/api/runs/", {**launch_inputs, "max_steps": total, "checkpoint_interval": 2},
                               format="json")
        pk = resp.json()["id"]
        wait_for(lambda: run_state(pk).step >= 3, what="3 steps", timeout=90,
                 on_timeout=lambda: f"{run_state(pk).__dict__}\n{live.client().keys()}\n{first.log()[-3000:]}")
        first.kill()  # SIGKILL to the worker's process group, mid-run
    finally:
        first.stop()
    killed_at = run_state(pk).step
    assert run_state(pk).status == "running", f"the run ended before the kill, at step {killed_at} of {total}"
    # The heartbeat has stopped: once it is older than the limit, housekeeping fails the run.
    settings.RUN_HEARTBEAT_TIMEOUT_S = 2
    wait_for(lambda: (timezone.now() - run_state(pk).heartbeat_at).total_seconds() > 2.5, what="heartbeat age")
    assert fail_stale_runs() == [pk]
    run = run_state(pk)
    assert run.status == "failed" and "No heartbeat from worker doomed@" in run.error

    second = start_worker(tmp_path, name="w2")
    try:
        assert api_client.post(f"/api/runs/{pk}/resume/").status_code == 200
        run = wait_status(pk, ("succeeded", "failed", "cancelled"), second)
    finally:
        second.stop()
    assert run.status == "succeeded", (run.error, run.log_tail)
    assert run.attempt == 2 and run.worker.startswith("w2@")
    steps = loss_steps(pk)
    assert steps == list(range(1, total + 1)), (killed_at, steps)  # resumed from the checkpoint, no gap, no duplicate
    assert stream_steps(pk)[-1] == total


def test_worker_publishes_its_devices(celery_worker, settings):
    """The worker's device heartbeat: its hostname, queues and GPUs (free memory) in Redis with a
    TTL; on a machine without GPUs the list is empty (it trains on its CPU)."""
    import json

    import redis

    from webapp.resources.devices import DEVICES_KEY_PREFIX, worker_reports
    from workers.devices import probe_devices

    client = redis.Redis.from_url(settings.REDIS_URL)
    reports = wait_for(lambda: [r for r in worker_reports() if "gpu" in r["queues"]], timeout=60,
                       what="a device report of the gpu worker", on_timeout=celery_worker.log)
    key = DEVICES_KEY_PREFIX + reports[0]["hostname"]
    assert 0 < client.ttl(key) <= 60 and json.loads(client.get(key))["queues"] == reports[0]["queues"]
    assert [d["index"] for d in reports[0]["devices"]] == [d["index"] for d in probe_devices()]


def test_probe_devices_reads_the_gpus():
    """GPU machines only: NVML's view matches torch's device count and memory."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from workers.devices import probe_devices

    devices = probe_devices()  # NVML indices; torch's follow CUDA_VISIBLE_DEVICES in the same order
    assert len(devices) == torch.cuda.device_count()
    for i, d in enumerate(devices):
        total = torch.cuda.get_device_properties(i).total_memory  # NVML's total includes reserved memory
        assert 0 < d["free_bytes"] <= d["total_bytes"] and abs(d["total_bytes"] - total) < 0.05 * total
