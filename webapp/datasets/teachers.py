"""Teacher answers for a dataset version (issue 18): generation jobs (submit, cancel, resume, what
the worker records, housekeeping) and imports of answers made elsewhere. Both end in a new dataset
version (services.derived_version) with a teacher column and its lineage.

Errors for the user are TeacherError(field, message) (the API answers 400 {field: [message]}).
A job moves like a run and an evaluation (webapp.resources.jobs: the run state machine, fenced by
its attempt).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from gft_core.data import ColumnMapping, DataError
from webapp import dispatch
from webapp.resources.jobs import JobLifecycle, TransitionError
from webapp.runs.modelpaths import ModelPathError, launch_value, resolve_model

from . import services
from .models import Dataset, TeacherJob
from .uploads import UploadError, store_upload


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
    return jobs.submit(team=team, dataset=dataset, run=run, model_path=path, model_label=label[:300], options=opts,
                       total=total, created_by=user)


# ---------------------------------------------------------------------------- lifecycle
# The shared one of GPU jobs (webapp.resources.jobs): a job moves like a run and an evaluation.
jobs = JobLifecycle(TeacherJob, label="Teacher job", key="teachers", task=dispatch.GENERATE_TEACHERS)
request_cancel, start = jobs.request_cancel, jobs.start


def resume(job: TeacherJob) -> TeacherJob:
    """Queue a failed or cancelled job again; the prompts it finished are kept (not generated again)."""
    if not Path(job.model_path).is_dir():
        raise TransitionError(f"The teacher model {job.model_path} is gone: start a new job instead.")
    return jobs.resume(job)


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


def prompt_format(job: TeacherJob):
    """The PromptFormat the job's prompts are built with: its dataset's system prompt and suffix,
    the chat template (of the teacher model) as its options say."""
    from gft_core.teachers import TeacherSettings

    return services.prompt_format(job.dataset).override(
        use_chat_template=TeacherSettings.from_dict(job.options).use_chat_template)


def create_result(job: TeacherJob, records: dict[int, dict]) -> Dataset:
    """The new version of the job's dataset with its answers joined on (called by the worker)."""
    from gft_core.policy import model_has_chat_template  # here: policy imports torch
    from gft_core.teachers import TeacherSettings, teacher_stats

    opts = TeacherSettings.from_dict(job.options)
    return derive(job.dataset, job.created_by, {row: r["answers"] for row, r in records.items()},
                  what=opts.describe(job.model_label), workdir=job.partial_path.parent, kind="generated", job=job.pk,
                  model=job.model_label, settings=opts.to_dict(),
                  prompt_format=prompt_format(job).describe(model_has_chat_template(job.model_path)),
                  generated_stats=teacher_stats(records, filtered=opts.filter))


# ---------------------------------------------------------------------------- housekeeping
def _stale_reason(job: TeacherJob, silent_s: int, timeout_s: int) -> str:
    return (f"No heartbeat from worker {job.worker or '?'} for {silent_s} s (limit {timeout_s} s): the worker died. "
            f"Resume keeps the {job.done} prompts answered.")


def fail_stale_jobs(timeout_s: float | None = None) -> list[int]:
    """Fail running jobs whose worker stopped beating; resume continues with the prompts not done."""
    return jobs.fail_stale(timeout_s, _stale_reason)


redispatch_lost_jobs = jobs.redispatch_lost  # queued jobs whose task message vanished: sent again


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
