"""Training and housekeeping tasks: the bridge from a Run row to gft_core's Trainer.

train_run(run_id)
  - starts only a queued run whose task id is the one it was dispatched with, so a late broker
    redelivery (see workers/celery.py) or a stale message of an earlier attempt is harmless;
  - moves the run to running (worker hostname), trains with PostgresRedisSink and a stop hook
    (Redis key run:<id>:cancel, Run.cancel_requested as fallback), resuming from the latest
    checkpoint under the run directory when there is one;
  - sends a heartbeat (heartbeat_at = the database's now()) every heartbeat_interval() from a
    background thread;
  - is fenced by its attempt number: once the run is no longer running this attempt, its
    heartbeat, metrics, checkpoints and end are refused and it stops without a checkpoint
    (RunExecution);
  - on SIGTERM (a worker shutdown, forwarded to the pool process by _forward_shutdown) checkpoints
    at the next step and queues the run again;
  - writes the worker log of the run to <run dir>/worker.log (an Artifact), its last lines to
    Run.log_tail;
  - ends the run succeeded | cancelled | failed (with the error) through services.transition,
    retried while the database is briefly away, then precomputes the metric rollups (webapp.runs.series.refresh_rollups) so that the first
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
from typing import Callable

from celery import shared_task, signals
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from webapp import dispatch
from webapp.runs import housekeeping as runs_housekeeping
from webapp.runs import live, services
from webapp.runs.housekeeping import LOG_TAIL_LINES, refresh_rollups_of
from webapp.runs.launch import send_train_task
from webapp.runs.files import disk_size
from webapp.runs.models import Artifact, Run, RunStatus

from .sink import AttemptSuperseded, PostgresRedisSink, run_observers
from .steplog import StepLog
from .system import SystemSampler, describe_device

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0


def heartbeat_key(run_id: int) -> str:
    return f"run:{run_id}:heartbeat"


# ---------------------------------------------------------------------------- train_run
def heartbeat_interval() -> float:
    """Seconds between heartbeats: a quarter of RUN_HEARTBEAT_TIMEOUT_S (at most HEARTBEAT_S), so
    housekeeping never fails a live run and a superseded attempt notices within one interval."""
    return max(0.2, min(HEARTBEAT_S, settings.RUN_HEARTBEAT_TIMEOUT_S / 4))


@shared_task(name=dispatch.TRAIN_RUN, bind=True, acks_late=True)
def train_run(self, run_id: int) -> str:
    """Train one queued run to its end (see the module docstring)."""
    run = _db_retry(lambda: Run.objects.filter(pk=run_id).first(), f"run {run_id}: read")
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
    device = describe_device(run.num_gpus)  # the run page shows it (RunEvent.data["device"])
    try:  # the attempt number it gets here fences everything this attempt writes
        run = _db_retry(lambda: services.transition(run, RunStatus.RUNNING, message=f"Started on {hostname}: {device}",
                                                    event_data={"device": device}, worker=hostname),
                        f"run {run_id}: start")
    except services.TransitionError:
        return "skipped"  # cancelled or started by someone else meanwhile
    return RunExecution(run, device=device).execute()


@signals.worker_shutting_down.connect
def _forward_shutdown(sig: str = "", how: str = "", **_) -> None:
    """The worker's main process is shutting down (SIGTERM from `docker stop`, a deploy): pass
    SIGTERM on to the pool processes that train a run or evaluate, so each checkpoints at its next
    step (an evaluation: after its batch) and queues itself again (`preemptible`). A warm shutdown
    then waits for them."""
    from celery.worker import state

    for request in list(state.active_requests):
        if request.name in (train_run.name, dispatch.EVALUATE) and request.worker_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(request.worker_pid, signal.SIGTERM)


REQUEUED, SUPERSEDED = "requeued", "superseded"  # outcomes of an attempt besides the end statuses


class RunExecution:
    """One attempt of one run inside a worker process.

    Fencing: the attempt is Run.attempt as services.transition set it when this attempt started.
    Its heartbeat, its metrics (the sink), its checkpoints (the trainer flushes the sink first) and
    its end transition are written only while the run is running with that attempt number; once
    refused, the attempt raises AttemptSuperseded out of the stop hook (or the sink) and stops
    without a checkpoint, writing nothing more: another attempt, or housekeeping, owns the run.
    Graceful stop: SIGTERM to this process sets a flag the stop hook sees; the trainer checkpoints
    at the next step boundary and the run is queued again (status running -> queued).
    """

    def __init__(self, run: Run, device: str = ""):
        self.run = run
        self.device = device or describe_device(run.num_gpus)
        self.attempt = run.attempt
        self.dir = run.directory
        self.log_path = run.log_path
        # The alert rules, and a sweep trial's pruner, see each batch of steps as it is stored; each
        # stored training step becomes a line of the run's log (workers/steplog.py).
        step_log = StepLog(logging.getLogger(f"gft.run.{run.pk}"), lambda: self.sink.total_steps)
        self.sink = PostgresRedisSink(run.pk, attempt=run.attempt, observers=[*run_observers(run.pk), step_log])
        self._stop = threading.Event()
        self._superseded = threading.Event()  # set by the heartbeat when its update is refused
        self._cancel_flag = False  # Run.cancel_requested, read by the heartbeat thread
        self._preempt = ""  # the signal that asked this worker to stop ("SIGTERM")
        self._stopped_for = ""  # why the stop hook said stop: "cancel" | "preempt"

    # ------------------------------------------------------------------ the attempt
    def execute(self) -> str:
        # SIGTERM is a stop request for the whole attempt, its end included: it must not kill the
        # process in the middle of the end transition.
        with self._preemptible():
            return self._execute()

    def _execute(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        heartbeat = threading.Thread(target=self._heartbeat, name=f"heartbeat-run-{self.run.pk}", daemon=True)
        outcome, step, error = RunStatus.FAILED, self.run.step, ""
        with self._capture_log() as logger:
            _db_retry(lambda: Artifact.objects.get_or_create(run=self.run, kind=Artifact.Kind.LOG,
                                                             path=str(self.log_path)), f"run {self.run.pk}: log")
            logger.info("run %s attempt %s on %s: %s on %s", self.run.pk, self.attempt,
                        self.run.worker, self.run.method, self.device)
            heartbeat.start()
            # System metrics into the same sink (fenced alike), from a thread: training never waits.
            self.sampler = SystemSampler(self.sink, num_gpus=self.run.num_gpus, run_label=f" of run {self.run.pk}")
            try:
                with self.sampler:
                    if self.run.num_gpus > 1:
                        result, step = self._train_child()
                    else:
                        result, step = self._train_in_process()
                outcome = self._outcome(result)
            except AttemptSuperseded as exc:
                outcome, error = SUPERSEDED, str(exc)
            except BaseException as exc:  # noqa: BLE001 - every failure ends as a failed run
                error = _describe(exc)
                logger.error("run %s failed: %s\n%s", self.run.pk, error, traceback.format_exc())
                if not isinstance(exc, Exception):
                    self._finish(RunStatus.FAILED, error, step)
                    raise
            finally:
                self._stop.set()
                heartbeat.join(timeout=heartbeat_interval() * 2 + 10)
            if self._superseded.is_set() or self.sink.superseded:
                outcome = SUPERSEDED  # whatever else went wrong, the run is no longer this attempt's
            if outcome == SUPERSEDED:
                logger.warning("run %s attempt %s stops without a checkpoint and writes nothing more: %s",
                               self.run.pk, self.attempt, error or "superseded")
            logger.info("run %s attempt %s ends %s", self.run.pk, self.attempt, outcome)
        self._finish(outcome, error, step)
        return outcome

    def _outcome(self, result: str) -> str:
        """The trainer's "succeeded" | "cancelled" as this attempt's outcome: a stop asked by a
        worker shutdown (not by a user's cancel) re-queues the run."""
        if result != "cancelled":
            return RunStatus.SUCCEEDED
        return REQUEUED if self._stopped_for == "preempt" else RunStatus.CANCELLED

    def _config(self) -> dict:
        """The run's trainer config, writing into this run's directory."""
        return {**self.run.config, "output_dir": str(self.dir)}

    def _train_in_process(self) -> tuple[str, int]:
        from gft_core.config import GFTConfig
        from gft_core.memory import Shape, plan_memory
        from gft_core.trainer import Trainer

        cfg = GFTConfig.from_dict(self._config())
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # an adapter dir: not planned
            log.info("strategy single; memory plan: %s", "; ".join(plan_memory(Shape.from_dir(cfg.model_path), cfg).lines()))
        result = Trainer(cfg, sink=self.sink, stop_hook=self._should_stop, resume=True).train()
        return result.status, result.step

    def _launch_flags(self) -> list[str]:
        """accelerate's flags for this run: DDP, or FSDP when the memory plan says the model fits
        this worker's GPUs only sharded (gft_core.distributed.launch_plan); logged with the plan."""
        from gft_core.config import GFTConfig
        from gft_core.distributed import launch_plan

        from workers.devices import probe_devices

        n, cuda = self.run.num_gpus, _cuda_available()
        free = [d["free_bytes"] for d in probe_devices()[:n]]
        flags, plan = launch_plan(GFTConfig.from_dict(self._config()), num_gpus=n,
                                  free_bytes=min(free) if len(free) == n else None, cuda=cuda)
        log.info("strategy %s on %s %s%s", "fsdp" if "--use_fsdp" in flags else "ddp", n,
                 "GPU(s)" if cuda else "CPU processes", f"; memory plan: {'; '.join(plan.lines())}" if plan else "")
        return flags

    def _train_child(self) -> tuple[str, int]:
        """`accelerate launch` the trainer on num_gpus processes; tail its JSONL into the sink."""
        attempt = self.attempt
        config_path = self.dir / "run-config.json"
        metrics_path = self.dir / f"metrics-attempt{attempt}.jsonl"
        stop_file = self.dir / "STOP"
        result_path = self.dir / f"result-attempt{attempt}.json"
        for p in (metrics_path, stop_file, result_path):
            p.unlink(missing_ok=True)
        config_path.write_text(json.dumps(self._config()))
        flags = self._launch_flags()
        cmd = [sys.executable, "-m", "accelerate.commands.launch", *flags, "-m", "workers.train_child",
               "--config", str(config_path), "--metrics", str(metrics_path), "--stop-file", str(stop_file),
               "--result", str(result_path)]
        log.info("starting %s", " ".join(cmd))
        with open(self.log_path, "ab") as out:
            child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.sampler.set_pid(child.pid)  # its RSS: the launcher and the training processes under it
        tail = _JsonlTail(metrics_path, self.sink)
        try:
            while child.poll() is None:
                tail.pump()
                if self._should_stop() and not stop_file.exists():  # raises when superseded
                    stop_file.touch()
                time.sleep(0.2)
            tail.pump()
        except BaseException as exc:
            # A superseded attempt must not checkpoint: SIGKILL, not the stop file or SIGTERM.
            sig = signal.SIGKILL if isinstance(exc, AttemptSuperseded) else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, sig)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:  # a SIGTERMed child checkpoints first; not forever
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            if not isinstance(exc, AttemptSuperseded):
                with contextlib.suppress(Exception):
                    tail.pump()
            raise
        finally:
            tail.close()
        if child.returncode != 0:
            raise RuntimeError(f"the training processes exited with code {child.returncode}")
        result = json.loads(result_path.read_text())
        return result["status"], result["step"]

    # ------------------------------------------------------------------ stop hook, heartbeat, SIGTERM
    def _should_stop(self) -> bool:
        """The stop hook, asked at each step boundary: a cancel (the Redis key, else the database
        flag read by the heartbeat) or a worker shutdown says stop; a superseded attempt raises."""
        if self._superseded.is_set():
            raise AttemptSuperseded(f"attempt {self.attempt} of run {self.run.pk} is superseded: its heartbeat was "
                                    "refused (the run was failed, ended or started again meanwhile)")
        if self._cancel_requested():
            self._stopped_for = "cancel"
            return True
        if self._preempt:
            self._stopped_for = "preempt"
            return True
        return False

    def _cancel_requested(self) -> bool:
        try:
            if live.client().exists(live.cancel_key(self.run.pk)):
                return True
        except Exception:  # noqa: BLE001 - Redis down: the database flag still works
            pass
        return self._cancel_flag

    def _heartbeat(self) -> None:
        """Every heartbeat_interval(): Run.heartbeat_at = the database's now(), fenced by the
        attempt; a refused update (0 rows) means superseded. A failed one is tried again."""
        from django.db.models.functions import Now

        client = live.client()
        interval = heartbeat_interval()
        try:
            while not self._stop.is_set():
                try:
                    beat = Run.objects.filter(pk=self.run.pk, attempt=self.attempt,
                                              status=RunStatus.RUNNING).update(heartbeat_at=Now())
                    if beat == 0:
                        log.warning("run %s: attempt %s is superseded (its heartbeat was refused); stopping",
                                    self.run.pk, self.attempt)
                        self._superseded.set()
                        return
                    self._cancel_flag = Run.objects.filter(pk=self.run.pk, cancel_requested=True).exists()
                except Exception as exc:  # noqa: BLE001 - Postgres blip: next beat tries on a new connection
                    log.warning("run %s: heartbeat not stored: %s", self.run.pk, exc)
                    connection.close()
                try:
                    client.set(heartbeat_key(self.run.pk), json.dumps(
                        {"t": time.time(), "step": self.sink.last_step, "total": self.sink._total,
                         "worker": self.run.worker}), ex=int(settings.RUN_HEARTBEAT_TIMEOUT_S * 2))
                except Exception:  # noqa: BLE001 - Redis down: Postgres has the heartbeat
                    pass
                self._stop.wait(interval)
        finally:
            connection.close()

    def _preemptible(self):
        return preemptible(self._on_signal)

    def _on_signal(self, signum: int) -> None:
        self._preempt = signal.Signals(signum).name  # only a flag: no logging inside a handler

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

    def _finish(self, outcome: str, error: str, step: int) -> None:
        """End the run (or queue it again) with its log tail, fenced by the attempt, retried while
        the database is away; keep artifacts in step with the disk. A superseded attempt writes nothing."""
        if outcome == SUPERSEDED:
            return
        from django.db import transaction

        tail = self.run.read_log_end(LOG_TAIL_LINES)
        if outcome == REQUEUED:
            status, message = RunStatus.QUEUED, f"Worker stopping ({self._preempt}): checkpoint at step {step}, queued again"
        else:
            status = outcome
            message = {RunStatus.SUCCEEDED: "Finished", RunStatus.CANCELLED: "Stopped on request; last checkpoint kept",
                       RunStatus.FAILED: f"Failed: {error[:500]}"}[status]
        fields = {"log_tail": tail, **({"error": error} if status == RunStatus.FAILED else {})}

        def end() -> None:
            with transaction.atomic():
                if not Run.objects.select_for_update().filter(pk=self.run.pk, attempt=self.attempt,
                                                               status=RunStatus.RUNNING).exists():
                    raise AttemptSuperseded(f"run {self.run.pk} is no longer running attempt {self.attempt}")
                for art in Artifact.objects.filter(run=self.run, kind=Artifact.Kind.CHECKPOINT):
                    if not Path(art.path).exists():  # pruned by the trainer (keep_checkpoints)
                        art.delete()
                # The log was recorded empty when the attempt began; store its size at the end.
                Artifact.objects.filter(run=self.run, kind=Artifact.Kind.LOG).update(
                    size_bytes=disk_size(self.log_path))
                run = services.transition(self.run.pk, status, message=message, **fields)
                if status == RunStatus.QUEUED:
                    send_train_task(run)  # sent when this transaction commits

        try:
            _db_retry(end, f"run {self.run.pk}: end as {outcome}")
        except (AttemptSuperseded, services.TransitionError) as exc:  # e.g. housekeeping failed it meanwhile
            log.warning("run %s: attempt %s could not end as %s: %s", self.run.pk, self.attempt, outcome, exc)
            return
        if status != RunStatus.QUEUED:
            refresh_rollups_of(self.run.pk)


