"""The Logs page of a run (followed live by polling log_text), and its downloads: the whole log,
each artifact (a directory as a streamed tar), the group samples as JSONL. Members of the run's
team only (viewers included); anyone else gets 404. Reading and streaming: webapp.runs.files."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from webapp.accounts.scoping import get_scoped

from .. import files
from ..models import Artifact, Run

OFFSET_MAX = 2**62


def _offset(request: HttpRequest, name: str) -> int | None:
    """A byte offset query parameter, or None when absent; ValueError naming it otherwise."""
    raw = request.GET.get(name, "")
    if raw == "":
        return None
    if not raw.isdigit() or int(raw) > OFFSET_MAX:
        raise ValueError(f"{name} must be a byte offset: a whole number from 0 to {OFFSET_MAX} (got {raw[:40]!r}).")
    return int(raw)


def _live(run: Run) -> bool:
    return run.status in Run.ACTIVE


@login_required
def logs(request: HttpRequest, pk: int) -> HttpResponse:
    """The Logs page: the end of the worker log (LOG_WINDOW_BYTES), then every line as it is
    written while the page is open (follow / pause); ?raw=1 the whole file as text, streamed."""
    run = get_scoped(request.user, Run.objects.all(), pk=pk)
    path = run.log_path
    if request.GET.get("raw") and path.is_file():
        size = path.stat().st_size  # the bytes there now, streamed; a live log grows behind them
        return StreamingHttpResponse(files.file_chunks(path, size), content_type="text/plain; charset=utf-8",
                                     headers={"Content-Length": str(size)})
    window = files.log_window(path)
    text = window.text if path.is_file() else run.log_tail
    return render(request, "runs/logs.html", {
        "run": run, "text": text, "window": window, "live": _live(run), "path": str(path),
        "run_url": run.get_absolute_url(), "text_url": reverse("runs:log_text", args=[run.pk]),
        "log_download_url": f"{reverse('runs:logs', args=[run.pk])}?raw=1"})


@login_required
def log_text(request: HttpRequest, pk: int) -> JsonResponse:
    """At most LOG_WINDOW_BYTES of the log as JSON: ?after=N the lines from byte N on (what a
    followed log gained), ?before=N the lines before byte N (paging back), neither: the tail.
    {"start", "end", "size", "text", "status", "live"}: ask again from `end` while live or
    end < size."""
    run = get_scoped(request.user, Run.objects.all(), pk=pk)
    try:
        after, before = _offset(request, "after"), _offset(request, "before")
    except ValueError as e:
        return JsonResponse({"error": str(e)}, status=400)
    if after is not None and before is not None:
        return JsonResponse({"error": "Give after or before, not both."}, status=400)
    w = files.log_window(run.log_path, after=after, before=before, partial_end=not _live(run))
    return JsonResponse({"start": w.start, "end": w.end, "size": w.size, "text": w.text, "status": run.status,
                         "live": _live(run)})


@login_required
def artifact_download(request: HttpRequest, pk: int, artifact_id: int) -> StreamingHttpResponse:
    """One artifact of the run: a file as is, a checkpoint or final model directory as a tar."""
    run = get_scoped(request.user, Run.objects.all(), pk=pk)
    artifact = get_object_or_404(Artifact, pk=artifact_id, run=run)
    return files.artifact_response(run, artifact)


@login_required
def group_samples(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    """Every sampled group of the run as JSON lines (streamed)."""
    run = get_scoped(request.user, Run.objects.all(), pk=pk)
    return files.group_samples_response(run)
