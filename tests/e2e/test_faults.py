"""Faults with real processes: attempts fenced by their number, graceful stop on SIGTERM, and
dropped Postgres / Redis connections (real Celery workers, the real trainer on the small model).

- SIGTERM to a worker (as `docker stop` sends it): the run checkpoints at its next step, is queued
  again by itself, and a second worker finishes it; every step is stored exactly once.
- SIGSTOP of a worker past the heartbeat timeout: housekeeping fails the run, a resume starts
  attempt 2 on another worker; after SIGCONT the old attempt stops itself and writes nothing.
- Postgres connections terminated, Redis clients killed, mid-run: the run carries on, 0 points lost.
Plus the two rules underneath, in process: the trainer flushes the sink before a checkpoint
exists, and a superseded attempt's sink refuses every write.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import Proc, purge_queues, subprocess_env
from tests.runs_support import stream_steps, wait_for
from webapp.runs import live
from webapp.runs.models import Artifact, MetricKey, MetricPoint, Run, RunEvent
from workers.sink import AttemptSuperseded, PostgresRedisSink

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT_S = 2  # RUN_HEARTBEAT_TIMEOUT_S of the workers here: they beat every 0.5 s


def start_worker(tmp_path: Path, name: str) -> Proc:
    """A production-like worker (prefork, 1 process, 1 task per child) with a short heartbeat timeout."""
    args = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "gpu,default", "-n", f"{name}@%h",
            "--concurrency", "1", "--prefetch-multiplier", "1", "--max-tasks-per-child", "1",
            "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    proc = Proc(args, tmp_path / f"worker-{name}.log", subprocess_env(RUN_HEARTBEAT_TIMEOUT_S=str(TIMEOUT_S)))
    proc.wait_for_log("ready.", timeout=120)
    return proc


def worker_with_run(tmp_path: Path, api_client, launch_inputs, **fields) -> tuple[Proc, int]:
    """Empty queues, a worker "w1", and a run (launch_inputs with `fields`) sent to it."""
    purge_queues()
    worker = start_worker(tmp_path, "w1")
    resp = api_client.post("/api/runs/", {**launch_inputs, **fields}, format="json")
    if resp.status_code != 201:
        worker.stop()
    assert resp.status_code == 201, resp.json()
    return worker, resp.json()["id"]


def finish_on_second_worker(tmp_path: Path, pk: int) -> Run:
    second = start_worker(tmp_path, "w2")
    try:
        return wait_end(pk, second)
    finally:
        second.stop()


def state(pk: int) -> Run:
    return Run.objects.get(pk=pk)


def wait_step(pk: int, step: int, worker: Proc) -> None:
    wait_for(lambda: state(pk).step >= step, timeout=240, what=f"run {pk} at step {step}",
             on_timeout=lambda: f"{state(pk).__dict__}\n{worker.log()[-4000:]}")


def wait_end(pk: int, worker: Proc, statuses=("succeeded", "failed", "cancelled")) -> Run:
    return wait_for(lambda: state(pk).status in statuses and state(pk), timeout=300, what=f"run {pk} in {statuses}",
                    on_timeout=lambda: f"{state(pk).__dict__}\n{worker.log()[-4000:]}")


def loss_steps(pk: int) -> list[int]:
    key = MetricKey.objects.get(name="loss")
    return list(MetricPoint.objects.filter(run_id=pk, key_id=key.pk).order_by("step").values_list("step", flat=True))


def assert_every_step_once(run: Run, total: int) -> None:
    assert run.status == "succeeded", (run.error, run.log_tail)
    assert loss_steps(run.pk) == list(range(1, total + 1))  # the primary key makes each (key, step) unique
    assert run.step == total


# ---------------------------------------------------------------------------- in process
def test_trainer_flushes_the_sink_before_a_checkpoint_exists_and_a_refusal_publishes_none(
        team, launch_inputs, tmp_path):
    """A crash right after a checkpoint must leave no hole below it: every metric up to step N is
    stored (flushed) before checkpoints/step-N appears. A sink that refuses (a superseded attempt)
    stops the trainer with no checkpoint published and no temporary directory left."""
    from gft_core.config import GFTConfig
    from gft_core.trainer import Trainer
    from webapp.runs.launch import build_config

    config = build_config(team, {**launch_inputs, "max_steps": 4, "checkpoint_interval": 2}).config

    class Recording:
        def __init__(self, refuse_at: int | None = None):
            self.logged, self.flushes, self.refuse_at = [], [], refuse_at

        def start(self, **_):
            pass

        def log(self, step, scalars, histograms=None):
            self.logged.append(step)

        def log_groups(self, step, groups):
            pass

        def artifact(self, kind, path, step):
            pass

        def flush(self):
            step = self.logged[-1]
            self.flushes.append((step, sorted(p.name for p in (out / "checkpoints").glob("*"))))
            if step == self.refuse_at:
                raise AttemptSuperseded("refused")

        def close(self):
            pass

    out = tmp_path / "a"
    sink = Recording()
    Trainer(GFTConfig.from_dict({**config, "output_dir": str(out)}), sink=sink).train()
    # Before and after writing each checkpoint (steps 2, 4), then before the final model: the
    # checkpoint is not yet published at either flush.
    assert sink.flushes == [(2, []), (2, ["step-2.tmp"]), (4, ["step-2"]), (4, ["step-2", "step-4.tmp"]),
                            (4, ["step-2", "step-4"])]

    out = tmp_path / "b"
    sink = Recording(refuse_at=2)
    with pytest.raises(AttemptSuperseded):
        Trainer(GFTConfig.from_dict({**config, "output_dir": str(out)}), sink=sink).train()
    assert sink.logged == [1, 2] and list((out / "checkpoints").glob("*")) == []


def test_a_superseded_attempts_sink_refuses_every_write(team):
    run = Run.objects.create(team=team, name="fence", method="gft", config={}, status="running", attempt=1)
    old = PostgresRedisSink(run.pk, attempt=1, flush_interval=3600)
    old.start(total_steps=10, start_step=0, config={})
    old.log(1, {"loss": 1.0})
    old.flush()
    Run.objects.filter(pk=run.pk).update(attempt=2)  # what services.transition does when attempt 2 starts
    old.log(2, {"loss": 2.0})
    with pytest.raises(AttemptSuperseded):
        old.flush()
    with pytest.raises(AttemptSuperseded):
        old.log(3, {"loss": 3.0})
    with pytest.raises(AttemptSuperseded):
        old.close()
    late = PostgresRedisSink(run.pk, attempt=1)
    with pytest.raises(AttemptSuperseded):  # a late start would delete the new attempt's steps
        late.start(total_steps=10, start_step=0, config={})
    late.close()
    assert loss_steps(run.pk) == [1] and state(run.pk).step == 1
    new = PostgresRedisSink(run.pk, attempt=2)
    new.start(total_steps=10, start_step=1, config={})
    new.log(2, {"loss": 2.5})
    new.close()
    assert loss_steps(run.pk) == [1, 2]


def test_a_live_publish_retried_after_a_lost_reply_adds_no_duplicate(team):
    run = Run.objects.create(team=team, name="live", method="gft", config={})
    sink = PostgresRedisSink(run.pk)
    sink._publish([json.dumps({"step": 1}), json.dumps({"step": 2})])
    sink._live.extend([(1, json.dumps({"step": 1})), (2, json.dumps({"step": 2}))])  # as if the reply was lost
    sink._publish([json.dumps({"step": 3})])
    assert stream_steps(run.pk) == [1, 2, 3] and not sink._live
    other = PostgresRedisSink(run.pk)  # a resumed attempt's sink numbers its own entries
    other._publish([json.dumps({"step": 3})])
    assert stream_steps(run.pk) == [1, 2, 3, 3]
    sink.redis.close()
    other.redis.close()


def test_only_a_stopping_worker_queues_a_running_run_again(team, api_client):
    """services.transition allows running -> queued (the graceful stop); a user's resume does not."""
    run = Run.objects.create(team=team, name="busy", method="gft", config={}, status="running", attempt=1)
    resp = api_client.post(f"/api/runs/{run.pk}/resume/")
    assert resp.status_code == 409 and "only failed or cancelled runs" in resp.json()["detail"]
    assert state(run.pk).status == "running" and not RunEvent.objects.filter(run=run).exists()


