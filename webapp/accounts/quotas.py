"""Per-team quotas, so that one member's mistake (a loop launching runs, a huge upload) cannot
stall the service for everyone: settings.TEAM_MAX_ACTIVE_RUNS (runs queued + running) and
settings.TEAM_MAX_STORAGE_BYTES (bytes stored); 0 = unlimited.

The accounting is cheap, from rows that exist anyway (no walk over the disk):
- dataset files: the size of each distinct stored file of the team's dataset versions (a new
  version that keeps its file adds nothing: files are content-addressed);
- run outputs: Artifact.size_bytes, which the worker's sink records for every checkpoint and final
  model it publishes (a pruned checkpoint's row is removed at the end of the attempt).

Services call `check_run_start(team)` (launch, clone, resume; inside their transaction: it locks
the team row so two concurrent launches cannot both take the last slot) and
`check_storage(team, adding)` (dataset upload / new version) before they create anything.
"""
from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.db.models import Sum

from webapp.datasets.models import Dataset
from webapp.runs.models import Artifact, Run

from .models import Team


class QuotaExceeded(Exception):
    """A team quota would be exceeded; the message names the limit and the current use."""

    def __init__(self, quota: str, limit: int, used: int, message: str):
        self.quota, self.limit, self.used = quota, limit, used
        super().__init__(message)

    def as_dict(self) -> dict:
        """The API's 429 body."""
        return {"detail": str(self), "quota": self.quota, "limit": self.limit, "used": self.used}


def format_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # unreachable


def active_runs(team: Team) -> int:
    """Runs of the team that are queued or running."""
    return Run.objects.filter(team=team, status__in=Run.ACTIVE).count()


def storage_bytes(team: Team) -> int:
    """Bytes the team stores: distinct dataset files + recorded run artifacts."""
    table = Dataset._meta.db_table
    with connection.cursor() as cur:  # UNION: a file shared by several versions counts once
        cur.execute(f"SELECT COALESCE(SUM(size), 0) FROM ("
                    f" SELECT file_path AS path, size_bytes AS size FROM {table} WHERE team_id = %s"
                    f" UNION SELECT eval_file_path, eval_size_bytes FROM {table}"
                    f"  WHERE team_id = %s AND eval_file_path <> '') AS files", [team.pk, team.pk])
        datasets = int(cur.fetchone()[0])
    artifacts = Artifact.objects.filter(run__team=team).aggregate(total=Sum("size_bytes"))["total"] or 0
    return datasets + int(artifacts)


def usage(team: Team) -> dict:
    """Current use and limits (0 = unlimited), for pages and the API."""
    return {"active_runs": active_runs(team), "max_active_runs": settings.TEAM_MAX_ACTIVE_RUNS,
            "storage_bytes": storage_bytes(team), "max_storage_bytes": settings.TEAM_MAX_STORAGE_BYTES}


def check_storage(team: Team, adding: int = 0) -> None:
    """QuotaExceeded if storing `adding` more bytes would take the team past its storage limit
    (adding=0: if the team is at or past it already, as a new run would write more)."""
    limit = int(settings.TEAM_MAX_STORAGE_BYTES)
    if limit <= 0:
        return
    used = storage_bytes(team)
    if used + adding > limit or (adding == 0 and used >= limit):
        what = f"storing {format_bytes(adding)} more" if adding else "starting a run"
        raise QuotaExceeded(
            "storage_bytes", limit, used,
            f"Storage quota of team {team.name}: it stores {format_bytes(used)} of its "
            f"{format_bytes(limit)} limit (TEAM_MAX_STORAGE_BYTES), so {what} is refused. "
            f"Delete datasets or runs you no longer need.")


def check_run_start(team: Team) -> None:
    """QuotaExceeded if one more queued run would pass the team's active-run limit, or its storage
    is full. Call inside the transaction that queues the run: the team row stays locked until it
    commits, so concurrent launches of one team are counted one after the other."""
    limit = int(settings.TEAM_MAX_ACTIVE_RUNS)
    if limit > 0:
        Team.objects.select_for_update().values_list("pk", flat=True).get(pk=team.pk)  # the lock
        used = active_runs(team)
        if used >= limit:
            raise QuotaExceeded(
                "active_runs", limit, used,
                f"Active-run quota of team {team.name}: {used} of its {limit} runs (TEAM_MAX_ACTIVE_RUNS) "
                f"are queued or running. Wait for one to finish or cancel one.")
    check_storage(team)
