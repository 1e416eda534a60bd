"""Run lifecycle. Every status change goes through `transition`; nothing else writes Run.status."""
from __future__ import annotations

import logging
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from .models import Run, RunEvent, RunStatus

log = logging.getLogger(__name__)

ALLOWED: dict[str, set[str]] = {
    RunStatus.QUEUED: {RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED},
    # queued: a worker stopping on SIGTERM queues its run again
    RunStatus.RUNNING: {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.QUEUED},
    RunStatus.FAILED: {RunStatus.QUEUED},  # resume
    RunStatus.CANCELLED: {RunStatus.QUEUED},  # resume
    RunStatus.SUCCEEDED: set(),
}


class TransitionError(Exception):
    """A status change the state machine does not allow."""


def transition(run: Run | int, to: str, *, message: str = "", event_data: dict | None = None, **fields) -> Run:
    """Move a run to status `to`, atomically, with a RunEvent (its `data`: event_data, e.g. the
    device of a start); extra `fields` are saved with it.

    The row is locked, so two processes (a worker finishing, housekeeping failing it) cannot both
    win: the loser gets TransitionError and must re-read the run.
    """
    run_id = run if isinstance(run, int) else run.pk
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run_id)
        current = locked.status
        if to not in ALLOWED[current]:
            raise TransitionError(f"Run {run_id} cannot go from {current} to {to}.")
        now = timezone.now()
        locked.status = to
        if to == RunStatus.QUEUED:
            locked.queued_at, locked.finished_at, locked.cancel_requested = now, None, False
            locked.error = ""
        elif to == RunStatus.RUNNING:
            locked.started_at, locked.heartbeat_at = now, now
            locked.attempt += 1
        else:
            locked.finished_at = now
        for name, value in fields.items():
            setattr(locked, name, value)
        locked.save()
        kind = "resume" if current in (RunStatus.FAILED, RunStatus.CANCELLED) and to == RunStatus.QUEUED else "status"
        RunEvent.objects.create(run=locked, kind=kind, from_status=current, to_status=to, message=message,
                                data=event_data or {})
        transaction.on_commit(lambda: _announce(locked.pk, to, locked.step, message, event_data))
        transaction.on_commit(lambda: _signal(locked.pk, to, current, message))
    if not isinstance(run, int):
        run.refresh_from_db()
        return run
    return locked


def request_cancel(run: Run, *, by: str = "") -> Run:
    """Ask a run to stop. A queued run is cancelled now; a running one stops at its next step."""
    from . import live

    if run.status == RunStatus.QUEUED:
        return transition(run, RunStatus.CANCELLED, message=f"Cancelled before start{by and ' by ' + by}.")
    if run.status != RunStatus.RUNNING:
        raise TransitionError(f"Run {run.pk} is {run.status}; only queued or running runs can be cancelled.")
    with transaction.atomic():
        Run.objects.filter(pk=run.pk).update(cancel_requested=True)
        RunEvent.objects.create(run=run, kind="cancel_requested", message=f"Cancel requested{by and ' by ' + by}.")
    live.client().set(live.cancel_key(run.pk), "1", ex=7 * 24 * 3600)
    run.refresh_from_db()
    return run


def _signal(run_id: int, status: str, previous: str, message: str) -> None:
    from .signals import run_status_changed

    for receiver, result in run_status_changed.send_robust(Run, run_id=run_id, status=status, previous=previous,
                                                            message=message):
        if isinstance(result, Exception):
            log.error("run %s -> %s: receiver %s failed: %r", run_id, status, receiver, result)


def _announce(run_id: int, status: str, step: int, message: str, data: dict | None = None) -> None:
    """The status event on the run's stream; a start names its device (the run page's header)."""
    from . import live

    device = (data or {}).get("device")
    try:
        live.publish_event(run_id, {"status": status, "step": step, "message": message,
                                    **({"device": device} if device else {})})
    except Exception as exc:  # live viewers fall back to polling; the database is the truth
        log.warning("could not publish status of run %s to Redis: %s", run_id, exc)


# ---------------------------------------------------------------------------- after launch (issue 19)
EDITABLE = ("name", "tags", "notes")
MAX_TAGS = 30