def test_stale_runs_are_judged_on_the_database_clock(team):
    run = Run.objects.create(team=team, name="stale", method="gft", config={}, status="running", attempt=1)
    with connection.cursor() as cur:  # 10 s ago on the database's clock, whatever this process's clock says
        cur.execute("UPDATE runs_run SET heartbeat_at = now() - interval '10 seconds' WHERE id = %s", [run.pk])
    assert list(Run.objects.stale(5).values_list("pk", flat=True)) == [run.pk]
    assert not Run.objects.stale(30).exists()
    assert 9 < Run.objects.stale(5).get().heartbeat_age.total_seconds() < 60


# ---------------------------------------------------------------------------- real workers
def test_sigterm_checkpoints_at_the_next_step_and_another_worker_finishes_the_run(
        transactional_db, tmp_path, api_client, launch_inputs):
    # Long enough that the run is still training when SIGTERM lands: on a quiet machine 12 tiny
    # steps took 2 s, and the run could end between the poll that saw step 3 and the signal.
    total = 60
    # No periodic checkpoint: only the graceful stop saves the work done so far.
    first, pk = worker_with_run(tmp_path, api_client, launch_inputs, max_steps=total, checkpoint_interval=1000)
    try:
        wait_step(pk, 3, first)
        first.popen.send_signal(signal.SIGTERM)  # the main process only, as `docker stop` does
        run = wait_for(lambda: state(pk).status != "running" and state(pk), timeout=120, what="re-queued",
                       on_timeout=lambda: first.log()[-4000:])
        assert run.status == "queued", (run.error, run.log_tail)
        assert first.popen.wait(timeout=60) == 0  # the warm shutdown ends once the run is handed back
    finally:
        first.stop()
    event = RunEvent.objects.filter(run_id=pk, to_status="queued").last()
    stopped = int(re.fullmatch(r"Worker stopping \(SIGTERM\): checkpoint at step (\d+), queued again",
                               event.message).group(1))
    assert event.from_status == "running" and 3 <= stopped < total
    assert Artifact.objects.filter(run_id=pk, kind="checkpoint", step=stopped).exists()
    assert loss_steps(pk) == list(range(1, stopped + 1))  # flushed before the checkpoint

    run = finish_on_second_worker(tmp_path, pk)
    assert_every_step_once(run, total)
    assert run.attempt == 2 and run.worker.startswith("w2@")
    log_text = Path(Artifact.objects.get(run_id=pk, kind="log").path).read_text()
    assert "attempt 1 ends requeued" in log_text