@contextlib.contextmanager
def preemptible(on_signal: Callable[[int], None]):
    """While an attempt (a run's, an evaluation's) runs, SIGTERM to this process (forwarded by
    _forward_shutdown, or sent to the whole process group) calls `on_signal(signum)`, which asks for
    a graceful stop, instead of killing it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (e.g. an eager call)
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: on_signal(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _db_retry(fn: Callable, what: str, timeout_s: float = 120.0):
    """fn(), tried again on a fresh connection while the database is unreachable (a restart, a
    dropped connection): a run is not failed because Postgres was briefly away."""
    from django.db import InterfaceError, OperationalError

    deadline = time.monotonic() + timeout_s
    delay = 0.5
    while True:
        try:
            return fn()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("%s: database unreachable (%s); retrying in %.1fs", what, exc, delay)
            connection.close()
            time.sleep(delay)
            delay = min(5.0, delay * 2)


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
        elif kind == "evaluation":
            self.sink.log_evaluation(rec["step"], rec["benchmark"], rec["result"])
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
    datasets whose validation died; the same for evaluations (webapp.evaluations.housekeeping) and
    teacher-answer jobs (webapp.datasets.teachers)."""
    from webapp.alerts.housekeeping import check_stalled
    from webapp.datasets.teachers import housekeeping as teachers_housekeeping
    from webapp.evaluations.housekeeping import housekeeping as evaluations_housekeeping
    from workers.data_tasks import fail_stale_validations

    return {"failed": runs_housekeeping.fail_stale_runs(), "redispatched": runs_housekeeping.redispatch_lost_runs(),
            "rolled_up": runs_housekeeping.refresh_running_rollups(), "datasets_failed": fail_stale_validations(),
            "stalled_alerts": check_stalled(), **evaluations_housekeeping(), **teachers_housekeeping()}