class RunEditError(ValueError):
    """Bad input for an edit; `errors` maps each field to its messages."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


class RunActiveError(Exception):
    """The run is queued or running: cancel it first (answered 409)."""


def clean_edit(changes: dict) -> dict:
    """The valid subset of name / tags / notes edits; RunEditError naming each bad (or unknown) field."""
    from .launchfields import NAME_MAX_LENGTH, TAG_MAX_LENGTH

    errors: dict[str, list[str]] = {}
    clean: dict = {}
    for key, value in changes.items():
        if key not in EDITABLE:
            errors[str(key)[:60]] = [f"Not editable: only {', '.join(EDITABLE)} can change after launch."]
        elif key == "name":
            name = value.strip() if isinstance(value, str) else None
            if not name or len(name) > NAME_MAX_LENGTH or "\x00" in name:  # Postgres refuses NUL
                errors["name"] = [f"A non-empty text of at most {NAME_MAX_LENGTH} characters."]
            else:
                clean["name"] = name
        elif key == "tags":
            tags = value if isinstance(value, list) else None
            if tags is None or not all(isinstance(t, str) for t in tags):
                errors["tags"] = ["A list of texts."]
                continue
            tags = list(dict.fromkeys(t.strip() for t in tags if t.strip()))
            if len(tags) > MAX_TAGS or any(len(t) > TAG_MAX_LENGTH or "\x00" in t for t in tags):
                errors["tags"] = [f"At most {MAX_TAGS} tags of at most {TAG_MAX_LENGTH} characters."]
            else:
                clean["tags"] = tags
        elif key == "notes":
            limit = Run._meta.get_field("notes").max_length
            if not isinstance(value, str) or len(value) > limit or "\x00" in value:
                errors["notes"] = [f"A text of at most {limit} characters."]
            else:
                clean["notes"] = value
    if errors:
        raise RunEditError(errors)
    return clean


def edit_run(run: Run, user, changes: dict) -> Run:
    """Change a run's name, tags and/or notes (any writer of its team; PermissionDenied otherwise)."""
    from webapp.accounts.scoping import require_writer

    require_writer(user, run.team)
    clean = clean_edit(changes)
    if clean:
        Run.objects.filter(pk=run.pk).update(**clean)
        for k, v in clean.items():
            setattr(run, k, v)
    return run


def add_tags(runs: list[Run], user, tags: list[str]) -> int:
    """Add tags to several runs of one team (bulk action); how many runs changed."""
    tags = clean_edit({"tags": tags})["tags"]
    changed = 0
    for run in runs:
        new = [t for t in tags if t not in run.tags]
        if new:
            edit_run(run, user, {"tags": run.tags + new})
            changed += 1
    return changed


def require_owner_or_admin(user, run: Run) -> None:
    """Archiving and deleting: a member their own runs, an admin any (PermissionDenied with the reason)."""
    from webapp.resources.services import require_manager

    require_manager(user, run)


def archive_run(run: Run, user, archived: bool = True) -> Run:
    """Hide a finished run from the run table (or bring it back); its data stays."""
    require_owner_or_admin(user, run)
    if archived and run.is_active:
        raise RunActiveError(f"Run {run.pk} is {run.status}: cancel it before archiving it.")
    run.archived_at = timezone.now() if archived else None
    Run.objects.filter(pk=run.pk).update(archived_at=run.archived_at)
    return run


def delete_run(run: Run, user) -> None:
    """Delete a finished run with its metrics, histograms, rollups, group samples, events,
    artifacts, evaluations, live stream and its directory (when under ARTIFACT_ROOT).

    The metric tables have no foreign keys (they are the big ones): each is one DELETE by the
    leading column of its primary key, an index range scan, not a cascade row by row.
    """
    import shutil

    from django.conf import settings

    from . import live
    from .models import MetricHistogram, MetricPoint, MetricRollup

    require_owner_or_admin(user, run)
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if locked.is_active:
            raise RunActiveError(f"Run {run.pk} is {locked.status}: cancel it before deleting it.")
        for model in (MetricPoint, MetricHistogram, MetricRollup):
            model.objects.filter(run_id=run.pk)._raw_delete(using="default")
        directory = locked.directory.resolve()
        locked.delete()  # cascades: events, artifacts, group samples, evaluations
    root = Path(settings.ARTIFACT_ROOT).resolve()
    if directory != root and directory.is_relative_to(root):  # never a directory outside the artifacts
        shutil.rmtree(directory, ignore_errors=True)
    try:
        live.client().delete(live.stream_key(run.pk), f"{live.stream_key(run.pk)}:published", live.cancel_key(run.pk))
    except Exception as exc:  # the stream expires by itself
        log.warning("could not remove the live stream of deleted run %s: %s", run.pk, exc)
    log.info("run %s deleted by %s", run.pk, user)