def test_a_frozen_worker_superseded_by_a_resume_stops_itself_and_writes_nothing(
        transactional_db, tmp_path, api_client, launch_inputs):
    from webapp.runs.housekeeping import fail_stale_runs

    total = 60  # still training when SIGSTOP lands (see the SIGTERM test)
    frozen, pk = worker_with_run(tmp_path, api_client, launch_inputs, max_steps=total, checkpoint_interval=5)
    try:
        wait_step(pk, 3, frozen)
        os.killpg(frozen.popen.pid, signal.SIGSTOP)
        wait_for(lambda: Run.objects.stale(TIMEOUT_S).filter(pk=pk).exists(), timeout=60, what="a stale heartbeat")
        assert fail_stale_runs(timeout_s=TIMEOUT_S) == [pk]
        assert api_client.post(f"/api/runs/{pk}/resume/").status_code == 200
        run = finish_on_second_worker(tmp_path, pk)
        assert_every_step_once(run, total)
        assert run.attempt == 2 and run.worker.startswith("w2@")

        before = snapshot(pk)
        continued = time.monotonic()
        os.killpg(frozen.popen.pid, signal.SIGCONT)
        frozen.wait_for_log("'superseded'", timeout=120)  # the task of attempt 1 returned by itself
        took = time.monotonic() - continued
    finally:
        with_suppressed(lambda: os.killpg(frozen.popen.pid, signal.SIGCONT))
        frozen.stop()
    assert snapshot(pk) == before  # no metric, checkpoint, artifact or run field from attempt 1
    assert took < 60, took
    log_text = Path(Artifact.objects.get(run_id=pk, kind="log").path).read_text()
    assert "attempt 1 stops without a checkpoint" in log_text


