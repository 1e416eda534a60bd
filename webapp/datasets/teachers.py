"""Teacher answers for a dataset version (issue 18): generation jobs (submit, cancel, resume, what
the worker records, housekeeping) and imports of answers made elsewhere. Both end in a new dataset
version (services.derived_version) with a teacher column and its lineage.

Errors for the user are TeacherError(field, message) (the API answers 400 {field: [message]}).
A job moves like a run and an evaluation (the run state machine, fenced by its attempt).
"""
from __future__ import annotations

import logging
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from gft_core.data import ColumnMapping, DataError
from webapp import dispatch
from webapp.runs import live
from webapp.runs import services as runs_services
from webapp.runs.modelpaths import ModelPathError, launch_value, resolve_model

from . import services
from .models import Dataset, TeacherJob
from .uploads import UploadError, store_upload

log = logging.getLogger(__name__)

Status = TeacherJob.Status
TransitionError = runs_services.TransitionError


class TeacherError(ValueError):
    """Bad input; `field` names the input it is about."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# ---------------------------------------------------------------------------- checks
def check_options(data: dict | None, reward_spec: dict | None = None) -> dict:
    """gft_core TeacherSettings from `data` (+ the chosen reward config's spec), as a dict;
    TeacherError naming the field when a value is out of bounds."""
    from gft_core.errors import ConfigError
    from gft_core.teachers import TeacherSettings

    d = dict(data or {})
    if reward_spec is not None:
        d["reward"] = reward_spec
    try:
        return TeacherSettings.from_dict(d).to_dict()
    except ConfigError as exc:
        raise TeacherError(exc.field, str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise TeacherError("settings", str(exc)) from None


def resolve_teacher(team, *, model: str | None = None, run=None) -> tuple[str, str, Any]:
    """(model directory, label, run or None) of the teacher: "tiny" / a HF directory under
    MODEL_ROOTS, or the final model of a finished run of `team`."""
    from webapp.evaluations.services import EvalError, resolve_checkpoint

    if (run is None) == (not model):
        raise TeacherError("model", "Choose the teacher: a model (tiny or a directory under MODEL_ROOTS) or a run.")
    if run is not None:
        if run.team_id != team.pk:
            raise TeacherError("run", f"No run {run.pk} in team {team}.")
        try:
            _, path = resolve_checkpoint(run, "final")
        except EvalError as exc:
            raise TeacherError("run", str(exc)) from None
        return path, f"run #{run.pk} {run.name} (final model)", run
    try:
        path = resolve_model(model or "")
    except ModelPathError as exc:
        raise TeacherError("model", str(exc)) from None
    try:
        is_model = (Path(path) / "config.json").is_file()
    except OSError as exc:  # e.g. a name too long for the file system
        raise TeacherError("model", f"{model} is not a usable path ({exc.strerror}).") from None
    if not is_model:
        raise TeacherError("model", f"{model} is not a Hugging Face model directory (no config.json).")
    return path, launch_value(path) if launch_value(path) == "tiny" else Path(path).name, None


def _usable(dataset: Dataset) -> None:
    try:
        ColumnMapping(**dataset.mapping)
    except TypeError:
        raise TeacherError("dataset", f"{dataset} has no usable column mapping; make a new version with one.") from None
    if not dataset.usable or dataset.is_benchmark:
        raise TeacherError("dataset", f"{dataset} is {dataset.status}{' (archived)' if dataset.archived else ''}"
                                      f"{' (a benchmark)' if dataset.is_benchmark else ''}: only a validated "
                                      "training dataset gets teacher answers.")


# ---------------------------------------------------------------------------- generation jobs
def submit_generation(team, user, dataset: Dataset, *, model: str | None = None, run=None, options: dict | None = None,
                      reward_config=None) -> TeacherJob:
    """Queue a job generating teacher answers for `dataset` (a version of `team`)."""
    if dataset.team_id != team.pk:
        raise TeacherError("dataset", f"No dataset {dataset.pk} in team {team}.")
    _usable(dataset)
    if reward_config is not None and reward_config.team_id != team.pk:
        raise TeacherError("reward_config", f"No reward config {reward_config.pk} in team {team}.")
    opts = check_options(options, reward_config.spec if reward_config is not None else None)
    path, label, run = resolve_teacher(team, model=model, run=run)
    total = int(((dataset.report or {}).get("train") or {}).get("valid_rows") or 0)
    with transaction.atomic():
        job = TeacherJob.objects.create(team=team, dataset=dataset, run=run, model_path=path, model_label=label[:300],
                                        options=opts, total=total, created_by=user, queued_at=timezone.now())
        send_task(job)
    return job


def send_task(job: TeacherJob) -> None:
    """Send the task (first training queue: it needs the accelerator) with a new task id stored on
    the row, once the transaction commits: the worker starts only the job's current task id."""
    task_id = str(uuid.uuid4())
    TeacherJob.objects.filter(pk=job.pk).update(celery_task_id=task_id)
    job.celery_task_id = task_id
    job_id = job.pk

    def broker_unreachable(exc: Exception) -> None:
        try:
            transition(job_id, Status.FAILED, error=f"Could not queue the job: the task broker is unreachable ({exc}).")
        except TransitionError:
            pass

    dispatch.send(dispatch.GENERATE_TEACHERS, [job_id], queue=settings.TRAINING_QUEUES[0], task_id=task_id,
                  on_error=broker_unreachable)


def transition(job: TeacherJob | int, to: str, *, attempt: int | None = None, **fields) -> TeacherJob:
    """Move a job to `to` (row locked; with `attempt`, only while that attempt runs it)."""
    job_id = job if isinstance(job, int) else job.pk
    with transaction.atomic():
        locked = TeacherJob.objects.select_for_update().get(pk=job_id)
        if to not in runs_services.ALLOWED[locked.status]:
            raise TransitionError(f"Teacher job {job_id} cannot go from {locked.status} to {to}.")
        if attempt is not None and (locked.attempt != attempt or locked.status != Status.RUNNING):
            raise TransitionError(f"Teacher job {job_id} is no longer running attempt {attempt}.")
        now = timezone.now()
        if to == Status.QUEUED:
            locked.queued_at, locked.finished_at, locked.cancel_requested, locked.error = now, None, False, ""
        elif to == Status.RUNNING:
            locked.started_at, locked.heartbeat_at, locked.attempt = now, now, locked.attempt + 1
        else:
            locked.finished_at = now
        locked.status = to
        for name, value in fields.items():
            setattr(locked, name, value)
        locked.save()
    if isinstance(job, int):
        return locked
    job.refresh_from_db()
    return job


def cancel_key(job_id: int) -> str:
    return f"teachers:{job_id}:cancel"


def request_cancel(job: TeacherJob) -> TeacherJob:
    """A queued job is cancelled now; a running one stops after its current batch (answers kept)."""
    if job.status == Status.QUEUED:
        try:
            return transition(job, Status.CANCELLED)
        except TransitionError:
            job.refresh_from_db()
    if job.status != Status.RUNNING:
        raise TransitionError(f"Teacher job {job.pk} is {job.status}; only queued or running jobs can be cancelled.")
    TeacherJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    try:
        live.client().set(cancel_key(job.pk), "1", ex=7 * 24 * 3600)
    except Exception as exc:  # noqa: BLE001 - the database flag is read too
        log.warning("teacher job %s: cancel flag not set in Redis: %s", job.pk, exc)
    job.refresh_from_db()
    return job


def resume(job: TeacherJob) -> TeacherJob:
    """Queue a failed or cancelled job again; the prompts it finished are kept (not generated again)."""
    if not Path(job.model_path).is_dir():
        raise TransitionError(f"The teacher model {job.model_path} is gone: start a new job instead.")
    with transaction.atomic():
        job = transition(job, Status.QUEUED)
        send_task(job)
    return job


def cancel_requested(job_id: int) -> bool:
    """The worker's stop check: the Redis flag, else the database flag."""
    try:
        if live.client().exists(cancel_key(job_id)):
            return True
    except Exception:  # noqa: BLE001 - Redis down: the database still says it
        pass
    return TeacherJob.objects.filter(pk=job_id, cancel_requested=True).exists()


# ---------------------------------------------------------------------------- what the worker records
def start(job_id: int, task_id: str, hostname: str) -> TeacherJob | None:
    """Move a queued job whose current task is `task_id` to running (None: nothing to do)."""
    job = TeacherJob.objects.filter(pk=job_id).first()
    if job is None or job.status != Status.QUEUED or (job.celery_task_id and task_id and job.celery_task_id != task_id):
        return None
    try:
        live.client().delete(cancel_key(job_id))
    except Exception:  # noqa: BLE001
        pass
    try:
        return transition(job, Status.RUNNING, worker=hostname)
    except TransitionError:
        return None


def heartbeat(job: TeacherJob, **fields: Any) -> bool:
    """heartbeat_at = now() (and `fields`) while this attempt runs the job; False once superseded."""
    return TeacherJob.objects.filter(pk=job.pk, attempt=job.attempt, status=Status.RUNNING).update(
        heartbeat_at=Now(), **fields) == 1


def finish(job: TeacherJob, status: str, error: str = "", result: Dataset | None = None) -> bool:
    """End this attempt (succeeded | cancelled | failed); False when it was superseded meanwhile."""
    try:
        transition(job.pk, status, attempt=job.attempt, error=error, cancel_requested=False, result=result)
    except TransitionError as exc:
        log.warning("teacher job %s: %s", job.pk, exc)
        return False
    return True


def lineage(source: Dataset, *, what: str, stats: dict, **extra: Any) -> dict:
    """What a derived version's page shows: "v2 = v1 + <what>", counts, teacher accuracy per source."""
    return {"source": source.pk, "source_version": source.version, "what": what, **stats, **extra}


def derive(source: Dataset, user, answers: dict[int, list[str]], *, what: str, workdir: Path, **lineage_extra) -> Dataset:
    """The next version of `source`: its rows with `answers` (per row number) joined on as the
    teacher column; an eval file gets the same column (its own teachers only) so the mapping fits it."""
    from gft_core.teachers import write_with_teachers

    mapping = ColumnMapping(**source.mapping)
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        new_mapping, written = write_with_teachers(source.path, mapping, answers, Path(tmp) / "train.jsonl")
        eval_path = None
        if source.eval_split == Dataset.EvalSplit.FILE and source.eval_path is not None:
            eval_path = Path(tmp) / "eval.jsonl"
            write_with_teachers(source.eval_path, mapping, {}, eval_path, column=written["column"])
        return services.derived_version(
            source, user, Path(tmp) / "train.jsonl", filename=f"{Path(source.original_filename).stem}+teachers.jsonl",
            mapping=new_mapping, eval_path=eval_path,
            lineage=lineage(source, what=what, stats=written, **lineage_extra))


def create_result(job: TeacherJob, records: dict[int, dict]) -> Dataset:
    """The new version of the job's dataset with its answers joined on (called by the worker)."""
    from gft_core.teachers import TeacherSettings, teacher_stats

    opts = TeacherSettings.from_dict(job.options)
    return derive(job.dataset, job.created_by, {row: r["answers"] for row, r in records.items()},
                  what=opts.describe(job.model_label), workdir=job.partial_path.parent, kind="generated", job=job.pk,
                  model=job.model_label, settings=opts.to_dict(),
                  generated_stats=teacher_stats(records, filtered=opts.filter))


# ---------------------------------------------------------------------------- housekeeping
def fail_stale_jobs(timeout_s: float | None = None) -> list[int]:
    """Fail running jobs whose worker stopped beating; resume continues with the prompts not done."""
    timeout_s = settings.RUN_HEARTBEAT_TIMEOUT_S if timeout_s is None else timeout_s
    failed = []
    for job in TeacherJob.objects.stale(timeout_s):
        reason = (f"No heartbeat from worker {job.worker or '?'} for {int(job.heartbeat_age.total_seconds())} s "
                  f"(limit {int(timeout_s)} s): the worker died. Resume keeps the {job.done} prompts answered.")
        try:
            transition(job.pk, Status.FAILED, attempt=job.attempt, error=reason)
        except TransitionError:
            continue
        failed.append(job.pk)
    return failed


def redispatch_lost_jobs() -> list[int]:
    """Send again queued jobs whose task message vanished from the broker (as runs)."""
    from webapp.runs.housekeeping import QUEUED_GRACE_S, broker_task_ids

    candidates = list(TeacherJob.objects.filter(status=Status.QUEUED,
                                                queued_at__lt=timezone.now() - timedelta(seconds=QUEUED_GRACE_S)))
    if not candidates:
        return []
    try:
        known = broker_task_ids({settings.TRAINING_QUEUES[0]})
    except Exception as exc:  # noqa: BLE001 - broker unreachable: decide later
        log.warning("housekeeping cannot read the broker: %s", exc)
        return []
    sent = [job.pk for job in candidates if job.celery_task_id not in known]
    for job in candidates:
        if job.pk in sent:
            send_task(job)
    return sent


def housekeeping() -> dict[str, list[int]]:
    return {"teacher_jobs_failed": fail_stale_jobs(), "teacher_jobs_redispatched": redispatch_lost_jobs()}


# ---------------------------------------------------------------------------- imports
def import_answers(dataset: Dataset, user, fileobj: BinaryIO, filename: str) -> tuple[Dataset, dict]:
    """Join a JSONL / Parquet file of teacher answers (keyed by `row` or the exact prompt) onto
    `dataset` as a new version; (new version, report with unmatched / duplicate counts and examples).
    UploadError naming the columns found when the file has no key column; nothing is created then."""
    from gft_core.teachers import join_teacher_file

    _usable(dataset)
    incoming = services.team_dir(dataset.team) / ".incoming"
    stored = store_upload(fileobj, filename, incoming, label=Path(filename or "import").name)
    try:
        try:
            answers, report = join_teacher_file(dataset.path, ColumnMapping(**dataset.mapping), stored.tmp_path)
        except DataError as exc:
            raise UploadError(str(exc).replace(stored.tmp_path.name, stored.original_filename)) from None
        n = report["answers"]
        what = f"{n} imported answer{'s' if n != 1 else ''} for {report['matched_rows']} rows from {stored.original_filename}"
        new = derive(dataset, user, answers, what=what, workdir=incoming, kind="imported", report=report)
    finally:
        stored.discard()
    return new, report


def jobs_of(dataset: Dataset):
    """The teacher jobs of every version of `dataset`'s name, newest first (the dataset page's list)."""
    return TeacherJob.objects.filter(dataset__team_id=dataset.team_id, dataset__name=dataset.name).select_related(
        "dataset", "result").order_by("-created_at")
