"""Training and housekeeping tasks: the bridge from a Run row to gft_core's Trainer.

train_run(run_id)
  - starts only a queued run whose task id is the one it was dispatched with, so a late broker
    redelivery (see workers/celery.py) or a stale message of an earlier attempt is harmless;
  - moves the run to running (worker hostname), trains with PostgresRedisSink and a stop hook
    (Redis key run:<id>:cancel, Run.cancel_requested as fallback), resuming from the latest
    checkpoint under the run directory when there is one;
  - sends a heartbeat every HEARTBEAT_S seconds from a background thread;
  - writes the worker log of the run to <run dir>/worker.log (an Artifact), its last lines to
    Run.log_tail;
  - ends the run succeeded | cancelled | failed (with the error) through services.transition,
    then precomputes the metric rollups (webapp.runs.series.refresh_rollups) so that the first
    view of a long run does not build them.
  Runs on more than one GPU start `accelerate launch ... -m workers.train_child` as a child
  process; see workers/train_child.py for why the child writes JSONL that this task tails.
housekeeping()
  - the periodic sweep (celery beat): its logic is webapp.runs.housekeeping (stale runs, lost
    task messages, rollups) and workers.data_tasks.fail_stale_validations.
Both are registered under the names in webapp.dispatch, which the web app sends by name.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from celery import shared_task
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from webapp import dispatch
from webapp.runs import housekeeping as runs_housekeeping
from webapp.runs import live, services
from webapp.runs.housekeeping import LOG_TAIL_LINES, refresh_rollups_of
from webapp.runs.models import Artifact, Run, RunStatus

from .sink import PostgresRedisSink

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0


def heartbeat_key(run_id: int) -> str:
    return f"run:{run_id}:heartbeat"


# ---------------------------------------------------------------------------- train_run
@shared_task(name=dispatch.TRAIN_RUN, bind=True, acks_late=True)
def train_run(self, run_id: int) -> str:
    """Train one queued run to its end (see the module docstring)."""
    run = Run.objects.filter(pk=run_id).first()
    task_id = self.request.id or ""
    if run is None or run.status != RunStatus.QUEUED:
        log.info("run %s is %s, not queued: task %s does nothing", run_id, run and run.status, task_id)
        return "skipped"
    if run.celery_task_id and task_id and run.celery_task_id != task_id:
        log.info("run %s belongs to task %s, not %s: nothing to do", run_id, run.celery_task_id, task_id)
        return "skipped"
    try:  # a cancel flag of an earlier attempt must not stop this one
        live.client().delete(live.cancel_key(run_id))
    except Exception as exc:  # noqa: BLE001 - Redis is optional for starting a run
        log.warning("run %s: cannot clear the cancel flag in Redis: %s", run_id, exc)
    hostname = self.request.hostname or socket.gethostname()
    try:
        run = services.transition(run, RunStatus.RUNNING, message=f"Started on {hostname}", worker=hostname)
    except services.TransitionError:
        return "skipped"  # cancelled or started by someone else meanwhile
    return RunExecution(run).execute()


class RunExecution:
    """One attempt of one run inside a worker process."""

    def __init__(self, run: Run):
        self.run = run
        self.dir = run.directory
        self.log_path = run.log_path
        self.sink = PostgresRedisSink(run.pk)
        self._stop = threading.Event()
        self._cancel_flag = False  # Run.cancel_requested, read by the heartbeat thread

    # ------------------------------------------------------------------ the attempt
    def execute(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        heartbeat = threading.Thread(target=self._heartbeat, name=f"heartbeat-run-{self.run.pk}", daemon=True)
        status, error = RunStatus.FAILED, ""
        with self._capture_log() as logger:
            Artifact.objects.get_or_create(run=self.run, kind=Artifact.Kind.LOG, path=str(self.log_path))
            logger.info("run %s attempt %s on %s: %s on %s GPU(s)", self.run.pk, self.run.attempt,
                        self.run.worker, self.run.method, self.run.num_gpus)
            heartbeat.start()
            try:
                if self.run.num_gpus > 1:
                    status = self._train_child()
                else:
                    status = self._train_in_process()
            except BaseException as exc:  # noqa: BLE001 - every failure ends as a failed run
                error = _describe(exc)
                logger.error("run %s failed: %s\n%s", self.run.pk, error, traceback.format_exc())
                if not isinstance(exc, Exception):
                    self._finish(RunStatus.FAILED, error)
                    raise
            finally:
                self._stop.set()
                heartbeat.join(timeout=HEARTBEAT_S * 2)
            logger.info("run %s ends %s", self.run.pk, status)
        self._finish(status, error)
        return status

    def _train_in_process(self) -> str:
        from gft_core.config import GFTConfig
        from gft_core.trainer import Trainer

        cfg = GFTConfig.from_dict({**self.run.config, "output_dir": str(self.dir)})
        result = Trainer(cfg, sink=self.sink, stop_hook=self._should_stop, resume=True).train()
        return RunStatus.CANCELLED if result.status == "cancelled" else RunStatus.SUCCEEDED

    def _train_child(self) -> str:
        """`accelerate launch` the trainer on num_gpus processes; tail its JSONL into the sink."""
        attempt = self.run.attempt
        config_path = self.dir / "run-config.json"
        metrics_path = self.dir / f"metrics-attempt{attempt}.jsonl"
        stop_file = self.dir / "STOP"
        result_path = self.dir / f"result-attempt{attempt}.json"
        for p in (metrics_path, stop_file, result_path):
            p.unlink(missing_ok=True)
        config_path.write_text(json.dumps({**self.run.config, "output_dir": str(self.dir)}))
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(self.run.num_gpus),
               "--num_machines", "1", "--mixed_precision", self.run.config.get("mixed_precision", "no")]
        cmd += ["--multi_gpu"] if _cuda_available() else ["--cpu"]
        cmd += ["-m", "workers.train_child", "--config", str(config_path), "--metrics", str(metrics_path),
                "--stop-file", str(stop_file), "--result", str(result_path)]
        log.info("starting %s", " ".join(cmd))
        with open(self.log_path, "ab") as out:
            child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        tail = _JsonlTail(metrics_path, self.sink)
        try:
            while child.poll() is None:
                tail.pump()
                if self._should_stop() and not stop_file.exists():
                    stop_file.touch()
                time.sleep(0.2)
        except BaseException:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait(timeout=60)
            raise
        finally:
            tail.pump()
            tail.close()
        if child.returncode != 0:
            raise RuntimeError(f"the training processes exited with code {child.returncode}")
        result = json.loads(result_path.read_text())
        return RunStatus.CANCELLED if result["status"] == "cancelled" else RunStatus.SUCCEEDED

    # ------------------------------------------------------------------ stop hook, heartbeat
    def _should_stop(self) -> bool:
        """The stop hook: the Redis cancel key, else the database flag (read by the heartbeat)."""
        try:
            if live.client().exists(live.cancel_key(self.run.pk)):
                return True
        except Exception:  # noqa: BLE001 - Redis down: the database flag still works
            pass
        return self._cancel_flag

    def _heartbeat(self) -> None:
        client = live.client()
        try:
            while not self._stop.is_set():
                now = timezone.now()
                try:
                    Run.objects.filter(pk=self.run.pk).update(heartbeat_at=now)
                    self._cancel_flag = Run.objects.filter(pk=self.run.pk, cancel_requested=True).exists()
                except Exception as exc:  # noqa: BLE001 - Postgres blip: next beat tries again
                    log.warning("run %s: heartbeat not stored: %s", self.run.pk, exc)
                    close_old_connections()
                try:
                    client.set(heartbeat_key(self.run.pk), json.dumps(
                        {"t": now.timestamp(), "step": self.sink.last_step, "total": self.sink._total,
                         "worker": self.run.worker}), ex=int(settings.RUN_HEARTBEAT_TIMEOUT_S * 2))
                except Exception:  # noqa: BLE001 - Redis down: Postgres has the heartbeat
                    pass
                self._stop.wait(HEARTBEAT_S)
        finally:
            connection.close()

    # ------------------------------------------------------------------ log, end
    @contextlib.contextmanager
    def _capture_log(self):
        """Everything this attempt logs or prints goes to the run's worker.log (appended)."""
        handler = logging.FileHandler(self.log_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        old_level = root.level
        root.setLevel(min(old_level or logging.INFO, logging.INFO))
        logging.captureWarnings(True)
        stream = open(self.log_path, "a", encoding="utf-8", buffering=1)
        try:
            # Only to the file: under Celery, sys.stdout is already a logging proxy (no double lines).
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield logging.getLogger(f"gft.run.{self.run.pk}")
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
            handler.close()
            stream.close()

    def _finish(self, status: str, error: str) -> None:
        """Move the run to its end state with its log tail; keep artifacts in step with the disk."""
        tail = self.run.read_log_end(LOG_TAIL_LINES)
        for art in Artifact.objects.filter(run=self.run, kind=Artifact.Kind.CHECKPOINT):
            if not Path(art.path).exists():  # pruned by the trainer (keep_checkpoints)
                art.delete()
        fields = {"log_tail": tail}
        if status == RunStatus.FAILED:
            fields["error"] = error
        message = {RunStatus.SUCCEEDED: "Finished", RunStatus.CANCELLED: "Stopped on request; last checkpoint kept",
                   RunStatus.FAILED: f"Failed: {error[:500]}"}[status]
        try:
            services.transition(self.run.pk, status, message=message, **fields)
        except services.TransitionError as exc:  # e.g. housekeeping failed it while the worker hung
            log.warning("run %s: could not end as %s: %s", self.run.pk, status, exc)
            Run.objects.filter(pk=self.run.pk).update(log_tail=tail)
        refresh_rollups_of(self.run.pk)


def _describe(exc: BaseException) -> str:
    parts = [f"{type(exc).__name__}: {exc}"]
    cause = exc.__cause__ or exc.__context__
    if cause is not None and not isinstance(cause, KeyboardInterrupt):
        parts.append(f"(while handling {type(cause).__name__}: {cause})")
    return " ".join(parts)


def _cuda_available() -> bool:
    # Only asked when launching a child: the worker's own process never initialises CUDA.
    return shutil.which("nvidia-smi") is not None and os.environ.get("CUDA_VISIBLE_DEVICES", "x") != ""


class _JsonlTail:
    """Reads the child's JSONL metrics as they are appended and replays them into the sink."""

    def __init__(self, path: Path, sink: PostgresRedisSink):
        self.path, self.sink = path, sink
        self._f = None
        self._partial = ""
        self.started = False

    def pump(self) -> None:
        if self._f is None:
            if not self.path.exists():
                return
            self._f = self.path.open("r", encoding="utf-8")
        chunk = self._f.read()
        if not chunk:
            return
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()  # an incomplete last line waits for the rest
        for line in lines:
            if line.strip():
                self._replay(json.loads(line))

    def _replay(self, rec: dict) -> None:
        kind = rec.get("type")
        if kind == "start":
            self.sink.start(total_steps=rec["total_steps"], start_step=rec["start_step"], config=rec.get("config", {}))
            self.started = True
        elif kind == "step":
            self.sink.log(rec["step"], rec["scalars"], rec.get("histograms") or None)
        elif kind == "groups":
            self.sink.log_groups(rec["step"], rec["groups"])
        elif kind == "artifact":
            self.sink.artifact(rec["kind"], rec["path"], rec["step"])

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
        if self.started:
            self.sink.close()


# ---------------------------------------------------------------------------- housekeeping
@shared_task(name=dispatch.HOUSEKEEPING)
def housekeeping() -> dict:
    """Fail runs whose heartbeat stopped; send again queued runs whose task message was lost;
    roll up the metrics of long running runs (webapp.runs.housekeeping); mark invalid the
    datasets whose validation died."""
    from workers.data_tasks import fail_stale_validations

    return {"failed": runs_housekeeping.fail_stale_runs(), "redispatched": runs_housekeeping.redispatch_lost_runs(),
            "rolled_up": runs_housekeeping.refresh_running_rollups(), "datasets_failed": fail_stale_validations()}