def test_postgres_connections_terminated_mid_run_lose_nothing(transactional_db, tmp_path, api_client, launch_inputs):
    def terminate() -> int:
        with connection.cursor() as cur:
            cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            return cur.fetchone()[0]

    run_through_faults(tmp_path, api_client, launch_inputs, terminate)


def test_redis_clients_killed_mid_run_lose_nothing(transactional_db, tmp_path, api_client, launch_inputs):
    client = live.client()
    db = client.connection_pool.connection_kwargs.get("db", 0)

    def kill() -> int:  # `CLIENT KILL TYPE normal`, limited to this test's database (other suites share the server)
        me = client.client_id()
        return sum(client.client_kill_filter(_id=c["id"]) for c in client.client_list(_type="normal")
                   if int(c["db"]) == db and int(c["id"]) != me)

    run_through_faults(tmp_path, api_client, launch_inputs, kill)


# ---------------------------------------------------------------------------- helpers
def run_through_faults(tmp_path: Path, api_client, launch_inputs, fault) -> None:
    """A 30-step run on one worker (still training at step 5 on a quiet machine), `fault()` (the
    connections it cut) at steps 2 and 5: the run carries on as attempt 1 and succeeds, every step
    stored once and streamed once."""
    total = 30
    worker, pk = worker_with_run(tmp_path, api_client, launch_inputs, max_steps=total, checkpoint_interval=3)
    try:
        cut = 0
        for step in (2, 5):
            wait_step(pk, step, worker)
            cut += fault()
        run = wait_end(pk, worker)
    finally:
        worker.stop()
    assert cut >= 2  # at least the sink's connection and the heartbeat's
    assert_every_step_once(run, total)
    assert run.attempt == 1 and stream_steps(pk) == list(range(1, total + 1))


def snapshot(pk: int) -> dict:
    """Everything an attempt could write: metric rows, artifacts, the run row, the run directory."""
    run = state(pk)
    root = Path(Artifact.objects.get(run_id=pk, kind="log").path).parent
    # Published files only: a checkpoint being written when the worker froze may be finished and
    # then discarded (refused before its rename), which publishes nothing.
    files = {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
             if p.is_file() and p.name != "worker.log" and ".tmp" not in str(p.relative_to(root))}
    return {
        "points": list(MetricPoint.objects.filter(run_id=pk).order_by("key_id", "step")
                       .values_list("key_id", "step", "value", "wall_time")),
        "artifacts": list(Artifact.objects.filter(run_id=pk).order_by("id").values_list("kind", "path", "step")),
        "run": {f: getattr(run, f) for f in ("status", "attempt", "worker", "step", "summary", "error", "log_tail",
                                             "heartbeat_at", "finished_at")},
        "events": RunEvent.objects.filter(run_id=pk).count(),
        "files": files,
    }


def with_suppressed(fn) -> None:
    try:
        fn()
    except ProcessLookupError:
        pass

